"""CuPy elementwise interval kernels on CUDA's directed-rounding intrinsics.

Part of :mod:`intervalnn.kernels.gpu` (import that module: it re-exports
these kernels and runs the import-time checks of
:mod:`intervalnn.kernels.gpu_guards`).  Same names and semantics as
:mod:`intervalnn.kernels.cpu`: interval kernels
``add, sub, mul, div, sqr, sqrt`` take ``(alo, ahi[, blo, bhi])`` of one
shape and float dtype and return ``(lo, hi)``; point kernels ``add_rd,
add_ru, mul_rd, mul_ru, div_rd, div_ru`` take two arrays (broadcasting
allowed) and return one; ``midrad``, ``mag_bound`` and ``gemm_enclose`` are
the fused steps of the sound GEMM in :mod:`intervalnn.kernels.gemm`.  The interval
formulas are the IEEE 1788-2015
tightest ones (10.5.3 - 10.5.4): sign-case tables for ``*`` and ``/``
(``div`` only for divisors that exclude 0; the caller checks), endpoint rules
for the rest, and the convention ``0 * inf = 0`` for bounds.

Rounding.  Every bound is one IEEE 754 operation with a static directed
rounding mode (roundTowardNegative / roundTowardPositive), so ``*_rd`` is
``RD(exact)`` and ``*_ru`` is ``RU(exact)``, and overflow to ``+-inf`` or
``+-MAX`` is the directed rounding's own.  double uses CUDA's intrinsics
``__dadd_rd/_ru``, ``__dmul_rd/_ru``, ``__ddiv_rd/_ru``, ``__dsqrt_rd/_ru``
(CUDA C++ Programming Guide, "Intrinsic Functions": correctly rounded in the
named mode).  float uses the PTX instructions those intrinsics stand for,
``add/mul/div/sqrt.rm/.rp.f32`` (PTX ISA: IEEE 754 compliant, subnormals
supported unless ``.ftz``), written as inline PTX, because CuPy compiles
every kernel with ``-ftz=true`` appended after the caller's options
(``cupy.cuda.compiler._compile_with_cache_cuda``; NVRTC honours the last
occurrence, so asking for ``--ftz=false`` does not work).  Under ``-ftz=true``
NVVM emits the flush-to-zero form of *every* float operation in C (the
``__fadd_rd`` family, ``+ - * /``, comparisons, negation, ``fabs``,
conversions): measured on an H100 with CuPy 14.2, ``__fadd_rd(2^-149,
2^-149)`` gave 0.  So the float code here does no float arithmetic in C at
all: comparisons are ``setp`` in inline PTX, negation and absolute value act
on the encoding, conversions are ``cvt`` in inline PTX.  (FTZ exists only for
f32 in PTX; double code is plain C.)  The kernels are named
:class:`cupy.ElementwiseKernel` objects (``intervalnn_add``,
``intervalnn_mul_rd``, ...), created on first use and compiled once per
dtype.  The device helpers every kernel shares are the CUDA source
``gpu_preamble.cuh`` next to this file (a package resource).  Importing
:mod:`intervalnn.kernels.gpu` runs every building block on subnormal
operands and results in both dtypes and refuses to load if any is flushed.

The same CuPy flag makes CuPy's *own* float32 kernels (``-x``, ``abs``,
``maximum``, comparisons, ``astype``, ``sum``, ...) flush subnormals to zero;
:data:`intervalnn.kernels.gpu.CUPY_FLUSHES_FLOAT32_SUBNORMALS` records what this process does.
Code above the kernels that computes float32 bounds with plain CuPy
operations is not sound for subnormal endpoints; float64 is unaffected.

Zeros.  A zero bound is always returned as ``+0.0``: the sign of a zero
endpoint carries no meaning for a set of reals, and CUDA's ``RD(x - x) =
-0.0`` would otherwise differ from the CPU kernels for no reason.  The CPU
kernels may return ``-0.0`` in some cases; compare results with ``==``.
"""

