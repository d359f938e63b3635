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

Transcendentals (``exp_rd, exp_ru, log_rd, log_ru, log1p_rd, log1p_ru,
expm1_rd, expm1_ru``): CUDA's libm has no guaranteed error bound, so these
kernels port :mod:`intervalnn.kernels.elementary` line by line to the GPU
(double-double evaluation from ``+ - * /`` and ``fma`` with the same
reduction, tables, polynomials, deltas and bracketing; the C constants and
tables are generated from that module's values) and return the CPU kernels'
results bit for bit, float32 included (evaluated in double, rounded outward
with PTX ``cvt.rm/.rp`` that keeps subnormals).  See the comments above
``_ELEMENTARY_NAMES`` for what the port relies on.
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
    preamble = _PREAMBLE
    if op in _ELEMENTARY_NAMES:
        preamble += _elementary_source() + _ELEMENTARY_OUT
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


# ------------------------------------------------- transcendentals
# exp, log, log1p, expm1 rounded down / up: a line-by-line port of
# kernels/elementary.py (same reduction, tables, polynomials, double-double
# error accounting, deltas, bracketing and scaling), so the proofs in that
# module's docstrings apply unchanged and the results equal the CPU kernels
# bit for bit (tests/test_gpu.py).  Every constant and table entry below is
# generated from elementary.py's float values as its IEEE bit pattern (no
# decimal or hex-float literal is re-parsed by the compiler).
#
# What the port relies on, all of it double arithmetic (FTZ is f32-only in
# PTX, so CuPy's -ftz=true cannot touch it):
# * ``+ - * /`` round to nearest (CUDA double arithmetic is IEEE 754; double
#   ``/`` is IEEE regardless of --prec-div) and ``fma`` is the exact fused
#   multiply-add (CUDA Math API, 0 ulp), used only for TwoProd as on the CPU;
# * ``--fmad=false``: without it NVVM contracts ``a * b + c`` into one FMA
#   (the Horner tails, ``ah * bl + al * bh`` in the dd product, ``x * INVL +
#   0.5`` in the reduction, ...: 168 instead of the 68 explicit TwoProd FMAs
#   in the PTX of the eight kernels), which changes roundings that the error
#   analysis counts one by one; contracted on the host, this code gives
#   other dd values for 19% (exp) to 29% (log) of random arguments;
# * ``floor``/``ceil`` are exact; frexp, ldexp, next and prev act on the
#   encoding or multiply by an exact power of two (exact whenever the result
#   is representable, which the callers guarantee; see ``inn_el_ldexp``);
# * no CUDA exp/log/expm1/log1p is called (they have no guaranteed bound).
# float: the argument is widened exactly (PTX ``cvt.f64.f32``), the float64
# bounds are computed as above and rounded outward with PTX ``cvt.rm`` /
# ``cvt.rp.f32.f64`` (no ``.ftz``: subnormal results kept).  That is
# elementary.py's ``_to32_rd(v, 0)`` / ``_to32_ru(v, 0)`` exactly: both are
# the largest float32 <= v / smallest >= v (overflow to +-MAX or +-inf as
# directed rounding does), up to the sign of a zero, which is +0 here.

_ELEMENTARY_NAMES = (
    "exp_rd",
    "exp_ru",
    "log_rd",
    "log_ru",
    "log1p_rd",
    "log1p_ru",
    "expm1_rd",
    "expm1_ru",
)


def _c_double(v) -> str:
    """A C expression with the exact float64 value ``v`` (its bit pattern)."""
    return f"INN_EL_D(0x{int(np.float64(v).view(np.uint64)):016x}ULL)"


def _c_table(name: str, values) -> str:
    bits = [f"0x{int(b):016x}ULL" for b in np.asarray(values, np.float64).view(np.uint64)]
    rows = ",\n    ".join(", ".join(bits[i : i + 4]) for i in range(0, len(bits), 4))
    return f"static __device__ const unsigned long long {name}[{len(bits)}] = {{\n    {rows}\n}};"


@functools.cache
def _elementary_source() -> str:
    """The double-precision device code, generated from kernels/elementary.py.

    Uses only ``__longlong_as_double``, ``__double_as_longlong``, ``__ldg``,
    ``fma``, ``floor`` and ``ceil`` (so it can also be compiled for the host
    with those defined, to check it without a GPU).
    """
    from . import elementary as el

    consts = {
        "INVL": el._INVL,
        "L1": el._L1,
        "L2": el._L2,
        "L3": el._L3,
        "LN2H": el._LN2H,
        "LN2L": el._LN2L,
        "F3H": el._F3H,
        "F3L": el._F3L,
        "F4H": el._F4H,
        "F4L": el._F4L,
        "F5H": el._F5H,
        "F5L": el._F5L,
        "F6H": el._F6H,
        "F6L": el._F6L,
        "F7": el._F7,
        "F8": el._F8,
        "F9": el._F9,
        "F10": el._F10,
        "F11": el._F11,
        "A3H": el._A3H,
        "A3L": el._A3L,
        "A5H": el._A5H,
        "A5L": el._A5L,
        "A7H": el._A7H,
        "A7L": el._A7L,
        "A9": el._A9,
        "A11": el._A11,
        "A13": el._A13,
        # the tolerance factors 2 * delta of _bracket (products exact)
        "EXP_TOL": 2.0 * el.EXP_DELTA,
        "LOG_TOL": 2.0 * el.LOG_DELTA,
        "EXPM1_TOL": 2.0 * el.EXPM1_DELTA,
        "TINY_ARG": el._TINY_ARG,
        "SQRT_HALF": el._SQRT_HALF,
        "SMALLEST": el._SMALLEST,
        "MAX": np.finfo(np.float64).max,
        "INF": np.inf,
        "EXP_HI": 709.79,  # the thresholds of _exp_bounds / _expm1_bounds
        "EXP_LO": -745.2,
        "EXPM1_LO": -40.0,
        "TWO54": 2.0**54,
    }
    defines = "\n".join(f"#define INN_EL_{k} {_c_double(v)}" for k, v in consts.items())
    tables = "\n".join(
        (
            _c_table("inn_el_th", el._TH),
            _c_table("inn_el_tl", el._TL),
            _c_table("inn_el_lch", el._LCH),
            _c_table("inn_el_lcl", el._LCL),
        )
    )
    assert el._LCH.size == 47 and el._TH.size == 64  # the index offsets below
    return _ELEMENTARY_HEAD + defines + "\n" + tables + "\n" + _ELEMENTARY_BODY


_ELEMENTARY_HEAD = r"""
#define INN_EL __device__ __forceinline__
#define INN_EL_D(b) __longlong_as_double((long long)(b))
"""

_ELEMENTARY_BODY = r"""
INN_EL double inn_el_tab(const unsigned long long *t, int i) {
    return __longlong_as_double((long long)__ldg(t + i));
}

// ---- error-free transformations and dd arithmetic (elementary.py D1-D3)
INN_EL void inn_el_two_sum(double a, double b, double &s, double &e) {
    s = a + b;
    double bb = s - a;
    e = (a - (s - bb)) + (b - bb);
}
INN_EL void inn_el_fast_two_sum(double a, double b, double &s, double &e) {
    s = a + b;
    e = b - (s - a);
}
INN_EL void inn_el_two_prod(double a, double b, double &p, double &e) {
    p = a * b;
    e = fma(a, b, -p);
}
INN_EL void inn_el_dd_mul(double ah, double al, double bh, double bl, double &ch, double &cl) {
    double p, e;
    inn_el_two_prod(ah, bh, p, e);
    e += ah * bl + al * bh;
    inn_el_fast_two_sum(p, e, ch, cl);
}
INN_EL void inn_el_dd_add(double ah, double al, double bh, double bl, double &ch, double &cl) {
    double s, e;
    inn_el_two_sum(ah, bh, s, e);
    e += al + bl;
    inn_el_two_sum(s, e, ch, cl);
}
INN_EL void inn_el_dd_div(double nh, double nl, double dh, double dl, double &qh, double &ql) {
    double q1 = nh / dh, p, pe;
    inn_el_two_prod(q1, dh, p, pe);
    double r = (((nh - p) - pe) + nl) - q1 * dl;
    inn_el_fast_two_sum(q1, r / dh, qh, ql);
}

// ---- exact operations on the encoding
// next64 / prev64 of elementary.py (zero counts as -0 going down, +0 going up).
INN_EL double inn_el_next(double x) {
    long long i = (x == 0.0) ? 0LL : __double_as_longlong(x);
    i = (i < 0) ? i - 1 : i + 1;
    return (x == INN_EL_INF) ? x : __longlong_as_double(i);
}
INN_EL double inn_el_prev(double x) {
    long long i = (x == 0.0) ? (long long)0x8000000000000000ULL : __double_as_longlong(x);
    i = (i < 0) ? i + 1 : i - 1;
    return (x == -INN_EL_INF) ? x : __longlong_as_double(i);
}
// 2^n for -1022 <= n <= 1023.
INN_EL double inn_el_pow2(int n) {
    return __longlong_as_double((long long)(n + 1023) << 52);
}
// a 2^n, exact whenever that is representable (or overflows to +-inf, as
// ldexp does).  One product by 2^n is exact then; for |n| > 1022 the two
// halves: every caller's intermediate a 2^(n/2) is normal (elementary.py's
// ldexp calls: |a| in [2^-62, 4] with n <= 1024 or n >= -1076 on an integer
// a < 2^56, ml = al 2^-e with al = 0 or |ml| >= 2^-113, 2^-q).
INN_EL double inn_el_ldexp(double a, int n) {
    if (n >= -1022 && n <= 1023) return a * inn_el_pow2(n);
    int n1 = n / 2;
    return (a * inn_el_pow2(n1)) * inn_el_pow2(n - n1);
}
// math.frexp for finite x > 0: m in [1/2, 1) with x = m 2^e.
INN_EL double inn_el_frexp(double x, int &e) {
    int adj = 0;
    long long b = __double_as_longlong(x);
    if ((b >> 52) == 0) {  // subnormal: scale by 2^54 (exact)
        x *= INN_EL_TWO54;
        adj = 54;
        b = __double_as_longlong(x);
    }
    e = (int)(b >> 52) - 1022 - adj;
    return __longlong_as_double((b & 0x000fffffffffffffLL) | 0x3fe0000000000000LL);
}

// ---- elementary.py _bracket and _scale
INN_EL void inn_el_bracket(double h, double l, double eps, double &a, double &b) {
    if (l >= eps) {
        a = h; b = inn_el_next(h);
    } else if (l <= -eps) {
        a = inn_el_prev(h); b = h;
    } else {
        a = inn_el_prev(h); b = inn_el_next(h);
    }
}
INN_EL void inn_el_scale(double a, double b, int q, double &lo, double &hi) {
    if (q < -1020) {
        int s = q + 1074;
        lo = inn_el_ldexp(floor(inn_el_ldexp(a, s)), -1074);
        hi = inn_el_ldexp(ceil(inn_el_ldexp(b, s)), -1074);
        return;
    }
    lo = inn_el_ldexp(a, q);
    if (lo == INN_EL_INF) lo = INN_EL_MAX;
    hi = inn_el_ldexp(b, q);
}

// ---- exp / expm1 (elementary.py _reduce, _expm1_reduced, _exp_dd, _expm1_dd)
INN_EL int inn_el_reduce(double x, double &rh, double &rl) {
    double k = floor(x * INN_EL_INVL + 0.5);
    double t, te, p, pe, s, se;
    inn_el_two_sum(x, -(k * INN_EL_L1), t, te);
    inn_el_two_prod(k, INN_EL_L2, p, pe);
    inn_el_two_sum(t, -p, s, se);
    double lo = ((te + se) - pe) - k * INN_EL_L3;
    inn_el_two_sum(s, lo, rh, rl);
    return (int)k;
}
INN_EL void inn_el_expm1_reduced(double rh, double rl, double &h, double &l) {
    double t = (((INN_EL_F11 * rh + INN_EL_F10) * rh + INN_EL_F9) * rh + INN_EL_F8) * rh
               + INN_EL_F7;
    double ph, pl;
    inn_el_dd_mul(t, 0.0, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F6H, INN_EL_F6L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F5H, INN_EL_F5L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F4H, INN_EL_F4L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_F3H, INN_EL_F3L, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, 0.5, 0.0, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, ph, pl);
    inn_el_dd_add(ph, pl, 1.0, 0.0, ph, pl);
    inn_el_dd_mul(ph, pl, rh, rl, h, l);
}
INN_EL int inn_el_exp_dd(double x, double &h, double &l) {
    double rh, rl, eh, el, gh, gl;
    int k = inn_el_reduce(x, rh, rl);
    inn_el_expm1_reduced(rh, rl, eh, el);
    inn_el_dd_add(1.0, 0.0, eh, el, gh, gl);
    int j = k & 63;
    inn_el_dd_mul(inn_el_tab(inn_el_th, j), inn_el_tab(inn_el_tl, j), gh, gl, h, l);
    return (k - j) / 64;  // k >> 6 (floor), exactly
}
INN_EL int inn_el_expm1_dd(double x, double &h, double &l) {
    double rh, rl, eh, el;
    int k = inn_el_reduce(x, rh, rl);
    inn_el_expm1_reduced(rh, rl, eh, el);
    if (k == 0) {
        h = eh; l = el;
        return 0;
    }
    int j = k & 63;
    int q = (k - j) / 64;
    double th = inn_el_tab(inn_el_th, j), tl = inn_el_tab(inn_el_tl, j);
    double ah, al, bh, bl;
    inn_el_dd_mul(th, tl, eh, el, ah, al);
    inn_el_dd_add(th, tl, -inn_el_ldexp(1.0, -q), 0.0, bh, bl);
    inn_el_dd_add(ah, al, bh, bl, h, l);
    return q;
}
INN_EL void inn_el_exp(double x, double &lo, double &hi) {
    if (x != x) { lo = hi = x; return; }
    if (x == 0.0) { lo = hi = 1.0; return; }
    if (fabs(x) < INN_EL_TINY_ARG) {
        if (x > 0.0) { lo = 1.0; hi = inn_el_next(1.0); }
        else { lo = inn_el_prev(1.0); hi = 1.0; }
        return;
    }
    if (x > INN_EL_EXP_HI) {
        lo = (x == INN_EL_INF) ? INN_EL_INF : INN_EL_MAX; hi = INN_EL_INF;
        return;
    }
    if (x < INN_EL_EXP_LO) {
        lo = 0.0; hi = (x == -INN_EL_INF) ? 0.0 : INN_EL_SMALLEST;
        return;
    }
    double h, l, a, b;
    int q = inn_el_exp_dd(x, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_EXP_TOL, a, b);
    inn_el_scale(a, b, q, lo, hi);
}
INN_EL void inn_el_expm1(double x, double &lo, double &hi) {
    if (x != x || x == 0.0) { lo = hi = x; return; }
    if (fabs(x) < INN_EL_TINY_ARG) { lo = x; hi = inn_el_next(x); return; }
    if (x > INN_EL_EXP_HI) {
        lo = (x == INN_EL_INF) ? INN_EL_INF : INN_EL_MAX; hi = INN_EL_INF;
        return;
    }
    if (x < INN_EL_EXPM1_LO) {
        lo = -1.0; hi = (x == -INN_EL_INF) ? -1.0 : inn_el_next(-1.0);
        return;
    }
    double h, l, a, b;
    int q = inn_el_expm1_dd(x, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_EXPM1_TOL, a, b);
    inn_el_scale(a, b, q, lo, hi);
}

// ---- log / log1p (elementary.py _log_dd, _log_bounds, _log1p_bounds)
INN_EL void inn_el_log_dd(double ah, double al, double &h, double &l) {
    int e;
    double f = inn_el_frexp(ah, e);
    if (f < INN_EL_SQRT_HALF) {
        f *= 2.0;
        e -= 1;
    }
    double ml = inn_el_ldexp(al, -e);
    int i = (int)floor((f - 1.0) * 64.0 + 0.5);
    double c = 1.0 + (double)i * 0.015625;
    double nh, nl, sh, sl, dh, dl, s_h, s_l, wh, wl, ph, pl;
    inn_el_two_sum(f - c, ml, nh, nl);
    inn_el_two_sum(f, c, sh, sl);
    inn_el_fast_two_sum(sh, sl + ml, dh, dl);
    inn_el_dd_div(nh, nl, dh, dl, s_h, s_l);
    inn_el_dd_mul(s_h, s_l, s_h, s_l, wh, wl);
    double t = (INN_EL_A13 * wh + INN_EL_A11) * wh + INN_EL_A9;
    inn_el_dd_mul(t, 0.0, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_A7H, INN_EL_A7L, ph, pl);
    inn_el_dd_mul(ph, pl, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_A5H, INN_EL_A5L, ph, pl);
    inn_el_dd_mul(ph, pl, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, INN_EL_A3H, INN_EL_A3L, ph, pl);
    inn_el_dd_mul(ph, pl, wh, wl, ph, pl);
    inn_el_dd_add(ph, pl, 1.0, 0.0, ph, pl);
    inn_el_dd_mul(s_h, s_l, ph, pl, h, l);
    h = 2.0 * h;
    l = 2.0 * l;
    if (i != 0) {
        inn_el_dd_add(inn_el_tab(inn_el_lch, i + 19), inn_el_tab(inn_el_lcl, i + 19), h, l, h, l);
    }
    if (e != 0) {
        double fe = (double)e, eh, el;
        inn_el_two_prod(fe, INN_EL_LN2H, eh, el);
        inn_el_fast_two_sum(eh, el + fe * INN_EL_LN2L, eh, el);
        inn_el_dd_add(eh, el, h, l, h, l);
    }
}
INN_EL void inn_el_log(double x, double &lo, double &hi) {
    if (!(x > 0.0)) {
        lo = hi = (x == 0.0) ? -INN_EL_INF : __longlong_as_double(0x7ff8000000000000LL);
        return;
    }
    if (x == INN_EL_INF) { lo = hi = INN_EL_INF; return; }
    if (x == 1.0) { lo = hi = 0.0; return; }
    double h, l;
    inn_el_log_dd(x, 0.0, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_LOG_TOL, lo, hi);
}
INN_EL void inn_el_log1p(double x, double &lo, double &hi) {
    if (!(x >= -1.0)) { lo = hi = __longlong_as_double(0x7ff8000000000000LL); return; }
    if (x == -1.0) { lo = hi = -INN_EL_INF; return; }
    if (x == INN_EL_INF) { lo = hi = INN_EL_INF; return; }
    if (x == 0.0) { lo = hi = x; return; }
    if (fabs(x) < INN_EL_TINY_ARG) { lo = inn_el_prev(x); hi = x; return; }
    double ah, al, h, l;
    inn_el_two_sum(1.0, x, ah, al);
    inn_el_log_dd(ah, al, h, l);
    inn_el_bracket(h, l, fabs(h) * INN_EL_LOG_TOL, lo, hi);
}
"""

# Rounding the float64 bounds to the kernel's type, with a zero bound as +0.
# float: cvt.rm / cvt.rp.f32.f64 without .ftz (see above).
_ELEMENTARY_OUT = r"""
INN_EL double inn_el_rd(double v, double like) { return v == 0.0 ? 0.0 : v; }
INN_EL double inn_el_ru(double v, double like) { return v == 0.0 ? 0.0 : v; }
INN_EL float inn_el_f32_z(float r) {
    return ((__float_as_uint(r) << 1) == 0u) ? __uint_as_float(0u) : r;
}
INN_EL float inn_el_rd(double v, float like) {
    float r; asm("cvt.rm.f32.f64 %0, %1;" : "=f"(r) : "d"(v)); return inn_el_f32_z(r);
}
INN_EL float inn_el_ru(double v, float like) {
    float r; asm("cvt.rp.f32.f64 %0, %1;" : "=f"(r) : "d"(v)); return inn_el_f32_z(r);
}
"""


def _elementary_op(name: str):
    fn, side = name.rsplit("_", 1)
    body = f"double lo, hi; inn_el_{fn}(inn_to_d(x), lo, hi); out = inn_el_{side}"
    return (("T x", "T out"), body + ("(lo, x);" if side == "rd" else "(hi, x);"))


_OPS.update({name: _elementary_op(name) for name in _ELEMENTARY_NAMES})


def _elementary_kernel(name):
    def kernel(a):
        return _kernel(name)(_float_array(a))

    kernel.__name__ = kernel.__qualname__ = name
    fn, side = name.rsplit("_", 1)
    direction = "down" if side == "rd" else "up"
    kernel.__doc__ = (
        f"Elementwise ``{fn}`` of a float32/float64 CuPy array rounded {direction} "
        "(same shape and dtype; the CPU kernel of the same name, bit for bit)."
    )
    return kernel


exp_rd = _elementary_kernel("exp_rd")
exp_ru = _elementary_kernel("exp_ru")
log_rd = _elementary_kernel("log_rd")
log_ru = _elementary_kernel("log_ru")
log1p_rd = _elementary_kernel("log1p_rd")
log1p_ru = _elementary_kernel("log1p_ru")
expm1_rd = _elementary_kernel("expm1_rd")
expm1_ru = _elementary_kernel("expm1_ru")


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
