"""Directed rounding of + - * / sqrt from round-to-nearest arithmetic.

This module is the one owner of rounding in the CPU engine: every other
kernel rounds through these scalar ``@njit`` functions.  Two strategies:

* **tightest** (``add_rd`` ... ``sqrt_ru``, ``mul_bounds``): each function
  returns ``RD(exact)`` (``*_rd``) or ``RU(exact)`` (``*_ru``), the IEEE 754 /
  IEEE 1788 *tightest* result, for the real operation on its floating-point
  arguments (the elementwise and layered kernels; proof below);
* **one-flop widening** (``widen_dn`` / ``widen_up`` and their product and
  quotient forms, with a rounding *unit*; section "one-flop widening" at the
  end): from a round-to-nearest result, one multiply-add gives a float beyond
  its predecessor / successor -- at most two ulps wide, branch-free, no
  error-free transformation -- for the fused kernels (``fused.py``).  The
  unit ``UNIT64_REAL`` encloses exact real results (the tightest this rule
  gives: exactly the neighbours for normal values); ``UNIT64`` / ``UNIT32``
  also contain the same computation done in float64 / float32 by a user
  (float SGD of the box's members, sums in any order).  ``above`` is the
  one-ulp upper bound the GEMM error terms take.

The tightest strategy:

How: the round-to-nearest result ``r`` is computed, then the sign of the exact
error ``exact - r`` decides whether ``r`` is already on the right side or must
move one ulp (``nextafter``).  The sign comes from an error-free
transformation:

* sum: TwoSum (Knuth, TAOCP vol. 2, 4.2.2; Muller et al., *Handbook of
  Floating-Point Arithmetic*, 2nd ed., Alg. 4.4), exact with gradual
  underflow; an overflowed ``r`` is mapped to ``+-inf`` or ``+-MAX``.
* product, quotient, square root: the residual ``a*b - r``, ``a - r*b``,
  ``a - r*r`` from one fused multiply-add.  FMA rounds the exact residual
  once, and rounding to nearest never flips a sign, so the *sign* is right
  unless the exact residual is nonzero and below half the smallest subnormal.
  That can only happen deep in the underflow range; there the operands are
  scaled by exact powers of two (``ldexp``) until every nonzero residual is a
  multiple of the smallest subnormal, and the residual is evaluated again.

float32 is evaluated in float64: a float32 product is exact in float64, and a
float32 quotient/square-root residual is exact in float64 (Muller et al. 4.4);
a float32 sum is *not* always exact in float64, so its TwoSum error term
breaks ties.  ``fastmath`` must stay off: with it TwoSum's error term is 0.
"""

import math
from functools import partial

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

F64_MAX = np.finfo(np.float64).max
F32_MAX = np.float32(np.finfo(np.float32).max)
INF = math.inf
# Below this magnitude an FMA residual sign may have underflowed (Boldo &
# Muller's bound e_a + e_b >= e_min + p - 1 with margin); take the slow path.
_TINY = 2.0**-960