from __future__ import annotations

import functools
from importlib.resources import files

import cupy
import numpy as np

# NVRTC options passed to every kernel here.  CuPy appends ``-ftz=true`` after
# them (``cupy.cuda.compiler._compile_with_cache_cuda``) and NVRTC honours the
# last occurrence, so ``--ftz=false`` does NOT take effect; the float32 code
# below is written so that it does not matter (see the module docstring).
_OPTIONS = ("--ftz=false", "--prec-div=true", "--prec-sqrt=true", "--fmad=false")


def cuda_source(name: str) -> str:
    """The text of the CUDA source file ``name`` shipped next to this module."""
    return files(__package__).joinpath(name).read_text(encoding="utf-8")


# Device helpers, overloaded on the element type (float or double).  The
# kernels' own type placeholder is T, a typedef that CuPy puts before this.
#
# float: CuPy compiles with -ftz=true, under which NVVM lowers *every* C-level
# float operation (+ - * /, comparisons, negation, fabs, conversions) to its
# flush-to-zero PTX form.  So every float operation here is inline PTX without
# .ftz (add/mul/div/sqrt.rm/.rp, setp, cvt) or a bit operation on the
# IEEE encoding (negation, absolute value); PTX is emitted verbatim and ptxas
# has no FTZ switch.  double: FTZ exists only for f32 in PTX, so plain C and
# the __d*_rd/_ru intrinsics are exact.
_PREAMBLE = cuda_source("gpu_preamble.cuh")

_INTERVAL_BINARY = ("T alo, T ahi, T blo, T bhi", "T lo, T hi")
_INTERVAL_UNARY = ("T alo, T ahi", "T lo, T hi")
_POINT = ("T a, T b", "T out")

_GEMM_ENCLOSE_TAIL = r"""
        if (inn_lt(inn_abs(p), inn_inf(p)) && inn_lt(rad, inn_inf(p))) {  // false for NaN
            lo = inn_z(inn_add_rd(p, inn_neg(rad))); hi = inn_z(inn_add_ru(p, rad));
        } else {  // P overflowed (or is NaN) or rad did: nothing is known
            lo = inn_neg(inn_inf(p)); hi = inn_inf(p);
        }
"""

