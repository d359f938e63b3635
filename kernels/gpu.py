"""CuPy array kernels for the GPU backend, on CUDA's directed-rounding intrinsics.

Same names and semantics as :mod:`intervalnn.kernels.cpu`: interval kernels
``add, sub, mul, div, sqr, sqrt`` take ``(alo, ahi[, blo, bhi])`` of one
shape and float dtype and return ``(lo, hi)``; point kernels ``add_rd,
add_ru, mul_rd, mul_ru, div_rd, div_ru`` take two arrays (broadcasting
allowed) and return one; ``midrad``, ``mag_bound`` and ``gemm_enclose`` are
the fused steps of the sound GEMM in :mod:`intervalnn.kernels.gemm`; ``exp_rd,
exp_ru, log_rd, log_ru, log1p_rd, log1p_ru, expm1_rd, expm1_ru`` bound the
transcendentals, and so do ``tanh_rd, tanh_ru`` (the scalar kernels of
:mod:`intervalnn.kernels.elementary`; :mod:`intervalnn.kernels.cpu` has no
array kernel of that name yet).  :mod:`intervalnn.backend` uses this module
as the CuPy backend's kernel module; it gathers the parts, each documented
in its own docstring:

* :mod:`intervalnn.kernels.gpu_elementwise`: the interval and point kernels,
  the fused GEMM steps, how every bound is rounded (CUDA's ``__d*_rd/_ru``
  intrinsics, inline PTX for float under CuPy's ``-ftz=true``) and the
  compilation of the kernels (device helpers in ``gpu_preamble.cuh``);
* :mod:`intervalnn.kernels.gpu_elementary`: the transcendentals, a
  line-by-line port of :mod:`intervalnn.kernels.elementary` (device code in
  ``gpu_elementary.cuh``), equal to the CPU kernels bit for bit;
* :mod:`intervalnn.kernels.gpu_guards`: the checks that run when this module
  is imported: :func:`check_gemm_mode` refuses reduced-precision cuBLAS
  (TF32, FP16/BF16, emulation), a probe refuses to load if any building block
  flushes subnormals, and :data:`CUPY_FLUSHES_FLOAT32_SUBNORMALS` records
  whether CuPy's own float32 kernels do (then float32 bounds computed with
  plain CuPy operations above the kernels are not sound for subnormals).

Only these modules (and :mod:`intervalnn.backend`) import CuPy.
"""

from __future__ import annotations

# Re-exported as ``name as name`` (explicit re-exports).
from .gpu_elementary import exp_rd as exp_rd
from .gpu_elementary import exp_ru as exp_ru
from .gpu_elementary import expm1_rd as expm1_rd
from .gpu_elementary import expm1_ru as expm1_ru
from .gpu_elementary import log1p_rd as log1p_rd
from .gpu_elementary import log1p_ru as log1p_ru
from .gpu_elementary import log_rd as log_rd
from .gpu_elementary import log_ru as log_ru
from .gpu_elementary import tanh_rd as tanh_rd
from .gpu_elementary import tanh_ru as tanh_ru
from .gpu_elementwise import add as add
from .gpu_elementwise import add_rd as add_rd
from .gpu_elementwise import add_ru as add_ru
from .gpu_elementwise import div as div
from .gpu_elementwise import div_rd as div_rd
from .gpu_elementwise import div_ru as div_ru
from .gpu_elementwise import gemm_enclose as gemm_enclose
from .gpu_elementwise import mag_bound as mag_bound
from .gpu_elementwise import midrad as midrad
from .gpu_elementwise import mul as mul
from .gpu_elementwise import mul_rd as mul_rd
from .gpu_elementwise import mul_ru as mul_ru
from .gpu_elementwise import sqr as sqr
from .gpu_elementwise import sqrt as sqrt
from .gpu_elementwise import sub as sub

# Importing gpu_guards runs check_gemm_mode() and the subnormal probe (refusing
# to load where the bounds could not be trusted) and sets the flag.
from .gpu_guards import CUPY_FLUSHES_FLOAT32_SUBNORMALS as CUPY_FLUSHES_FLOAT32_SUBNORMALS
from .gpu_guards import check_gemm_mode as check_gemm_mode
