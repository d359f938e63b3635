"""(b) Falsification: concrete models from the parameter box meet concrete inputs from the test box.

Candidates found in float64 are confirmed in exact rational arithmetic
before they count.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from .network import Conv, Pool, conv_rows, has_params
from .oracle import pair_columns, require_gmpy2


def _predict_margin(z, y) -> np.ndarray:
    """Concrete margins (> 0: label ``y`` predicted) of logits ``z`` (float arrays).

    Written again on purpose rather than calling ``certify.margins``: the
    audit checks the certificates, so it shares no code with them.
    """
    if z.shape[1] == 1:
        return np.where(y == 1, z[:, 0], -z[:, 0])
    rows = np.arange(z.shape[0])
    others = z.copy()
    others[rows, y] = -np.inf
    return z[rows, y] - others.max(axis=1)


def _sample_model(layers: list, kind: str, rng) -> list:
    """A concrete model from the box: ``(W, b)`` per Dense / Conv layer, None per pool."""
    out = []
    for la in layers:
        if not has_params(la):
            out.append(None)
            continue
        pair = []
        for lo, hi, nom in ((la.w_lo, la.w_hi, la.w_nom), (la.b_lo, la.b_hi, la.b_nom)):
            if kind == "nominal":
                v = nom.copy()
            elif kind == "vertex":
                v = np.where(rng.random(lo.shape) < 0.5, lo, hi)
            else:
                v = np.clip(lo + (hi - lo) * rng.random(lo.shape), lo, hi)
            pair.append(v)
        out.append(tuple(pair))
    return out


def _relu(la) -> bool:
    """The layer's ReLU flag; a bare bool stands for a Dense layer with that flag (an MLP)."""
    return bool(la) if isinstance(la, (bool, np.bool_)) else la.relu


def _layer(la, p, a, zero, inv_count):
    """One view layer on flat rows ``a`` (float64 or rationals), before its ReLU.

    ``zero`` reads the padding; ``inv_count(n)`` multiplies by ``1 / n`` (a mean).
    """
    if isinstance(la, Conv):
        w_mat = Conv.matrix(p[0])
        return la.window.by_rows(lambda r: conv_rows(la.window.patches(r, zero), w_mat, p[1]), a)
    if isinstance(la, Pool):

        def pool(rows):
            windows = la.window.patches(rows, zero)
            if la.op == "max":
                return windows.max(axis=2)
            return inv_count(windows.sum(axis=2), la.count)

        return la.window.by_rows(pool, a)
    return a @ p[0] + p[1]


def _forward(params, layers, x):
    """float64 forward pass keeping what the input gradient needs (each layer's input and
    pre-activation).  ``layers``: the view's layers (or an MLP's ReLU flags)."""
    acts, tape = [x], []
    for p, la in zip(params, layers, strict=True):
        z = _layer(la, p, acts[-1], 0.0, lambda s, n: s / n)
        tape.append((acts[-1], z))
        acts.append(np.maximum(z, 0.0) if _relu(la) else z)
    return acts[-1], tape


def _input_grad(params, layers, tape, g):
    """d(sum_rows <g, z>)/dx for the forward pass ``tape`` (see :func:`_forward`)."""
    for i in reversed(range(len(params))):
        la, (a, z) = layers[i], tape[i]
        if _relu(la):  # g is the gradient with respect to relu(z)
            g = g * (z > 0)
        if isinstance(la, Conv):
            w_mat = Conv.matrix(params[i][0])

            def conv_grad(gr, w_mat=w_mat, win=la.window):
                g3 = gr.reshape(gr.shape[0], w_mat.shape[1], -1).transpose(0, 2, 1)
                return win.scatter(g3 @ w_mat.T)

            g = la.window.by_rows(conv_grad, g)
        elif isinstance(la, Pool):

            def pool_grad(ar, gr, la=la):
                windows = la.window.patches(ar)
                if la.op == "max":  # the first maximum of each window takes the gradient
                    first = windows.argmax(axis=2)[..., None]
                    share = np.where(np.arange(windows.shape[2]) == first, gr[..., None], 0.0)
                else:
                    share = np.broadcast_to(gr[..., None] / la.count, windows.shape)
                return la.window.scatter(share)

            g = la.window.by_rows(pool_grad, a, g)
        else:
            g = g @ params[i][0].T
    return g


