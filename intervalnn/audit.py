"""Independent soundness audits of saved models and of certified training.

Nothing here trusts the engine it audits: the checks use their own code
(no :class:`~intervalnn.interval.Interval` arithmetic, no kernels) and their
own number systems.

:func:`audit_model` checks a model's certificates three ways:

a. **Exact re-verification.**  An oracle recomputes the output bounds of every
   (sampled) test point from the saved parameter box and the input box, with
   endpoint interval arithmetic in MPFR (gmpy2) at ``precision`` bits and
   directed rounding: each Linear entry is the exact minimum / maximum of the
   per-entry interval products, summed rounding down / up; ReLU by
   monotonicity.  That is the tightest interval bound propagation (IBP) up
   to ~2^-precision relative, so the engine's bounds (midpoint-radius GEMM or
   the fused endpoint kernels, each with an a-priori rounding-error term of
   ~2^-53 relative) must *contain* the oracle's; a violation is an engine
   bug.  A certificate that the oracle's bounds do not confirm is *refuted*.
b. **Falsification.**  Concrete models from the parameter box (the nominal
   model, random vertices, random interior points) meet concrete inputs
   from the test box (random vertices and interior points, and PGD attacks on
   every sampled model that push each certified margin down and every
   output towards both of its bounds).  Every output is evaluated in
   float64; a certified point whose margin reaches 0, or an output outside
   the engine's bounds, is re-evaluated exactly (rationals) before it is
   counted, so float64 rounding of the check itself never raises a false
   alarm.
c. **Rounding slack.**  The same bounds in plain round-to-nearest arithmetic
   of the model's dtype, with no directed rounding and no error terms, as
   many certified-training libraries compute them (endpoint IBP and
   midpoint-radius IBP): how many of those bounds fail to enclose the
   oracle's, how many certificates they change, and how much width
   soundness costs, in ulps.

:func:`audit_training` reruns certified training and, in lockstep, concrete
SGD on poisoned datasets inside the training box (vertices, random points, an
adversarial poisoning along the sign of the loss gradient at the initial
model, and one that re-poisons every batch at the current model), with the
same initial parameters, batch order and learning rates.  After every step
each concrete parameter must lie inside the interval parameters.  The float64
runs are an independent reference implementation; ``exact=True`` adds exact
rational SGD (gmpy2 ``mpq``; sigmoid and softmax via MPFR at 300 bits).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np

from . import certify as _certify
from .layers import Linear, ReLU, Sequential
from .threat import ThreatModel

PRECISION = 200  # bits of the MPFR oracle
EXACT_BITS = 300  # bits of sigmoid / softmax in the exact rational SGD


def _gmpy2():
    try:
        import gmpy2
    except ImportError:  # pragma: no cover - gmpy2 is a test dependency
        raise RuntimeError(
            "the audit needs gmpy2 (MPFR/GMP for Python): pip install 'intervalnn[audit]'"
        ) from None
    return gmpy2


# ---------------------------------------------------------------- the network as plain arrays


@dataclass(frozen=True)
class Dense:
    """One Linear layer as float64 host arrays (box and nominal), and a ReLU after it or not."""

    w_lo: np.ndarray
    w_hi: np.ndarray
    w_nom: np.ndarray
    b_lo: np.ndarray
    b_hi: np.ndarray
    b_nom: np.ndarray
    relu: bool = False


def dense_layers(model: Sequential) -> list[Dense]:
    """The Linear/ReLU stack of ``model`` as :class:`Dense` layers (float64 copies, exact).

    Any order after the first Linear: a ReLU after the last Linear sets its
    flag like any other, Linear after Linear leaves it unset, and
    consecutive ReLUs set it once, which is exact: ``relu(relu(z)) = relu(z)``
    and ``[relu(z) > 0] [z > 0] = [z > 0]``.  (The training audit's
    reference SGD does not use this view: it runs the layer list itself.)
    """
    bk = model.backend
    host = lambda a: np.array(bk.to_host(a), dtype=np.float64)  # noqa: E731
    out: list[Dense] = []
    for layer in model.layers:
        if type(layer) is Linear:
            w, b = layer.weight, layer.bias
            out.append(
                Dense(
                    host(w.lo), host(w.hi), host(layer.nominal["weight"]),
                    host(b.lo), host(b.hi), host(layer.nominal["bias"]),
                )
            )  # fmt: skip
        elif type(layer) is ReLU:
            if not out:
                raise ValueError("the audit supports MLPs that start with a Linear layer")
            out[-1] = replace(out[-1], relu=True)
        else:
            raise ValueError(f"the audit supports Linear/ReLU MLPs, not {type(layer).__name__}")
    return out


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


# ---------------------------------------------------------------- the engine under audit


@dataclass
class EngineBounds:
    """What the engine computes for a set of test points (float64 host arrays)."""

    lo: np.ndarray  # logit bounds on certify's path (the fused kernel where it applies)
    hi: np.ndarray
    layered_lo: np.ndarray  # logit bounds on the layered path (midpoint-radius GEMM)
    layered_hi: np.ndarray
    box_lo: np.ndarray  # the input box (the test box, rounded outward, clipped)
    box_hi: np.ndarray
    fused: bool  # certify's path is the fused kernel (else it is the layered path)


def engine_bounds(model: Sequential, x, threat: ThreatModel, batch_size: int = 1024):
    """The engine's logit bounds on ``x``'s test boxes, batch by batch exactly as ``certify``.

    Returns :class:`EngineBounds`: certify's bounds, the layered path's
    bounds (the same when certify takes the layered path) and the input box.
    """
    bk = model.backend
    x = np.asarray(x)
    parts: dict[str, list] = {k: [] for k in ("lo", "hi", "llo", "lhi", "blo", "bhi")}
    fused_fn = getattr(_certify, "forward_bounds", None)  # certify's fast path, if it has one
    used_fused = True
    host = lambda a: np.asarray(bk.to_host(a), dtype=np.float64)  # noqa: E731
    for start in range(0, x.shape[0], batch_size):
        box = threat.test_box(bk.xp.asarray(x[start : start + batch_size]), model.dtype)
        fast = fused_fn(model, box) if fused_fn is not None else None
        out = model.forward(box)
        layered = host(out.lo), host(out.hi)
        used_fused &= fast is not None
        fast = layered if fast is None else (host(fast[0]), host(fast[1]))
        for key, value in zip(parts, (*fast, *layered, host(box.lo), host(box.hi)), strict=True):
            parts[key].append(value)
    _certify._clear_caches(model)
    joined = [np.concatenate(v) for v in parts.values()]
    return EngineBounds(*joined, fused=bool(used_fused and x.shape[0] > 0))


# ---------------------------------------------------------------- (a) the MPFR oracle


class _Oracle:
    """Endpoint IBP in MPFR with directed rounding (numpy object arrays of ``mpfr``)."""

    def __init__(self, layers: list[Dense], precision: int = PRECISION):
        if precision < 64:
            raise ValueError("the oracle needs at least 64 bits to be tighter than float64")
        g = self.g = _gmpy2()
        self.down = g.context(precision=precision, round=g.RoundDown)
        self.up = g.context(precision=precision, round=g.RoundUp)
        self.near = g.context(precision=precision)
        self._mp = np.frompyfunc(g.mpfr, 1, 1)
        with self.near:  # float64 -> mpfr is exact at >= 53 bits
            self.zero = g.mpfr(0)
            self.layers = []
            for la in layers:
                self.layers.append(
                    {
                        "wl": self.mp(la.w_lo),
                        "wh": self.mp(la.w_hi),
                        "wl+": self.mp(np.maximum(la.w_lo, 0.0)),
                        "wl-": self.mp(np.minimum(la.w_lo, 0.0)),
                        "wh+": self.mp(np.maximum(la.w_hi, 0.0)),
                        "wh-": self.mp(np.minimum(la.w_hi, 0.0)),
                        "bl": self.mp(la.b_lo),
                        "bh": self.mp(la.b_hi),
                        "relu": la.relu,
                    }
                )

    def mp(self, a) -> np.ndarray:
        """Exact conversion of a float array to an object array of ``mpfr``."""
        return np.asarray(self._mp(np.asarray(a, dtype=np.float64)), dtype=object)

    def input_box(self, x, eps: float, domain):
        """``[x - eps, x + eps]`` (clipped to the domain) rounded outward at full precision."""
        g = self.g
        with self.near:
            xm, e = self.mp(x), g.mpfr(float(eps))
        with self.down:
            lo = xm - e
        with self.up:
            hi = xm + e
        if domain is not None:
            with self.near:
                a, b = g.mpfr(float(domain[0])), g.mpfr(float(domain[1]))
            lo, hi = np.maximum(lo, a), np.minimum(hi, b)
        return lo, hi

    def forward(self, lo, hi):
        """Output bounds of the network on the input box ``[lo, hi]`` (object arrays)."""
        for la in self.layers:
            if bool(np.all(lo >= 0)):
                # x in [a, b] with a >= 0: min x w = a c+ + b c-, max x w = b d+ + a d-
                # for w in [c, d]; as matmuls, summed with directed rounding.
                with self.down:
                    new_lo = lo @ la["wl+"] + hi @ la["wl-"] + la["bl"]
                with self.up:
                    new_hi = hi @ la["wh+"] + lo @ la["wh-"] + la["bh"]
            else:  # general signs: the four endpoint products per entry
                new_lo, new_hi = self._general(lo, hi, la)
            lo, hi = new_lo, new_hi
            if la["relu"]:
                lo, hi = np.maximum(lo, self.zero), np.maximum(hi, self.zero)
        return lo, hi

    def _general(self, lo, hi, la):
        wl, wh = la["wl"], la["wh"]
        with self.down:
            acc_lo = np.broadcast_to(la["bl"], (lo.shape[0], wl.shape[1])).copy()
            for i in range(lo.shape[1]):
                a, b = lo[:, i : i + 1], hi[:, i : i + 1]
                p = np.minimum(np.minimum(a * wl[i], a * wh[i]), np.minimum(b * wl[i], b * wh[i]))
                acc_lo = acc_lo + p
        with self.up:
            acc_hi = np.broadcast_to(la["bh"], (lo.shape[0], wh.shape[1])).copy()
            for i in range(lo.shape[1]):
                a, b = lo[:, i : i + 1], hi[:, i : i + 1]
                p = np.maximum(np.maximum(a * wl[i], a * wh[i]), np.maximum(b * wl[i], b * wh[i]))
                acc_hi = acc_hi + p
        return acc_lo, acc_hi

    def certified(self, lo, hi, y) -> np.ndarray:
        """Exact certificate test on the oracle's bounds (comparisons of mpfr values)."""
        if lo.shape[1] == 1:
            return np.where(y == 1, lo[:, 0] > 0, hi[:, 0] < 0).astype(bool)
        out = np.empty(lo.shape[0], dtype=bool)
        for r in range(lo.shape[0]):
            others = [hi[r, j] for j in range(hi.shape[1]) if j != y[r]]
            out[r] = all(lo[r, y[r]] > v for v in others)
        return out

    def ulps(self, diff, ref, dtype) -> np.ndarray:
        """``diff`` (object array) in ulps of ``dtype`` at the magnitude of ``ref``."""
        with self.near:
            d = np.array([float(v) for v in diff.ravel()], dtype=np.float64)
            r = np.array([float(v) for v in ref.ravel()], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            unit = np.spacing(np.abs(r).astype(dtype)).astype(np.float64)
            return (d / unit).reshape(diff.shape)


def oracle_bounds(layers: list[Dense], x, epsilon: float, domain=None, precision=PRECISION):
    """The oracle's output bounds ``(lo, hi)`` (object arrays of ``mpfr``) for inputs ``x``."""
    oracle = _Oracle(layers, precision)
    return oracle.forward(*oracle.input_box(x, epsilon, domain))


# ---------------------------------------------------------------- (b) falsification


def _sample_model(layers: list[Dense], kind: str, rng) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for la in layers:
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


def _forward(params, relu, x):
    """float64 forward pass keeping what the input gradient needs."""
    acts, pre = [x], []
    for (w, b), r in zip(params, relu, strict=True):
        z = acts[-1] @ w + b
        pre.append(z)
        acts.append(np.maximum(z, 0.0) if r else z)
    return acts[-1], pre


def _input_grad(params, relu, pre, g):
    """d(sum_rows <g, z>)/dx for the cached pre-activations ``pre``."""
    for i in reversed(range(len(params))):
        if relu[i]:  # g is the gradient with respect to relu(pre[i])
            g = g * (pre[i] > 0)
        g = g @ params[i][0].T
    return g


def _exact_forward(params, relu, x) -> np.ndarray:
    """The exact (rational) logits of float64 parameters and inputs."""
    g = _gmpy2()
    q = np.frompyfunc(g.mpq, 1, 1)
    a = np.asarray(q(np.asarray(x, dtype=np.float64)), dtype=object)
    for (w, b), r in zip(params, relu, strict=True):
        a = a @ np.asarray(q(w), dtype=object) + np.asarray(q(b), dtype=object)
        if r:
            a = np.where(a > 0, a, g.mpq(0))
    return a


def falsify(
    layers: list[Dense],
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
) -> dict:
    """Try to break the certificates and the output bounds with concrete models and inputs.

    ``models`` random vertex models and as many random interior models, plus
    the nominal model; per model ``inputs`` random vertices and interior
    points of each test box, the centre, and PGD attacks (random start,
    ``pgd_steps`` signed-gradient steps projected onto the box) on the
    margin and on each output in both directions.  Candidates found in
    float64 are confirmed in exact rational arithmetic (at most ``max_exact``
    per model; any beyond that count as failures unconfirmed).
    """
    rng = np.random.default_rng(seed)
    relu = [la.relu for la in layers]
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y)
    k = out_lo.shape[1]
    n = x.shape[0]
    width = box_hi - box_lo
    bad_margin = np.zeros(n, dtype=bool)  # certified points with a confirmed margin <= 0
    bad_bound = np.zeros((n, k), dtype=bool)  # outputs confirmed outside the engine's bounds
    closest = np.full((n, k), np.inf)  # distance to the bounds, as a fraction of the width
    stats = {"evaluations": 0, "float_only": 0, "unconfirmed": 0, "min_certified_margin": np.inf}
    kinds = ["nominal"] + ["vertex"] * models + ["random"] * models

    def check(params, xs):
        z, pre = _forward(params, relu, xs)
        stats["evaluations"] += xs.shape[0]
        marg = _predict_margin(z, y)
        if certified.any():
            stats["min_certified_margin"] = min(
                stats["min_certified_margin"], float(marg[certified].min())
            )
        w = out_hi - out_lo
        with np.errstate(invalid="ignore", divide="ignore"):
            dist = np.minimum(z - out_lo, out_hi - z) / np.where(w > 0, w, np.inf)
        np.minimum(closest, np.where(np.isnan(dist), np.inf, dist), out=closest)
        cand_m = certified & (marg <= 0) & ~bad_margin
        cand_b = ((z < out_lo) | (z > out_hi)) & ~bad_bound
        rows = np.flatnonzero(cand_m | cand_b.any(axis=1))
        if rows.size:
            confirm(params, xs, rows, cand_m, cand_b)
        return z, pre

    def confirm(params, xs, rows, cand_m, cand_b):
        g = _gmpy2()
        todo, rest = rows[:max_exact], rows[max_exact:]
        stats["unconfirmed"] += int(rest.size)
        bad_margin[rest] |= cand_m[rest]
        bad_bound[rest] |= cand_b[rest]
        if not todo.size:
            return
        ze = _exact_forward(params, relu, xs[todo])
        q = np.frompyfunc(lambda v: g.mpq(v) if math.isfinite(v) else v, 1, 1)  # keep +-inf
        lo_e = np.asarray(q(out_lo[todo]), dtype=object)
        hi_e = np.asarray(q(out_hi[todo]), dtype=object)
        outside = ((ze < lo_e) | (ze > hi_e)).astype(bool)
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
            grad = _input_grad(params, relu, pre, sign_fn(z))
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
        "float_only": stats["float_only"],
        "unconfirmed": stats["unconfirmed"],
        "min_certified_margin": stats["min_certified_margin"]
        if np.isfinite(stats["min_certified_margin"])
        else None,
        "closest_to_bound": float(np.min(closest)) if np.isfinite(closest).any() else None,
    }


