"""intervalnn: sound interval arithmetic for end-to-end certified neural networks."""

from .backend import Backend, backend_of, get_backend
from .functions import abs, maximum, minimum, relu, sqr, sqrt
from .interval import Interval, concatenate
from .linalg import matmul

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "Interval",
    "abs",
    "backend_of",
    "concatenate",
    "get_backend",
    "matmul",
    "maximum",
    "minimum",
    "relu",
    "sqr",
    "sqrt",
]
