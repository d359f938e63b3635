"""exp, log, log1p, expm1, tanh with directed rounding, evaluated without libm.

Every ``*_rd64`` / ``*_ru64`` function returns a float64 lower / upper bound
of the real function value at a float64 argument; ``*_rd32`` / ``*_ru32`` do
the same in float32 (float32 values held in float64 variables, as in
:mod:`intervalnn.kernels.rounding`).  No libm transcendental is called: the
value is computed in double-double (dd) arithmetic from round-to-nearest
``+ - * /``, FMA and exact scalings (``ldexp``/``frexp``), with a proven
relative error bound ``delta``, and the bound is turned into floats by
:func:`_bracket`.  The float64 results are the tightest ones (``RD``/``RU`` of
the exact value) unless the exact value lies within ``delta`` of a float, and
then at most one ulp wider.  The float32 functions round the float64 bounds
outward, so they are tightest except within one float64 ulp of a float32.

Notation: ``u = 2^-53``; a dd number is ``(h, l)`` with value ``h + l`` and
``|l| <= u |h|``; capital letters are dd values, ``c_j`` exact reals.

Error-free transformations (Muller et al., *Handbook of Floating-Point
Arithmetic*, 2nd ed., 4.3 - 4.4):

* ``_two_sum(a, b) = (s, e)`` with ``s + e = a + b`` exactly (always);
  ``_fast_two_sum`` likewise when ``|a| >= |b|`` or ``a = 0``.
* ``_two_prod(a, b) = (p, e)`` with ``p + e = a b`` exactly (FMA residual).

Lemmas for the dd operations below (inputs normalised; one rounding of a real
``t`` is ``t (1 + eps)`` with ``|eps| <= u``):

* D1 ``_dd_mul``: ``|C - A B| <= 8.01 u^2 |A B|``.  With ``p + e0 = ah bh``
  exact, the computed low part is ``fl(e0 + fl(fl(ah bl) + fl(al bh)))``;
  the dropped ``al bl`` is ``<= u^2 |ah bh|``, the two products err by
  ``<= u^2 |ah bh|`` each, their sum by ``<= 2u^2 (1+u)``, the last addition
  by ``<= 3u^2 (1+u)^2`` (all times ``|ah bh|``): ``8 u^2 (1+u)^2 |ah bh|``,
  and ``|ah bh| <= |A B| / (1-u)^2``.  The final FastTwoSum is exact since
  ``|e| <= 3.01 u |p|``.
* D2 ``_dd_add``: ``|C - (A + B)| <= 3.01 u^2 (|A| + |B|)``.  ``s + e0 =
  ah + bh`` exact with ``|e0| <= u |s|``; ``fl(al + bl)`` errs by
  ``<= u^2 (|ah| + |bh|)``, and ``fl(e0 + t)`` by ``<= 2u^2 (1+u)(|ah| +
  |bh|)``; the final TwoSum is exact.  Cancellation only enters through
  ``kappa = (|A| + |B|) / |A + B|``.
* D3 ``_dd_div``: ``|Q - N/D| <= 23.5 u^2 |N/D|``.  ``q1 = fl(nh/dh)``;
  ``p + pe = q1 dh`` exactly and ``nh - p`` is exact (Sterbenz: ``|p - nh| <=
  2.01 u |nh|``), so the residual ``rho = N - q1 D = (nh - p) - pe + nl -
  q1 dl`` has four terms of size ``<= 2.01u, 1.01u, u, 1.01u`` (times
  ``|nh|``); its three additions and one product err by ``<= 13.11 u^2
  |nh|`` in all; then ``q2 = fl(r/dh)`` errs by ``<= 5.06 u^2 |nh/dh|`` and
  dividing by ``dh`` instead of ``D`` by ``<= 5.07 u^2 |nh/dh|``; finally
  ``|nh/dh| <= |N/D| (1+u)/(1-u)``.  FastTwoSum is exact (``|q2| <= 5.1 u
  |q1|``).
* H (Horner).  If the computed ``P_j = C_j + Y P_(j+1) + iota_j`` (one
  ``_dd_mul`` and one ``_dd_add``, whose errors make up ``iota_j``) and the
  exact ``p_j = c_j + Y p_(j+1)`` with the same ``Y``, then ``P_0 - p_0 =
  sum_(j<n) Y^j (C_j - c_j + iota_j) + Y^n (P_n - p_n)``, an identity: an
  error injected at level ``j`` is damped by ``|Y|^j``.
* Underflow.  The lemmas assume no underflow.  With gradual underflow each
  operation (an FMA residual included) adds at most ``2^-1075`` absolute
  error on top; a few hundred operations, propagated with factors below
  ``2^10``, stay below ``2^-1050`` in all, while every dd result here has
  magnitude ``>= 2^-62`` and the slack between each proved bound and its
  ``delta`` is ``>= 2^-160`` absolute.

The constants (``ln 2 / 64`` in three parts, ``2^(j/64)``, ``log(1 + i/64)``,
series coefficients) were computed with MPFR at 400 bits and rounded to
nearest; ``tests/test_elementary.py`` re-derives them and checks every
property used below (bits of ``_L1``, dd accuracy ``<= u^2`` relative, the
size of the remaining ``ln 2`` error).
"""

import math

import numpy as np
from numba import njit

from .rounding import (
    F64_MAX,
    INF,
    dtype_generic,
    fma,
    next64,
    prev64,
    to32_rd,
    to32_ru,
    two_sum_err,
)

_NAN = math.nan
_TINY_ARG = 2.0**-60  # below this, closed-form brackets (see the functions)
_SQRT_HALF = 0.7071067811865476  # any split point near 1/sqrt(2) works
_SMALLEST = 5e-324

