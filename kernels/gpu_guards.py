"""Import-time guards of the GPU backend: full-precision cuBLAS, no flushed subnormals.

Part of :mod:`intervalnn.kernels.gpu`, which imports this module, so that
importing the GPU kernels runs the checks at the end of this file and refuses
to load where the bounds could not be trusted.

Subnormals.  CuPy compiles every kernel with ``-ftz=true`` (see
:mod:`intervalnn.kernels.gpu_elementwise`); :func:`_check_subnormals` runs
every building block of the kernels on subnormal operands and results in
both dtypes and refuses (``RuntimeError``) if any is flushed.
:data:`CUPY_FLUSHES_FLOAT32_SUBNORMALS` records whether CuPy's *own*
float32 kernels flush subnormals in this process.

Matrix products.  :mod:`intervalnn.kernels.gemm` calls ``cupy.matmul``, i.e.
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
"""

from __future__ import annotations

import os

import cupy
import numpy as np

from .gpu_elementwise import get_kernel

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
        "of intervalnn.kernels.gemm allows; turn it off to use the GPU backend."
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
        got = cupy.asnumpy(get_kernel("probe")(a, b, op))
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
