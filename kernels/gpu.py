"""CuPy array kernels for the GPU backend, on CUDA's directed-rounding intrinsics.

Same names and semantics as :mod:`intervalnn.kernels.cpu`: interval kernels
``add, sub, mul, div, sqr, sqrt`` take ``(alo, ahi[, blo, bhi])`` of one
shape and float dtype and return ``(lo, hi)``; point kernels ``add_rd,
add_ru, mul_rd, mul_ru, div_rd, div_ru`` take two arrays (broadcasting
allowed) and return one; ``midrad``, ``mag_bound`` and ``gemm_enclose`` are
the fused steps of the sound GEMM in :mod:`intervalnn.linalg`.  The interval
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
dtype.  Importing this module runs every building block on subnormal
operands and results in both dtypes and refuses to load if any is flushed.

The same CuPy flag makes CuPy's *own* float32 kernels (``-x``, ``abs``,
``maximum``, comparisons, ``astype``, ``sum``, ...) flush subnormals to zero;
:data:`CUPY_FLUSHES_FLOAT32_SUBNORMALS` records what this process does.
Code above the kernels that computes float32 bounds with plain CuPy
operations is not sound for subnormal endpoints; float64 is unaffected.

Zeros.  A zero bound is always returned as ``+0.0``: the sign of a zero
endpoint carries no meaning for a set of reals, and CUDA's ``RD(x - x) =
-0.0`` would otherwise differ from the CPU kernels for no reason.  The CPU
kernels may return ``-0.0`` in some cases; compare results with ``==``.

Matrix products.  :mod:`intervalnn.linalg` calls ``cupy.matmul``, i.e.
cuBLAS, and bounds its rounding error for any summation order, blocking and
FMA use (Higham eq. 3.5, plus ``eta/2`` per product for gradual underflow).
That argument needs every product and sum to be an IEEE operation in the
array's precision (or a more precise one) with subnormals kept.  Reduced
precision would break it: TF32 keeps 10 mantissa bits, BF16/FP16 inputs
fewer, and the Blackwell FP32/FP64 emulations (BF16x9, Ozaki fixed point) come
with no componentwise bound.  What CuPy does (``cupy/_core/_routines_linalg``,
CuPy 13-14):

* 2-D products call ``cublasGemmEx`` with a compute type chosen by
  ``get_compute_type(dtype)``: ``CUBLAS_COMPUTE_32F`` / ``_64F`` (or their
  ``_PEDANTIC`` variants) by default, ``CUBLAS_COMPUTE_32F_FAST_TF32`` for
  float32 when the environment has ``CUPY_TF32`` > 0 or when
  ``cupy._core.set_compute_type`` selected TF32 (or BF16/FP16);
* batched products (``ndim > 2``) call ``cublas{S,D}gemm(Strided)Batched``,
  whose precision follows the cuBLAS handle's math mode (default
  ``CUBLAS_DEFAULT_MATH``: no TF32; ``CUBLAS_TF32_TENSOR_OP_MATH`` or an
  emulation mode would allow reduced precision);
* products of a row by a column (``m = n = 1``) are an elementwise multiply
  and a reduction (CUB/cuTENSOR or CuPy's own), plain float arithmetic (for
  float32 compiled with CuPy's ``-ftz=true``, see above);
* cuBLAS itself reads ``NVIDIA_TF32_OVERRIDE`` (only ``0``, which forbids
  TF32, is known to be harmless) and, in recent versions, ``CUBLAS_EMULATE_*``
  variables that turn on floating-point emulation.

:func:`check_gemm_mode` therefore refuses (``RuntimeError``) when
``CUPY_TF32`` > 0, ``NVIDIA_TF32_OVERRIDE`` is set to anything but ``0``, a
``CUBLAS_EMULATE*`` variable is set (to anything but ``0`` or empty), CuPy's
compute type for float32/float64 is anything but DEFAULT/PEDANTIC/FP32/FP64,
or the current device's cuBLAS handle is in a math mode other than
``CUBLAS_DEFAULT_MATH`` / ``CUBLAS_PEDANTIC_MATH`` (optionally with
``CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION``).  It runs at import and
pins CuPy's compute types, so a later ``os.environ["CUPY_TF32"] = "1"`` has
no effect; calling ``cupy._core.set_compute_type`` or
``cublas.setMathMode`` afterwards is outside what this module can see (call
``check_gemm_mode()`` again after such changes).  Strassen-like algorithms
are not used by cuBLAS GEMM.  That cuBLAS keeps subnormal operands (no
denormals-are-zero) is not documented; ``tests/test_gpu.py`` checks it.

Transcendentals (``exp_rd``, ``log_ru``, ...): CUDA's libm has no guaranteed
error bound, so the GPU does not evaluate them.  This module forwards them to
the CPU kernels of the same name (device-to-host copy, CPU evaluation, copy
back): sound, and the slow path.  The CPU kernel is looked up when called; a
name the CPU backend lacks raises ``NotImplementedError``.
"""