# Cody-Waite split of L = ln(2)/64: _L1 has 36 significant bits, so k * _L1 is
# exact for |k| < 2^17; |L - (_L1 + _L2 + _L3)| < 2^-156.
_INVL = float.fromhex("0x1.71547652b82fep+6")  # ~ 64 / ln 2 (only needs to be close)
_L1 = float.fromhex("0x1.62e42fefa0000p-7")
_L2 = float.fromhex("0x1.cf79abc9e3b3ap-46")
_L3 = float.fromhex("-0x1.ff0342542fc33p-100")
# ln 2 as dd, |ln 2 - (_LN2H + _LN2L)| < 2^-110.
_LN2H = float.fromhex("0x1.62e42fefa39efp-1")
_LN2L = float.fromhex("0x1.abc9e3b39803fp-56")


def _hex_array(text):
    return np.array([float.fromhex(s) for s in text.split()])


# 2^(j/64) for j = 0..63, as dd rounded to nearest.
_TH = _hex_array("""
0x1.0000000000000p+0 0x1.02c9a3e778061p+0 0x1.059b0d3158574p+0 0x1.0874518759bc8p+0
0x1.0b5586cf9890fp+0 0x1.0e3ec32d3d1a2p+0 0x1.11301d0125b51p+0 0x1.1429aaea92de0p+0
0x1.172b83c7d517bp+0 0x1.1a35beb6fcb75p+0 0x1.1d4873168b9aap+0 0x1.2063b88628cd6p+0
0x1.2387a6e756238p+0 0x1.26b4565e27cddp+0 0x1.29e9df51fdee1p+0 0x1.2d285a6e4030bp+0
0x1.306fe0a31b715p+0 0x1.33c08b26416ffp+0 0x1.371a7373aa9cbp+0 0x1.3a7db34e59ff7p+0
0x1.3dea64c123422p+0 0x1.4160a21f72e2ap+0 0x1.44e086061892dp+0 0x1.486a2b5c13cd0p+0
0x1.4bfdad5362a27p+0 0x1.4f9b2769d2ca7p+0 0x1.5342b569d4f82p+0 0x1.56f4736b527dap+0
0x1.5ab07dd485429p+0 0x1.5e76f15ad2148p+0 0x1.6247eb03a5585p+0 0x1.6623882552225p+0
0x1.6a09e667f3bcdp+0 0x1.6dfb23c651a2fp+0 0x1.71f75e8ec5f74p+0 0x1.75feb564267c9p+0
0x1.7a11473eb0187p+0 0x1.7e2f336cf4e62p+0 0x1.82589994cce13p+0 0x1.868d99b4492edp+0
0x1.8ace5422aa0dbp+0 0x1.8f1ae99157736p+0 0x1.93737b0cdc5e5p+0 0x1.97d829fde4e50p+0
0x1.9c49182a3f090p+0 0x1.a0c667b5de565p+0 0x1.a5503b23e255dp+0 0x1.a9e6b5579fdbfp+0
0x1.ae89f995ad3adp+0 0x1.b33a2b84f15fbp+0 0x1.b7f76f2fb5e47p+0 0x1.bcc1e904bc1d2p+0
0x1.c199bdd85529cp+0 0x1.c67f12e57d14bp+0 0x1.cb720dcef9069p+0 0x1.d072d4a07897cp+0
0x1.d5818dcfba487p+0 0x1.da9e603db3285p+0 0x1.dfc97337b9b5fp+0 0x1.e502ee78b3ff6p+0
0x1.ea4afa2a490dap+0 0x1.efa1bee615a27p+0 0x1.f50765b6e4540p+0 0x1.fa7c1819e90d8p+0
""")
_TL = _hex_array("""
0x0.0p+0 -0x1.19083535b085dp-56 0x1.d73e2a475b465p-55 0x1.186be4bb284ffp-57
0x1.8a62e4adc610bp-54 0x1.03a1727c57b53p-59 -0x1.6c51039449b3ap-54 -0x1.32fbf9af1369ep-54
-0x1.19041b9d78a76p-55 0x1.e5b4c7b4968e4p-55 0x1.e016e00a2643cp-54 0x1.dc775814a8495p-55
0x1.9b07eb6c70573p-54 0x1.2bd339940e9d9p-55 0x1.612e8afad1255p-55 0x1.0024754db41d5p-54
0x1.6f46ad23182e4p-55 0x1.32721843659a6p-54 -0x1.63aeabf42eae2p-54 -0x1.5e436d661f5e3p-56
0x1.ada0911f09ebcp-55 -0x1.ef3691c309278p-58 0x1.89b7a04ef80d0p-59 0x1.3c1a3b69062f0p-56
0x1.d4397afec42e2p-56 -0x1.4b309d25957e3p-54 -0x1.07abe1db13cadp-55 0x1.9bb2c011d93adp-54
0x1.6324c054647adp-54 0x1.ba6f93080e65ep-54 -0x1.383c17e40b497p-54 -0x1.bb60987591c34p-54
-0x1.bdd3413b26456p-54 -0x1.bbe3a683c88abp-57 -0x1.16e4786887a99p-55 -0x1.0245957316dd3p-54
-0x1.41577ee04992fp-55 0x1.05d02ba15797ep-56 -0x1.d4c1dd41532d8p-54 -0x1.fc6f89bd4f6bap-54
0x1.6e9f156864b27p-54 0x1.5cc13a2e3976cp-55 -0x1.75fc781b57ebcp-57 -0x1.d185b7c1b85d1p-54
0x1.c7c46b071f2bep-56 -0x1.359495d1cd533p-54 -0x1.d2f6edb8d41e1p-54 0x1.0fac90ef7fd31p-54
0x1.7a1cd345dcc81p-54 -0x1.2805e3084d708p-57 -0x1.5584f7e54ac3bp-56 0x1.23dd07a2d9e84p-55
0x1.11065895048ddp-55 0x1.2884dff483cadp-54 0x1.503cbd1e949dbp-56 -0x1.cbc3743797a9cp-54
0x1.2ed02d75b3707p-55 0x1.c2300696db532p-54 -0x1.1a5cd4f184b5cp-54 0x1.39e8980a9cc8fp-55
-0x1.e9c23179c2893p-54 0x1.dc7f486a4b6b0p-54 0x1.9d3e12dd8a18bp-54 0x1.74853f3a5931ep-55
""")