OPS = {
    "add": (
        _INTERVAL_BINARY,
        "lo = inn_z(inn_add_rd(alo, blo)); hi = inn_z(inn_add_ru(ahi, bhi));",
    ),
    "sub": (
        _INTERVAL_BINARY,
        "lo = inn_z(inn_add_rd(alo, inn_neg(bhi))); hi = inn_z(inn_add_ru(ahi, inn_neg(blo)));",
    ),
    "mul": (
        _INTERVAL_BINARY,
        r"""
        T l, h;
        if (inn_ge0(alo)) {
            if (inn_ge0(blo))      { l = inn_mul_rd(alo, blo); h = inn_mul_ru(ahi, bhi); }
            else if (inn_le0(bhi)) { l = inn_mul_rd(ahi, blo); h = inn_mul_ru(alo, bhi); }
            else                   { l = inn_mul_rd(ahi, blo); h = inn_mul_ru(ahi, bhi); }
        } else if (inn_le0(ahi)) {
            if (inn_ge0(blo))      { l = inn_mul_rd(alo, bhi); h = inn_mul_ru(ahi, blo); }
            else if (inn_le0(bhi)) { l = inn_mul_rd(ahi, bhi); h = inn_mul_ru(alo, blo); }
            else                   { l = inn_mul_rd(alo, bhi); h = inn_mul_ru(alo, blo); }
        } else {
            if (inn_ge0(blo))      { l = inn_mul_rd(alo, bhi); h = inn_mul_ru(ahi, bhi); }
            else if (inn_le0(bhi)) { l = inn_mul_rd(ahi, blo); h = inn_mul_ru(alo, blo); }
            else {
                l = inn_min(inn_mul_rd(alo, bhi), inn_mul_rd(ahi, blo));
                h = inn_max(inn_mul_ru(alo, blo), inn_mul_ru(ahi, bhi));
            }
        }
        lo = inn_z(l); hi = inn_z(h);
        """,
    ),
    "div": (
        _INTERVAL_BINARY,
        r"""
        // Divisor excludes 0 (checked by the caller): blo > 0 or bhi < 0.
        T l, h;
        if (inn_gt(blo, (T)0)) {
            if (inn_ge0(alo))      { l = inn_div_rd(alo, bhi); h = inn_div_ru(ahi, blo); }
            else if (inn_le0(ahi)) { l = inn_div_rd(alo, blo); h = inn_div_ru(ahi, bhi); }
            else                   { l = inn_div_rd(alo, blo); h = inn_div_ru(ahi, blo); }
        } else {
            if (inn_ge0(alo))      { l = inn_div_rd(ahi, bhi); h = inn_div_ru(alo, blo); }
            else if (inn_le0(ahi)) { l = inn_div_rd(ahi, blo); h = inn_div_ru(alo, bhi); }
            else                   { l = inn_div_rd(ahi, bhi); h = inn_div_ru(alo, bhi); }
        }
        lo = inn_z(l); hi = inn_z(h);
        """,
    ),
    "sqr": (
        _INTERVAL_UNARY,
        r"""
        if (inn_ge0(alo)) {
            lo = inn_z(inn_mul_rd(alo, alo)); hi = inn_z(inn_mul_ru(ahi, ahi));
        } else if (inn_le0(ahi)) {
            lo = inn_z(inn_mul_rd(ahi, ahi)); hi = inn_z(inn_mul_ru(alo, alo));
        } else {
            T m = inn_max(inn_neg(alo), ahi);
            lo = (T)0; hi = inn_mul_ru(m, m);
        }
        """,
    ),
    "sqrt": (
        _INTERVAL_UNARY,
        # Intervals with alo >= 0 (checked by the caller).
        "lo = inn_z(inn_sqrt_rd(alo)); hi = inn_z(inn_sqrt_ru(ahi));",
    ),
    "add_rd": (_POINT, "out = inn_z(inn_add_rd(a, b));"),
    "add_ru": (_POINT, "out = inn_z(inn_add_ru(a, b));"),
    "mul_rd": (_POINT, "out = inn_z(inn_mul_rd(a, b));"),
    "mul_ru": (_POINT, "out = inn_z(inn_mul_ru(a, b));"),
    "div_rd": (_POINT, "out = inn_z(inn_div_rd(a, b));"),
    "div_ru": (_POINT, "out = inn_z(inn_div_ru(a, b));"),
    # Fused midpoint-radius steps of the sound GEMM (kernels/gemm.py).
    "midrad": (
        ("T lo, T hi", "T mid, T rad"),
        # The midpoint is formed in double (exact halves, one rounding), clamped
        # into [lo, hi] and rounded to T (a value in [lo, hi] rounds into it);
        # the radius is then taken about that representable midpoint, upward.
        r"""
        double a = inn_to_d(lo), b = inn_to_d(hi);
        double m = a * 0.5 + b * 0.5;
        if (a == b) m = a;
        else if (a == -INN_INF_D) m = (b == INN_INF_D) ? 0.0 : b;
        else if (b == INN_INF_D) m = a;
        m = m < a ? a : (m > b ? b : m);
        T mt = inn_round(m, lo);
        mid = inn_z(mt);
        rad = inn_z(inn_max(inn_add_ru(mt, inn_neg(lo)), inn_add_ru(hi, inn_neg(mt))));
        """,
    ),
    "mag_bound": (
        ("T m, T r, T g", "T out"),
        "out = inn_z(inn_add_ru(inn_mul_ru(g, inn_abs(m)), r));",
    ),
    "mag_bound_norad": (("T m, T g", "T out"), "out = inn_z(inn_mul_ru(g, inn_abs(m)));"),
    "gemm_enclose": (
        ("T p, T s1, T s2, T c, T k_eta, T two_k_eta", "T lo, T hi"),
        "T rad = inn_add_ru(inn_mul_ru(inn_add_ru(inn_add_ru(s1, s2), two_k_eta), c), k_eta);"
        + _GEMM_ENCLOSE_TAIL,
    ),
    "gemm_enclose_nos2": (
        ("T p, T s1, T c, T k_eta, T two_k_eta", "T lo, T hi"),
        "T rad = inn_add_ru(inn_mul_ru(inn_add_ru(s1, two_k_eta), c), k_eta);" + _GEMM_ENCLOSE_TAIL,
    ),
    # Exact float32 -> float64 (CuPy's own astype flushes float32 subnormals).
    "widen": (("float32 x", "float64 y"), "y = inn_to_d(x);"),
    # The building blocks, one by one, for the import-time subnormal probe.
    "probe": (
        ("T a, T b, int32 op", "T out"),
        r"""
        switch (op) {
            case 0: out = inn_add_rd(a, b); break;
            case 1: out = inn_add_ru(a, b); break;
            case 2: out = inn_mul_rd_raw(a, b); break;
            case 3: out = inn_mul_ru_raw(a, b); break;
            case 4: out = inn_div_rd(a, b); break;
            case 5: out = inn_div_ru(a, b); break;
            case 6: out = inn_sqrt_rd(a); break;
            case 7: out = inn_sqrt_ru(a); break;
            case 8: out = inn_z(a); break;
            case 9: out = inn_neg(a); break;
            case 10: out = inn_abs(a); break;
            case 11: out = inn_round(inn_to_d(a), a); break;
            case 12: out = inn_lt(a, b) ? (T)1 : (T)0; break;
            default: out = inn_max(a, b); break;
        }
        """,
    ),
}

