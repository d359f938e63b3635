"""The only code in intervalnn that rounds: directed-rounding kernels per backend.

Importing this package checks that the floating-point environment keeps
subnormal numbers (no flush-to-zero / denormals-are-zero): every error bound
in the library assumes gradual underflow.
"""

import numpy as np


def _check_gradual_underflow() -> None:
    tiny = np.float64(2.0**-1022)
    eta = np.float64(5e-324)
    tiny32 = np.float32(2.0**-126)
    # FTZ turns these results into 0; DAZ reads the subnormal operands as 0.
    if not (tiny / np.float64(4) > 0 and eta + eta > eta and tiny32 / np.float32(4) > 0):
        raise RuntimeError(
            "subnormal numbers are flushed to zero in this process (FTZ/DAZ is on, e.g. "
            "by a library compiled with -ffast-math); intervalnn's bounds assume IEEE "
            "gradual underflow and cannot be trusted here"
        )


_check_gradual_underflow()
