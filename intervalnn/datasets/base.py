"""What every loader returns: :class:`Dataset` and :class:`Splits`; and :class:`DataError`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = ["DataError", "Dataset", "Splits", "sorted_split"]


class DataError(ValueError):
    """A data set is missing, corrupt, or not valid input for training."""


# ------------------------------------------------------------------ containers


def _readonly(a: np.ndarray) -> np.ndarray:
    """A read-only view of ``a`` (the caller's array keeps its own flags)."""
    v = a.view()
    v.flags.writeable = False
    return v


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features ``x`` (float, shape ``(n, d)``) and labels ``y`` (int64, shape ``(n,)``).

    Labels lie in ``0 .. num_classes - 1``.  The arrays are stored as read-only
    views so that a data set, once built, keeps its :meth:`fingerprint`.
    Integer labels of another integer dtype are converted to int64.
    """

    x: np.ndarray
    y: np.ndarray
    num_classes: int
    name: str = ""

    def __post_init__(self):
        x = np.asarray(self.x)
        y = np.asarray(self.y)
        if x.ndim != 2 or x.dtype.kind != "f":
            raise DataError(
                f"Dataset {self.name!r}: x must be a 2-D float array, got "
                f"shape {x.shape} dtype {x.dtype}"
            )
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(
                f"Dataset {self.name!r}: y must be a 1-D integer array, got "
                f"shape {y.shape} dtype {y.dtype}"
            )
        if len(x) != len(y):
            raise DataError(f"Dataset {self.name!r}: {len(x)} rows in x but {len(y)} labels in y")
        k = int(self.num_classes)
        if k < 2:
            raise DataError(f"Dataset {self.name!r}: num_classes must be >= 2, got {k}")
        if y.size and (y.min() < 0 or y.max() >= k):
            raise DataError(
                f"Dataset {self.name!r}: labels must lie in 0..{k - 1}, "
                f"found range {int(y.min())}..{int(y.max())}"
            )
        object.__setattr__(self, "x", _readonly(x))
        object.__setattr__(self, "y", _readonly(y.astype(np.int64, copy=False)))
        object.__setattr__(self, "num_classes", k)

    def __len__(self) -> int:
        return len(self.y)

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n={len(self)}, d={self.num_features}, "
            f"num_classes={self.num_classes}, x.dtype={self.x.dtype})"
        )

    @property
    def num_features(self) -> int:
        return self.x.shape[1]

    def class_counts(self) -> np.ndarray:
        """Number of examples of each class, shape ``(num_classes,)``."""
        return np.bincount(self.y, minlength=self.num_classes)

    def subset(self, indices, name: str | None = None) -> Dataset:
        """The examples at ``indices`` (an integer or boolean index array)."""
        idx = np.asarray(indices)
        return Dataset(
            self.x[idx], self.y[idx], self.num_classes, self.name if name is None else name
        )

    def fingerprint(self) -> str:
        """SHA-256 hex digest over dtype, shape and bytes of ``x`` and then ``y``.

        Stable across runs and machines for the same array contents (the dtype
        string includes the byte order); meant to be stored with model files.
        """
        h = hashlib.sha256(b"intervalnn.Dataset.v1\0")
        for a in (self.x, self.y):
            h.update(a.dtype.str.encode() + b"\0")
            h.update(repr(tuple(int(s) for s in a.shape)).encode() + b"\0")
            h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()


@dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test data sets, an optional pretraining set, and the input domain.

    ``domain`` is the box every valid input lies in (``(0.0, 1.0)`` for MNIST
    pixels), or ``None`` when inputs are unbounded (two moons).  All splits
    share the number of features and of classes.  ``trusted`` is a read-only
    boolean mask over the training split's rows that the attacker cannot
    touch (a user ``.npz`` file's ``trusted`` array), or ``None``.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    pretrain: Dataset | None = None
    domain: tuple[float, float] | None = None
    name: str = ""
    trusted: np.ndarray | None = None

    def __post_init__(self):
        if self.trusted is not None:
            t = np.asarray(self.trusted)
            if t.dtype != bool or t.shape != (len(self.train),):
                raise DataError(
                    f"Splits {self.name!r}: trusted must be a boolean mask of the "
                    f"{len(self.train)} training rows, got shape {t.shape} dtype {t.dtype}"
                )
            object.__setattr__(self, "trusted", _readonly(t))
        parts = [("train", self.train), ("val", self.val), ("test", self.test)]
        if self.pretrain is not None:
            parts.append(("pretrain", self.pretrain))
        d, k = self.train.num_features, self.train.num_classes
        for label, ds in parts:
            if not isinstance(ds, Dataset):
                raise TypeError(f"Splits.{label} must be a Dataset, got {type(ds).__name__}")
            if ds.num_features != d or ds.num_classes != k:
                raise DataError(
                    f"Splits {self.name!r}: {label} has {ds.num_features} features and "
                    f"{ds.num_classes} classes, train has {d} and {k}"
                )
        if self.domain is not None:
            lo, hi = (float(v) for v in self.domain)
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise DataError(
                    f"Splits {self.name!r}: domain must be finite lo < hi, got {self.domain}"
                )
            object.__setattr__(self, "domain", (lo, hi))

    @property
    def num_features(self) -> int:
        return self.train.num_features

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


# ------------------------------------------------------------------ split helpers


def sorted_split(perm: np.ndarray, sizes) -> list[np.ndarray]:
    """``perm`` cut into consecutive pieces of the given ``sizes`` and the rest, each sorted.

    With ``perm`` a random permutation of ``0 .. n-1`` this draws disjoint
    random index sets whose examples keep their original order.
    """
    return [np.sort(p) for p in np.split(perm, np.cumsum(sizes))]
