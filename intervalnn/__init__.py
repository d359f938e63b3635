"""intervalnn: sound interval arithmetic for end-to-end certified neural networks."""

from .backend import Backend, backend_of, get_backend
from .datasets import DataError, Dataset, Splits, load_dataset
from .functions import abs, maximum, minimum, relu, sqr, sqrt
from .interval import Interval, concatenate
from .linalg import matmul

__version__ = "0.1.0"

__all__ = [
    "Backend",
    "DataError",
    "Dataset",
    "Interval",
    "Splits",
    "abs",
    "backend_of",
    "concatenate",
    "get_backend",
    "load_dataset",
    "matmul",
    "maximum",
    "minimum",
    "relu",
    "sqr",
    "sqrt",
]