# ---------------------------------------------------------------- (c) naive round-to-nearest


def naive_bounds(layers: list[Dense], x, epsilon: float, domain, dtype, method: str = "endpoint"):
    """Output bounds in plain round-to-nearest ``dtype`` arithmetic, no error terms.

    ``endpoint``: per-entry minimum / maximum of the four endpoint products,
    summed; ``midrad``: midpoint-radius products (``m = (lo + hi) / 2``,
    ``r = (hi - lo) / 2``, ``|mx| rW + rx |mW| + rx rW``).  Not sound; the
    audit measures by how much.
    """
    dt = np.dtype(dtype)
    f = dt.type
    xs = np.asarray(x, dtype=dt)
    lo, hi = xs - f(epsilon), xs + f(epsilon)
    if domain is not None:
        lo, hi = np.maximum(lo, f(domain[0])), np.minimum(hi, f(domain[1]))
    for la in layers:
        wl, wh = la.w_lo.astype(dt), la.w_hi.astype(dt)
        bl, bh = la.b_lo.astype(dt), la.b_hi.astype(dt)
        if method == "midrad":
            xm, xr = (lo + hi) / f(2), (hi - lo) / f(2)
            wm, wr = (wl + wh) / f(2), (wh - wl) / f(2)
            bm, br = (bl + bh) / f(2), (bh - bl) / f(2)
            zm = xm @ wm + bm
            zr = np.abs(xm) @ wr + xr @ np.abs(wm) + xr @ wr + br
            lo, hi = zm - zr, zm + zr
        elif method == "endpoint":
            new_lo = np.empty((lo.shape[0], wl.shape[1]), dtype=dt)
            new_hi = np.empty_like(new_lo)
            step = max(1, (1 << 22) // max(1, wl.size))
            for s in range(0, lo.shape[0], step):
                a, b = lo[s : s + step, :, None], hi[s : s + step, :, None]
                p = np.stack([a * wl, a * wh, b * wl, b * wh])
                new_lo[s : s + step] = p.min(axis=0).sum(axis=1) + bl
                new_hi[s : s + step] = p.max(axis=0).sum(axis=1) + bh
            lo, hi = new_lo, new_hi
        else:
            raise ValueError(f"unknown method {method!r}: 'endpoint' or 'midrad'")
        if la.relu:
            lo, hi = np.maximum(lo, f(0)), np.maximum(hi, f(0))
    return lo, hi


# ---------------------------------------------------------------- audit_model


def audit_model(
    model: Sequential,
    x,
    y,
    threat: ThreatModel,
    *,
    precision: int = PRECISION,
    max_points: int | None = None,
    models: int = 8,
    inputs: int = 8,
    pgd_steps: int = 20,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Audit ``model``'s certificates on ``(x, y)`` under ``threat``'s test box (see module doc).

    ``max_points`` limits the exact oracle to a random sample of that many
    points (drawn with ``seed``; all points when None).  ``progress(done,
    total)`` is called as the work advances.  Returns a JSON-ready dict; the
    audit passes when ``refuted``, ``violations``, ``counterexamples``,
    ``outside_bounds`` and ``inconsistent`` are all 0 (``passed``).
    """
    t0 = time.perf_counter()
    x = np.asarray(x)
    y = np.asarray(y)
    layers = dense_layers(model)
    dtype = np.dtype(model.dtype)
    eps, domain = threat.inference_epsilon, threat.domain
    n = x.shape[0]
    xd = x.astype(dtype).astype(np.float64)  # the points the model sees

    cert = _certify.certify(model, x, y, threat)
    eb = engine_bounds(model, x, threat)
    e_lo, e_hi, box_lo, box_hi = eb.lo, eb.hi, eb.box_lo, eb.box_hi
    inconsistent = int(np.sum(_certify.margins(e_lo, e_hi, y) != cert.margin))
    certified = cert.certified

    rng = np.random.default_rng(seed)
    sample = np.arange(n) if max_points is None or max_points >= n else None
    if sample is None:
        sample = np.sort(rng.choice(n, size=max_points, replace=False))
    chunk = 64
    n_chunks = -(-sample.size // chunk)
    total = n_chunks + 1 + 2 * models + 1
    done = 0

    def tick(units=1):
        nonlocal done
        done += units
        if progress is not None:
            progress(done, total)

    # (a) exact re-verification ------------------------------------------------
    oracle = _Oracle(layers, precision)
    o_lo_parts, o_hi_parts = [], []
    for s in range(0, sample.size, chunk):
        rows = sample[s : s + chunk]
        lo, hi = oracle.forward(*oracle.input_box(xd[rows], eps, domain))
        o_lo_parts.append(lo)
        o_hi_parts.append(hi)
        tick()
    o_lo = np.concatenate(o_lo_parts) if o_lo_parts else np.empty((0, e_lo.shape[1]), object)
    o_hi = np.concatenate(o_hi_parts) if o_hi_parts else np.empty((0, e_lo.shape[1]), object)
    o_cert = oracle.certified(o_lo, o_hi, y[sample])
    s_cert = certified[sample]
    s_lo, s_hi = e_lo[sample], e_hi[sample]
    lo_bad = (s_lo > o_lo).astype(bool)  # exact comparisons (float vs mpfr)
    hi_bad = (s_hi < o_hi).astype(bool)
    layered_bad = 0
    if eb.fused:  # certify took the fused kernel: audit the layered path's bounds too
        layered_bad = int(
            (eb.layered_lo[sample] > o_lo).sum() + (eb.layered_hi[sample] < o_hi).sum()
        )
    with oracle.near:
        d_lo, d_hi = o_lo - s_lo, s_hi - o_hi
    slack_lo, slack_hi = oracle.ulps(d_lo, o_lo, dtype), oracle.ulps(d_hi, o_hi, dtype)
    slack = np.concatenate([slack_lo.ravel(), slack_hi.ravel()])
    finite = slack[np.isfinite(slack)]
    with oracle.near:  # the same slack as a fraction of the oracle's interval width
        o_width = np.array([float(v) for v in (o_hi - o_lo).ravel()])
        d_all = np.array([float(v) for v in np.concatenate([d_lo.ravel(), d_hi.ravel()])])
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = d_all / np.concatenate([o_width, o_width])
    rel = rel[np.isfinite(rel)]
    exact = {
        "points": int(sample.size),
        "checked": int(s_cert.sum()),
        "refuted": int((s_cert & ~o_cert).sum()),
        "violations": int(lo_bad.sum() + hi_bad.sum()) + layered_bad,
        "violations_certify_path": int(lo_bad.sum() + hi_bad.sum()),
        "violations_layered_path": layered_bad if eb.fused else None,
        "certify_path": "fused" if eb.fused else "layered",
        "oracle_certified": int(o_cert.sum()),
        "lost_to_soundness": int((o_cert & ~s_cert).sum()),
        "max_slack_ulps": float(finite.max()) if finite.size else None,
        "median_slack_ulps": float(np.median(finite)) if finite.size else None,
        "max_slack_relative": float(rel.max()) if rel.size else None,
        "infinite_bounds": int(slack.size - finite.size),
    }

    # (b) falsification ---------------------------------------------------------
    fals = falsify(
        layers, xd, y, box_lo, box_hi, e_lo, e_hi, certified,
        models=models, inputs=inputs, pgd_steps=pgd_steps, seed=seed + 1, progress=tick,
    )  # fmt: skip

    # (c) naive round-to-nearest --------------------------------------------------
    # Each naive method is set against the sound engine path of the same family:
    # endpoint products (the fused kernel) and midpoint-radius (the layered GEMM).
    sound = {"midrad": (eb.layered_lo, eb.layered_hi)}
    if eb.fused:
        sound["endpoint"] = (e_lo, e_hi)
    naive = {}
    for method in ("endpoint", "midrad"):
        n_lo, n_hi = naive_bounds(layers, xd, eps, domain, dtype, method)
        n_lo, n_hi = n_lo.astype(np.float64), n_hi.astype(np.float64)
        n_cert = _certify.margins(n_lo, n_hi, y) > 0
        v_lo, v_hi = (n_lo[sample] > o_lo).astype(bool), (n_hi[sample] < o_hi).astype(bool)
        row = {
            "violations": int(v_lo.sum() + v_hi.sum()),
            "bounds": int(v_lo.size + v_hi.size),
            "points_with_violations": int((v_lo | v_hi).any(axis=1).sum()),
            "refuted": int((n_cert[sample] & ~o_cert).sum()),
            "certified": int(n_cert.sum()),
            "certificates_differ": int((n_cert != certified).sum()),
            "only_naive_certifies": int((n_cert & ~certified).sum()),
            "compared_with": None,
            "extra_ulps_median": None,
            "extra_ulps_max": None,
        }
        if method in sound:
            r_lo, r_hi = sound[method]
            with np.errstate(invalid="ignore", over="ignore"):
                unit_lo = np.spacing(np.abs(n_lo).astype(dtype)).astype(np.float64)
                unit_hi = np.spacing(np.abs(n_hi).astype(dtype)).astype(np.float64)
                extra = np.concatenate(
                    [((n_lo - r_lo) / unit_lo).ravel(), ((r_hi - n_hi) / unit_hi).ravel()]
                )
            extra = extra[np.isfinite(extra)]
            row["compared_with"] = "fused endpoint kernel" if method == "endpoint" else "layered"
            if extra.size:
                row["extra_ulps_median"] = float(np.median(extra))
                row["extra_ulps_max"] = float(extra.max())
        naive[method] = row
    tick()

    report = {
        "n": int(n),
        "certified": int(certified.sum()),
        "certified_accuracy": float(certified.mean()) if n else 0.0,
        "epsilon": eps,
        "training_epsilon": threat.epsilon,
        "dtype": str(dtype),
        "precision_bits": precision,
        "seed": seed,
        "checked": exact["checked"],
        "refuted": exact["refuted"],
        "violations": exact["violations"],
        "counterexamples": fals["counterexamples"],
        "outside_bounds": fals["outside_bounds"],
        "inconsistent": inconsistent,
        "naive_violations": naive["endpoint"]["violations"],
        "naive_midrad_violations": naive["midrad"]["violations"],
        "max_slack_ulps": exact["max_slack_ulps"],
        "exact": exact,
        "falsification": fals,
        "naive": naive,
    }
    report["passed"] = not any(
        report[key]
        for key in ("refuted", "violations", "counterexamples", "outside_bounds", "inconsistent")
    )
    report["seconds"] = time.perf_counter() - t0
    return report


# ---------------------------------------------------------------- (2) training audit


def _layer_kinds(model: Sequential) -> list[str]:
    """``model``'s layer list as kinds of the reference's table: ``"linear"`` / ``"relu"``."""
    kinds = []
    for layer in model.layers:
        if type(layer) is Linear:
            kinds.append("linear")
        elif type(layer) is ReLU:
            kinds.append("relu")
        else:
            raise ValueError(f"the audit supports Linear/ReLU stacks, not {type(layer).__name__}")
    return kinds


def _linear_params(model: Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """The nominal ``(W, b)`` of each Linear layer of ``model``, in order (float64 host copies)."""
    bk = model.backend
    host = lambda a: np.array(bk.to_host(a), dtype=np.float64)  # noqa: E731
    return [
        (host(layer.nominal["weight"]), host(layer.nominal["bias"]))
        for layer in model.layers
        if type(layer) is Linear
    ]


class _Reference:
    """Independent SGD on a stack of Linear and ReLU layers, in float64 or rationals (``mpq``).

    ``kinds`` is the model's layer list (``"linear"`` / ``"relu"``, any
    order: a ReLU last, Linear after Linear, consecutive ReLUs) and
    ``params`` the ``(W, b)`` of its Linear layers in order.  The gradient
    is the plain chain rule over that list, from a table of one forward and
    one backward rule per layer kind (:attr:`RULES`): forward in order,
    backward in reverse, each layer's backward fed the input it saw in the
    forward pass.  It shares no code with the layers, the fused kernel or
    the MLP view (:class:`Dense`) of the model audit.
    """

    #: per layer kind: (forward(a, p) -> output, backward(a, g, p) -> (input grad, param grads))
    RULES = {
        "linear": ("_linear_forward", "_linear_backward"),
        "relu": ("_relu_forward", "_relu_backward"),
    }

    def __init__(self, kinds, params, loss: str, exact: bool):
        kinds = list(kinds)
        unknown = sorted(set(kinds) - set(self.RULES))
        if unknown:
            raise ValueError(f"the reference has no rule for layers of kind {unknown}")
        if kinds.count("linear") != len(params):
            raise ValueError(
                f"{kinds.count('linear')} Linear layers but {len(params)} parameter pairs"
            )
        self.kinds, self.loss, self.exact = kinds, loss, exact
        self.g = _gmpy2() if exact else None
        if exact:
            self.q = np.frompyfunc(self.g.mpq, 1, 1)
            self.zero = self.g.mpq(0)
            self.params = [(self._q(w), self._q(b)) for w, b in params]
        else:
            self.zero = 0.0
            self.params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in params]

    def _q(self, a):
        return np.asarray(self.q(np.asarray(a, dtype=np.float64)), dtype=object)

    # the table ------------------------------------------------------------------
    def _linear_forward(self, a, p):
        w, b = p
        return a @ w + b

    def _linear_backward(self, a, g, p):
        """``dx = g W^T``, ``dW = a^T g``, ``db = sum_rows g``."""
        return g @ p[0].T, (a.T @ g, g.sum(axis=0))

    def _relu_forward(self, a, p):
        return np.where(a > 0, a, self.zero) if self.exact else np.maximum(a, 0.0)

    def _relu_backward(self, a, g, p):
        """``g * relu'(a)`` with ``relu'(a) = [a > 0]``."""
        return (np.where(a > 0, g, self.zero) if self.exact else g * (a > 0)), None

    # the loss ---------------------------------------------------------------------
    def _out_grad(self, z, y):
        """``d loss_i / d z_i`` per row (not yet divided by the batch size)."""
        if not self.exact:
            if self.loss == "bce":
                return (1 / (1 + np.exp(-z[:, 0])) - y)[:, None]
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return p - np.eye(z.shape[1])[y]
        g = self.g
        out = np.empty(z.shape, dtype=object)
        with g.context(precision=EXACT_BITS):
            for r in range(z.shape[0]):
                if self.loss == "bce":
                    s = 1 / (1 + g.exp(-g.mpfr(z[r, 0])))
                    out[r, 0] = g.mpq(*s.as_integer_ratio()) - int(y[r])
                else:
                    zr = [g.mpfr(v) for v in z[r]]
                    top = max(zr)
                    e = [g.exp(v - top) for v in zr]
                    tot = sum(e)
                    for c in range(z.shape[1]):
                        out[r, c] = g.mpq(*(e[c] / tot).as_integer_ratio()) - int(c == y[r])
        return out

    def _run_forward(self, x):
        """The output on ``x``, and per layer ``(kind, params or None, its input)``."""
        if self.exact and np.asarray(x).dtype != object:
            x = self._q(x)
        it = iter(self.params)
        tape, a = [], x
        for kind in self.kinds:
            p = next(it) if kind == "linear" else None
            tape.append((kind, p, a))
            a = getattr(self, self.RULES[kind][0])(a, p)
        return a, tape

    def logits(self, x):
        """The model's output on ``x``."""
        return self._run_forward(x)[0]

    def gradients(self, x, y):
        """Mean-loss parameter gradients (one ``(dW, db)`` per Linear) and the input gradient."""
        out, tape = self._run_forward(x)
        m = out.shape[0]
        g = self._out_grad(out, y)
        g = g / m if not self.exact else g * self.g.mpq(1, m)
        grads = []
        for kind, p, a_in in reversed(tape):  # backward, in reverse
            g, pg = getattr(self, self.RULES[kind][1])(a_in, g, p)
            if pg is not None:
                grads.append(pg)
        grads.reverse()
        return grads, g

    def step(self, x, y, rate: Fraction) -> None:
        grads, _ = self.gradients(x, y)
        lam = self.g.mpq(rate.numerator, rate.denominator) if self.exact else float(rate)
        self.params = [
            (w - lam * gw, b - lam * gb)
            for (w, b), (gw, gb) in zip(self.params, grads, strict=True)
        ]

    def finite(self) -> bool:
        return self.exact or all(
            np.isfinite(w).all() and np.isfinite(b).all() for w, b in self.params
        )


@dataclass
class _Run:
    kind: str
    ref: _Reference
    data: np.ndarray | None  # the poisoned training inputs (None: re-poisoned every step)
    exact: bool
    max_excursion: float = -math.inf
    outside: int = 0
    diverged: bool = False


def _poison(x, eps, domain, kind, rng, grad_sign=None):
    if kind == "clean":
        p = x.copy()
    elif kind == "plus":
        p = x + eps
    elif kind == "minus":
        p = x - eps
    elif kind == "vertex":
        p = x + eps * rng.choice([-1.0, 1.0], size=x.shape)
    elif kind == "random":
        p = x + eps * rng.uniform(-1.0, 1.0, size=x.shape)
    elif kind == "adversarial":
        p = x + eps * grad_sign
    else:
        raise ValueError(kind)
    p = np.clip(p, x - eps, x + eps)  # float64 rounding never leaves the box
    return p if domain is None else np.clip(p, domain[0], domain[1])


def _exact_poison(x, eps, domain, signs):
    """``x + eps * signs`` (signs in {-1, 0, 1}) as exact rationals, clipped to the domain."""
    g = _gmpy2()
    q = np.frompyfunc(g.mpq, 1, 1)
    e = g.mpq(float(eps))
    p = np.asarray(q(x), dtype=object) + np.asarray(signs, dtype=np.int64).astype(object) * e
    if domain is not None:
        a, b = g.mpq(float(domain[0])), g.mpq(float(domain[1]))
        p = np.where(p < a, a, np.where(p > b, b, p))
    return p


def _excursion(value, lo, hi, exact, tiny) -> tuple[float, int]:
    """``max((lo - p, p - hi) / max(width, tiny))`` and the number of entries outside."""
    width = np.maximum(hi - lo, tiny)
    if exact:  # exact rational differences; only the normalisation is rounded
        g = _gmpy2()
        q = np.frompyfunc(g.mpq, 1, 1)
        lq, hq = np.asarray(q(lo), dtype=object), np.asarray(q(hi), dtype=object)
        d = np.maximum(lq - value, value - hq)
        outside = int((d > 0).sum())
        ratio = np.array([float(v) for v in d.ravel()]).reshape(d.shape) / width
        ex = float(ratio.max()) if ratio.size else -math.inf
        return (max(ex, 5e-324) if outside else ex), outside
    d = np.maximum(lo - value, value - hi)
    outside = int((d > 0).sum())
    return float((d / width).max()) if d.size else -math.inf, outside


def _fused_applies(model: Sequential, config) -> bool:
    """Does ``train`` take the fused step for this model and configuration (where not declined)?"""
    if not getattr(config, "fused", False):
        return False
    try:
        from .fused import structure
    except ImportError:  # pragma: no cover - a library without the fused path
        return False
    return structure(model) is not None and config.loss in ("bce", "ce")


def audit_training(
    model: Sequential,
    x,
    y,
    threat: ThreatModel,
    config,
    *,
    pretrain_x=None,
    pretrain_y=None,
    vertices: int = 2,
    randoms: int = 2,
    adversarial: bool = True,
    exact: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Train ``model`` with ``config`` and check concrete poisoned SGD runs against the box.

    Runs, in float64: the clean data, all features ``+eps``, all ``-eps``,
    ``vertices`` random vertices, ``randoms`` random points of the training
    box, ``adversarial-init`` (each point moved by ``eps`` along the sign of
    its loss gradient at the initial model) and ``adversarial-step`` (every
    batch re-poisoned that way at the current concrete model).  With
    ``exact``, the clean, +eps, -eps, one vertex, one random and the
    adversarial-init datasets also in exact rational SGD (tiny
    configurations only).
    Returns a JSON-ready dict; it passes when ``max_excursion <= 0`` and no
    parameter was ever outside (``passed``).
    """
    from .train import _batches, pretrain_nominal, train

    t0 = time.perf_counter()
    dtype = np.dtype(model.dtype)
    xd = np.asarray(x, dtype=dtype).astype(np.float64)  # the inputs the model trains on
    y = np.asarray(y)
    eps, domain = threat.epsilon, threat.domain
    tiny = float(np.finfo(dtype).tiny)

    # The initial model, the batch order and the learning rates of train().
    rng = np.random.default_rng(config.seed)
    start = model
    if config.pretrain_epochs and pretrain_x is not None:
        start = copy.deepcopy(model)
        pretrain_nominal(start, pretrain_x, pretrain_y, config, rng)
    init = _linear_params(start)
    kinds = _layer_kinds(model)
    batches = [
        b for _ in range(config.epochs) for b in _batches(xd.shape[0], config.batch_size, rng)
    ]

    def rate(step: int) -> Fraction:
        lr = Fraction(config.learning_rate)
        return lr if config.schedule == "constant" else lr / step

    sampler = np.random.default_rng(seed)
    runs: list[_Run] = []
    add = lambda kind, data, ex=False: runs.append(  # noqa: E731
        _Run(kind, _Reference(kinds, init, config.loss, ex), data, ex)
    )
    add("clean", _poison(xd, eps, domain, "clean", sampler))
    add("plus", _poison(xd, eps, domain, "plus", sampler))
    add("minus", _poison(xd, eps, domain, "minus", sampler))
    signs = {}
    for _ in range(vertices):
        s = sampler.choice([-1.0, 1.0], size=xd.shape)
        signs.setdefault("vertex", s)
        add("vertex", _poison(xd, eps, domain, "adversarial", sampler, s))
    for _ in range(randoms):
        add("random", _poison(xd, eps, domain, "random", sampler))
    if adversarial:
        _, gx = _Reference(kinds, init, config.loss, False).gradients(xd, y)
        signs["adversarial-init"] = np.sign(gx)
        add("adversarial-init", _poison(xd, eps, domain, "adversarial", sampler, np.sign(gx)))
        add("adversarial-step", None)
    if exact:
        add("clean", _exact_poison(xd, 0.0, domain, np.zeros_like(xd)), True)
        add("plus", _exact_poison(xd, eps, domain, np.ones_like(xd)), True)
        add("minus", _exact_poison(xd, eps, domain, -np.ones_like(xd)), True)
        if "vertex" in signs:
            add("vertex", _exact_poison(xd, eps, domain, signs["vertex"]), True)
        g = _gmpy2()
        q = np.frompyfunc(g.mpq, 1, 1)
        add("random", np.asarray(q(_poison(xd, eps, domain, "random", sampler)), object), True)
        if "adversarial-init" in signs:
            add("adversarial-init", _exact_poison(xd, eps, domain, signs["adversarial-init"]), True)

    state = {"steps": 0, "clean_vs_nominal": 0.0}
    n_steps = len(batches)

    def on_step(step, box, nominal):
        idx = batches[step - 1]
        lam = rate(step)
        bk = next(iter(box.values())).backend
        names = list(box)
        los = [np.asarray(bk.to_host(box[k].lo), dtype=np.float64) for k in names]
        his = [np.asarray(bk.to_host(box[k].hi), dtype=np.float64) for k in names]
        for run in runs:
            if run.diverged:
                continue
            if run.data is None:  # re-poison this batch at the current concrete model
                _, gx = run.ref.gradients(xd[idx], y[idx])
                xb = _poison(xd[idx], eps, domain, "adversarial", sampler, np.sign(gx))
            else:
                xb = run.data[idx]
            run.ref.step(xb, y[idx], lam)
            if not run.ref.finite():
                run.diverged = True
                continue
            flat = [p for pair in run.ref.params for p in pair]
            for value, lo, hi in zip(flat, los, his, strict=True):
                ex, out = _excursion(value, lo, hi, run.exact, tiny)
                run.max_excursion = max(run.max_excursion, ex)
                run.outside += out
        clean = runs[0].ref.params
        flat_nom = [np.asarray(bk.to_host(nominal[k]), dtype=np.float64) for k in names]
        flat_clean = [p for pair in clean for p in pair]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(flat_clean, flat_nom, strict=True))
        state["clean_vs_nominal"] = max(state["clean_vs_nominal"], diff)
        state["steps"] = step
        if progress is not None:
            progress(step, n_steps)

    result = train(
        model, x, y, threat, config, pretrain_x=pretrain_x, pretrain_y=pretrain_y, on_step=on_step
    )

    by_kind: dict[str, dict] = {}
    for run in runs:
        key = run.kind + (" (exact)" if run.exact else "")
        row = by_kind.setdefault(
            key, {"runs": 0, "max_excursion": -math.inf, "outside": 0, "diverged": 0}
        )
        row["runs"] += 1
        row["max_excursion"] = max(row["max_excursion"], run.max_excursion)
        row["outside"] += run.outside
        row["diverged"] += int(run.diverged)
    checked = [r for r in runs if not r.diverged]
    max_ex = max((r.max_excursion for r in checked), default=-math.inf)
    outside = sum(r.outside for r in runs)
    report = {
        "steps": state["steps"],
        "planned_steps": n_steps,
        "runs": len(runs),
        "exact_runs": sum(r.exact for r in runs),
        "max_excursion": max_ex if math.isfinite(max_ex) else None,
        "outside": outside,
        "clean_vs_nominal": state["clean_vs_nominal"],
        "epsilon": eps,
        "train_size": int(xd.shape[0]),
        "dtype": str(dtype),
        "fused": _fused_applies(model, config),
        "by_kind": by_kind,
        "stopped": result.stopped,
    }
    report["passed"] = outside == 0 and (max_ex <= 0 or not math.isfinite(max_ex))
    report["seconds"] = time.perf_counter() - t0
    return report