from __future__ import annotations

import functools
import os

import cupy
import numpy as np

# NVRTC options passed to every kernel here.  CuPy appends ``-ftz=true`` after
# them (``cupy.cuda.compiler._compile_with_cache_cuda``) and NVRTC honours the
# last occurrence, so ``--ftz=false`` does NOT take effect; the float32 code
# below is written so that it does not matter (see the module docstring).
_OPTIONS = ("--ftz=false", "--prec-div=true", "--prec-sqrt=true", "--fmad=false")

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
_PREAMBLE = r"""
#define INN_F32_BIN(name, ins) \
    __device__ __forceinline__ float name(float a, float b) { \
        float r; asm(ins " %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b)); return r; }
#define INN_F32_UN(name, ins) \
    __device__ __forceinline__ float name(float a) { \
        float r; asm(ins " %0, %1;" : "=f"(r) : "f"(a)); return r; }
#define INN_F32_CMP(name, cmp, op) \
    __device__ __forceinline__ bool name(float a, float b) { \
        unsigned r; \
        asm("{\n\t.reg .pred p;\n\tsetp." cmp ".f32 p, %1, %2;\n\tselp.u32 %0, 1, 0, p;\n\t}" \
            : "=r"(r) : "f"(a), "f"(b)); \
        return r != 0; } \
    __device__ __forceinline__ bool name(double a, double b) { return a op b; }
#define INN_F64_BIN(name, fn) \
    __device__ __forceinline__ double name(double a, double b) { return fn(a, b); }

INN_F32_BIN(inn_add_rd, "add.rm.f32")      INN_F64_BIN(inn_add_rd, __dadd_rd)
INN_F32_BIN(inn_add_ru, "add.rp.f32")      INN_F64_BIN(inn_add_ru, __dadd_ru)
INN_F32_BIN(inn_mul_rd_raw, "mul.rm.f32")  INN_F64_BIN(inn_mul_rd_raw, __dmul_rd)
INN_F32_BIN(inn_mul_ru_raw, "mul.rp.f32")  INN_F64_BIN(inn_mul_ru_raw, __dmul_ru)
INN_F32_BIN(inn_div_rd, "div.rm.f32")      INN_F64_BIN(inn_div_rd, __ddiv_rd)
INN_F32_BIN(inn_div_ru, "div.rp.f32")      INN_F64_BIN(inn_div_ru, __ddiv_ru)
INN_F32_UN(inn_sqrt_rd, "sqrt.rm.f32")
INN_F32_UN(inn_sqrt_ru, "sqrt.rp.f32")
__device__ __forceinline__ double inn_sqrt_rd(double x) { return __dsqrt_rd(x); }
__device__ __forceinline__ double inn_sqrt_ru(double x) { return __dsqrt_ru(x); }

// Ordered comparisons (false when either side is NaN), as in C.
INN_F32_CMP(inn_eq, "eq", ==)
INN_F32_CMP(inn_lt, "lt", <)
INN_F32_CMP(inn_le, "le", <=)
INN_F32_CMP(inn_gt, "gt", >)
INN_F32_CMP(inn_ge, "ge", >=)

// Sign flip and absolute value on the encoding (exact, no flush).
__device__ __forceinline__ float inn_neg(float x) {
    return __int_as_float(__float_as_int(x) ^ 0x80000000);
}
__device__ __forceinline__ double inn_neg(double x) { return -x; }
__device__ __forceinline__ float inn_abs(float x) {
    return __int_as_float(__float_as_int(x) & 0x7fffffff);
}
__device__ __forceinline__ double inn_abs(double x) { return fabs(x); }

// Exact widening to double, and rounding to nearest back to the type of `like`.
__device__ __forceinline__ double inn_to_d(float x) {
    double r; asm("cvt.f64.f32 %0, %1;" : "=d"(r) : "f"(x)); return r;
}
__device__ __forceinline__ double inn_to_d(double x) { return x; }
__device__ __forceinline__ float inn_round(double x, float like) {
    float r; asm("cvt.rn.f32.f64 %0, %1;" : "=f"(r) : "d"(x)); return r;
}
__device__ __forceinline__ double inn_round(double x, double like) { return x; }

#define INN_INF_D __longlong_as_double(0x7ff0000000000000LL)
__device__ __forceinline__ float inn_inf(float like) { return __int_as_float(0x7f800000); }
__device__ __forceinline__ double inn_inf(double like) { return INN_INF_D; }

// A zero bound is returned as +0 (NaN passes through).
template <typename F> __device__ __forceinline__ F inn_z(F x) {
    return inn_eq(x, (F)0) ? (F)0 : x;
}
template <typename F> __device__ __forceinline__ bool inn_ge0(F x) { return inn_ge(x, (F)0); }
template <typename F> __device__ __forceinline__ bool inn_le0(F x) { return inn_le(x, (F)0); }
template <typename F> __device__ __forceinline__ F inn_min(F a, F b) {
    return inn_lt(b, a) ? b : a;
}
template <typename F> __device__ __forceinline__ F inn_max(F a, F b) {
    return inn_gt(b, a) ? b : a;
}

// IEEE 1788 bound products: 0 * anything (inf too) = 0.
template <typename F> __device__ __forceinline__ F inn_mul_rd(F a, F b) {
    return (inn_eq(a, (F)0) || inn_eq(b, (F)0)) ? (F)0 : inn_mul_rd_raw(a, b);
}
template <typename F> __device__ __forceinline__ F inn_mul_ru(F a, F b) {
    return (inn_eq(a, (F)0) || inn_eq(b, (F)0)) ? (F)0 : inn_mul_ru_raw(a, b);
}
"""

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