# log(1 + i/64) for i = -19..27 (index i + 19), as dd rounded to nearest.
_LCH = _hex_array("""
-0x1.68ac83e9c6a14p-2 -0x1.522ae0738a3d8p-2 -0x1.3c25277333184p-2 -0x1.269621134db92p-2
-0x1.1178e8227e47cp-2 -0x1.f991c6cb3b379p-3 -0x1.d1037f2655e7bp-3 -0x1.a93ed3c8ad9e3p-3
-0x1.823c16551a3c2p-3 -0x1.5bf406b543db2p-3 -0x1.365fcb0159016p-3 -0x1.1178e8227e47cp-3
-0x1.da727638446a2p-4 -0x1.9335e5d594989p-4 -0x1.4d3115d207eacp-4 -0x1.08598b59e3a07p-4
-0x1.894aa149fb343p-5 -0x1.0415d89e74444p-5 -0x1.0205658935847p-6 0x0.0p+0
0x1.fc0a8b0fc03e4p-7 0x1.f829b0e783300p-6 0x1.77458f632dcfcp-5 0x1.f0a30c01162a6p-5
0x1.341d7961bd1d1p-4 0x1.6f0d28ae56b4cp-4 0x1.a926d3a4ad563p-4 0x1.e27076e2af2e6p-4
0x1.0d77e7cd08e59p-3 0x1.29552f81ff523p-3 0x1.44d2b6ccb7d1ep-3 0x1.5ff3070a793d4p-3
0x1.7ab890210d909p-3 0x1.9525a9cf456b4p-3 0x1.af3c94e80bff3p-3 0x1.c8ff7c79a9a22p-3
0x1.e27076e2af2e6p-3 0x1.fb9186d5e3e2bp-3 0x1.0a324e27390e3p-2 0x1.1675cababa60ep-2
0x1.22941fbcf7966p-2 0x1.2e8e2bae11d31p-2 0x1.3a64c556945eap-2 0x1.4618bc21c5ec2p-2
0x1.51aad872df82dp-2 0x1.5d1bdbf5809cap-2 0x1.686c81e9b14afp-2
""")
_LCL = _hex_array("""
-0x1.a64eadd740178p-58 0x1.8f7e9b38a6979p-57 0x1.2ad27e50a8ec6p-56 -0x1.e0efadd9db02bp-56
0x1.0e63a5f01c691p-57 -0x1.f665066f980a2p-57 -0x1.60629242471a2p-57 -0x1.bcafa9de97203p-57
0x1.1232ce70be781p-57 0x1.1f5b44c0df7e7p-61 -0x1.7d411a5b944adp-58 0x1.0e63a5f01c691p-58
-0x1.401fa71733019p-58 0x1.478a85704ccb7p-58 -0x1.769f42c7842ccp-58 0x1.dd7009902bf32p-58
-0x1.a8be97660a23dp-60 -0x1.c05cf1d753622p-59 -0x1.27c8e8416e71fp-60 0x0.0p+0
-0x1.83092c59642a1p-62 0x1.33e3f04f1ef23p-60 0x1.18d3ca87b9296p-59 0x1.85f325c5bbacdp-59
-0x1.b599f227becbbp-58 -0x1.906d99184b992p-58 0x1.942f48aa70ea9p-58 -0x1.61578001e0162p-60
0x1.9a5dc5e9030acp-57 0x1.301771c407dbfp-57 0x1.9f4f6543e1f88p-57 -0x1.bc60efafc6f6ep-58
0x1.be36b2d6a0608p-59 0x1.d904c1d4e2e26p-57 -0x1.398cff3641985p-58 -0x1.4f689f8434012p-57
-0x1.61578001e0162p-59 -0x1.caaae64f21acbp-57 0x1.7dcfde8061c03p-56 0x1.ce63eab883717p-61
-0x1.76f5eb09628afp-56 -0x1.8f4cdb95ebdf9p-56 -0x1.c68651945f97cp-57 0x1.f42decdeccf1dp-56
0x1.3927ac19f55e3p-59 0x1.4236383dc7fe1p-56 -0x1.ddea0f7f58e3dp-57
""")

# expm1(R)/R = sum_j R^j / (j+1)!: dd coefficients for j = 2..5, doubles for 6..10.
_F3H, _F3L = float.fromhex("0x1.5555555555555p-3"), float.fromhex("0x1.5555555555555p-57")
_F4H, _F4L = float.fromhex("0x1.5555555555555p-5"), float.fromhex("0x1.5555555555555p-59")
_F5H, _F5L = float.fromhex("0x1.1111111111111p-7"), float.fromhex("0x1.1111111111111p-63")
_F6H, _F6L = float.fromhex("0x1.6c16c16c16c17p-10"), float.fromhex("-0x1.f49f49f49f49fp-65")
_F7 = float.fromhex("0x1.a01a01a01a01ap-13")
_F8 = float.fromhex("0x1.a01a01a01a01ap-16")
_F9 = float.fromhex("0x1.71de3a556c734p-19")
_F10 = float.fromhex("0x1.27e4fb7789f5cp-22")
_F11 = float.fromhex("0x1.ae64567f544e4p-26")
# atanh(s)/s = sum_j w^j / (2j+1), w = s^2: dd for 1/3, 1/5, 1/7, doubles for 1/9..1/13.
_A3H, _A3L = float.fromhex("0x1.5555555555555p-2"), float.fromhex("0x1.5555555555555p-56")
_A5H, _A5L = float.fromhex("0x1.999999999999ap-3"), float.fromhex("-0x1.999999999999ap-57")
_A7H, _A7L = float.fromhex("0x1.2492492492492p-3"), float.fromhex("0x1.2492492492492p-57")
_A9 = float.fromhex("0x1.c71c71c71c71cp-4")
_A11 = float.fromhex("0x1.745d1745d1746p-4")
_A13 = float.fromhex("0x1.3b13b13b13b14p-4")

