"""Interval matrix product: :func:`matmul`, the function form of ``@`` on intervals.

The bound itself -- a midpoint-radius product on BLAS (NumPy) or cuBLAS
(CuPy) whose own rounding errors are bounded for any summation order, with
its proof and constants -- lives in :mod:`intervalnn.kernels.gemm`;
``Interval.__matmul__`` calls it, and this function dispatches to that
operator.  A factor may also be given as a :class:`MidRad` box (midpoints and
radii), which saves a pass where the caller has moved those arrays exactly
(a convolution's im2col patches of an image's midpoints and radii).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .backend import backend_of
from .interval import Interval
from .kernels.gemm import matmul_midrad_bounds


class MidRad(NamedTuple):
    """The box ``[mid - rad, mid + rad]``: ``rad >= 0`` rounded up, so every member is
    within ``rad`` of ``mid`` (as ``Interval.midrad()`` gives it, or an exact rearrangement)."""

    mid: Any
    rad: Any


def matmul(a, b) -> Interval:
    """Enclosure of ``{x @ y : x in a, y in b}`` for intervals, :class:`MidRad` boxes or points.

    Either operand may be an ``Interval``, a ``MidRad`` or an array of the
    other's dtype and backend; the shapes follow ``numpy.matmul`` (including
    batches).
    """
    if isinstance(a, MidRad) or isinstance(b, MidRad):
        bk = backend_of((a if isinstance(a, MidRad) else b).mid)
        (ma, ra), (mb, rb) = _factor(a), _factor(b)
        if ma.dtype != mb.dtype:
            raise TypeError(f"cannot combine {ma.dtype} and {mb.dtype} intervals")
        return Interval._new(*matmul_midrad_bounds(bk.xp, bk.kernels, ma, ra, mb, rb))
    if isinstance(a, Interval):
        return a.__matmul__(b)
    if isinstance(b, Interval):
        return b.__rmatmul__(a)
    return Interval(a).__matmul__(b)


def _factor(x) -> tuple:
    """``(mid, rad)`` of a factor; ``rad`` None for a point."""
    if isinstance(x, MidRad):
        return x.mid, x.rad
    x = x if isinstance(x, Interval) else Interval(x)  # a point array, checked finite
    return (x.lo, None) if bool(x.is_point().all()) else x.midrad()