def _exact_forward(params, layers, x) -> np.ndarray:
    """The exact (rational) logits of float64 parameters and inputs."""
    g = require_gmpy2()
    q = np.frompyfunc(g.mpq, 1, 1)
    a = np.asarray(q(np.asarray(x, dtype=np.float64)), dtype=object)
    zero = g.mpq(0)
    for p, la in zip(params, layers, strict=True):
        if p is not None:
            p = tuple(np.asarray(q(v), dtype=object) for v in p)
        a = _layer(la, p, a, zero, lambda s, n: s * g.mpq(1, n))
        if _relu(la):
            a = np.where(a > 0, a, zero)
    return a


def falsify(
    layers: list,
    x,
    y,
    box_lo,
    box_hi,
    out_lo,
    out_hi,
    certified,
    *,
    models: int = 8,
    inputs: int = 8,
    pgd_steps: int = 20,
    seed: int = 0,
    progress: Callable[[], None] | None = None,
    max_exact: int = 256,
    diff_bounds=None,
) -> dict:
    """Try to break the certificates and the output bounds with concrete models and inputs.

    ``models`` random vertex models and as many random interior models, plus
    the nominal model; per model ``inputs`` random vertices and interior
    points of each test box, the centre, and PGD attacks (random start,
    ``pgd_steps`` signed-gradient steps projected onto the box) on the
    margin and on each output in both directions.  Candidates found in
    float64 are confirmed in exact rational arithmetic (at most ``max_exact``
    per model; any beyond that count as failures unconfirmed).

    ``diff_bounds``: the engine's bounds ``(lo, hi)`` on the logit differences
    ``z_c - z_j`` (columns :func:`~.oracle.pair_columns`), which multi-class
    certificates read; every evaluation checks them too, as more outputs.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    k = out_lo.shape[1]
    n = x.shape[0]
    width = box_hi - box_lo
    if diff_bounds is not None:  # the differences are outputs too, after the logits
        c_idx, j_idx = (np.array(v, dtype=np.int64) for v in zip(*pair_columns(k), strict=True))
        out_lo = np.concatenate([out_lo, diff_bounds[0]], axis=1)
        out_hi = np.concatenate([out_hi, diff_bounds[1]], axis=1)

    def outputs(z):
        """The logits, and their differences where the certificates read those."""
        if diff_bounds is None:
            return z
        return np.concatenate([z, z[:, c_idx] - z[:, j_idx]], axis=1)

    bad_margin = np.zeros(n, dtype=bool)  # certified points with a confirmed margin <= 0
    bad_bound = np.zeros(out_lo.shape, dtype=bool)  # outputs confirmed outside the bounds
    closest = np.full(out_lo.shape, np.inf)  # distance to the bounds, a fraction of the width
    stats = {"evaluations": 0, "float_only": 0, "unconfirmed": 0, "min_certified_margin": np.inf}
    kinds = ["nominal"] + ["vertex"] * models + ["random"] * models

    def check(params, xs):
        z, pre = _forward(params, layers, xs)
        stats["evaluations"] += xs.shape[0]
        marg = _predict_margin(z, y)
        if certified.any():
            stats["min_certified_margin"] = min(
                stats["min_certified_margin"], float(marg[certified].min())
            )
        zz = outputs(z)
        w = out_hi - out_lo
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = np.minimum(zz - out_lo, out_hi - zz) / np.where(w > 0, w, np.inf)
        np.minimum(closest, np.where(np.isnan(dist), np.inf, dist), out=closest)
        cand_m = certified & (marg <= 0) & ~bad_margin
        cand_b = ((zz < out_lo) | (zz > out_hi)) & ~bad_bound
        rows = np.flatnonzero(cand_m | cand_b.any(axis=1))
        if rows.size:
            confirm(params, xs, rows, cand_m, cand_b)
        return z, pre

    def confirm(params, xs, rows, cand_m, cand_b):
        g = require_gmpy2()
        todo, rest = rows[:max_exact], rows[max_exact:]
        stats["unconfirmed"] += int(rest.size)
        bad_margin[rest] |= cand_m[rest]
        bad_bound[rest] |= cand_b[rest]
        if not todo.size:
            return
        ze = _exact_forward(params, layers, xs[todo])
        ze_all = outputs(ze)
        q = np.frompyfunc(lambda v: g.mpq(v) if math.isfinite(v) else v, 1, 1)  # keep +-inf
        lo_e = np.asarray(q(out_lo[todo]), dtype=object)
        hi_e = np.asarray(q(out_hi[todo]), dtype=object)
        outside = ((ze_all < lo_e) | (ze_all > hi_e)).astype(bool)
        margin_bad = np.zeros(todo.size, dtype=bool)
        for j, r in enumerate(todo):
            if not cand_m[r]:
                continue
            if k == 1:
                margin_bad[j] = ze[j, 0] <= 0 if y[r] == 1 else ze[j, 0] >= 0
            else:
                margin_bad[j] = any(ze[j, y[r]] <= ze[j, c] for c in range(k) if c != y[r])
        real_m = cand_m[todo] & margin_bad
        real_b = cand_b[todo] & outside
        stats["float_only"] += int((cand_m[todo] & ~margin_bad).sum())
        stats["float_only"] += int((cand_b[todo] & ~outside).sum())
        bad_margin[todo] |= real_m
        bad_bound[todo] |= real_b

    def pgd(params, sign_fn):
        xs = box_lo + width * rng.random(x.shape)
        step = 2.5 * width / (2 * max(pgd_steps, 1))
        for _ in range(pgd_steps):
            z, pre = check(params, xs)
            grad = _input_grad(params, layers, pre, sign_fn(z))
            xs = np.clip(xs - step * np.sign(grad), box_lo, box_hi)
        check(params, xs)

    def margin_direction(z):  # gradient of the margin of the label (to be decreased)
        g = np.zeros_like(z)
        if k == 1:
            g[:, 0] = np.where(y == 1, 1.0, -1.0)
        else:
            rows = np.arange(z.shape[0])
            others = z.copy()
            others[rows, y] = -np.inf
            g[rows, y] = 1.0
            g[rows, others.argmax(axis=1)] -= 1.0
        return g

    for kind in kinds:
        params = _sample_model(layers, kind, rng)
        check(params, x)
        for _ in range(inputs):
            check(params, np.where(rng.random(x.shape) < 0.5, box_lo, box_hi))
            check(params, np.clip(box_lo + width * rng.random(x.shape), box_lo, box_hi))
        pgd(params, margin_direction)
        for j in range(k):
            for s in (1.0, -1.0):  # decrease z_j (towards lo), increase it (towards hi)

                def direction(z, j=j, s=s):
                    g = np.zeros_like(z)
                    g[:, j] = s
                    return g

                pgd(params, direction)
        if progress is not None:
            progress()
    return {
        "models": len(kinds),
        "evaluations": stats["evaluations"],
        "counterexamples": int(bad_margin.sum()),
        "outside_bounds": int(bad_bound.sum()),
        "outside_difference_bounds": int(bad_bound[:, k:].sum()),
        "float_only": stats["float_only"],
        "unconfirmed": stats["unconfirmed"],
        "min_certified_margin": stats["min_certified_margin"]
        if np.isfinite(stats["min_certified_margin"])
        else None,
        "closest_to_bound": float(np.min(closest)) if np.isfinite(closest).any() else None,
    }