_OPS = {
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
    # Fused midpoint-radius steps of the sound GEMM (intervalnn/linalg.py).
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


@functools.cache
def _kernel(op: str) -> cupy.ElementwiseKernel:
    """The ElementwiseKernel ``intervalnn_<op>`` (compiled per dtype on first call)."""
    (in_params, out_params), body = _OPS[op]
    return cupy.ElementwiseKernel(
        in_params,
        out_params,
        body,
        f"intervalnn_{op}",
        preamble=_PREAMBLE,
        options=_OPTIONS,
    )


# ------------------------------------------------------------ wrappers


_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _float_array(a, dtype=None):
    """``a`` as a CuPy float array, converted to ``dtype`` if given.

    Host values are converted on the host (as the CPU kernels do); a CuPy
    float32 array is widened to float64 exactly by our own kernel, because
    CuPy's ``astype`` flushes float32 subnormals; narrowing a CuPy float64
    array would round, so it is refused.
    """
    if isinstance(a, cupy.ndarray):
        if dtype is not None and a.dtype != dtype:
            if a.dtype == np.float32 and dtype == np.float64:
                a = _kernel("widen")(a)
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
        alo = _float_array(alo)
        args = [alo] + [_float_array(x) for x in (ahi, blo, bhi)]
        if any(x.dtype != alo.dtype or x.shape != alo.shape for x in args):
            raise ValueError(f"{op}: all endpoints need one shape and dtype")
        return _kernel(op)(*args)

    kernel.__name__ = kernel.__qualname__ = op
    kernel.__doc__ = f"Interval ``{op}`` of ``[alo, ahi]`` and ``[blo, bhi]``: ``(lo, hi)``."
    return kernel


def _unary_interval(op):
    def kernel(alo, ahi):
        alo, ahi = _float_array(alo), _float_array(ahi)
        if ahi.dtype != alo.dtype or ahi.shape != alo.shape:
            raise ValueError(f"{op}: both endpoints need one shape and dtype")
        return _kernel(op)(alo, ahi)

    kernel.__name__ = kernel.__qualname__ = op
    kernel.__doc__ = f"Interval ``{op}`` of ``[alo, ahi]``: ``(lo, hi)``."
    return kernel


def _binary_point(op):
    def kernel(a, b):
        dtype = _result_dtype(a, b)
        return _kernel(op)(_float_array(a, dtype), _float_array(b, dtype))

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
    lo, hi = _float_array(lo), _float_array(hi)
    return _kernel("midrad")(lo, hi)


def mag_bound(m, g, rad=None):
    """``RU(RU(g |m|) + rad)`` elementwise for a scalar ``g >= 0`` (no ``rad``: ``RU(g |m|)``).

    ``g`` is converted to ``m``'s dtype, so it must be representable there.
    """
    m = _float_array(m)
    g = m.dtype.type(g)
    if rad is None:
        return _kernel("mag_bound_norad")(m, g)
    return _kernel("mag_bound")(m, _float_array(rad, m.dtype), g)


def gemm_enclose(p, s1, s2, c, k_eta, two_k_eta):
    """``[RD(P - rad), RU(P + rad)]``, ``rad = RU(RU(RU(S1 + S2) + 2k eta) c + k eta)``.

    ``s2`` may be None (no second radius product); see intervalnn/linalg.py.
    Entries where ``P`` or ``rad`` is not finite become ``[-inf, +inf]``.
    """
    p = _float_array(p)
    t = p.dtype.type
    s1 = _float_array(s1, p.dtype)
    if s2 is None:
        return _kernel("gemm_enclose_nos2")(p, s1, t(c), t(k_eta), t(two_k_eta))
    return _kernel("gemm_enclose")(p, s1, _float_array(s2, p.dtype), t(c), t(k_eta), t(two_k_eta))


# ------------------------------------------------- transcendentals (host path)

HOST_FALLBACK = (
    "exp_rd",
    "exp_ru",
    "log_rd",
    "log_ru",
    "log1p_rd",
    "log1p_ru",
    "expm1_rd",
    "expm1_ru",
)


def _host_fallback(name):
    def kernel(*args):
        from . import cpu

        impl = getattr(cpu, name, None)
        if impl is None:
            raise NotImplementedError(
                f"{name} is not available: the CPU backend has no kernel of that name "
                "(the GPU backend evaluates transcendentals on the CPU)"
            )
        host = [cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else a for a in args]
        out = impl(*host)
        if isinstance(out, tuple):
            return tuple(cupy.asarray(o) for o in out)
        return cupy.asarray(out)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = (
        f"``{name}`` on the CPU kernels (copy to host, evaluate, copy back): sound but slow, "
        "since CUDA's libm has no guaranteed error bound."
    )
    return kernel


for _name in HOST_FALLBACK:
    globals()[_name] = _host_fallback(_name)
del _name


# ------------------------------------------------- import-time checks


def _linalg_module():
    """CuPy's ``_routines_linalg`` (its place moved between CuPy versions), or None."""
    import importlib

    for path in ("cupy._core._routines_linalg", "cupy._core._gpu._routines_linalg"):
        try:
            mod = importlib.import_module(path)
        except ImportError:
            continue
        if hasattr(mod, "get_compute_type"):
            return mod
    return None


_SAFE_COMPUTE_TYPES = {
    "COMPUTE_TYPE_DEFAULT",
    "COMPUTE_TYPE_PEDANTIC",
    "COMPUTE_TYPE_FP32",
    "COMPUTE_TYPE_FP64",
}
_CUBLAS_DEFAULT_MATH, _CUBLAS_PEDANTIC_MATH = 0, 2
_CUBLAS_DISALLOW_REDUCED_PRECISION_REDUCTION = 16


def _refuse(what: str):
    raise RuntimeError(
        f"intervalnn's GPU matrix product is sound only with full-precision cuBLAS, but {what}. "
        "TF32, FP16/BF16 inputs and floating-point emulation round more than the error bound "
        "of intervalnn.linalg allows; turn it off to use the GPU backend."
    )


def check_gemm_mode() -> None:
    """``RuntimeError`` unless CuPy/cuBLAS GEMMs run in full float32/float64 precision.

    See the module docstring for what is checked and why.  Also pins CuPy's
    compute types so that later changes of ``CUPY_TF32`` cannot take effect.
    """
    value = os.environ.get("CUPY_TF32", "").strip()
    if value:
        try:
            tf32 = int(value) > 0
        except ValueError:
            tf32 = True
        if tf32:
            _refuse(f"the environment sets CUPY_TF32={value!r} (TF32 tensor cores)")
    value = os.environ.get("NVIDIA_TF32_OVERRIDE", "").strip()
    if value not in ("", "0"):
        _refuse(f"the environment sets NVIDIA_TF32_OVERRIDE={value!r} (only 0 is known to be safe)")
    for key, value in os.environ.items():
        if key.upper().startswith("CUBLAS_EMULATE") and value.strip() not in ("", "0"):
            _refuse(f"the environment sets {key}={value!r} (cuBLAS floating-point emulation)")

    linalg = _linalg_module()
    if linalg is not None:
        for dtype in (np.float32, np.float64):
            name = str(linalg.compute_type_to_str(linalg.get_compute_type(dtype)))
            if name not in _SAFE_COMPUTE_TYPES:
                _refuse(f"CuPy's {np.dtype(dtype).name} GEMM compute type is {name}")

    try:
        from cupy_backends.cuda.libs import cublas

        mode = int(cublas.getMathMode(cupy.cuda.device.get_cublas_handle()))
    except (ImportError, AttributeError):  # pragma: no cover - older CuPy without getMathMode
        return
    if mode & ~_CUBLAS_DISALLOW_REDUCED_PRECISION_REDUCTION not in (
        _CUBLAS_DEFAULT_MATH,
        _CUBLAS_PEDANTIC_MATH,
    ):
        _refuse(f"the cuBLAS handle's math mode is {mode}")


def _cupy_flushes_float32_subnormals() -> bool:
    """Does CuPy's own float32 arithmetic flush subnormals (its ``-ftz=true``)?"""
    eta = cupy.asarray(np.array([np.finfo(np.float32).smallest_subnormal], dtype=np.float32))
    return bool(((eta + eta) == 0).any())


def _check_subnormals() -> None:
    """Run every building block on subnormal operands/results; refuse if any is flushed."""
    for dtype in (np.float32, np.float64):
        dt = np.dtype(dtype)
        eta = dt.type(np.finfo(dt).smallest_subnormal)
        tiny = dt.type(np.finfo(dt).smallest_normal)
        two, half = dt.type(2), dt.type(0.5)
        # (a, b, op, expected): each expected value is a subnormal (or eta-sized) result.
        cases = [
            (eta, eta, 0, 2 * eta),  # add_rd
            (eta, -2 * eta, 1, -eta),  # add_ru
            (tiny, half, 2, tiny / 2),  # mul_rd, exact subnormal product
            (eta, half, 3, eta),  # mul_ru of eta/2 rounds up to eta
            (eta, half, 2, dt.type(0)),  # mul_rd of eta/2 rounds down to 0
            (3 * eta, two, 4, eta),  # div_rd: 1.5 eta -> eta
            (3 * eta, two, 5, 2 * eta),  # div_ru: 1.5 eta -> 2 eta
            (tiny, -two, 5, -tiny / 2),  # div_ru, exact subnormal quotient
            (eta * 4, dt.type(0), 6, None),  # sqrt_rd of a subnormal: positive
            (eta * 4, dt.type(0), 7, None),  # sqrt_ru of a subnormal: positive
            (eta, eta, 8, eta),  # a subnormal is not a zero bound
            (-eta, eta, 8, -eta),
            (eta, eta, 9, -eta),  # negation
            (-eta, eta, 10, eta),  # absolute value
            (3 * eta, eta, 11, 3 * eta),  # float -> double -> float
            (dt.type(0), eta, 12, dt.type(1)),  # 0 < eta
            (-eta, dt.type(0), 12, dt.type(1)),  # -eta < 0
            (dt.type(0), eta, 13, eta),  # max
        ]
        a = cupy.asarray(np.array([c[0] for c in cases], dtype=dt))
        b = cupy.asarray(np.array([c[1] for c in cases], dtype=dt))
        op = cupy.asarray(np.array([c[2] for c in cases], dtype=np.int32))
        got = cupy.asnumpy(_kernel("probe")(a, b, op))
        for (x, y, code, want), g in zip(cases, got, strict=True):
            ok = g > 0 if want is None else (g == want and np.signbit(g) == np.signbit(want))
            if not ok:
                raise RuntimeError(
                    f"GPU kernel building block #{code} on {dt.name} subnormals gave "
                    f"{g!r} for ({x!r}, {y!r}), expected {want!r}: subnormals are flushed to "
                    "zero, and intervalnn's GPU bounds cannot be trusted"
                )


check_gemm_mode()
_check_subnormals()
#: True when CuPy's own float32 kernels flush subnormals to zero (see the module docstring).
CUPY_FLUSHES_FLOAT32_SUBNORMALS = _cupy_flushes_float32_subnormals()