# Relative error bounds of the dd results (proofs in the docstrings) and the
# tolerance factor 2 * delta used by _bracket (|y| <= 2 |h| covers y vs h).
EXP_DELTA = 2.0**-100
LOG_DELTA = 2.0**-96
EXPM1_DELTA = 2.0**-92
TANH_DELTA = 2.0**-89
_TANH_TINY = 2.0**-27  # below: x - x^3/3 < tanh(x) < x, so tanh(x) in (prev(x), x)
_TANH_SAT = 19.1  # above: 0 < 1 - tanh(x) < 2^-54, so tanh(x) in (prev(1), 1)


# ---------------------------------------------------------------- dd arithmetic


@njit(cache=True)
def _two_sum(a, b):
    s = a + b
    return s, two_sum_err(a, b, s)


@njit(cache=True)
def _fast_two_sum(a, b):
    s = a + b
    return s, b - (s - a)


@njit(cache=True)
def _two_prod(a, b):
    p = a * b
    return p, fma(a, b, -p)


@njit(cache=True)
def _dd_mul(ah, al, bh, bl):
    """dd product, lemma D1: relative error <= 8.01 u^2."""
    p, e = _two_prod(ah, bh)
    e += ah * bl + al * bh
    return _fast_two_sum(p, e)


@njit(cache=True)
def _dd_add(ah, al, bh, bl):
    """dd sum, lemma D2: error <= 3.01 u^2 (|A| + |B|)."""
    s, e = _two_sum(ah, bh)
    e += al + bl
    return _two_sum(s, e)


@njit(cache=True)
def _dd_div(nh, nl, dh, dl):
    """dd quotient, lemma D3: relative error <= 23.5 u^2."""
    q1 = nh / dh
    p, pe = _two_prod(q1, dh)
    r = (((nh - p) - pe) + nl) - q1 * dl
    return _fast_two_sum(q1, r / dh)


@njit(cache=True)
def _bracket(h, l, eps):
    """Floats ``(a, b)`` with ``a <= y <= b`` for any real ``|y - (h + l)| <= eps``.

    Needs ``h = fl(h + l)`` (so ``|l|`` is at most half the gap from ``h`` to
    its neighbour on ``l``'s side), ``h`` normal and ``0 < eps <= 2^-60 |h|``
    (at most a quarter of either gap).  If ``l >= eps`` then ``h <= y <
    next(h)``; if ``l <= -eps`` then ``prev(h) < y <= h``; otherwise ``y`` is
    within ``2 eps`` of ``h``, so ``prev(h) < y < next(h)``.  In the first two
    cases ``(a, b)`` are the tightest bounds unless ``y`` is exactly a float.
    """
    if l >= eps:
        return h, next64(h)
    if l <= -eps:
        return prev64(h), h
    return prev64(h), next64(h)


@njit(cache=True)
def _scale(a, b, q):
    """Bounds on ``V 2^q`` from float bounds ``a <= V <= b``.

    For ``q >= -1020`` the callers' scaled bounds are normal (``exp``: ``a >=
    0.98``; ``expm1``: ``|a 2^q| >= 2^-61``), so ``ldexp`` is exact unless it
    overflows: ``a 2^q = inf`` means ``V 2^q > MAX``, and the lower bound
    becomes ``MAX``.  For ``q < -1020`` (``exp`` only, ``0 < a <=
    b < 4``, ``q >= -1076``) the result lies in or near the subnormal range:
    ``w = a 2^(q+1074)`` is exact, ``floor(w) 2^-1074`` is an exact multiple of
    the smallest subnormal and ``<= a 2^q``; likewise ``ceil`` from above,
    which is never 0 for ``b > 0``.
    """
    if q < -1020:
        s = q + 1074
        lo = math.ldexp(np.floor(math.ldexp(a, s)), -1074)
        hi = math.ldexp(np.ceil(math.ldexp(b, s)), -1074)
        return lo, hi
    lo = math.ldexp(a, q)
    if lo == INF:
        lo = F64_MAX
    return lo, math.ldexp(b, q)


# ---------------------------------------------------------------- exp / expm1


@njit(cache=True)
def _reduce(x):
    """``(k, rh, rl)`` with ``x = k L + R + d``, ``L = ln(2)/64``, ``R = rh + rl``.

    For ``|x| <= 746``: ``|d| <= 2^-111`` and ``|R| <= 0.0054153``.

    Proof.  ``k = floor(fl(x fl(64/ln2)) + 1/2)`` is within ``1/2 + 2.3e-11``
    of ``x/L`` (two roundings of a value ``< 2^17``), so the exact ``r = x -
    k L`` has ``|r| <= 0.0054153``; ``|k| < 2^17``.  ``k _L1`` is exact (17 +
    36 bits), ``t + te = x - k _L1`` and ``p + pe = k _L2`` exactly, ``s + se
    = t - p`` exactly.  Then ``r = s + se + te - pe - k _L3 - k lam`` with
    ``|lam| < 2^-156``.  Sizes: ``|t|, |s| < 0.0055``, so ``|te|, |se| <=
    2^-61``, ``|pe| <= u 2^-28.1``, ``|k _L3| <= 2^-82``: the three rounded
    additions forming the low part err by ``<= 3 u 2^-59.9 = 2^-111.3`` in all,
    ``fl(k _L3)`` by ``2^-135`` and ``k lam`` is ``< 2^-139``: ``|d| <=
    2^-111``.  The last TwoSum is exact.
    """
    k = np.floor(x * _INVL + 0.5)
    t, te = _two_sum(x, -(k * _L1))
    p, pe = _two_prod(k, _L2)
    s, se = _two_sum(t, -p)
    lo = ((te + se) - pe) - k * _L3
    rh, rl = _two_sum(s, lo)
    return int(k), rh, rl


