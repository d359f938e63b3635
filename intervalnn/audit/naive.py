"""(c) Naive bounds: plain round-to-nearest arithmetic, no error terms (not sound, measured)."""

from __future__ import annotations

import numpy as np

from .network import Conv, Dense, Pool
from .oracle import pair_columns


def naive_bounds(
    layers: list, x, epsilon: float, domain, dtype, method: str = "endpoint",
    differences: bool = False,
):  # fmt: skip
    """Output bounds in plain round-to-nearest ``dtype`` arithmetic, no error terms.

    ``endpoint``: per-entry minimum / maximum of the four endpoint products,
    summed; ``midrad``: midpoint-radius products (``m = (lo + hi) / 2``,
    ``r = (hi - lo) / 2``, ``|mx| rW + rx |mW| + rx rW``); convolutions the
    same at every window, a mean as the window's sum divided by its size, a
    maximum of the bounds.  Not sound; the audit measures by how much.

    ``differences``: also the bounds of the logit differences ``z_c - z_j``
    (columns :func:`~.oracle.pair_columns`) through the last Dense layer's
    difference layer (``[lo_c - hi_j, hi_c - lo_j]`` rounded to nearest) from
    the penultimate bounds, as ``(lo, hi, diff_lo, diff_hi)``; the caller
    checks that the model ends in a Dense layer of >= 2 outputs and no ReLU.
    """
    dt = np.dtype(dtype)
    f = dt.type
    xs = np.asarray(x, dtype=dt)
    lo, hi = xs - f(epsilon), xs + f(epsilon)
    if domain is not None:
        lo, hi = np.maximum(lo, f(domain[0])), np.minimum(hi, f(domain[1]))
    for i, la in enumerate(layers):
        if i == len(layers) - 1:
            penultimate = lo, hi
        if isinstance(la, Pool):
            if la.op == "max":
                pool = lambda a, la=la: la.window.patches(a).max(axis=2)  # noqa: E731
            else:
                pool = lambda a, la=la: la.window.patches(a).sum(axis=2) / f(la.count)  # noqa: E731
            lo, hi = la.window.by_rows(pool, lo), la.window.by_rows(pool, hi)
        elif isinstance(la, Conv):  # both bounds at once, in chunks of rows
            both = la.window.by_rows(
                lambda a, b, la=la: np.stack(_affine(la, a, b, dt, method), axis=1), lo, hi
            )
            lo, hi = both[:, 0], both[:, 1]
        else:
            lo, hi = _affine(la, lo, hi, dt, method)
        if la.relu:
            lo, hi = np.maximum(lo, f(0)), np.maximum(hi, f(0))
    if not differences:
        return lo, hi
    last = layers[-1]
    c, j = (np.array(v, dtype=np.int64) for v in zip(*pair_columns(lo.shape[1]), strict=True))
    wl, wh = last.w_lo.astype(dt), last.w_hi.astype(dt)
    bl, bh = last.b_lo.astype(dt), last.b_hi.astype(dt)
    diff = Dense(wl[:, c] - wh[:, j], wh[:, c] - wl[:, j], None, bl[c] - bh[j], bh[c] - bl[j], None)
    return lo, hi, *_affine(diff, *penultimate, dt, method)


def _affine(la, lo, hi, dt, method):
    """A Dense or Conv layer's naive bounds (a convolution at every window, back to C order)."""
    f = dt.type
    conv = isinstance(la, Conv)
    n = lo.shape[0]
    if conv:
        wl, wh = Conv.matrix(la.w_lo).astype(dt), Conv.matrix(la.w_hi).astype(dt)
        lo, hi = la.window.patches(lo), la.window.patches(hi)
        lo, hi = lo.reshape(-1, lo.shape[2]), hi.reshape(-1, hi.shape[2])  # one row per window
    else:
        wl, wh = la.w_lo.astype(dt), la.w_hi.astype(dt)
    bl, bh = la.b_lo.astype(dt), la.b_hi.astype(dt)
    if method == "midrad":
        xm, xr = (lo + hi) / f(2), (hi - lo) / f(2)
        wm, wr = (wl + wh) / f(2), (wh - wl) / f(2)
        bm, br = (bl + bh) / f(2), (bh - bl) / f(2)
        zm = xm @ wm + bm
        zr = np.abs(xm) @ wr + xr @ np.abs(wm) + xr @ wr + br
        new_lo, new_hi = zm - zr, zm + zr
    elif method == "endpoint":
        new_lo = np.empty((lo.shape[0], wl.shape[1]), dtype=dt)
        new_hi = np.empty_like(new_lo)
        step = max(1, (1 << 22) // max(1, wl.size))
        for s in range(0, lo.shape[0], step):
            a, b = lo[s : s + step, :, None], hi[s : s + step, :, None]
            p = np.stack([a * wl, a * wh, b * wl, b * wh])
            new_lo[s : s + step] = p.min(axis=0).sum(axis=1) + bl
            new_hi[s : s + step] = p.max(axis=0).sum(axis=1) + bh
    else:
        raise ValueError(f"unknown method {method!r}: 'endpoint' or 'midrad'")
    if conv:  # (N * positions, out) -> (N, out * positions), C order
        new_lo = new_lo.reshape(n, -1, wl.shape[1]).transpose(0, 2, 1).reshape(n, -1)
        new_hi = new_hi.reshape(n, -1, wl.shape[1]).transpose(0, 2, 1).reshape(n, -1)
    return new_lo, new_hi
