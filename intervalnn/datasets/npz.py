"""User data sets from ``.npz`` files: :func:`load_npz`, validated and never unpickled.

:func:`load_npz` runs three steps, each a few small functions below it:
reading the archive, validating its arrays, and splitting the examples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .archive import read_npz
from .base import DataError, Dataset, Splits, sorted_split

__all__ = ["load_npz"]

_SPLIT_KEYS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")

_Parts = dict[str, tuple[np.ndarray, np.ndarray]]  # split name -> validated (x, y)


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
    floats ``lo < hi``: every feature must lie in it), ``num_classes`` and
    ``trusted``: a boolean array with one entry per example of ``x`` (or of
    ``x_train`` with predefined splits), True for the points the attacker
    cannot touch; the training split's entries become :attr:`Splits.trusted`.
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
    arrays = _read_arrays(path, where)
    domain = _read_domain(arrays, where)
    if "num_classes" in arrays and num_classes is None:
        num_classes = _read_num_classes(arrays, where)

    predefined = any(k in arrays for k in _SPLIT_KEYS)
    if predefined:
        parts = _predefined_parts(arrays, n_test, where)
    else:
        parts = _single_part(arrays, where)
    _check_same_features(parts, where)
    trusted = _read_trusted(arrays, parts, predefined, where)
    k = _class_count(parts, num_classes, where)
    if domain is not None:
        _check_in_domain(parts, domain, where)

    rng = np.random.default_rng(seed)
    sizes = _split_sizes(parts, predefined, n_val, n_test, n_pretrain, where)
    return _make_splits(parts, predefined, sizes, rng, k, domain, path.stem, trusted)


# ------------------------------------------------------------------ reading


def _read_arrays(path: Path, where: str) -> dict[str, np.ndarray]:
    """Every array in the archive, read by :func:`.archive.read_npz`: never unpickled, every
    damage (a broken archive, a bad header, a member that is not an ``.npy`` array, a
    header claiming more data than the file holds) a :class:`DataError`."""
    if path.is_dir():
        raise DataError(
            f"{where}: is a directory; expected an .npz file with arrays x and y "
            "(or x_train, y_train, x_test, y_test)"
        )
    if not path.is_file():
        raise DataError(f"{where}: file not found")
    try:
        f = open(path, "rb")
    except OSError as e:
        raise DataError(f"{where}: cannot read ({e.strerror or e})") from None
    with f:
        return read_npz(f, where, DataError)


def _read_domain(arrays: dict[str, np.ndarray], where: str) -> tuple[float, float] | None:
    """The optional ``domain`` key as ``(lo, hi)``, or ``None`` when the file has none."""
    if "domain" not in arrays:
        return None
    dom = arrays["domain"]
    if dom.dtype.kind not in "fiu" or dom.size != 2:
        raise DataError(f"{where}: 'domain' must hold two numbers lo < hi, got {dom!r}")
    lo, hi = (float(v) for v in dom.ravel())
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise DataError(f"{where}: 'domain' must be finite with lo < hi, got ({lo}, {hi})")
    return (lo, hi)


def _read_num_classes(arrays: dict[str, np.ndarray], where: str) -> int:
    """The ``num_classes`` key: one integer."""
    nc = arrays["num_classes"]
    if nc.dtype.kind not in "iu" or nc.size != 1:
        raise DataError(f"{where}: 'num_classes' must be one integer, got {nc!r}")
    return int(nc.ravel()[0])


def _read_trusted(arrays, parts: _Parts, predefined: bool, where: str) -> np.ndarray | None:
    """The optional ``trusted`` key: a boolean mask over the examples of ``x`` (or of
    ``x_train``), or ``None`` when the file has none."""
    if "trusted" not in arrays:
        return None
    t = arrays["trusted"]
    pool = "x_train" if predefined else "x"
    n = len(parts["train" if predefined else "all"][1])
    if t.dtype != bool:
        raise DataError(
            f"{where}: 'trusted' must be a boolean array (True: a point the attacker cannot "
            f"touch), got dtype {t.dtype}"
        )
    if t.shape != (n,):
        raise DataError(
            f"{where}: 'trusted' must have one entry per example of {pool} ({n}), got shape "
            f"{t.shape}"
        )
    return t


# ------------------------------------------------------------------ validating


def _predefined_parts(arrays: dict[str, np.ndarray], n_test, where: str) -> _Parts:
    """The file's own ``train``, ``val`` (when given) and ``test`` splits, validated."""
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
            parts[s] = _check_xy(arrays[f"x_{s}"], arrays[f"y_{s}"], f"{where} [{s}]")
    return parts


