"""Numba array kernels for the CPU backend.

Every kernel takes and returns plain NumPy arrays of one float dtype (float32
or float64) and one shape; callers broadcast first.  Interval kernels take
``(alo, ahi[, blo, bhi])`` and return ``(lo, hi)``; point kernels
(``add_rd``, ``mul_ru``, ...) return one array of directed-rounded results.
All rounding goes through :mod:`intervalnn.kernels.rounding`; the interval
formulas are the IEEE 1788-2015 tightest ones (sections 10.5.3 - 10.5.4:
sign-case tables for ``*`` and ``/``, endpoint rules for the rest), with the
IEEE 1788 convention ``0 * inf = 0`` for bounds.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import numpy as np
from numba import njit

from . import rounding as r

# Loops release the GIL; large arrays are split across threads (the loops are
# memory-bound, and Numba's own parallel runtime stalls on small inputs).
_CHUNK = 1 << 17
#: The cores this process may run on (also the default count of local Dask workers).
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
# INTERVALNN_THREADS caps the threads (Dask workers run one each: intervalnn/experiment/cluster.py).
THREADS = max(1, int(os.environ.get("INTERVALNN_THREADS", CORES)))
_pool = None

njit = partial(njit, cache=True, nogil=True)


def _flat(*arrays):
    """C-contiguous 1-D views (copies only when an input is not contiguous)."""
    return [np.ascontiguousarray(a).reshape(-1) for a in arrays]


def run_parts(calls) -> None:
    """Run ``fn(*args)`` for each ``(fn, args)`` of ``calls`` on the shared thread pool; wait."""
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(THREADS, thread_name_prefix="intervalnn")
    for f in [_pool.submit(fn, *args) for fn, args in calls]:
        f.result()


def _run(loop, *arrays, extra=()):
    """``loop(*arrays, *extra)`` on 1-D arrays, in parallel chunks when large."""
    n = arrays[0].size
    parts = min(THREADS, n // _CHUNK)
    if parts <= 1:
        loop(*arrays, *extra)
        return
    bounds = np.linspace(0, n, parts + 1).astype(int)
    run_parts(
        (loop, (*(a[i:j] for a in arrays), *extra))
        for i, j in zip(bounds[:-1], bounds[1:], strict=True)
    )


# ------------------------------------------------------------ loops


@njit
def _add_loop(alo, ahi, blo, bhi, lo, hi):
    for i in range(lo.size):
        lo[i] = r.add_rd(alo[i], blo[i])
        hi[i] = r.add_ru(ahi[i], bhi[i])


@njit
def _sub_loop(alo, ahi, blo, bhi, lo, hi):
    for i in range(lo.size):
        lo[i] = r.add_rd(alo[i], -bhi[i])
        hi[i] = r.add_ru(ahi[i], -blo[i])


@njit
def _mul_exact(a0, a1, b0, b1):
    """The IEEE 1788 sign-case table; exact in every case, slow on random signs."""
    if a0 >= 0:
        if b0 >= 0:
            return r.mul_rd(a0, b0), r.mul_ru(a1, b1)
        if b1 <= 0:
            return r.mul_rd(a1, b0), r.mul_ru(a0, b1)
        return r.mul_rd(a1, b0), r.mul_ru(a1, b1)
    if a1 <= 0:
        if b0 >= 0:
            return r.mul_rd(a0, b1), r.mul_ru(a1, b0)
        if b1 <= 0:
            return r.mul_rd(a1, b1), r.mul_ru(a0, b0)
        return r.mul_rd(a0, b1), r.mul_ru(a0, b0)
    if b0 >= 0:
        return r.mul_rd(a0, b1), r.mul_ru(a1, b1)
    if b1 <= 0:
        return r.mul_rd(a1, b0), r.mul_ru(a0, b0)
    return min(r.mul_rd(a0, b1), r.mul_rd(a1, b0)), max(r.mul_ru(a0, b0), r.mul_ru(a1, b1))


@njit
def _mul_loop(alo, ahi, blo, bhi, lo, hi):
    # Hull of the four endpoint products, branch-free so that LLVM
    # vectorises; elements where a fast product is not valid are redone.
    redo = np.zeros(lo.size, dtype=np.bool_)
    for i in range(lo.size):
        a0, a1, b0, b1 = alo[i], ahi[i], blo[i], bhi[i]
        l00, h00, ok00 = r.mul_bounds(a0, b0)
        l01, h01, ok01 = r.mul_bounds(a0, b1)
        l10, h10, ok10 = r.mul_bounds(a1, b0)
        l11, h11, ok11 = r.mul_bounds(a1, b1)
        lo[i] = min(min(l00, l01), min(l10, l11))
        hi[i] = max(max(h00, h01), max(h10, h11))
        redo[i] = not (ok00 & ok01 & ok10 & ok11)
    for i in np.flatnonzero(redo):
        lo[i], hi[i] = _mul_exact(alo[i], ahi[i], blo[i], bhi[i])


@njit
def _div_loop(alo, ahi, blo, bhi, lo, hi):
    """Quotient for divisors that exclude 0 (checked by the caller)."""
    for i in range(lo.size):
        a0, a1, b0, b1 = alo[i], ahi[i], blo[i], bhi[i]
        if b0 > 0:
            if a0 >= 0:
                lo[i], hi[i] = r.div_rd(a0, b1), r.div_ru(a1, b0)
            elif a1 <= 0:
                lo[i], hi[i] = r.div_rd(a0, b0), r.div_ru(a1, b1)
            else:
                lo[i], hi[i] = r.div_rd(a0, b0), r.div_ru(a1, b0)
        else:
            if a0 >= 0:
                lo[i], hi[i] = r.div_rd(a1, b1), r.div_ru(a0, b0)
            elif a1 <= 0:
                lo[i], hi[i] = r.div_rd(a1, b0), r.div_ru(a0, b1)
            else:
                lo[i], hi[i] = r.div_rd(a1, b1), r.div_ru(a0, b1)


@njit
def _sqr_loop(alo, ahi, lo, hi):
    for i in range(lo.size):
        a0, a1 = alo[i], ahi[i]
        if a0 >= 0:
            lo[i], hi[i] = r.mul_rd(a0, a0), r.mul_ru(a1, a1)
        elif a1 <= 0:
            lo[i], hi[i] = r.mul_rd(a1, a1), r.mul_ru(a0, a0)
        else:
            m = max(-a0, a1)
            lo[i], hi[i] = 0.0, r.mul_ru(m, m)


@njit
def _sqrt_loop(alo, ahi, lo, hi):
    """Square root for intervals with lo >= 0 (checked by the caller)."""
    for i in range(lo.size):
        lo[i] = r.sqrt_rd(alo[i])
        hi[i] = r.sqrt_ru(ahi[i])


# Point ops share one loop keyed by an op code: Numba's on-disk cache cannot
# tell apart closures made by one factory.
_ADD_RD, _ADD_RU, _MUL_RD, _MUL_RU, _DIV_RD, _DIV_RU = range(6)


@njit
def _point_loop(a, b, out, op):
    for i in range(out.size):
        if op == _ADD_RD:
            out[i] = r.add_rd(a[i], b[i])
        elif op == _ADD_RU:
            out[i] = r.add_ru(a[i], b[i])
        elif op == _MUL_RD:
            out[i] = r.mul_rd(a[i], b[i])
        elif op == _MUL_RU:
            out[i] = r.mul_ru(a[i], b[i])
        elif op == _DIV_RD:
            out[i] = r.div_rd(a[i], b[i])
        else:
            out[i] = r.div_ru(a[i], b[i])


# ------------------------------------------------------------ wrappers


def _binary_interval(loop):
    def kernel(alo, ahi, blo, bhi):
        shape = alo.shape
        flat = _flat(alo, ahi, blo, bhi)
        lo, hi = np.empty_like(flat[0]), np.empty_like(flat[0])
        _run(loop, *flat, lo, hi)
        return lo.reshape(shape), hi.reshape(shape)

    kernel.__name__ = loop.__name__.strip("_").replace("_loop", "")
    return kernel


def _unary_interval(loop):
    def kernel(alo, ahi):
        shape = alo.shape
        flat = _flat(alo, ahi)
        lo, hi = np.empty_like(flat[0]), np.empty_like(flat[0])
        _run(loop, *flat, lo, hi)
        return lo.reshape(shape), hi.reshape(shape)

    kernel.__name__ = loop.__name__.strip("_").replace("_loop", "")
    return kernel


def _binary_point(op, name):
    def kernel(a, b):
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        dtype = np.result_type(a, b)
        fa, fb = _flat(
            np.broadcast_to(a, shape).astype(dtype, copy=False),
            np.broadcast_to(b, shape).astype(dtype, copy=False),
        )
        out = np.empty_like(fa)
        _run(_point_loop, fa, fb, out, extra=(op,))
        return out.reshape(shape)

    kernel.__name__ = name
    return kernel


add = _binary_interval(_add_loop)
sub = _binary_interval(_sub_loop)
mul = _binary_interval(_mul_loop)
div = _binary_interval(_div_loop)
sqr = _unary_interval(_sqr_loop)
sqrt = _unary_interval(_sqrt_loop)

add_rd = _binary_point(_ADD_RD, "add_rd")
add_ru = _binary_point(_ADD_RU, "add_ru")
mul_rd = _binary_point(_MUL_RD, "mul_rd")
mul_ru = _binary_point(_MUL_RU, "mul_ru")
div_rd = _binary_point(_DIV_RD, "div_rd")
div_ru = _binary_point(_DIV_RU, "div_ru")


# ------------------------------------------------ fused midpoint-radius steps
# One pass each over the matrices of the sound GEMM (kernels/gemm.py).


@njit
def _midrad_loop(lo, hi, mid, rad):
    for i in range(lo.size):
        a, b = lo[i], hi[i]
        m = a * 0.5 + b * 0.5  # cannot overflow; any m in [a, b] works
        if a == b:
            m = a
        elif a == -np.inf:
            m = 0.0 if b == np.inf else b
        elif b == np.inf:
            m = a
        # Store first, then read back: for float32 input ``m`` is a float64
        # (``a * 0.5`` promotes) and storing rounds it; rad must be about the
        # stored value.  Rounding keeps it in [a, b] (a, b are float32).
        mid[i] = min(max(m, a), b)
        m = mid[i]
        rad[i] = max(r.add_ru(m, -a), r.add_ru(b, -m))


def midrad(lo, hi):
    """``(mid, rad)`` with ``mid`` in ``[lo, hi]`` and ``[mid - rad, mid + rad] ⊇ [lo, hi]``."""
    shape = lo.shape
    flat = _flat(lo, hi)
    mid, rad = np.empty_like(flat[0]), np.empty_like(flat[0])
    _run(_midrad_loop, *flat, mid, rad)
    return mid.reshape(shape), rad.reshape(shape)


@njit
def _mag_bound_loop(m, rad, out, g, use_rad):
    # Error-bound terms need soundness, not tightness: one ulp up after each
    # round-to-nearest step (rounding.above) keeps the loop vectorised.
    for i in range(out.size):
        t = r.above(g * abs(m[i]))
        out[i] = r.above(t + rad[i]) if use_rad else t


def mag_bound(m, g, rad=None):
    """``RU(RU(g |m|) + rad)`` elementwise for a scalar ``g >= 0`` (no ``rad``: ``RU(g |m|)``)."""
    shape = m.shape
    fm, frad = _flat(m, m if rad is None else rad)
    out = np.empty_like(fm)
    _run(_mag_bound_loop, fm, frad, out, extra=(fm.dtype.type(g), rad is not None))
    return out.reshape(shape)


@njit
def _gemm_enclose_loop(p, s1, s2, lo, hi, c, k_eta, two_k_eta, use_s2):
    for i in range(p.size):
        s = r.above(s1[i] + s2[i]) if use_s2 else s1[i]
        rad = r.above(r.above(r.above(s + two_k_eta) * c) + k_eta)
        ok = (abs(p[i]) < np.inf) & (rad < np.inf)  # also False for NaN
        # P overflowed (or is NaN) or rad did: nothing is known, [-inf, inf].
        lo[i] = r.add_rd(p[i], -rad) if ok else -np.inf
        hi[i] = r.add_ru(p[i], rad) if ok else np.inf


def gemm_enclose(p, s1, s2, c, k_eta, two_k_eta):
    """``[RD(P - rad), RU(P + rad)]``, ``rad = RU(RU(RU(S1 + S2) + 2k eta) c + k eta)``.

    ``s2`` may be None (no second radius product); see kernels/gemm.py.
    """
    shape = p.shape
    fp, f1, f2 = _flat(p, s1, s1 if s2 is None else s2)
    lo, hi = np.empty_like(fp), np.empty_like(fp)
    t = fp.dtype.type
    _run(
        _gemm_enclose_loop, fp, f1, f2, lo, hi, extra=(t(c), t(k_eta), t(two_k_eta), s2 is not None)
    )
    return lo.reshape(shape), hi.reshape(shape)


# ------------------------------------------------------------ transcendentals
# exp, log, log1p, expm1, tanh rounded down / up (kernels/elementary.py, no libm).
# One loop keyed by an op code, like _point_loop (closures made by a factory
# collide in Numba's on-disk cache).

from . import elementary as _el  # noqa: E402

_EXP_RD, _EXP_RU, _LOG_RD, _LOG_RU, _LOG1P_RD, _LOG1P_RU, _EXPM1_RD, _EXPM1_RU = range(8)
_TANH_RD, _TANH_RU = 8, 9


@njit
def _elementary_loop(a, out, op):
    for i in range(out.size):
        x = a[i]
        if op == _EXP_RD:
            out[i] = _el.exp_rd(x)
        elif op == _EXP_RU:
            out[i] = _el.exp_ru(x)
        elif op == _LOG_RD:
            out[i] = _el.log_rd(x)
        elif op == _LOG_RU:
            out[i] = _el.log_ru(x)
        elif op == _LOG1P_RD:
            out[i] = _el.log1p_rd(x)
        elif op == _LOG1P_RU:
            out[i] = _el.log1p_ru(x)
        elif op == _EXPM1_RD:
            out[i] = _el.expm1_rd(x)
        elif op == _EXPM1_RU:
            out[i] = _el.expm1_ru(x)
        elif op == _TANH_RD:
            out[i] = _el.tanh_rd(x)
        else:
            out[i] = _el.tanh_ru(x)


def _elementary(op, name):
    def kernel(a):
        a = np.asarray(a)
        if a.dtype not in (np.float32, np.float64):
            raise TypeError(f"{name} takes a float32 or float64 array, not {a.dtype}")
        (fa,) = _flat(a)
        out = np.empty_like(fa)
        _run(_elementary_loop, fa, out, extra=(op,))
        return out.reshape(a.shape)

    kernel.__name__ = name
    kernel.__doc__ = f"Elementwise ``{name}`` of a float32/float64 array (same shape and dtype)."
    return kernel


exp_rd = _elementary(_EXP_RD, "exp_rd")
exp_ru = _elementary(_EXP_RU, "exp_ru")
log_rd = _elementary(_LOG_RD, "log_rd")
log_ru = _elementary(_LOG_RU, "log_ru")
log1p_rd = _elementary(_LOG1P_RD, "log1p_rd")
log1p_ru = _elementary(_LOG1P_RU, "log1p_ru")
expm1_rd = _elementary(_EXPM1_RD, "expm1_rd")
expm1_ru = _elementary(_EXPM1_RU, "expm1_ru")
tanh_rd = _elementary(_TANH_RD, "tanh_rd")
tanh_ru = _elementary(_TANH_RU, "tanh_ru")