@intrinsic
def fma(typingctx, a, b, c):
    """Fused multiply-add ``a*b + c`` with one rounding (LLVM ``llvm.fma``)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        ty = args[0].type
        name = "llvm.fma.f64" if ty == ir.DoubleType() else "llvm.fma.f32"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ty, [ty] * 3), name)
        return builder.call(fn, args)

    return sig, codegen


def _bitcast(src, dst):
    """An intrinsic reinterpreting the bits of a ``src`` value as ``dst``."""

    @intrinsic
    def cast(typingctx, x):
        if x != src:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(dst))

        return dst(src), codegen

    return cast


_f64_bits = _bitcast(types.float64, types.int64)
bits_f64 = _bitcast(types.int64, types.float64)  # public: fused.py builds powers of two with it
_f32_bits = _bitcast(types.float32, types.int32)
_bits_f32 = _bitcast(types.int32, types.float32)
_SIGN64 = np.int64(-(2**63))
_SIGN32 = np.int32(-(2**31))


# nextafter on the bit pattern: branch-free selects that LLVM can vectorise
# (np.nextafter is a libm call).  Ordered integers of the same sign are
# ordered floats; zero is treated as -0 going down and +0 going up.


@njit(cache=True)
def prev64(x):
    """The largest float64 below ``x`` (``-inf`` stays ``-inf``)."""
    i = _SIGN64 if x == 0.0 else _f64_bits(x)
    i = i + 1 if i < 0 else i - 1
    return x if x == -INF else bits_f64(i)


@njit(cache=True)
def next64(x):
    """The smallest float64 above ``x`` (``+inf`` stays ``+inf``)."""
    i = np.int64(0) if x == 0.0 else _f64_bits(x)
    i = i - 1 if i < 0 else i + 1
    return x if x == INF else bits_f64(i)


@njit(cache=True)
def prev32(x):
    """The largest float32 below the float32 value ``x`` (held in a float64)."""
    i = _SIGN32 if x == 0.0 else _f32_bits(np.float32(x))
    i = np.int32(i + 1 if i < 0 else i - 1)
    return x if x == -INF else np.float64(_bits_f32(i))


@njit(cache=True)
def next32(x):
    i = np.int32(0) if x == 0.0 else _f32_bits(np.float32(x))
    i = np.int32(i - 1 if i < 0 else i + 1)
    return x if x == INF else np.float64(_bits_f32(i))


@njit(cache=True)
def _down64(x, step):
    """``prev64(x)`` if ``step`` else ``x``, for ``x != 0`` and ``x != -inf`` when stepping.

    Branch-free: one integer add on the bit pattern (hot loops only).
    """
    d = (np.int64(-1) if x > 0 else np.int64(1)) if step else np.int64(0)
    return bits_f64(_f64_bits(x) + d)


@njit(cache=True)
def _up64(x, step):
    """``next64(x)`` if ``step`` else ``x``, for ``x != 0`` and ``x != +inf`` when stepping."""
    d = (np.int64(1) if x > 0 else np.int64(-1)) if step else np.int64(0)
    return bits_f64(_f64_bits(x) + d)


@njit(cache=True)
def _down32(x, step):
    """float32 ``_down64``."""
    d = (np.int32(-1) if x > 0 else np.int32(1)) if step else np.int32(0)
    return _bits_f32(np.int32(_f32_bits(x) + d))


@njit(cache=True)
def _up32(x, step):
    d = (np.int32(1) if x > 0 else np.int32(-1)) if step else np.int32(0)
    return _bits_f32(np.int32(_f32_bits(x) + d))


@njit(cache=True)
def two_sum_err(a, b, s):
    """Exact ``a + b - s`` for ``s = fl(a + b)`` (Knuth's TwoSum)."""
    bb = s - a
    return (a - (s - bb)) + (b - bb)


# ---------------------------------------------------------------- float64


@njit(cache=True)
def add_rd64(a, b):
    s = a + b
    e = two_sum_err(a, b, s)
    # Step down when the exact sum is below s, when finite operands overflowed
    # to +inf, or when TwoSum itself overflowed (NaN error, sign unknown).
    # s = 0 only for an exact zero sum, so the bit step never meets 0 or -inf.
    step = (e < 0) | ((s == INF) & (a != INF) & (b != INF)) | ((e != e) & (abs(s) <= F64_MAX))
    return _down64(s, step)


@njit(cache=True)
def add_ru64(a, b):
    s = a + b
    e = two_sum_err(a, b, s)
    step = (e > 0) | ((s == -INF) & (a != -INF) & (b != -INF)) | ((e != e) & (abs(s) <= F64_MAX))
    return _up64(s, step)


@njit(cache=True)
def _mul_residual_sign64(a, b, p):
    """Sign of ``a*b - p`` for nonzero a, b and ``p = fl(a*b)``, ``|p| < 2^-960``."""
    if p == 0.0:  # underflowed to zero: the exact product has the operands' sign
        return 1.0 if (a > 0) == (b > 0) else -1.0
    # |a*b| < 2^-960 and |b| >= 2^-1074 give |a| < 2^115: scaling cannot overflow,
    # and every nonzero scaled residual is a multiple of 2^-1074.
    return fma(math.ldexp(a, 537), math.ldexp(b, 537), -math.ldexp(p, 1074))


@njit(cache=True)
def _mul_rd64_slow(a, b, p):
    if a == 0.0 or b == 0.0:  # IEEE 1788: 0 * anything (also inf) = 0 for bounds
        return 0.0
    return prev64(p) if _mul_residual_sign64(a, b, p) < 0 else p


@njit(cache=True)
def _mul_ru64_slow(a, b, p):
    if a == 0.0 or b == 0.0:
        return 0.0
    return next64(p) if _mul_residual_sign64(a, b, p) > 0 else p


@njit(cache=True)
def mul_rd64(a, b):
    p = a * b
    if not abs(p) >= _TINY:  # zero, tiny or NaN (0 * inf): rare, exact slow path
        return _mul_rd64_slow(a, b, p)
    # Overflow from finite operands: p = +inf gives r = -inf (step to MAX),
    # p = -inf gives r = +inf (stay); an infinite operand gives r = NaN (stay).
    r = fma(a, b, -p)
    return prev64(p) if r < 0 else p


@njit(cache=True)
def mul_ru64(a, b):
    p = a * b
    if not abs(p) >= _TINY:
        return _mul_ru64_slow(a, b, p)
    r = fma(a, b, -p)
    return next64(p) if r > 0 else p


@njit(cache=True)
def _div_err_sign64(a, b, q):
    """Sign of ``a/b - q`` for finite a, finite nonzero b, finite nonzero q = fl(a/b)."""
    # a - q*b is a multiple of min(ulp(a), ulp(q) ulp(b)) >= 2^(e_q + e_b - 106)
    # (frexp exponents).  With |a| >= 2^-900 that grid is >= 2^-1074, so a
    # nonzero residual cannot round to zero inside the FMA.
    if abs(a) >= 2.0**-900:
        r = fma(-q, b, a)
    else:
        # Scale a and q by 2^s exactly so that the grid reaches 2^-1074; then
        # |a 2^s| <= 2^-967 and |q 2^s| <= 2^105, so nothing overflows.
        s = -968 - math.frexp(q)[1] - math.frexp(b)[1]
        if s > 0:
            r = fma(-math.ldexp(q, s), b, math.ldexp(a, s))
        else:
            r = fma(-q, b, a)
    return r if b > 0 else -r


@njit(cache=True)
def div_rd64(a, b):
    """RD(a / b) for b != 0."""
    if a == 0.0 or math.isinf(b):
        if math.isinf(a):
            return math.nan
        return 0.0 if (a == 0.0 or (a > 0) == (b > 0)) else -0.0
    q = a / b
    if math.isinf(q):
        if math.isinf(a):
            return q
        return F64_MAX if q > 0 else -INF
    if q == 0.0:  # underflow to zero
        return 0.0 if (a > 0) == (b > 0) else -5e-324
    if _div_err_sign64(a, b, q) < 0:
        return prev64(q)
    return q


@njit(cache=True)
def div_ru64(a, b):
    if a == 0.0 or math.isinf(b):
        if math.isinf(a):
            return math.nan
        return 0.0
    q = a / b
    if math.isinf(q):
        if math.isinf(a):
            return q
        return INF if q > 0 else -F64_MAX
    if q == 0.0:
        return 5e-324 if (a > 0) == (b > 0) else 0.0
    if _div_err_sign64(a, b, q) > 0:
        return next64(q)
    return q


@njit(cache=True)
def _sqrt_err_sign64(x, s):
    """Sign of ``sqrt(x) - s`` for finite x > 0 and s = fl(sqrt(x))."""
    if x >= 2.0**-900:
        return fma(-s, s, x)
    # x * 2^1200 and s * 2^600 are exact; the residual grid is then >= 2^-1074.
    return fma(-math.ldexp(s, 600), math.ldexp(s, 600), math.ldexp(x, 1200))


@njit(cache=True)
def sqrt_rd64(x):
    """RD(sqrt(x)) for x >= 0."""
    if x == 0.0 or math.isinf(x):
        return abs(x)
    s = math.sqrt(x)
    if _sqrt_err_sign64(x, s) < 0:
        return prev64(s)
    return s


@njit(cache=True)
def sqrt_ru64(x):
    if x == 0.0 or math.isinf(x):
        return abs(x)
    s = math.sqrt(x)
    if _sqrt_err_sign64(x, s) > 0:
        return next64(s)
    return s


# ---------------------------------------------------------------- float32
# Inputs are float32 values held in float64 variables; results are returned
# as float64 values that are exactly representable in float32.


@njit(cache=True)
def to32_rd(x, err):
    """RD32 of the real ``x + err`` where x is float64 and |err| <= ulp64(x)/2.

    Overflow needs no special case: a finite x beyond the float32 range
    converts to inf > x and steps back to the largest float32.
    """
    f = np.float64(np.float32(x))
    return prev32(f) if (f > x) | ((f == x) & (err < 0)) else f


@njit(cache=True)
def to32_ru(x, err):
    f = np.float64(np.float32(x))
    return next32(f) if (f < x) | ((f == x) & (err > 0)) else f


@njit(cache=True)
def add_rd32(a, b):
    s = a + b  # float64 sum of float32 values: never overflows
    return to32_rd(s, two_sum_err(a, b, s))


@njit(cache=True)
def add_ru32(a, b):
    s = a + b
    return to32_ru(s, two_sum_err(a, b, s))


@njit(cache=True)
def _mul32(a, b):
    """``a*b`` exactly in float64 (24 + 24 bits, no underflow); ``0 * inf = 0``.

    A NaN operand stays NaN (it must not be read as ``0 * inf``).
    """
    p = a * b
    return 0.0 if (p != p) & (a == a) & (b == b) else p


@njit(cache=True)
def mul_rd32(a, b):
    return to32_rd(_mul32(a, b), 0.0)


@njit(cache=True)
def mul_ru32(a, b):
    return to32_ru(_mul32(a, b), 0.0)


@njit(cache=True)
def div_rd32(a, b):
    if a == 0.0 or math.isinf(b):
        if math.isinf(a):
            return math.nan
        return 0.0 if (a == 0.0 or (a > 0) == (b > 0)) else -0.0
    if math.isinf(a):
        return a if b > 0 else -a
    q = a / b
    # a - q*b is exact in float64 with a, b float32: the true quotient is
    # q + r/b with |r/b| << ulp64(q), which to32_rd uses only as a tie-breaker.
    r = fma(-q, b, a)
    return to32_rd(q, r if b > 0 else -r)


@njit(cache=True)
def div_ru32(a, b):
    if a == 0.0 or math.isinf(b):
        if math.isinf(a):
            return math.nan
        return 0.0
    if math.isinf(a):
        return a if b > 0 else -a
    q = a / b
    r = fma(-q, b, a)
    return to32_ru(q, r if b > 0 else -r)


@njit(cache=True)
def sqrt_rd32(x):
    if x == 0.0 or math.isinf(x):
        return abs(x)
    s = math.sqrt(x)
    return to32_rd(s, fma(-s, s, x))


@njit(cache=True)
def sqrt_ru32(x):
    if x == 0.0 or math.isinf(x):
        return abs(x)
    s = math.sqrt(x)
    return to32_ru(s, fma(-s, s, x))


# ------------------------------------------ native float32 fast paths
# The same algorithms in float32 arithmetic, so that float32 loops vectorise
# with twice the lanes: TwoSum is exact in any binary format, and a float32
# FMA residual is exact when |a*b| >= 2^-96 (Boldo & Muller's condition
# e_a + e_b >= e_min + p - 1 = -103, with margin); other products take the
# float64 path above.

_F32_INF = np.float32(np.inf)
_F32_TINY = np.float32(2.0**-96)
_F32_MAXF = np.float32(np.finfo(np.float32).max)


@njit(cache=True)
def add_rd32f(a, b):
    s = a + b
    e = two_sum_err(a, b, s)
    fin = abs(s) <= _F32_MAXF
    step = (e < 0) | ((s == _F32_INF) & (a != _F32_INF) & (b != _F32_INF)) | ((e != e) & fin)
    return _down32(s, step)


@njit(cache=True)
def add_ru32f(a, b):
    s = a + b
    e = two_sum_err(a, b, s)
    fin = abs(s) <= _F32_MAXF
    step = (e > 0) | ((s == -_F32_INF) & (a != -_F32_INF) & (b != -_F32_INF)) | ((e != e) & fin)
    return _up32(s, step)


# ------------------------------------------------- dtype-generic dispatch
# One name per operation for the array kernels; Numba picks the float32 or
# float64 implementation at compile time from the argument type.


def dtype_generic(f64_impl, f32_impl, arity, f32_native=None):
    """One name for a float64 and a float32 scalar kernel, chosen by Numba from the argument type.

    ``f32_impl`` takes and returns float32 values held in float64; ``f32_native``
    (binary only) works in float32 arithmetic.
    """

    def stub(*args):  # pragma: no cover - only its overload is ever called
        raise TypeError("call from Numba-compiled code only")

    if arity == 1:

        @overload(stub, jit_options={"cache": True})
        def _ol1(x):
            if x == types.float32:
                return lambda x: np.float32(f32_impl(np.float64(x)))
            return lambda x: f64_impl(x)

    else:

        @overload(stub, jit_options={"cache": True})
        def _ol2(a, b):
            if a == types.float32 and f32_native is not None:
                return lambda a, b: f32_native(a, b)
            if a == types.float32:
                return lambda a, b: np.float32(f32_impl(np.float64(a), np.float64(b)))
            return lambda a, b: f64_impl(a, b)

    return stub


add_rd = dtype_generic(add_rd64, add_rd32, 2, add_rd32f)
add_ru = dtype_generic(add_ru64, add_ru32, 2, add_ru32f)
mul_rd = dtype_generic(mul_rd64, mul_rd32, 2)
mul_ru = dtype_generic(mul_ru64, mul_ru32, 2)
div_rd = dtype_generic(div_rd64, div_rd32, 2)
div_ru = dtype_generic(div_ru64, div_ru32, 2)
sqrt_rd = dtype_generic(sqrt_rd64, sqrt_rd32, 1)
sqrt_ru = dtype_generic(sqrt_ru64, sqrt_ru32, 1)


# ------------------------------------------- fused product for array loops


@njit(cache=True)
def _mul_bounds64(a, b):
    """``(RD(a*b), RU(a*b), ok)``; ``ok`` is False where the fast path is not valid.

    Branch-free so that array loops vectorise; the caller redoes the rare
    ``ok == False`` cases (zero, tiny or NaN products) with ``mul_rd``/``mul_ru``.
    """
    p = a * b
    r = fma(a, b, -p)  # r != 0 implies p != 0; p = -inf never has r < 0, p = +inf never r > 0
    return _down64(p, r < 0), _up64(p, r > 0), abs(p) >= _TINY


@njit(cache=True)
def _mul_bounds32(a, b):
    """float32 ``(RD(a*b), RU(a*b), ok)`` in float32 arithmetic (see ``_mul_bounds64``)."""
    p = a * b
    r = fma(a, b, -p)
    return _down32(p, r < 0), _up32(p, r > 0), abs(p) >= _F32_TINY


def mul_bounds(a, b):  # pragma: no cover - only its overload is ever called
    raise TypeError("call from Numba-compiled code only")


@overload(mul_bounds, jit_options={"cache": True})
def _mul_bounds_ol(a, b):
    if a == types.float32:
        return lambda a, b: _mul_bounds32(a, b)
    return lambda a, b: _mul_bounds64(a, b)


# ------------------------------------------- one-ulp upper bounds (a priori)


@njit(cache=True)
def _next32f(x):
    i = np.int32(0) if x == 0 else _f32_bits(x)
    i = np.int32(i - 1 if i < 0 else i + 1)
    return x if x == _F32_INF else _bits_f32(i)


def above(x):  # pragma: no cover - only its overload is ever called
    raise TypeError("call from Numba-compiled code only")


@overload(above, jit_options={"cache": True})
def _above_ol(x):
    """The next float above a round-to-nearest result ``x``: an upper bound of its exact value.

    For ``x = fl(v)`` with any single rounding to nearest, ``v <= next(x)``
    (``|v - x|`` is at most half the spacing above ``x``; overflow to
    ``-inf`` maps to ``-MAX``, to ``+inf`` stays).  Branch-free, so loops that
    only need a *sound* upper bound, not the tightest (the GEMM error terms),
    vectorise.
    """
    if x == types.float32:
        return lambda x: _next32f(x)
    return lambda x: next64(x)


# ------------------------------------------------ one-flop widening (a priori)
# The second strategy of the module docstring.  u = 2^-53, eta = 2^-1074,
# RN = round to nearest, pred / succ = the float64 neighbours.
#
# The rule (Rump, Zimmermann, Boldo, Melquiond, "Computing predecessor and
# successor in rounding to nearest", BIT 49 (2009) 419-431, Algorithm 1 /
# Theorem 2.1): for finite c, with phi = u (1 + 2u), e = fl(fl(phi |c|) + eta)
# gives fl(c - e) <= pred(c) and fl(c + e) >= succ(c).  Self-contained check
# for c > 0 in [2^E, 2^(E+1)): for E >= -969, phi c >= 2^(E-53) (1 + 2^-52),
# a float, so e exceeds half the gap 2^(E-53) above c and c + e rounds to
# succ(c) or beyond; for smaller c, e >= 2^(E-53) + eta (or >= eta = the gap,
# below 2^-1021) does the same; downwards and negative c are symmetric; the
# same holds if e is computed with one FMA rounding.  If c = RN(x) for a real
# x then pred(c) < x < succ(c), so [fl(c - e), fl(c + e)] encloses x.  It is
# also the tightest enclosure of x this can give: for |c| >= 2^-969, e lies in
# (g/2, g + eta] for the gap g above |c|, so fl(c + e) = succ(c) and fl(c - e)
# = pred(c) exactly (below a power of two the gap is g/2, and e exceeds it by
# at most 2^-53 g + eta there); nearer the underflow range the bound may reach
# the second neighbour.  A zero c is not widened when it is exact: fl(a + b) = 0 only if
# a + b = 0 (gradual underflow), a product is exactly 0 only with a zero
# factor (widen_dn_mul widens a nonzero product that underflowed to 0), a
# quotient only with a zero dividend.  c must be finite (the fused kernels'
# overflow guard ensures it).
#
# A unit is (phi, eta, c0, float32): the widening factor and absolute term,
# the per-term factor of an a-priori sum bound (a K-term sum of exact terms
# with magnitudes summed into A errs by at most fl(K c0 A), see
# fused._finish), and whether results are rounded to float32.
#
# * UNIT64_REAL = (PHI64, ETA64, C0_64): encloses the exact real result of
#   each float64 operation (above) and of a sum in the kernel's own order:
#   in any order |S_comp - S| <= gamma_K sum |t_k| (Higham, Accuracy and
#   Stability of Numerical Algorithms, 2nd ed., Lemma 3.1, eq. 3.5), and with
#   A_comp >= (1 - gamma_K) sum |t_k| the error is at most gamma_K / (1 -
#   gamma_K) A_comp <= K u (1 + 2^-21) A_comp (K <= 2^30) <= fl(K C0_64
#   A_comp): C0_64 = (1 + 2^-19) u is a float, K C0_64 is exact and the
#   product rounds by at most u relative when it is normal.
# * UNIT64 = (PHI64, ETA64, 2 C0_64): also contains float64 SGD of members
#   (every operation rounded to nearest, sums in any order, with or without
#   FMA).  A value c = RN(v) widened as above lies below pred(c), and RN is
#   monotone, so a member's RN(v') >= RN(v) > pred(c) for v' >= v; a sum bound
#   is taken twice (c0 = 2 C0_64): the kernel's own summation error and a
#   second one in any other order (x' >= lo termwise gives fl(sum x') >= sum
#   lo - gamma sum |lo|).  Underflowing member products need no term: where no
#   operand is tiny the 2^-19 slack of C0_64 exceeds (2K + 1) eta whenever
#   A != 0, and A = 0 means every member product is 0.
# * UNIT32 = (PHI32, ETA32, C0_32): contains float32 SGD of members.
#   phi = 2^-23 (1 + 2^-20) and eta = 2^-148 widen past a float32 rounding
#   (even a faithful one, |fl32(v) - v| < 2^-23 |v| + 2^-149) of a value the
#   kernel holds to u; sums use c0 = (1 + 2^-8) 2^-24, which bounds gamma32_K
#   + gamma64_K over 1 - gamma64_K for K <= MAX_TERMS_32 = 2^14 (longer sums
#   must be declined), plus (2K + 1) eta for float32 products that underflow.

PHI64 = float.fromhex("0x1.0000000000001p-53")  # u (1 + 2u), the one-flop factor
ETA64 = 5e-324  # smallest positive subnormal
C0_64 = float.fromhex("0x1.00002p-53")  # (1 + 2^-19) u: K C0 bounds gamma_K / (1 - gamma_K)
PHI32 = float.fromhex("0x1.00001p-23")  # 2^-23 (1 + 2^-20): a float32 rounding, even faithful
ETA32 = 2.0**-148  # twice float32's smallest subnormal
C0_32 = float.fromhex("0x1.01p-24")  # (1 + 2^-8) 2^-24: K C0_32 >= gamma32_K + gamma64_K
MAX_TERMS_32 = 2**14  # the K for which C0_32 is proven
UNIT64_REAL = (PHI64, ETA64, C0_64, False)  # exact real results only: the tightest
UNIT64 = (PHI64, ETA64, 2.0 * C0_64, False)  # also float64 SGD, sums in any order
UNIT32 = (PHI32, ETA32, C0_32, True)  # also float32 SGD, sums in any order

_widen_jit = partial(njit, cache=True, nogil=True, error_model="numpy")


@_widen_jit
def widening_unit(f32):
    """The unit that also contains float SGD in the model's dtype: ``UNIT32`` or ``UNIT64``."""
    return UNIT32 if f32 else UNIT64


@_widen_jit
def widen_dn(c, unit):
    """A float below ``x`` and below its rounding to ``unit``'s format, for finite ``c = RN(x)``.

    Exact zeros are kept.
    """
    return c - (unit[0] * abs(c) + (unit[1] if c != 0.0 else 0.0))


@_widen_jit
def widen_up(c, unit):
    """A float above ``x`` and above its rounding to ``unit``'s format (see :func:`widen_dn`)."""
    return c + (unit[0] * abs(c) + (unit[1] if c != 0.0 else 0.0))


@_widen_jit
def widen_dn_mul(a, b, unit):
    """A lower bound of the exact ``a * b`` (a product is exactly 0 only with a zero factor)."""
    p = a * b
    return p - (unit[0] * abs(p) + (unit[1] if (a != 0.0) & (b != 0.0) else 0.0))


@_widen_jit
def widen_up_mul(a, b, unit):
    """An upper bound of the exact ``a * b``."""
    p = a * b
    return p + (unit[0] * abs(p) + (unit[1] if (a != 0.0) & (b != 0.0) else 0.0))


@_widen_jit
def widen_dn_div(a, b, unit):
    """A lower bound of the exact ``a / b`` (a quotient is exactly 0 only with ``a = 0``)."""
    q = a / b
    return q - (unit[0] * abs(q) + (unit[1] if a != 0.0 else 0.0))


@_widen_jit
def widen_up_div(a, b, unit):
    """An upper bound of the exact ``a / b``."""
    q = a / b
    return q + (unit[0] * abs(q) + (unit[1] if a != 0.0 else 0.0))


@_widen_jit
def widen_dn_sum_pos(s, unit):
    """:func:`widen_dn` for a sum of lower bounds of positive reals that may have overflowed."""
    return F64_MAX if s == INF else widen_dn(s, unit)
