"""Interval matrix product on BLAS (NumPy) or cuBLAS (CuPy), with a proven error bound.

:func:`matmul_bounds` takes plain ``(lo, hi)`` arrays, the array namespace
and the backend's kernel module (:mod:`intervalnn.kernels.cpu` or ``gpu``:
``midrad``, ``mag_bound``, ``gemm_enclose``); ``Interval.__matmul__`` and
:func:`intervalnn.matmul` call it.

Midpoint-radius product (Rump, "Fast and parallel interval arithmetic", BIT
39, 1999) with the floating-point error of the BLAS calls themselves bounded
for *any* summation order, blocking, thread count and FMA use.  Notation:
``k`` inner dimension, ``u`` unit roundoff, ``eta`` smallest positive
subnormal, ``gamma = k u / (1 - k u)``, ``fl`` a BLAS product.  Higham
(*Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5), with
``eta/2`` per product for underflow (gradual-underflow additions are exact):

    |fl(X Y) - X Y| <= gamma |X||Y| + k eta,
    so for X, Y >= 0:  X Y <= (fl(X Y) + k eta) / (1 - gamma).

For ``A = <mA, rA>``, ``B = <mB, rB>`` every product of members lies in
``mA mB +- (|mA| rB + rA |mB| + rA rB)``, and ``|P - mA mB| <= gamma |mA||mB| + k eta``
with ``P = fl(mA mB)``.  With ``g = RU(gamma)``, ``X = RU(|mA| + rA)`` and
``Y = RU(rB + g |mB|)`` the exact ``X Y`` dominates
``|mA| rB + gamma |mA||mB| + rA rB``; adding ``S2 = fl(rA |mB|)`` and each
product's own error bound gives

    rad = RU( RU(S1 + S2 + 2 k eta) * RU(1/(1 - gamma)) + k eta ),  S1 = fl(X Y),
    C = [RD(P - rad), RU(P + rad)].

A point factor needs one GEMM less (its radius is 0; see :func:`matmul_bounds`).
Entries where a product overflows become ``[-inf, +inf]``, and so do entries
where a member's *float* product could overflow (its partial sums near the
dtype's max; :func:`_may_overflow`).

Float products of members.  The enclosure also contains ``fl(a b)`` for
every ``a`` in ``A``, ``b`` in ``B`` computed in the same dtype in any order
(the GEMM of a user's float model), whose error is at most ``gamma (|mA| +
rA)(|mB| + rB) + k eta = gamma X (|mB| + rB) + k eta``: the code takes ``g =
RU(2 gamma)`` in ``Y``, multiplies by ``RU((1 + gamma)/(1 - gamma))`` instead
of ``RU(1/(1 - gamma))`` (the extra ``gamma X rB``) and adds ``2 k eta``
twice.  The point-factor forms follow in the same way.  The error bound
assumes that float evaluation does not overflow: entries where it could are
``[-inf, +inf]`` (:func:`_may_overflow` screens a whole product in O(size)).
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .bounds import enclose_real


def gemm_constants(k: int, dtype):
    """``RU(2 gamma_k)``, ``RU((1 + gamma_k)/(1 - gamma_k))``, ``RU(2 k eta)`` twice, in ``dtype``.

    The constants of the module docstring's bound for inner dimension ``k``:
    ``g`` (``Y = RU(rB + g |mB|)``), the factor ``c`` of ``rad``, and the
    underflow terms added inside and outside it.  Each is the exact rational
    rounded up (:func:`~intervalnn.kernels.bounds.enclose_real`).  The
    doubled terms also cover a second product of members in ``dtype`` with
    any summation order (the float GEMM a user runs).  ``ValueError`` once
    ``2 k u >= 1`` (``gamma`` then no longer bounds the error).
    """
    info = np.finfo(dtype)
    u = Fraction(1, 2 ** (info.nmant + 1))
    if 2 * k * u >= 1:
        raise ValueError(f"inner dimension {k} is too large for a sound {dtype} bound")
    gamma = k * u / (1 - k * u)
    eta = Fraction(float(info.smallest_subnormal))
    up = lambda x: enclose_real(x, dtype)[1]  # noqa: E731
    return up(2 * gamma), up((1 + gamma) / (1 - gamma)), up(2 * k * eta), up(2 * k * eta)


def matmul_bounds(xp, kern, alo, ahi, blo, bhi) -> tuple:
    """``(lo, hi)`` enclosing ``{x @ y : alo <= x <= ahi, blo <= y <= bhi}`` (the module's bound).

    ``xp`` is the array namespace (``numpy.matmul`` / ``cupy.matmul`` run the
    three products), ``kern`` the backend's kernel module; all four arrays
    share one float dtype, the shapes follow ``numpy.matmul`` (batches too).
    """
    a, b = _midrad(xp, kern, alo, ahi), _midrad(xp, kern, blo, bhi)
    return matmul_midrad_bounds(xp, kern, *a, *b)


def _midrad(xp, kern, lo, hi) -> tuple:
    """``(mid, rad)`` of a factor, ``(lo, None)`` for a point factor (every ``lo == hi``)."""
    return (lo, None) if bool(xp.all(lo == hi)) else kern.midrad(lo, hi)


def matmul_midrad_bounds(xp, kern, ma, ra, mb, rb) -> tuple:
    """The same enclosure for factors given as midpoint and radius: every member of ``A``
    lies within ``ra`` of ``ma`` entrywise (``ra >= 0``, rounded up; ``None`` or all zero
    for a point factor), and likewise ``B``.

    A point factor drops its radius GEMM: ``rB = 0`` gives ``S1 = fl(RU(rA + g
    |mA|) |mB|)``, ``rA = 0`` gives ``S1 = fl(|mA| RU(rB + g |mB|))``, and
    ``S2 = 0`` in both.  Callers that move data exactly (im2col patches of an
    image's midpoints and radii) pass their own ``(mid, rad)`` pairs here.
    """
    if hasattr(kern, "check_gemm_mode"):  # cuBLAS: refuse TF32 / reduced precision set since import
        kern.check_gemm_mode()
    g, inv_1mg, k_eta, two_k_eta = gemm_constants(ma.shape[-1], ma.dtype)
    a_point = ra is None or not bool(xp.any(ra))
    b_point = rb is None or not bool(xp.any(rb))
    p = xp.matmul(ma, mb)
    s2 = None
    if b_point:  # S1 = fl(RU(rA + g|mA|) |mB|) covers rA|mB| + gamma|mA||mB|
        s1 = xp.matmul(kern.mag_bound(ma, g, None if a_point else ra), xp.abs(mb))
    elif a_point:  # S1 = fl(|mA| RU(rB + g|mB|))
        s1 = xp.matmul(xp.abs(ma), kern.mag_bound(mb, g, rb))
    else:  # S1 = fl(RU(|mA| + rA) RU(rB + g|mB|)),  S2 = fl(rA |mB|)
        s1 = xp.matmul(kern.mag_bound(ma, 1.0, ra), kern.mag_bound(mb, g, rb))
        s2 = xp.matmul(ra, xp.abs(mb))
    lo, hi = kern.gemm_enclose(p, s1, s2, inv_1mg, k_eta, two_k_eta)
    if _may_overflow(xp, ma, None if a_point else ra, mb, None if b_point else rb):
        # a member's float product may overflow where RU(|mA| + rA) RU(|mB| + rB) nears the
        # dtype's max: there the float result may be +-inf, so the bound must be too
        big = xp.matmul(kern.mag_bound(ma, 1.0, ra), kern.mag_bound(mb, 1.0, rb))
        risky = ~(big * inv_1mg < np.finfo(ma.dtype).max / 8)  # also NaN and inf
        lo, hi = xp.where(risky, -np.inf, lo), xp.where(risky, np.inf, hi)
    return lo, hi


def _may_overflow(xp, ma, ra, mb, rb) -> bool:
    """False when no float evaluation of a member's product can overflow (``16 k max|a|
    max|b| <`` the dtype's max, in float64: partial sums and products stay below ``(1 +
    gamma) sum |a_i b_i| < 2 k max|a| max|b|``); True sends the caller to the entrywise check.

    The entrywise check: with ``T = fl(X Y)``, ``X = RU(|mA| + rA)``, ``Y = RU(|mB| + rB)``
    and ``c = RU((1 + gamma) / (1 - gamma)) >= 1 / (1 - gamma)``, ``sum |a_i b_i| <= X Y <=
    (T + k eta) / (1 - gamma) <= T c + 2 k eta``; an entry with ``fl(T c) < max / 8`` keeps
    every partial sum and product of every member below ``(1 + gamma) max / 8 (1 + u) +
    tiny < max / 2`` (``gamma < 1``): its float evaluation is finite and the finite bound
    covers it.
    """

    def magnitude(m, r) -> float:
        top = max(float(m.max()), -float(m.min())) if m.size else 0.0
        return top + (float(r.max()) if r is not None and r.size else 0.0)

    k = ma.shape[-1]
    bound = 16.0 * k * magnitude(ma, ra) * magnitude(mb, rb)
    return not bound < float(np.finfo(ma.dtype).max)