@njit(cache=True)
def _expm1_reduced(rh, rl):
    """``expm1(R)`` as dd for ``|R| <= 0.0054153``; relative error ``<= 12.3 u^2``.

    Proof.  ``expm1(R) = R p_0`` with ``p_j = sum_{i>=j} c_i R^(i-j)``,
    ``c_i = 1/(i+1)!``.  Levels ``j = 0..5`` use one ``_dd_mul`` and one
    ``_dd_add`` (lemma H with ``Y = R``); level 6 is the tail ``c_6 + R(c_7 +
    ... + R c_10)`` in float64 on ``rh``.  Since ``|R p_(j+1)| <= 1.004 |R|
    c_j / (j+2) <= 0.0028 c_j``, the error injected at level ``j <= 5`` is
    ``<= c_j u^2 (1 + 8.01 * 0.0028 + 3.01 * 1.003) <= 4.04 u^2 c_j`` (dd
    coefficient, D1, D2), and ``sum_j |R|^j 4.04 u^2 c_j <= 4.06 u^2``.  The
    float64 tail errs by ``<= 3u c_6`` relative (two roundings in the last
    step plus damped earlier ones and ``|rl| <= u |rh|``), weighted by
    ``|R|^6 <= 2^-45.1``: ``<= 0.14 u^2``; truncation after ``c_10`` is
    ``<= |R|^11 / 12! <= 0.04 u^2``.  So ``|P_0 - p_0| <= 4.24 u^2 <= 4.26 u^2
    p_0`` (``p_0 >= 0.997``), and the product with ``R`` (D1) gives
    ``(1 + 4.26 u^2)(1 + 8.01 u^2) - 1 <= 12.3 u^2``.
    """
    t = (((_F11 * rh + _F10) * rh + _F9) * rh + _F8) * rh + _F7
    ph, pl = _dd_mul(t, 0.0, rh, rl)
    ph, pl = _dd_add(ph, pl, _F6H, _F6L)
    ph, pl = _dd_mul(ph, pl, rh, rl)
    ph, pl = _dd_add(ph, pl, _F5H, _F5L)
    ph, pl = _dd_mul(ph, pl, rh, rl)
    ph, pl = _dd_add(ph, pl, _F4H, _F4L)
    ph, pl = _dd_mul(ph, pl, rh, rl)
    ph, pl = _dd_add(ph, pl, _F3H, _F3L)
    ph, pl = _dd_mul(ph, pl, rh, rl)
    ph, pl = _dd_add(ph, pl, 0.5, 0.0)
    ph, pl = _dd_mul(ph, pl, rh, rl)
    ph, pl = _dd_add(ph, pl, 1.0, 0.0)
    return _dd_mul(ph, pl, rh, rl)


@njit(cache=True)
def _exp_dd(x):
    """``(h, l, q)`` with ``exp(x) = 2^q y``, ``|y - (h + l)| <= EXP_DELTA y``.

    For ``2^-60 <= |x| <= 746``.  ``y = 2^(j/64) exp(r)`` with ``k = 64 q +
    j`` and ``r`` from :func:`_reduce`; ``y in [0.99, 2.02]``.

    Proof.  ``exp(r) = exp(R) exp(d)``: relative ``<= 2^-111 = 0.03 u^2``.
    ``G = 1 + E1`` (D2, ``|E1| <= 0.00545``, E1 from :func:`_expm1_reduced`)
    errs by ``<= 3.01 u^2 * 1.0055 + 12.3 u^2 * 0.00545 <= 3.1 u^2``, relative
    to ``exp(R) >= 0.9946``: ``<= 3.12 u^2``.  The table entry errs by ``<=
    u^2`` relative and the final product (D1) by ``8.01 u^2``.  In all ``<=
    12.2 u^2 < 2^-102 < EXP_DELTA``.
    """
    k, rh, rl = _reduce(x)
    eh, el = _expm1_reduced(rh, rl)
    gh, gl = _dd_add(1.0, 0.0, eh, el)
    j = k & 63
    h, l = _dd_mul(_TH[j], _TL[j], gh, gl)
    return h, l, k >> 6