def _single_part(arrays: dict[str, np.ndarray], where: str) -> _Parts:
    """All examples, from the keys ``x`` and ``y``, validated, as the one part ``all``."""
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(
            f"{where}: needs arrays 'x' and 'y' (or x_train, y_train, x_test, y_test); "
            f"missing {', '.join(missing)}; found {', '.join(sorted(arrays)) or 'nothing'}"
        )
    return {"all": _check_xy(arrays["x"], arrays["y"], where)}


def _check_xy(x: np.ndarray, y: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of one split, validated: float64 ``(n, d)`` and int64 ``(n,)``."""
    x = _check_x(x, where)
    return x, _check_y(y, len(x), where)


def _check_x(x: np.ndarray, where: str) -> np.ndarray:
    """Real, finite features with at least one example and one feature, as float64 ``(n, d)``."""
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
    """``n`` non-negative integer labels (integral floats accepted), as int64 ``(n,)``."""
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


def _check_same_features(parts: _Parts, where: str) -> None:
    """Every split has the same number of features."""
    dims = {x.shape[1] for x, _ in parts.values()}
    if len(dims) != 1:
        raise DataError(f"{where}: splits have different numbers of features {sorted(dims)}")


def _class_count(parts: _Parts, num_classes: int | None, where: str) -> int:
    """The number of classes: ``num_classes``, else the largest label + 1 (checked >= 2)."""
    y_max = max(int(y.max()) for _, y in parts.values())
    k = y_max + 1 if num_classes is None else int(num_classes)
    if k < 2:
        raise DataError(f"{where}: need at least 2 classes (labels 0..K-1 with K >= 2), got K={k}")
    if y_max >= k:
        raise DataError(f"{where}: label {y_max} out of range 0..{k - 1} (num_classes={k})")
    return k


def _check_in_domain(parts: _Parts, domain: tuple[float, float], where: str) -> None:
    """Every feature of every split lies in ``[lo, hi]``; the first row outside is named."""
    lo, hi = domain
    for s, (x, _) in parts.items():
        out = (x < lo) | (x > hi)
        if out.any():
            row = int(np.flatnonzero(out.any(axis=1))[0])
            raise DataError(f"{where} [{s}]: row {row} has features outside domain [{lo}, {hi}]")


# ------------------------------------------------------------------ splitting


def _split_sizes(
    parts: _Parts, predefined: bool, n_val, n_test, n_pretrain, where: str
) -> tuple[int, int, int]:
    """How many examples of the pool go to test, validation and pretraining.

    The pool is all examples, or with predefined splits the training split
    (which then gives no test examples, and no validation examples when the
    file has its own validation split).  The training set keeps the rest,
    which must not be empty; without predefined splits, neither may the test set.
    """
    if predefined:
        n = len(parts["train"][1])
        n_val_ = 0 if "val" in parts else _default_count(n_val, n, 0.15, "n_val")
        n_test_ = 0
    else:
        n = len(parts["all"][1])
        n_val_ = _default_count(n_val, n, 0.15, "n_val")
        n_test_ = _default_count(n_test, n, 0.15, "n_test")
    n_pre = int(n_pretrain)
    if n_pre < 0:
        raise ValueError(f"load_npz: n_pretrain must be >= 0, got {n_pre}")
    if n_test_ + n_val_ + n_pre >= n or (not predefined and n_test_ == 0):
        raise DataError(
            f"{where}: {n} examples cannot be split into test={n_test_}, val={n_val_}, "
            f"pretrain={n_pre} and a non-empty training set (and a non-empty test set)"
        )
    return n_test_, n_val_, n_pre


def _default_count(n_given, n_total: int, frac: float, what: str) -> int:
    """``n_given`` checked ``>= 0``, or ``floor(frac * n_total)`` when it is ``None``."""
    if n_given is None:
        return int(np.floor(frac * n_total))
    m = int(n_given)
    if m < 0:
        raise ValueError(f"load_npz: {what} must be >= 0, got {m}")
    return m


def _make_splits(
    parts: _Parts,
    predefined: bool,
    sizes: tuple[int, int, int],
    rng: np.random.Generator,
    k: int,
    domain: tuple[float, float] | None,
    name: str,
    trusted: np.ndarray | None = None,
) -> Splits:
    """Permute the pool with ``rng`` and cut it into test, val, pretrain and train (file order)."""
    x_all, y_all = parts["train"] if predefined else parts["all"]
    n_test_, n_val_, n_pre = sizes
    perm = rng.permutation(len(y_all))
    i_te, i_va, i_pre, i_tr = sorted_split(perm, [n_test_, n_val_, n_pre])

    def ds(x, y, label):
        return Dataset(x, y, k, f"{name}/{label}")

    if predefined:
        x_te, y_te = parts["test"]
        x_va, y_va = parts["val"] if "val" in parts else (x_all[i_va], y_all[i_va])
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
        trusted=None if trusted is None else trusted[i_tr],
    )
