"""Data sets for certified training: two moons, MNIST 1-vs-7, and user ``.npz`` files.

Everything here is plain NumPy (no scikit-learn, no torch) and deterministic
given a seed.  Loaders return a :class:`Splits` of :class:`Dataset` objects:

* :func:`two_moons` / :func:`two_moons_splits` -- the two-moons toy problem,
  drawn from the same distribution as scikit-learn's ``make_moons``.
* :func:`load_idx` / :func:`mnist17_splits` -- the standard MNIST IDX files
  (gzip-compressed or not), checksummed, filtered to the digits 1 and 7.
* :func:`load_npz` -- a user ``.npz`` file with ``x`` and ``y`` (or predefined
  ``x_train``/``y_train``/... splits), validated and never unpickled.
* :func:`load_dataset` -- dispatch on ``"moons"``, ``"mnist17"`` or a path
  ending in ``.npz``.

Every problem with the data itself (missing or corrupt files, bad values,
bad labels) raises :class:`DataError`, a :class:`ValueError`.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

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
    "two_moons",
    "two_moons_splits",
]


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
    share the number of features and of classes.
    """

    train: Dataset
    val: Dataset
    test: Dataset
    pretrain: Dataset | None = None
    domain: tuple[float, float] | None = None
    name: str = ""

    def __post_init__(self):
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


# ------------------------------------------------------------------ two moons


