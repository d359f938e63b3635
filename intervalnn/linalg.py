"""Interval matrix product on BLAS (NumPy) or cuBLAS (CuPy), with a proven error bound.

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

A point factor needs one GEMM less (its radius is 0; see ``matmul``).
Entries where a product overflows become ``[-inf, +inf]``.

Float products of members.  The enclosure also contains ``fl(a b)`` for
every ``a`` in ``A``, ``b`` in ``B`` computed in the same dtype in any order
(the GEMM of a user's float model), whose error is at most ``gamma (|mA| +
rA)(|mB| + rB) + k eta = gamma X (|mB| + rB) + k eta``: the code takes ``g =
RU(2 gamma)`` in ``Y``, multiplies by ``RU((1 + gamma)/(1 - gamma))`` instead
of ``RU(1/(1 - gamma))`` (the extra ``gamma X rB``) and adds ``2 k eta``
twice.  The point-factor forms follow in the same way.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from .interval import Interval, _coerce, _scalar_bounds


def _gemm_constants(k: int, dtype: np.dtype):
    """``RU(2 gamma_k)``, ``RU((1 + gamma_k)/(1 - gamma_k))``, ``RU(2 k eta)`` twice, in ``dtype``.

    The doubled terms also cover a second product of members in ``dtype``
    with any summation order (the float GEMM a user runs; see the module docstring).
    """
    info = np.finfo(dtype)
    u = Fraction(1, 2 ** (info.nmant + 1))
    if 2 * k * u >= 1:
        raise ValueError(f"inner dimension {k} is too large for a sound {dtype} bound")
    gamma = k * u / (1 - k * u)
    eta = Fraction(float(info.smallest_subnormal))
    up = lambda x: _scalar_bounds(x, dtype)[1]  # noqa: E731
    return up(2 * gamma), up((1 + gamma) / (1 - gamma)), up(2 * k * eta), up(2 * k * eta)


def matmul(a, b) -> Interval:
    """Enclosure of ``{x @ y : x in a, y in b}`` for intervals or point arrays.

    Either operand may be an ``Interval`` or an array of the other's dtype and
    backend; the shapes follow ``numpy.matmul`` (including batches).
    """
    if not isinstance(a, Interval) and not isinstance(b, Interval):
        a = Interval(a)
    a, b = (a, _coerce(a, b)) if isinstance(a, Interval) else (_coerce(b, a), b)
    bk = a.backend
    xp, k = bk.xp, bk.kernels
    if hasattr(k, "check_gemm_mode"):  # cuBLAS: refuse TF32 / reduced precision set since import
        k.check_gemm_mode()
    inner = a.shape[-1]
    g, inv_1mg, k_eta, two_k_eta = _gemm_constants(inner, a.dtype)

    a_point, b_point = bool(xp.all(a.lo == a.hi)), bool(xp.all(b.lo == b.hi))
    ma, ra = (a.lo, None) if a_point else a.midrad()
    mb, rb = (b.lo, None) if b_point else b.midrad()
    p = xp.matmul(ma, mb)
    s2 = None
    if b_point:  # S1 = fl(RU(rA + g|mA|) |mB|) covers rA|mB| + gamma|mA||mB|
        s1 = xp.matmul(k.mag_bound(ma, g, ra), xp.abs(mb))
    elif a_point:  # S1 = fl(|mA| RU(rB + g|mB|))
        s1 = xp.matmul(xp.abs(ma), k.mag_bound(mb, g, rb))
    else:  # S1 = fl(RU(|mA| + rA) RU(rB + g|mB|)),  S2 = fl(rA |mB|)
        s1 = xp.matmul(k.mag_bound(ma, 1.0, ra), k.mag_bound(mb, g, rb))
        s2 = xp.matmul(ra, xp.abs(mb))
    return Interval._new(*k.gemm_enclose(p, s1, s2, inv_1mg, k_eta, two_k_eta))
