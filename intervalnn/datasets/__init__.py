"""Data sets for certified training: two moons, MNIST 1-vs-7, and user ``.npz`` files.

Everything here is plain NumPy (no scikit-learn, no torch) and deterministic
given a seed.  Loaders return a :class:`Splits` of :class:`Dataset` objects:

* :func:`two_moons` / :func:`two_moons_splits` -- the two-moons toy problem,
  drawn from the same distribution as scikit-learn's ``make_moons``.
* :func:`load_idx` / :func:`mnist17_splits` / :func:`mnist_splits` -- the MNIST IDX
  files (1 vs 7, or all 10 digits)
  (gzip-compressed or not), checksummed, filtered to the digits 1 and 7.
* :func:`load_npz` -- a user ``.npz`` file with ``x`` and ``y`` (or predefined
  ``x_train``/``y_train``/... splits), validated and never unpickled.
* :func:`load_dataset` -- dispatch on ``"moons"``, ``"mnist17"``, ``"mnist"`` or a path
  ending in ``.npz``.

Every problem with the data itself (missing or corrupt files, bad values,
bad labels) raises :class:`DataError`, a :class:`ValueError`.

One module per concern: ``base`` (:class:`Dataset`, :class:`Splits`,
:class:`DataError`), ``moons``, ``mnist``, ``npz`` and ``dispatch``
(:func:`load_dataset`); this package re-exports their public names.
"""

from .base import DataError, Dataset, Splits
from .dispatch import load_dataset
from .mnist import MNIST_FILES, MNIST_MD5, load_idx, mnist17_splits, mnist_splits
from .moons import two_moons, two_moons_splits
from .npz import load_npz

__all__ = [
    "MNIST_FILES",
    "MNIST_MD5",
    "DataError",
    "Dataset",
    "Splits",
    "load_dataset",
    "load_idx",
    "load_npz",
    "mnist17_splits",
    "mnist_splits",
    "two_moons",
    "two_moons_splits",
]