# Ops whose kernels need device code beyond _PREAMBLE: op -> a function giving
# that source (appended to the preamble; kernels/gpu_elementary.py fills it in).
EXTRA_SOURCE = {}


@functools.cache
def get_kernel(op: str) -> cupy.ElementwiseKernel:
    """The ElementwiseKernel ``intervalnn_<op>`` (compiled per dtype on first call)."""
    (in_params, out_params), body = OPS[op]
    preamble = _PREAMBLE
    if op in EXTRA_SOURCE:
        preamble += EXTRA_SOURCE[op]()
    return cupy.ElementwiseKernel(
        in_params,
        out_params,
        body,
        f"intervalnn_{op}",
        preamble=preamble,
        options=_OPTIONS,
    )


# ------------------------------------------------------------ wrappers


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(a, dtype=None):
    """``a`` as a CuPy float array, converted to ``dtype`` if given.

    Host values are converted on the host (as the CPU kernels do); a CuPy
    float32 array is widened to float64 exactly by our own kernel, because
    CuPy's ``astype`` flushes float32 subnormals; narrowing a CuPy float64
    array would round, so it is refused.
    """
    if isinstance(a, cupy.ndarray):
        if dtype is not None and a.dtype != dtype:
            if a.dtype == np.float32 and dtype == np.float64:
                a = get_kernel("widen")(a)
            elif a.dtype.kind in "biu":
                a = a.astype(dtype)
            else:
                raise TypeError(f"cannot convert a {a.dtype} array to {np.dtype(dtype)} exactly")
        arr = a
    else:
        arr = cupy.asarray(np.asarray(a) if dtype is None else np.asarray(a, dtype=dtype))
    if arr.dtype not in _FLOAT_DTYPES:
        raise TypeError(f"the kernels take float32 or float64 arrays, not {arr.dtype}")
    return arr