@njit(cache=True)
def _expm1_dd(x):
    """``(h, l, q)`` with ``expm1(x) = 2^q v``, ``|v - (h + l)| <= EXPM1_DELTA |v|``.

    For ``2^-60 <= |x|``, ``-40 <= x <= 746``.  With ``k = 64 q + j`` from
    :func:`_reduce` and ``T = 2^(j/64)``: ``k = 0`` gives ``R = x`` exactly
    and ``v = E1 = expm1(x)`` (relative ``12.3 u^2``).  Otherwise ``v = A + B``
    with ``A = T expm1(R)`` and ``B = T - 2^-q``.

    Proof for ``k != 0``.  ``|E1| <= 0.00545``; ``A`` errs by ``<= (1 + 12.3 +
    8.01) u^2 |A| + 0.03 u^2 T <= 0.15 u^2 T`` (table, E1, D1, reduction);
    ``B`` by ``<= u^2 T + 3.01 u^2 (T + 2^-q)`` (table, D2); the sum by
    ``<= 3.03 u^2 (T + 2^-q)`` (D2).  In all ``<= 7.2 u^2 (T + 2^-q)``.
    Relative to ``|v| = 2^-q |e^x - 1|`` that is ``7.2 u^2 (e^(kL) + 1) /
    |e^x - 1|`` with ``|x - kL| <= L/2 (1 + 1e-10)`` and ``|x| >= 0.0054152``
    (as ``k != 0``); the ratio is largest at the smallest ``|x|`` and is
    ``<= 371`` on both sides, so the relative error is ``<= 2672 u^2 <
    2^-94.6 < EXPM1_DELTA``.
    """
    k, rh, rl = _reduce(x)
    eh, el = _expm1_reduced(rh, rl)
    if k == 0:
        return eh, el, 0
    j = k & 63
    q = k >> 6
    th, tl = _TH[j], _TL[j]
    ah, al = _dd_mul(th, tl, eh, el)
    bh, bl = _dd_add(th, tl, -math.ldexp(1.0, -q), 0.0)
    h, l = _dd_add(ah, al, bh, bl)
    return h, l, q


@njit(cache=True)
def _exp_bounds(x):
    """``(lo, hi)`` floats with ``lo <= exp(x) <= hi`` (tightest unless noted).

    Edges: ``exp(+-0) = 1`` exactly; ``0 < |x| < 2^-60``: ``exp(x)`` lies
    strictly between 1 and its neighbour toward ``x`` (``|exp(x) - 1| <=
    2|x| < 2^-59``), so the bracket is that pair; ``x > 709.79 > ln(MAX)``:
    ``(MAX, inf)``; ``x < -745.2 < ln(2^-1075)``: ``(0, 2^-1074)``;
    ``exp(+-inf) = inf, 0`` exactly.  Otherwise :func:`_exp_dd`,
    :func:`_bracket` with ``eps = 2 EXP_DELTA |h|`` and :func:`_scale`
    (subnormal and overflowing results included).
    """
    if x != x:
        return x, x
    if x == 0.0:
        return 1.0, 1.0
    if abs(x) < _TINY_ARG:
        return (1.0, next64(1.0)) if x > 0.0 else (prev64(1.0), 1.0)
    if x > 709.79:
        return (INF, INF) if x == INF else (F64_MAX, INF)
    if x < -745.2:
        return (0.0, 0.0) if x == -INF else (0.0, _SMALLEST)
    h, l, q = _exp_dd(x)
    a, b = _bracket(h, l, abs(h) * (2.0 * EXP_DELTA))
    return _scale(a, b, q)


@njit(cache=True)
def _expm1_bounds(x):
    """``(lo, hi)`` with ``lo <= expm1(x) <= hi``.

    Edges: ``expm1(+-0) = +-0`` exactly; ``0 < |x| < 2^-60``: ``x <
    expm1(x) < x + x^2 < next(x)``; ``x > 709.79``: ``(MAX, inf)``; ``x <
    -40``: ``-1 < expm1(x) < -1 + 2^-57``, so ``(-1, -1 + 2^-53)``;
    ``expm1(+-inf) = inf, -1``.  Otherwise :func:`_expm1_dd`,
    :func:`_bracket`, :func:`_scale` (never subnormal: ``|expm1(x)| >=
    2^-61`` here).
    """
    if x != x or x == 0.0:
        return x, x
    if abs(x) < _TINY_ARG:
        return x, next64(x)
    if x > 709.79:
        return (INF, INF) if x == INF else (F64_MAX, INF)
    if x < -40.0:
        return (-1.0, -1.0) if x == -INF else (-1.0, next64(-1.0))
    h, l, q = _expm1_dd(x)
    a, b = _bracket(h, l, abs(h) * (2.0 * EXPM1_DELTA))
    return _scale(a, b, q)


# ---------------------------------------------------------------- log / log1p


