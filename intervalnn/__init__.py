"""intervalnn: sound interval arithmetic for end-to-end certified neural networks."""

from .backend import Backend, backend_of, get_backend
from .datasets import DataError, Dataset, Splits, load_dataset
from .functions import (
    abs,
    exp,
    expm1,
    log,
    log1p,
    maximum,
    minimum,
    relu,
    sigmoid,
    softplus,
    sqr,
    sqrt,
    tanh,
)
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
    "exp",
    "expm1",
    "get_backend",
    "log",
    "log1p",
    "load_dataset",
    "matmul",
    "maximum",
    "minimum",
    "relu",
    "sigmoid",
    "softplus",
    "sqr",
    "sqrt",
    "tanh",
]
