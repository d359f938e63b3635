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

import numpy as np
from numba import njit

from . import rounding as r


def _flat(*arrays):
    """C-contiguous 1-D views (copies only when an input is not contiguous)."""
    return [np.ascontiguousarray(a).reshape(-1) for a in arrays]


# ------------------------------------------------------------ loops


@njit(cache=True)
def _add_loop(alo, ahi, blo, bhi, lo, hi):
    for i in range(lo.size):
        lo[i] = r.add_rd(alo[i], blo[i])
        hi[i] = r.add_ru(ahi[i], bhi[i])


@njit(cache=True)
def _sub_loop(alo, ahi, blo, bhi, lo, hi):
    for i in range(lo.size):
        lo[i] = r.add_rd(alo[i], -bhi[i])
        hi[i] = r.add_ru(ahi[i], -blo[i])


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
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


@njit(cache=True)
def _sqrt_loop(alo, ahi, lo, hi):
    """Square root for intervals with lo >= 0 (checked by the caller)."""
    for i in range(lo.size):
        lo[i] = r.sqrt_rd(alo[i])
        hi[i] = r.sqrt_ru(ahi[i])


# Point ops share one loop keyed by an op code: Numba's on-disk cache cannot
# tell apart closures made by one factory.
_ADD_RD, _ADD_RU, _MUL_RD, _MUL_RU, _DIV_RD, _DIV_RU = range(6)


@njit(cache=True)
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
        loop(*flat, lo, hi)
        return lo.reshape(shape), hi.reshape(shape)

    kernel.__name__ = loop.__name__.strip("_").replace("_loop", "")
    return kernel


def _unary_interval(loop):
    def kernel(alo, ahi):
        shape = alo.shape
        flat = _flat(alo, ahi)
        lo, hi = np.empty_like(flat[0]), np.empty_like(flat[0])
        loop(*flat, lo, hi)
        return lo.reshape(shape), hi.reshape(shape)

    kernel.__name__ = loop.__name__.strip("_").replace("_loop", "")
    return kernel


def _binary_point(op, name):
    def kernel(a, b):
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        dtype = np.result_type(a, b)
        fa, fb = _flat(np.broadcast_to(a, shape).astype(dtype, copy=False),
                       np.broadcast_to(b, shape).astype(dtype, copy=False))
        out = np.empty_like(fa)
        _point_loop(fa, fb, out, op)
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
