"""Load a data set by name or path: :func:`load_dataset`."""

from __future__ import annotations

import os

from .base import DataError, Splits
from .mnist import mnist17_splits, mnist_splits
from .moons import two_moons_splits
from .npz import load_npz

__all__ = ["load_dataset"]

_NAMES = ("moons", "mnist17", "mnist")


def load_dataset(name_or_path, data_dir=None, seed=0, **kw) -> Splits:
    """Load ``"moons"``, ``"mnist17"``, ``"mnist"`` or a user ``.npz`` file as :class:`Splits`.

    * ``"moons"`` (alias ``"two_moons"``): :func:`two_moons_splits` (``seed``, ``**kw``).
    * ``"mnist17"`` (alias ``"mnist-1-7"``, ``"mnist_1_7"``): :func:`mnist17_splits`
      with ``data_dir`` (falling back to the ``INTERVALNN_MNIST_DIR``
      environment variable).
    * ``"mnist"`` (alias ``"mnist10"``, ``"mnist-10"``, ``"mnist_10"``): full MNIST,
      10 classes, :func:`mnist_splits`, with ``data_dir`` as for ``"mnist17"``.
    * a path ending in ``.npz``: :func:`load_npz` (``seed``, ``**kw``).

    Anything else is a :class:`DataError` listing the choices.
    """
    s = os.fspath(name_or_path)
    key = s.strip().lower()
    if key.endswith(".npz"):
        return load_npz(s, seed=seed, **kw)
    if key in ("moons", "two_moons", "two-moons"):
        if data_dir is not None:
            raise ValueError("load_dataset: 'moons' is generated and takes no data_dir")
        return two_moons_splits(seed=seed, **kw)
    if key in ("mnist17", "mnist-1-7", "mnist_1_7", "mnist1-7"):
        if data_dir is None:
            data_dir = os.environ.get("INTERVALNN_MNIST_DIR")
        return mnist17_splits(data_dir, seed=seed, **kw)
    if key in ("mnist", "mnist10", "mnist-10", "mnist_10"):
        if data_dir is None:
            data_dir = os.environ.get("INTERVALNN_MNIST_DIR")
        return mnist_splits(data_dir, seed=seed, **kw)
    if os.path.isdir(s):
        raise DataError(
            f"{s}: is a directory; expected a data set name ({', '.join(map(repr, _NAMES))}) "
            "or an .npz file with arrays x and y (for MNIST files in a directory, use the "
            "name mnist17 or mnist with data_dir, on the command line --data-dir)"
        )
    raise DataError(
        f"unknown data set {s!r}: choose one of {', '.join(map(repr, _NAMES))} "
        "or give a path to an .npz file (with arrays x and y)"
    )
