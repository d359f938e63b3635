"""The one place that chooses NumPy or CuPy for given arrays.

``backend_of(*values)`` returns a :class:`Backend`: the array namespace
(``numpy`` or ``cupy``) and the matching kernel module
(:mod:`intervalnn.kernels.cpu` or :mod:`intervalnn.kernels.gpu`).  Like
array-api-compat it never imports CuPy to test a type (the type's module name
is enough), and it raises ``TypeError`` when NumPy and CuPy arrays meet.
"""

from dataclasses import dataclass
from types import ModuleType

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


@dataclass(frozen=True)
class Backend:
    name: str  # "numpy" or "cupy"
    xp: ModuleType  # the array namespace
    kernels: ModuleType  # kernels with the same names on every backend

    def to_host(self, a):
        """A NumPy copy (or view) of an array of this backend."""
        return a.get() if self.name == "cupy" else np.asarray(a)

    def require_dtype(self, dtype) -> np.dtype:
        """``dtype`` if intervals of it are sound on this backend, else ``TypeError``.

        CuPy compiles its own elementwise code for float32 with flush-to-zero
        (it appends ``-ftz=true`` to every kernel; see kernels/gpu.py), so
        plain CuPy float32 operations lose subnormal endpoints: float32
        intervals are refused on the GPU while that is so.
        """
        dt = check_float_dtype(dtype)
        if dt == np.float32 and getattr(self.kernels, "CUPY_FLUSHES_FLOAT32_SUBNORMALS", False):
            raise TypeError(
                "float32 intervals are refused on the GPU: CuPy compiles float32 code with "
                "flush-to-zero, which loses subnormal bounds; use float64 on the GPU "
                "(or float32 on the CPU)"
            )
        return dt


def is_cupy_array(x) -> bool:
    return type(x).__module__.split(".")[0] == "cupy"


def _numpy_backend() -> Backend:
    from intervalnn.kernels import cpu

    return Backend("numpy", np, cpu)


def _cupy_backend() -> Backend:
    import cupy

    from intervalnn.kernels import gpu

    return Backend("cupy", cupy, gpu)


def backend_of(*values) -> Backend:
    """The backend of the arrays among ``values``; Python scalars are neutral.

    Raises ``TypeError`` if both NumPy and CuPy arrays are present.
    """
    kinds = set()
    for v in values:
        if is_cupy_array(v):
            kinds.add("cupy")
        elif isinstance(v, np.ndarray | np.generic):
            kinds.add("numpy")
    if kinds == {"cupy", "numpy"}:
        raise TypeError(
            "cannot mix NumPy and CuPy arrays in one operation; move them to one "
            "device first (cupy.asarray(x) or x.get())"
        )
    return _cupy_backend() if "cupy" in kinds else _numpy_backend()


def get_backend(name: str) -> Backend:
    """The backend called ``name``: ``"numpy"``/``"cpu"`` or ``"cupy"``/``"gpu"``."""
    if name in ("numpy", "cpu"):
        return _numpy_backend()
    if name in ("cupy", "gpu"):
        try:
            return _cupy_backend()
        except ImportError as exc:
            raise RuntimeError(
                "the GPU backend needs CuPy and a CUDA GPU: pip install 'intervalnn[gpu]'"
            ) from exc
    raise ValueError(f"unknown backend {name!r}; use 'numpy' (cpu) or 'cupy' (gpu)")


def check_float_dtype(dtype) -> np.dtype:
    """``dtype`` as a NumPy dtype if it is float32 or float64, else ``TypeError``."""
    dt = np.dtype(dtype)
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"intervals hold float32 or float64 endpoints, not {dt}")
    return dt


def cuda_device_count() -> int:
    """How many CUDA devices CuPy can use (imports CuPy: ``ImportError`` without it).

    A missing or broken CUDA driver or runtime raises ``RuntimeError`` naming
    CUDA's own error, e.g. ``"CUDARuntimeError: cudaErrorNoDevice: ..."``.
    """
    import cupy

    try:
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception as exc:  # the driver or runtime is missing or broken
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