@njit(cache=True)
def _log_dd(ah, al):
    """``log(ah + al)`` as dd with relative error ``<= LOG_DELTA`` (``2^-96``).

    For finite ``ah > 0``, ``|al| <= u ah`` and ``ah + al != 1``.

    Method.  ``ah = m 2^e`` with ``m in [1/sqrt2, sqrt2)`` (``frexp``, exact),
    ``ml = al 2^-e``; ``c = 1 + i/64`` with ``i = round(64 (m - 1))`` in
    ``[-19, 27]`` (exact, so ``|m - c| <= 1/128``); ``log(m + ml) = log(c) +
    2 atanh(s)``, ``s = (m + ml - c) / (m + ml + c)``, ``|s| <= 0.005588``,
    ``w = s^2 <= 2^-14.97``; ``atanh(s) = s sum_j w^j / (2j + 1)``.

    Proof.  ``N = (m - c) + ml`` is exact (Sterbenz, then TwoSum), ``D = m +
    c + ml`` errs by ``<= 2.02 u^2`` relative, so ``S`` (D3) by ``<= 25.6
    u^2`` and ``W = S^2`` by ``<= 59.2 u^2``, which moves the series by
    ``<= 59.2 u^2 w / 3 < 0.001 u^2``.  Series levels ``j = 0..3`` (lemma H,
    ``Y = W``, ``|W P_(j+1)| <= 3.2e-5 c_j``) inject ``<= 4.02 u^2 c_j``; the
    float64 tail ``1/9 + w/11 + w^2/13`` errs by ``<= 3u/9`` weighted by
    ``w^4``; truncation is ``<= w^7 / 15 < 0.16 u^2``: the series ``P >= 1``
    errs by ``<= 4.19 u^2`` relative, and ``a0 = 2 S P`` (D1) by ``<= 38 u^2
    |a0|``.  ``e ln2`` as ``(e _LN2H exact) + fl(e _LN2L)`` renormalised errs
    by ``<= 2 u^2 |e ln2|``, a table entry by ``<= u^2 |L_i|``.  Two D2
    additions then give a total ``<= 44.1 u^2 (|e ln2| + |L_i| + |a0|)``.
    Finally ``(|e ln2| + |log c| + |log(m/c)|) / |log(ah + al)| <= 3.04`` over
    all cells and exponents (worst near ``i = -1, e = 0`` and at ``m ~
    1/sqrt2, e = 1``; checked in the tests), so the relative error is ``<=
    134.1 u^2 < 2^-98.9``, inside ``LOG_DELTA`` with a factor 7 to spare.
    """
    f, e = math.frexp(ah)
    if f < _SQRT_HALF:
        f *= 2.0
        e -= 1
    ml = math.ldexp(al, -e)
    i = int(np.floor((f - 1.0) * 64.0 + 0.5))
    c = 1.0 + i * 0.015625
    nh, nl = _two_sum(f - c, ml)
    sh, sl = _two_sum(f, c)
    dh, dl = _fast_two_sum(sh, sl + ml)
    s_h, s_l = _dd_div(nh, nl, dh, dl)
    wh, wl = _dd_mul(s_h, s_l, s_h, s_l)
    t = (_A13 * wh + _A11) * wh + _A9
    ph, pl = _dd_mul(t, 0.0, wh, wl)
    ph, pl = _dd_add(ph, pl, _A7H, _A7L)
    ph, pl = _dd_mul(ph, pl, wh, wl)
    ph, pl = _dd_add(ph, pl, _A5H, _A5L)
    ph, pl = _dd_mul(ph, pl, wh, wl)
    ph, pl = _dd_add(ph, pl, _A3H, _A3L)
    ph, pl = _dd_mul(ph, pl, wh, wl)
    ph, pl = _dd_add(ph, pl, 1.0, 0.0)
    h, l = _dd_mul(s_h, s_l, ph, pl)
    h, l = 2.0 * h, 2.0 * l
    if i != 0:
        h, l = _dd_add(_LCH[i + 19], _LCL[i + 19], h, l)
    if e != 0:
        fe = float(e)
        eh, el = _two_prod(fe, _LN2H)
        eh, el = _fast_two_sum(eh, el + fe * _LN2L)
        h, l = _dd_add(eh, el, h, l)
    return h, l


@njit(cache=True)
def _log_bounds(x):
    """``(lo, hi)`` with ``lo <= log(x) <= hi``.

    Edges: ``log(1) = 0`` exactly; ``log(+-0) = -inf`` (both bounds: the
    limit, as an interval endpoint); ``log(inf) = inf``; NaN for ``x < 0``.
    Otherwise :func:`_log_dd` and :func:`_bracket` with ``eps = 2 LOG_DELTA
    |h|`` (``|log x| >= 2^-54``, so ``h`` is normal).
    """
    if not x > 0.0:
        return (-INF, -INF) if x == 0.0 else (_NAN, _NAN)
    if x == INF:
        return INF, INF
    if x == 1.0:
        return 0.0, 0.0
    h, l = _log_dd(x, 0.0)
    return _bracket(h, l, abs(h) * (2.0 * LOG_DELTA))


@njit(cache=True)
def _log1p_bounds(x):
    """``(lo, hi)`` with ``lo <= log1p(x) <= hi``.

    Edges: ``log1p(+-0) = +-0`` exactly; ``0 < |x| < 2^-60``: ``x - x^2 <
    log1p(x) < x``, so ``(prev(x), x)``; ``log1p(-1) = -inf``; ``log1p(inf) =
    inf``; NaN for ``x < -1``.  Otherwise ``1 + x = ah + al`` exactly
    (TwoSum), :func:`_log_dd` and :func:`_bracket` (``|log1p x| >= 2^-61``).
    """
    if not x >= -1.0:
        return _NAN, _NAN
    if x == -1.0:
        return -INF, -INF
    if x == INF:
        return INF, INF
    if x == 0.0:
        return x, x
    if abs(x) < _TINY_ARG:
        return prev64(x), x
    ah, al = _two_sum(1.0, x)
    h, l = _log_dd(ah, al)
    return _bracket(h, l, abs(h) * (2.0 * LOG_DELTA))


# ---------------------------------------------------------------- tanh


@njit(cache=True)
def _tanh_dd(x):
    """``tanh(x)`` as dd with relative error ``<= TANH_DELTA`` (``2^-89``), ``2^-27 <= x <= 19.1``.

    Method.  ``tanh(x) = E / (E + 2)`` with ``E = expm1(2x) > 0``; ``2x`` is
    exact, and :func:`_expm1_dd` gives ``E = 2^q v`` with ``q >= 0`` (as
    ``2x > 0``), so ``E = (h 2^q, l 2^q)`` exactly (no underflow, and
    ``E <= e^38.2 < 2^56``).  No cancellation: every term is positive.

    Proof.  Write ``d1 = EXPM1_DELTA = 2^-92`` (the proved bound of
    :func:`_expm1_dd`, ``2^-94.6``, with slack).  ``|E' - E| <= d1 E``.  ``D'
    = E' + 2`` (D2, both terms positive) errs by ``<= 3.01 u^2 (E' + 2)``
    from ``E' + 2``, which is within ``d1 E <= d1 (E + 2)`` of ``E + 2``: so
    ``D' = (E + 2)(1 + b)``, ``|b| <= d1 + 3.02 u^2``.  ``Q = E' / D'`` (D3)
    errs by ``<= 23.5 u^2`` relative, so ``Q = tanh(x) (1 + a)(1 + g) / (1 +
    b)`` with ``|a| <= d1``, ``|g| <= 23.5 u^2``: relative error ``<= 2 d1 +
    26.6 u^2 + O(d1^2) < 2^-90.9``, inside ``TANH_DELTA`` with a factor 3.7
    to spare.  Magnitudes: ``E >= 2^-26``, ``E + 2 >= 2`` and ``Q >=
    2^-28``, so the underflow remark of the module docstring applies.
    """
    h, l, q = _expm1_dd(2.0 * x)
    eh, el = math.ldexp(h, q), math.ldexp(l, q)
    dh, dl = _dd_add(eh, el, 2.0, 0.0)
    return _dd_div(eh, el, dh, dl)


