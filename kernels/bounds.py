"""Outward rounding outside the array loops: exact reals, narrowed arrays, a-priori error factors.

The host-side companions of :mod:`intervalnn.kernels.rounding` (pure Python
and the array namespace ``xp``, NumPy or CuPy, passed in; nothing here is
compiled).  Each function returns a float (or array) on the stated side of
an exact real value, with the proof in its docstring:

* :func:`enclose_real`: ``[RD(x), RU(x)]`` of an exact real ``x`` (a Python
  ``int``, ``Fraction`` or finite ``float``) in float32 or float64;
* :func:`narrow_down` / :func:`narrow_up`: arrays converted to a narrower
  float dtype, rounded down / up (exact when widening);
* :func:`sum_error_factor`: ``RU(gamma_n / (1 - gamma_n))``, the relative
  rounding-error factor of a float sum of ``n + 1`` terms in any order.

The GEMM's constants live with the GEMM bound in :mod:`intervalnn.kernels.gemm`.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np


def enclose_real(x, dtype) -> tuple:
    """The tightest ``(RD(x), RU(x))`` in ``dtype`` (float32 or float64) for an exact real ``x``.

    ``x`` is an ``int``, a ``Fraction`` or a finite float (read exactly);
    ``ValueError`` for an infinite or NaN float.  Beyond the largest float
    ``MAX`` the bounds are ``(MAX, inf)`` or ``(-inf, -MAX)``.

    Proof.  ``f = float(Fraction)`` is ``RN64(x)`` (Python rounds a
    ``Fraction`` correctly).  For float32, ``RN32(f)`` is still one of the
    two float32 neighbours of ``x``: ``RD32(x) <= x <= RU32(x)`` are float64
    values, and ``RN64`` and ``RN32`` are monotone, so ``RD32(x) <=
    RN32(RN64(x)) <= RU32(x)``.  So the candidate ``c`` is ``RD(x)`` or
    ``RU(x)``; if ``c > x`` it is ``RU(x)`` and ``RD(x)`` is its predecessor
    (one ``nextafter`` down), if ``c < x`` symmetrically, and if ``c = x`` both
    bounds are ``c``.  For ``|x| <= MAX`` neither rounding overflows (``MAX`` is
    a float64 and both roundings are monotone), so ``c`` is finite.
    """
    dtype = np.dtype(dtype)
    if isinstance(x, float | np.floating) and not math.isfinite(x):
        raise ValueError(f"{x} is not a real number: intervals combine only with finite scalars")
    exact = x if isinstance(x, Fraction) else Fraction(float(x) if isinstance(x, np.generic) else x)
    big = dtype.type(np.finfo(dtype).max)
    if abs(exact) > Fraction(float(big)):
        return (big, dtype.type(np.inf)) if exact > 0 else (dtype.type(-np.inf), -big)
    lo = hi = dtype.type(float(exact))
    if Fraction(float(lo)) > exact:
        lo = np.nextafter(lo, dtype.type(-np.inf))
    elif Fraction(float(hi)) < exact:
        hi = np.nextafter(hi, dtype.type(np.inf))
    return lo, hi


def narrow_down(xp, x, dtype):
    """``x`` (an array) in ``dtype``, rounded down where it is narrower than ``x.dtype``.

    Widening (or the same dtype) is exact: a plain conversion.  Narrowing:
    ``y = RN(x)`` by ``astype``; converting ``y`` back is exact, and ``y > x``
    means ``y = RU(x) != x``, whose predecessor is ``RD(x)`` (a finite ``x``
    beyond the range converts to ``inf`` and steps back to ``MAX``; ``-inf``
    and NaN stay as they are).
    """
    y = x.astype(dtype)
    if y.dtype.itemsize < x.dtype.itemsize:
        y = xp.where(y.astype(x.dtype) > x, xp.nextafter(y, y.dtype.type(-np.inf)), y)
    return y


def narrow_up(xp, x, dtype):
    """``x`` (an array) in ``dtype``, rounded up where narrower (mirrors :func:`narrow_down`)."""
    y = x.astype(dtype)
    if y.dtype.itemsize < x.dtype.itemsize:
        y = xp.where(y.astype(x.dtype) < x, xp.nextafter(y, y.dtype.type(np.inf)), y)
    return y


def sum_error_factor(n: int, dtype) -> float:
    """``RU(gamma_n / (1 - gamma_n))`` in ``dtype``, ``gamma_n = n u / (1 - n u)``, ``u`` = 2^-p.

    The rounding error of a float sum of ``n + 1`` terms ``x_i`` in any
    order, blocking or pairing is at most ``gamma_n sum |x_i|`` (Higham,
    *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 4.4; each
    term meets at most ``n`` roundings, and additions that underflow are
    exact, so no subnormal term is needed).  With ``A = fl(sum |x_i|)``, a sum
    of nonnegative terms, ``A >= (1 - gamma_n) sum |x_i|``, so the error is at
    most ``gamma_n / (1 - gamma_n) A``: this factor, rounded up (the caller
    multiplies by ``A`` rounding up).  ``ValueError`` once ``n u >= 1/2``.
    """
    dtype = np.dtype(dtype)
    u = Fraction(1, 2 ** (np.finfo(dtype).nmant + 1))
    if n * u >= Fraction(1, 2):
        raise ValueError(f"{n} terms are too many for a rounding-error bound in {dtype}")
    gamma = n * u / (1 - n * u)
    return enclose_real(gamma / (1 - gamma), dtype)[1]
