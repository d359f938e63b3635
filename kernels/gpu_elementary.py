"""The CUDA port of :mod:`intervalnn.kernels.elementary`: transcendental GPU kernels.

Part of :mod:`intervalnn.kernels.gpu` (import that module: it re-exports
these kernels and runs the import-time checks).

Transcendentals (``exp_rd, exp_ru, log_rd, log_ru, log1p_rd, log1p_ru,
expm1_rd, expm1_ru, tanh_rd, tanh_ru``): CUDA's libm has no guaranteed error
bound, so these kernels port :mod:`intervalnn.kernels.elementary` line by line to the GPU
(double-double evaluation from ``+ - * /`` and ``fma`` with the same
reduction, tables, polynomials, deltas and bracketing; the C constants and
tables are generated from that module's values) and return the CPU kernels'
results bit for bit, float32 included (evaluated in double, rounded outward
with PTX ``cvt.rm/.rp`` that keeps subnormals).  See the comments above
``_ELEMENTARY_NAMES`` for what the port relies on.

The device code is the CUDA source ``gpu_elementary.cuh`` next to this file
(a package resource); the constants and tables it uses are generated here.
"""

from __future__ import annotations

import functools

import numpy as np

from .gpu_elementwise import EXTRA_SOURCE, OPS, cuda_source, float_array, get_kernel

# ------------------------------------------------- transcendentals
# exp, log, log1p, expm1, tanh rounded down / up: a line-by-line port of
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
# elementary.py's ``to32_rd(v, 0)`` / ``to32_ru(v, 0)`` exactly: both are
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
    "tanh_rd",
    "tanh_ru",
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
        "TANH_TOL": 2.0 * el.TANH_DELTA,
        "TINY_ARG": el._TINY_ARG,
        "SQRT_HALF": el._SQRT_HALF,
        "SMALLEST": el._SMALLEST,
        "MAX": np.finfo(np.float64).max,
        "INF": np.inf,
        "EXP_HI": 709.79,  # the thresholds of _exp_bounds / _expm1_bounds
        "EXP_LO": -745.2,
        "EXPM1_LO": -40.0,
        "TANH_TINY": el._TANH_TINY,  # the thresholds of _tanh_bounds
        "TANH_SAT": el._TANH_SAT,
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
_ELEMENTARY_BODY = cuda_source("gpu_elementary.cuh")

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


OPS.update({name: _elementary_op(name) for name in _ELEMENTARY_NAMES})


def _elementary_preamble() -> str:
    """The device code the transcendental kernels need beyond the shared preamble."""
    return _elementary_source() + _ELEMENTARY_OUT


EXTRA_SOURCE.update(dict.fromkeys(_ELEMENTARY_NAMES, _elementary_preamble))


def _elementary_kernel(name):
    def kernel(a):
        return get_kernel(name)(float_array(a))

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
tanh_rd = _elementary_kernel("tanh_rd")
tanh_ru = _elementary_kernel("tanh_ru")