@njit(cache=True)
def _tanh_bounds(x):
    """``(lo, hi)`` with ``lo <= tanh(x) <= hi``, by odd symmetry from ``t = |x|``.

    Edges: ``tanh(+-0) = +-0`` exactly.  ``0 < t < 2^-27``: ``t - t^3/3 <
    tanh(t) < t`` (``f(t) = tanh(t) - t + t^3/3`` has ``f(0) = 0`` and ``f'
    = t^2 - tanh(t)^2 > 0``), and with ``2^e <= t < 2^(e+1)``, ``e <= -28``,
    ``t^3/3 < 2^(3e+3)/3 <= 2^(e-53)/3`` is less than the gap under ``t``
    (for subnormal ``t`` too), so ``(prev(t), t)``.  ``t > 19.1``: ``1 -
    tanh(t) = 2 / (e^(2t) + 1) < 2 e^-38.2 < 2^-54``, so ``(prev(1), 1)``;
    ``tanh(inf) = 1``.  Otherwise :func:`_tanh_dd` and :func:`_bracket` with
    ``eps = 2 TANH_DELTA h`` (``h >= 2^-28`` is normal).  ``tanh(t)`` is
    never a float for a float ``t != 0`` (Lindemann), so the bounds are the
    tightest unless ``tanh(t)`` lies within ``2^-88`` relative of a float.
    """
    if x != x or x == 0.0:
        return x, x
    t = abs(x)
    if t < _TANH_TINY:
        lo, hi = prev64(t), t
    elif t > _TANH_SAT:
        lo, hi = (1.0, 1.0) if t == INF else (prev64(1.0), 1.0)
    else:
        h, l = _tanh_dd(t)
        lo, hi = _bracket(h, l, h * (2.0 * TANH_DELTA))
    return (lo, hi) if x > 0.0 else (-hi, -lo)


# ---------------------------------------------------------------- public scalars


@njit(cache=True)
def exp_rd64(x):
    return _exp_bounds(x)[0]


@njit(cache=True)
def exp_ru64(x):
    return _exp_bounds(x)[1]


@njit(cache=True)
def expm1_rd64(x):
    return _expm1_bounds(x)[0]


@njit(cache=True)
def expm1_ru64(x):
    return _expm1_bounds(x)[1]


@njit(cache=True)
def log_rd64(x):
    return _log_bounds(x)[0]


@njit(cache=True)
def log_ru64(x):
    return _log_bounds(x)[1]


@njit(cache=True)
def log1p_rd64(x):
    return _log1p_bounds(x)[0]


@njit(cache=True)
def log1p_ru64(x):
    return _log1p_bounds(x)[1]


@njit(cache=True)
def tanh_rd64(x):
    return _tanh_bounds(x)[0]


@njit(cache=True)
def tanh_ru64(x):
    return _tanh_bounds(x)[1]


# float32: the float64 bounds rounded outward (RD32 of a float64 lower bound
# is a float32 lower bound).  Overflow, underflow and subnormals of float32
# all come out of the conversion; float64 NaN and infinities pass through.


@njit(cache=True)
def exp_rd32(x):
    return to32_rd(exp_rd64(x), 0.0)


@njit(cache=True)
def exp_ru32(x):
    return to32_ru(exp_ru64(x), 0.0)


@njit(cache=True)
def expm1_rd32(x):
    return to32_rd(expm1_rd64(x), 0.0)


@njit(cache=True)
def expm1_ru32(x):
    return to32_ru(expm1_ru64(x), 0.0)


@njit(cache=True)
def log_rd32(x):
    return to32_rd(log_rd64(x), 0.0)


@njit(cache=True)
def log_ru32(x):
    return to32_ru(log_ru64(x), 0.0)


@njit(cache=True)
def log1p_rd32(x):
    return to32_rd(log1p_rd64(x), 0.0)


@njit(cache=True)
def log1p_ru32(x):
    return to32_ru(log1p_ru64(x), 0.0)


@njit(cache=True)
def tanh_rd32(x):
    return to32_rd(tanh_rd64(x), 0.0)


@njit(cache=True)
def tanh_ru32(x):
    return to32_ru(tanh_ru64(x), 0.0)


# ------------------------------------------------- dtype-generic dispatch

exp_rd = dtype_generic(exp_rd64, exp_rd32, 1)
exp_ru = dtype_generic(exp_ru64, exp_ru32, 1)
expm1_rd = dtype_generic(expm1_rd64, expm1_rd32, 1)
expm1_ru = dtype_generic(expm1_ru64, expm1_ru32, 1)
log_rd = dtype_generic(log_rd64, log_rd32, 1)
log_ru = dtype_generic(log_ru64, log_ru32, 1)
log1p_rd = dtype_generic(log1p_rd64, log1p_rd32, 1)
log1p_ru = dtype_generic(log1p_ru64, log1p_ru32, 1)
tanh_rd = dtype_generic(tanh_rd64, tanh_rd32, 1)
tanh_ru = dtype_generic(tanh_ru64, tanh_ru32, 1)