def _result_dtype(*values) -> np.dtype:
    """NumPy's promotion (Python scalars are weak), as in the CPU kernels."""
    return np.result_type(*(v.dtype if isinstance(v, cupy.ndarray) else v for v in values))


def _binary_interval(op):
    def kernel(alo, ahi, blo, bhi):
        alo = float_array(alo)
        args = [alo] + [float_array(x) for x in (ahi, blo, bhi)]
        if any(x.dtype != alo.dtype or x.shape != alo.shape for x in args):
            raise ValueError(f"{op}: all endpoints need one shape and dtype")
        return get_kernel(op)(*args)

    kernel.__name__ = kernel.__qualname__ = op
    kernel.__doc__ = f"Interval ``{op}`` of ``[alo, ahi]`` and ``[blo, bhi]``: ``(lo, hi)``."
    return kernel


def _unary_interval(op):
    def kernel(alo, ahi):
        alo, ahi = float_array(alo), float_array(ahi)
        if ahi.dtype != alo.dtype or ahi.shape != alo.shape:
            raise ValueError(f"{op}: both endpoints need one shape and dtype")
        return get_kernel(op)(alo, ahi)

    kernel.__name__ = kernel.__qualname__ = op
    kernel.__doc__ = f"Interval ``{op}`` of ``[alo, ahi]``: ``(lo, hi)``."
    return kernel


def _binary_point(op):
    def kernel(a, b):
        dtype = _result_dtype(a, b)
        return get_kernel(op)(float_array(a, dtype), float_array(b, dtype))

    kernel.__name__ = kernel.__qualname__ = op
    direction = "down" if op.endswith("_rd") else "up"
    kernel.__doc__ = f"``{op[:3]}(a, b)`` rounded {direction}, elementwise with broadcasting."
    return kernel


add = _binary_interval("add")
sub = _binary_interval("sub")
mul = _binary_interval("mul")
div = _binary_interval("div")
sqr = _unary_interval("sqr")
sqrt = _unary_interval("sqrt")

add_rd = _binary_point("add_rd")
add_ru = _binary_point("add_ru")
mul_rd = _binary_point("mul_rd")
mul_ru = _binary_point("mul_ru")
div_rd = _binary_point("div_rd")
div_ru = _binary_point("div_ru")


# ------------------------------------------------ fused midpoint-radius steps


def midrad(lo, hi):
    """``(mid, rad)`` with ``mid`` in ``[lo, hi]`` and ``[mid - rad, mid + rad] ⊇ [lo, hi]``."""
    lo, hi = float_array(lo), float_array(hi)
    return get_kernel("midrad")(lo, hi)


def mag_bound(m, g, rad=None):
    """``RU(RU(g |m|) + rad)`` elementwise for a scalar ``g >= 0`` (no ``rad``: ``RU(g |m|)``).

    ``g`` is converted to ``m``'s dtype, so it must be representable there.
    """
    m = float_array(m)
    g = m.dtype.type(g)
    if rad is None:
        return get_kernel("mag_bound_norad")(m, g)
    return get_kernel("mag_bound")(m, float_array(rad, m.dtype), g)


def gemm_enclose(p, s1, s2, c, k_eta, two_k_eta):
    """``[RD(P - rad), RU(P + rad)]``, ``rad = RU(RU(RU(S1 + S2) + 2k eta) c + k eta)``.

    ``s2`` may be None (no second radius product); see kernels/gemm.py.
    Entries where ``P`` or ``rad`` is not finite become ``[-inf, +inf]``.
    """
    p = float_array(p)
    t = p.dtype.type
    s1 = float_array(s1, p.dtype)
    if s2 is None:
        return get_kernel("gemm_enclose_nos2")(p, s1, t(c), t(k_eta), t(two_k_eta))
    return get_kernel("gemm_enclose")(p, s1, float_array(s2, p.dtype), t(c), t(k_eta), t(two_k_eta))
