"""Interval matrix product: :func:`matmul`, the function form of ``@`` on intervals.

The bound itself -- a midpoint-radius product on BLAS (NumPy) or cuBLAS
(CuPy) whose own rounding errors are bounded for any summation order, with
its proof and constants -- lives in :mod:`intervalnn.kernels.gemm`;
``Interval.__matmul__`` calls it, and this function dispatches to that
operator.
"""

from __future__ import annotations

from .interval import Interval


def matmul(a, b) -> Interval:
    """Enclosure of ``{x @ y : x in a, y in b}`` for intervals or point arrays.

    Either operand may be an ``Interval`` or an array of the other's dtype and
    backend; the shapes follow ``numpy.matmul`` (including batches).
    """
    if isinstance(a, Interval):
        return a.__matmul__(b)
    if isinstance(b, Interval):
        return b.__rmatmul__(a)
    return Interval(a).__matmul__(b)