def two_moons(n: int, noise: float = 0.1, seed=0) -> Dataset:
    """``n`` two-moons points with Gaussian noise of standard deviation ``noise``.

    Same distribution as scikit-learn's
    ``make_moons(n_samples=n, noise=noise, shuffle=True)``: the outer moon has
    ``n // 2`` points ``(cos t, sin t)`` at ``t = linspace(0, pi, n // 2)``,
    label 0; the inner moon has the other ``n - n // 2`` points
    ``(1 - cos t, 1 - sin t - 0.5)`` at ``t = linspace(0, pi, n - n // 2)``,
    label 1; the points are shuffled and then noise is added.  The random
    numbers come from ``np.random.default_rng(seed)``, so the draws differ
    from scikit-learn's (``RandomState``) for the same seed: only the
    distribution matches, not the stream.  With ``noise == 0`` no noise is
    drawn and the points lie exactly on the arcs.

    ``seed`` is anything ``np.random.default_rng`` accepts (an int, a
    ``SeedSequence``, ...).  Features are float64.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"two_moons: n must be >= 0, got {n}")
    noise = float(noise)
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"two_moons: noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    x = np.empty((n, 2), dtype=np.float64)
    x[:n_out, 0] = np.cos(t_out)
    x[:n_out, 1] = np.sin(t_out)
    x[n_out:, 0] = 1.0 - np.cos(t_in)
    x[n_out:, 1] = 1.0 - np.sin(t_in) - 0.5
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    perm = rng.permutation(n)
    x, y = x[perm], y[perm]
    if noise > 0:
        x += rng.normal(scale=noise, size=x.shape)
    return Dataset(x, y, 2, "moons")


def two_moons_splits(
    seed=0,
    noise: float = 0.1,
    n_train: int = 1000,
    n_val: int = 200,
    n_test: int = 200,
    n_pretrain: int = 0,
) -> Splits:
    """Independent two-moons draws for train / val / test (/ pretrain).

    Each split has its own generator, spawned from ``np.random.SeedSequence(seed)``
    (children 0..3 for train, val, test, pretrain), so changing one split's
    size leaves the others unchanged.  ``pretrain`` is ``None`` when
    ``n_pretrain == 0``.  The domain is ``None`` (unbounded inputs).
    """
    if n_train < 1:
        raise ValueError(f"two_moons_splits: n_train must be >= 1, got {n_train}")
    s_train, s_val, s_test, s_pre = np.random.SeedSequence(seed).spawn(4)

    def draw(m, ss, label):
        ds = two_moons(m, noise=noise, seed=ss)
        return Dataset(ds.x, ds.y, 2, f"moons/{label}")

    return Splits(
        train=draw(n_train, s_train, "train"),
        val=draw(n_val, s_val, "val"),
        test=draw(n_test, s_test, "test"),
        pretrain=draw(n_pretrain, s_pre, "pretrain") if n_pretrain > 0 else None,
        domain=None,
        name="moons",
    )


# ------------------------------------------------------------------ IDX / MNIST

_IDX_MAGIC = {0x00000801: 1, 0x00000803: 3}  # unsigned byte labels / images

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: MD5 of the *decompressed* standard MNIST IDX files.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_MNIST_HELP = (
    "Expected the four standard MNIST IDX files, gzip-compressed (.gz) or not: "
    + ", ".join(f"{f}[.gz]" for f in MNIST_FILES.values())
    + ". Any MNIST download that keeps the original IDX files works, e.g. "
    "torchvision.datasets.MNIST(root, download=True) (files in root/MNIST/raw) "
    "or the original files from a mirror such as "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ ; put them in one directory "
    "and pass it as data_dir."
)


def _read_maybe_gzip(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic 1f 8b."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e})") from e
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return raw


def _parse_idx(raw: bytes, where: str) -> np.ndarray:
    if len(raw) < 4:
        raise DataError(f"{where}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in _IDX_MAGIC:
        raise DataError(
            f"{where}: bad IDX magic number 0x{magic:08x}; expected 0x00000801 "
            "(unsigned-byte labels) or 0x00000803 (unsigned-byte images)"
        )
    ndim = _IDX_MAGIC[magic]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{where}: truncated IDX header ({len(raw)} of {header} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) if dims else 0
    if len(raw) - header != expected:
        raise DataError(
            f"{where}: IDX dimensions {dims} need {expected} data bytes, file has "
            f"{len(raw) - header} (truncated or trailing data)"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims).copy()


def load_idx(path) -> np.ndarray:
    """Read an unsigned-byte IDX file (gzip-compressed or raw) into a uint8 array.

    Gzip is detected by the magic bytes ``1f 8b``, not by the file name.  The
    magic number must be ``0x00000801`` (1-D labels) or ``0x00000803`` (3-D
    images), and the header's dimensions must account for every data byte;
    otherwise :class:`DataError`.
    """
    path = Path(path)
    return _parse_idx(_read_maybe_gzip(path), str(path))


def _find_mnist_file(data_dir: Path, base: str) -> Path | None:
    for d in (data_dir, data_dir / "MNIST" / "raw"):
        for name in (base, base + ".gz"):
            p = d / name
            if p.is_file():
                return p
    return None


def _load_mnist_raw(data_dir, verify: bool = True) -> dict[str, np.ndarray]:
    """The four MNIST arrays (uint8), keyed like :data:`MNIST_FILES`."""
    if data_dir is None:
        raise DataError("mnist17 needs data_dir (a directory with the MNIST files). " + _MNIST_HELP)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"MNIST data directory {data_dir} does not exist. " + _MNIST_HELP)
    found = {key: _find_mnist_file(data_dir, base) for key, base in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] + "[.gz]" for k, p in found.items() if p is None]
    if missing:
        raise DataError(f"MNIST files missing in {data_dir}: {', '.join(missing)}. " + _MNIST_HELP)
    out = {}
    for key, path in found.items():
        raw = _read_maybe_gzip(path)
        if verify:
            base = MNIST_FILES[key]
            got = hashlib.md5(raw, usedforsecurity=False).hexdigest()
            if got != MNIST_MD5[base]:
                raise DataError(
                    f"{path}: MD5 of the decompressed content is {got}, expected "
                    f"{MNIST_MD5[base]} for {base}; the file is corrupt or not the "
                    "standard MNIST file (pass verify=False to skip this check)"
                )
        out[key] = _parse_idx(raw, str(path))
    for split in ("train", "test"):
        imgs, labs = out[f"{split}_images"], out[f"{split}_labels"]
        if imgs.ndim != 3 or imgs.shape[1:] != (28, 28) or len(imgs) != len(labs) or labs.ndim != 1:
            raise DataError(
                f"MNIST {split}: images {imgs.shape} and labels {labs.shape} do not "
                "match (expected (n, 28, 28) and (n,))"
            )
    return out


def mnist17_splits(
    data_dir, seed=0, n_val: int = 2000, n_pretrain: int = 0, verify: bool = True
) -> Splits:
    """MNIST restricted to the digits 1 and 7 (binary: digit 1 -> class 0, digit 7 -> class 1).

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
    ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte`` from
    ``data_dir`` (each gzip-compressed ``.gz`` or not; torchvision's
    ``MNIST/raw`` subdirectory is also searched), checks the MD5 of each
    file's decompressed content against the known values (``verify=False``
    skips this), and keeps the digits **1 and 7**.  (BoundFlow's MNIST-1/7
    loader kept 0 and 6 by mistake; these are the digits FullCert's
    experiments name.)

    Pixels are scaled to ``[0, 1]`` as float64 ``x / 255``: IEEE division is
    correctly rounded, so each pixel is the float64 nearest to ``k / 255``
    (within half an ulp, about 5.6e-17), with 0 and 1 exact.  Images are
    flattened to 784 features in row-major order.

    Of the 13,007 training images of 1s and 7s, a seeded random permutation
    (``np.random.default_rng(seed)``) selects ``n_val`` (default 2,000) as
    the validation set and then ``n_pretrain`` more as a pretraining set.
    The pretraining images are *removed* from the training set, as FullCert
    pretrains on a separate clean subset.  The rest (11,007 with the
    defaults) is the training set; each split keeps the original file order.
    The test set is the 2,163 test images of 1s and 7s.  ``domain`` is
    ``(0.0, 1.0)``.
    """
    raw = _load_mnist_raw(data_dir, verify=verify)
    digits = (1, 7)

    def select(images, labels):
        keep = np.isin(labels, digits)
        x = images[keep].reshape(-1, 28 * 28).astype(np.float64) / 255.0
        y = (labels[keep] == digits[1]).astype(np.int64)
        return x, y

    x_tr, y_tr = select(raw["train_images"], raw["train_labels"])
    x_te, y_te = select(raw["test_images"], raw["test_labels"])
    n = len(y_tr)
    n_val, n_pretrain = int(n_val), int(n_pretrain)
    if n_val < 0 or n_pretrain < 0 or n_val + n_pretrain >= n:
        raise ValueError(
            f"mnist17_splits: need 0 <= n_val, 0 <= n_pretrain and n_val + n_pretrain < {n}; "
            f"got n_val={n_val}, n_pretrain={n_pretrain}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    i_val = np.sort(perm[:n_val])
    i_pre = np.sort(perm[n_val : n_val + n_pretrain])
    i_tr = np.sort(perm[n_val + n_pretrain :])
    return Splits(
        train=Dataset(x_tr[i_tr], y_tr[i_tr], 2, "mnist17/train"),
        val=Dataset(x_tr[i_val], y_tr[i_val], 2, "mnist17/val"),
        test=Dataset(x_te, y_te, 2, "mnist17/test"),
        pretrain=Dataset(x_tr[i_pre], y_tr[i_pre], 2, "mnist17/pretrain") if n_pretrain else None,
        domain=(0.0, 1.0),
        name="mnist17",
    )


# ------------------------------------------------------------------ user .npz files

_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")


def _check_x(x: np.ndarray, where: str) -> np.ndarray:
    if x.dtype.kind not in "fiub":
        raise DataError(f"{where}: features must be real numbers, got dtype {x.dtype}")
    if x.ndim < 2:
        raise DataError(
            f"{where}: features must have shape (n, d) (or (n, ...), flattened), got "
            f"shape {x.shape}; reshape 1-D features to (n, 1)"
        )
    if x.shape[0] == 0:
        raise DataError(f"{where}: no examples")
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] == 0:
        raise DataError(f"{where}: zero features per example")
    x = x.astype(np.float64)
    bad = ~np.isfinite(x).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(
            f"{where}: non-finite feature (NaN or inf) in row {row} "
            f"({int(bad.sum())} bad rows in all)"
        )
    return x


def _check_y(y: np.ndarray, n: int, where: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"{where}: labels must have shape (n,), got {y.shape}")
    if len(y) != n:
        raise DataError(f"{where}: {n} examples in x but {len(y)} labels in y")
    if y.dtype.kind == "f":
        ok = np.isfinite(y) & (y == np.round(y))
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise DataError(f"{where}: non-integer label {y[i]!r} in row {i}")
    elif y.dtype.kind not in "iub":
        raise DataError(f"{where}: labels must be integers, got dtype {y.dtype}")
    if y.size and y.min() < 0:
        i = int(np.argmin(y))
        raise DataError(f"{where}: negative label {y[i]} in row {i}; labels must be 0..K-1")
    if y.dtype.kind in "fu" and y.size and y.max() > np.iinfo(np.int64).max:
        raise DataError(f"{where}: label {y.max()} out of range")
    return y.astype(np.int64)


def _default_count(n_given, n_total: int, frac: float, what: str) -> int:
    if n_given is None:
        return int(np.floor(frac * n_total))
    m = int(n_given)
    if m < 0:
        raise ValueError(f"load_npz: {what} must be >= 0, got {m}")
    return m


def load_npz(
    path,
    seed=0,
    n_val: int | None = None,
    n_test: int | None = None,
    n_pretrain: int = 0,
    num_classes: int | None = None,
) -> Splits:
    """Load and validate a user data set from an ``.npz`` file.

    The file holds either ``x`` (shape ``(n, d)``, or ``(n, ...)`` which is
    flattened) and ``y`` (shape ``(n,)``), or predefined splits
    ``x_train, y_train, x_test, y_test`` and optionally ``x_val, y_val``
    (then those splits are used as given).  Optional keys: ``domain`` (two
    floats ``lo < hi``: every feature must lie in it) and ``num_classes``.
    The file is opened with ``allow_pickle=False``: object arrays are refused
    with :class:`DataError` and never unpickled.

    Validation (any failure is a :class:`DataError`): features are real
    numbers, finite (the first row with a NaN or inf is named), converted to
    float64; labels are integers (integral floats such as ``1.0`` are
    accepted) in ``0 .. K-1`` with ``K = num_classes`` if given, else
    ``max(y) + 1``, and ``K >= 2``; lengths match; no split is empty (except
    a validation set of size 0 when asked for).

    Without predefined splits, a seeded permutation
    (``np.random.default_rng(seed)``) splits the examples into test
    (``n_test``, default ``floor(0.15 n)``), validation (``n_val``, default
    ``floor(0.15 n)``), pretraining (``n_pretrain``, default 0, taken out of
    the training set) and training (the rest, about 70%).  With predefined
    splits but no ``x_val``, ``n_val`` (default ``floor(0.15 n_train)``)
    training examples are held out as validation; ``n_test`` must then be
    left as ``None``.  Each split keeps the file's order.
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    try:
        f = np.load(path, allow_pickle=False)
    except ValueError as e:
        # allow_pickle=False refuses pickled content with ValueError; nothing is unpickled.
        raise DataError(f"{where}: not a valid .npz archive ({e})") from e
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: not a readable .npz archive ({e})") from e
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise DataError(f"{where}: a single .npy array, not an .npz archive with x and y")
    try:
        with f:
            arrays = {k: f[k] for k in f.files}
    except ValueError as e:
        # Object arrays need pickle; allow_pickle=False makes them a ValueError.
        raise DataError(
            f"{where}: contains an array that needs unpickling (object dtype?); refused ({e})"
        ) from e
    except (OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: corrupt .npz archive ({e})") from e

    for k, a in arrays.items():
        if a.dtype.hasobject:
            raise DataError(f"{where}: array {k!r} has object dtype; refusing it")

    domain = None
    if "domain" in arrays:
        dom = arrays["domain"]
        if dom.dtype.kind not in "fiu" or dom.size != 2:
            raise DataError(f"{where}: 'domain' must hold two numbers lo < hi, got {dom!r}")
        lo, hi = (float(v) for v in dom.ravel())
        if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
            raise DataError(f"{where}: 'domain' must be finite with lo < hi, got ({lo}, {hi})")
        domain = (lo, hi)
    if "num_classes" in arrays and num_classes is None:
        nc = arrays["num_classes"]
        if nc.dtype.kind not in "iu" or nc.size != 1:
            raise DataError(f"{where}: 'num_classes' must be one integer, got {nc!r}")
        num_classes = int(nc.ravel()[0])

    predefined = any(k in arrays for k in _SPLIT_KEYS)
    if predefined:
        need = ["x_train", "y_train", "x_test", "y_test"]
        if "x_val" in arrays or "y_val" in arrays:
            need += ["x_val", "y_val"]
        missing = [k for k in need if k not in arrays]
        if missing:
            raise DataError(
                f"{where}: predefined splits need {', '.join(need)}; missing {', '.join(missing)}"
            )
        if n_test is not None:
            raise ValueError("load_npz: n_test cannot be used with predefined splits")
        parts = {}
        for s in ("train", "val", "test"):
            if f"x_{s}" in arrays:
                w = f"{where} [{s}]"
                x = _check_x(arrays[f"x_{s}"], w)
                parts[s] = (x, _check_y(arrays[f"y_{s}"], len(x), w))
    else:
        missing = [k for k in ("x", "y") if k not in arrays]
        if missing:
            raise DataError(
                f"{where}: needs arrays 'x' and 'y' (or x_train, y_train, x_test, y_test); "
                f"missing {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'nothing'}"
            )
        x = _check_x(arrays["x"], where)
        parts = {"all": (x, _check_y(arrays["y"], len(x), where))}

    dims = {x.shape[1] for x, _ in parts.values()}
    if len(dims) != 1:
        raise DataError(f"{where}: splits have different numbers of features {sorted(dims)}")
    y_max = max(int(y.max()) for _, y in parts.values())
    k = y_max + 1 if num_classes is None else int(num_classes)
    if k < 2:
        raise DataError(f"{where}: need at least 2 classes (labels 0..K-1 with K >= 2), got K={k}")
    if y_max >= k:
        raise DataError(f"{where}: label {y_max} out of range 0..{k - 1} (num_classes={k})")
    if domain is not None:
        lo, hi = domain
        for s, (x, _) in parts.items():
            out = (x < lo) | (x > hi)
            if out.any():
                row = int(np.flatnonzero(out.any(axis=1))[0])
                raise DataError(
                    f"{where} [{s}]: row {row} has features outside domain [{lo}, {hi}]"
                )

    rng = np.random.default_rng(seed)
    name = path.stem
    if predefined:
        x_tr, y_tr = parts["train"]
        if "val" in parts:
            x_va, y_va = parts["val"]
            n_val_ = 0
        else:
            n_val_ = _default_count(n_val, len(y_tr), 0.15, "n_val")
        x_all, y_all = x_tr, y_tr
        n_test_ = 0
    else:
        x_all, y_all = parts["all"]
        n_val_ = _default_count(n_val, len(y_all), 0.15, "n_val")
        n_test_ = _default_count(n_test, len(y_all), 0.15, "n_test")
    n_pre = int(n_pretrain)
    if n_pre < 0:
        raise ValueError(f"load_npz: n_pretrain must be >= 0, got {n_pre}")
    n = len(y_all)
    if n_test_ + n_val_ + n_pre >= n or (not predefined and n_test_ == 0):
        raise DataError(
            f"{where}: {n} examples cannot be split into test={n_test_}, val={n_val_}, "
            f"pretrain={n_pre} and a non-empty training set (and a non-empty test set)"
        )
    perm = rng.permutation(n)
    cuts = np.cumsum([n_test_, n_val_, n_pre])
    i_te, i_va, i_pre, i_tr = (np.sort(p) for p in np.split(perm, cuts))

    def ds(x, y, label):
        return Dataset(x, y, k, f"{name}/{label}")

    if predefined:
        x_te, y_te = parts["test"]
        if "val" not in parts:
            x_va, y_va = x_all[i_va], y_all[i_va]
    else:
        x_te, y_te = x_all[i_te], y_all[i_te]
        x_va, y_va = x_all[i_va], y_all[i_va]
    return Splits(
        train=ds(x_all[i_tr], y_all[i_tr], "train"),
        val=ds(x_va, y_va, "val"),
        test=ds(x_te, y_te, "test"),
        pretrain=ds(x_all[i_pre], y_all[i_pre], "pretrain") if n_pre else None,
        domain=domain,
        name=name,
    )


# ------------------------------------------------------------------ dispatch

_NAMES = ("moons", "mnist17")


def load_dataset(name_or_path, data_dir=None, seed=0, **kw) -> Splits:
    """Load ``"moons"``, ``"mnist17"`` or a user ``.npz`` file as :class:`Splits`.

    * ``"moons"`` (alias ``"two_moons"``): :func:`two_moons_splits` (``seed``, ``**kw``).
    * ``"mnist17"`` (alias ``"mnist-1-7"``, ``"mnist_1_7"``): :func:`mnist17_splits`
      with ``data_dir`` (falling back to the ``INTERVALNN_MNIST_DIR``
      environment variable).
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
    raise DataError(
        f"unknown data set {s!r}: choose one of {', '.join(map(repr, _NAMES))} "
        "or give a path to an .npz file (with arrays x and y)"
    )
