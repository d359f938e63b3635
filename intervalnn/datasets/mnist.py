"""MNIST: the IDX reader :func:`load_idx`, :func:`mnist17_splits` and :func:`mnist_splits`."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from pathlib import Path

import numpy as np

from .base import DataError, Dataset, Splits, sorted_split

__all__ = ["MNIST_FILES", "MNIST_MD5", "load_idx", "mnist17_splits", "mnist_splits"]

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


def _load_mnist_raw(data_dir, verify: bool = True, name: str = "mnist") -> dict[str, np.ndarray]:
    """The four MNIST arrays (uint8), keyed like :data:`MNIST_FILES`."""
    if data_dir is None:
        raise DataError(f"{name} needs data_dir (a directory with the MNIST files). " + _MNIST_HELP)
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


def _mnist_splits(
    data_dir, digits, name: str, seed, n_val: int, n_pretrain: int, verify: bool
) -> Splits:
    """The one MNIST splitter: keep ``digits`` (class ``i`` is ``digits[i]``), scale, split.

    ``digits`` lists the kept digits in class order.  Of the kept training
    images a seeded permutation (``np.random.default_rng(seed)``) takes
    ``n_val`` for validation, then ``n_pretrain`` for pretraining (removed
    from training); each split keeps the original file order.
    """
    raw = _load_mnist_raw(data_dir, verify=verify, name=name)
    digits = np.asarray(digits, dtype=np.int64)
    k = len(digits)
    to_class = np.full(10, -1, dtype=np.int64)
    to_class[digits] = np.arange(k)

    def select(images, labels):
        keep = np.isin(labels, digits)
        x = images[keep].reshape(-1, 28 * 28).astype(np.float64) / 255.0
        return x, to_class[labels[keep]]

    x_tr, y_tr = select(raw["train_images"], raw["train_labels"])
    x_te, y_te = select(raw["test_images"], raw["test_labels"])
    n = len(y_tr)
    n_val, n_pretrain = int(n_val), int(n_pretrain)
    if n_val < 0 or n_pretrain < 0 or n_val + n_pretrain >= n:
        raise ValueError(
            f"{name}_splits: need 0 <= n_val, 0 <= n_pretrain and n_val + n_pretrain < {n}; "
            f"got n_val={n_val}, n_pretrain={n_pretrain}"
        )
    perm = np.random.default_rng(seed).permutation(n)
    i_val, i_pre, i_tr = sorted_split(perm, [n_val, n_pretrain])
    return Splits(
        train=Dataset(x_tr[i_tr], y_tr[i_tr], k, f"{name}/train"),
        val=Dataset(x_tr[i_val], y_tr[i_val], k, f"{name}/val"),
        test=Dataset(x_te, y_te, k, f"{name}/test"),
        pretrain=Dataset(x_tr[i_pre], y_tr[i_pre], k, f"{name}/pretrain") if n_pretrain else None,
        domain=(0.0, 1.0),
        name=name,
    )


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
    return _mnist_splits(data_dir, (1, 7), "mnist17", seed, n_val, n_pretrain, verify)


def mnist_splits(
    data_dir, seed=0, n_val: int = 5000, n_pretrain: int = 0, verify: bool = True
) -> Splits:
    """Full MNIST, 10 classes (digit ``d`` is class ``d``); otherwise as :func:`mnist17_splits`.

    The same files, checks, pixel scaling (float64 ``x / 255`` in ``[0, 1]``),
    flattening and split rule: of the 60,000 training images a seeded
    permutation selects ``n_val`` (default 5,000) for validation and then
    ``n_pretrain`` for pretraining (removed from training); the rest (55,000
    with the defaults) is the training set.  The test set is the 10,000 test
    images.  ``domain`` is ``(0.0, 1.0)``.  Train with ``loss="ce"`` and a
    10-output model.
    """
    return _mnist_splits(data_dir, range(10), "mnist", seed, n_val, n_pretrain, verify)
