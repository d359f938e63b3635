"""Model files: one ``.npz`` per model, safe to load, versioned, written atomically.

Layout (NumPy ``.npz``, always read with ``allow_pickle=False``, so loading
never executes code):

* ``nominal/<name>``, ``lo/<name>``, ``hi/<name>``: the nominal parameters and
  the parameter box, one array each per parameter (``0.weight``, ``0.bias``, ...);
* ``meta``: UTF-8 JSON (as uint8) with the format and library versions, the
  architecture (format 2: its string, :mod:`intervalnn.architecture`, with the
  input features and the number of frozen layers; format 1, still read: an
  MLP's ``layers`` and ``hidden``), dtype, threat model, training
  configuration and seed, dataset fingerprint, history and best step;
* ``sha256``: the SHA-256 (as uint8 hex) over every other entry, name by name
  (name, dtype, shape, bytes), so truncation, corruption and tampering are
  detected.

Files are written to a temporary file in the target directory, fsynced and
renamed over the target, so a crash never leaves a half-written model.
:func:`load_model` checks everything (readability, archive integrity through
:func:`~intervalnn.datasets.archive.read_npz`, the hash, the format version,
the metadata's schema: the type of every field the library reads, shapes,
dtypes, ``lo <= hi``, no NaN,
nominal parameters finite and inside their box) and raises
:class:`ModelFileError` with a one-line message otherwise.  The hash detects
corruption and edits made without this library; it is not a signature.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import __version__, architecture
from .datasets.archive import read_npz
from .interval import Interval
from .layers import Sequential
from .threat import ThreatModel

FORMAT = "intervalnn-model"
FORMAT_VERSION = 2
#: The format versions :func:`load_model` reads: 1 stored MLPs only (``type: "mlp"`` with
#: ``layers`` and ``hidden``), 2 any architecture as its string (``type: "sequential"``).
READ_VERSIONS = (1, 2)


class ModelFileError(ValueError):
    """A model file is missing, unreadable, corrupted, tampered with or inconsistent."""


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _architecture(model: Sequential) -> dict:
    """The metadata of ``model``'s architecture: its canonical string
    (:func:`intervalnn.architecture.describe`), input and output sizes, frozen layers."""
    return {
        "type": "sequential",
        "string": architecture.describe(model),
        "in_features": model.in_features,
        "out_features": model.out_features,
        "frozen": model.frozen,
    }


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def model_file_bytes(
    model: Sequential,
    threat: ThreatModel,
    *,
    config: dict | None = None,
    dataset: dict | None = None,
    history: list | None = None,
    best: dict | None = None,
    extra: dict | None = None,
) -> bytes:
    """The contents of a model file for ``model`` (box and nominal parameters) and its metadata."""
    bk = model.backend
    arrays = {}
    for name, box in model.named_params().items():
        arrays[f"lo/{name}"] = bk.to_host(box.lo)
        arrays[f"hi/{name}"] = bk.to_host(box.hi)
    for name, value in model.named_nominal().items():
        arrays[f"nominal/{name}"] = bk.to_host(value)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "architecture": _architecture(model),
        "dtype": str(model.dtype),
        "threat_model": threat.to_dict(),
        "config": config or {},
        "dataset": dataset or {},
        "history": history or [],
        "best": best or {},
        "extra": extra or {},
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta, allow_nan=True).encode(), dtype=np.uint8)
    arrays["sha256"] = np.frombuffer(_digest(arrays).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def file_digest(data: bytes) -> str:
    """The SHA-256 a model file stores over its entries (from the file's bytes)."""
    with np.load(io.BytesIO(data), allow_pickle=False) as f:
        return bytes(f["sha256"]).decode()


def write_atomic(path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that a crash leaves the old file or the new one, whole."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):  # mkstemp's 0600 would hide the model from other users
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def save_model(path, model: Sequential, threat: ThreatModel, **metadata) -> Path:
    """Write ``model`` with its metadata to ``path`` atomically (see :func:`model_file_bytes`)."""
    return write_atomic(path, model_file_bytes(model, threat, **metadata))


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file (check the path, or train one first)")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a model file")
    try:
        f = open(path, "rb")  # opened here so that it is closed whatever np.load raises
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the model file ({exc.strerror})") from None
    with f:
        if f.read(4) != b"PK\x03\x04":
            raise ModelFileError(
                f"{path}: not an intervalnn model file (not an .npz archive; empty, truncated "
                "or overwritten?)"
            )
        f.seek(0)
        return read_npz(f, str(path), ModelFileError)


def _meta(raw: np.ndarray) -> dict | None:
    """The metadata dictionary, or ``None`` when it is not valid JSON."""
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _check_version(path: Path, meta: dict) -> None:
    if meta.get("format") != FORMAT:
        raise ModelFileError(
            f"{path}: not an intervalnn model file (format {meta.get('format')!r})"
        )
    version = meta.get("format_version")
    if version not in READ_VERSIONS:  # True is 1 here: the schema check names it
        reads = ", ".join(map(str, READ_VERSIONS))
        raise ModelFileError(
            f"{path}: model format version {version!r} is not supported by intervalnn "
            f"{__version__} (it reads formats {reads}); re-train the model or use the "
            "intervalnn version that wrote it"
        )


def _is_number(v) -> bool:
    """A JSON number that converts to a float (a huge integer overflows ``math.isfinite``)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return False
    return isinstance(v, float) or abs(v) < 2**63


def _kind(v) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(v), "null" if v is None else "a number" if _is_number(v) else type(v).__name__
    )


#: The columns of a history row (and of the best row): numbers or null.
HISTORY_COLUMNS = (
    "epoch",
    "step",
    "loss_lo",
    "loss_hi",
    "mean_width",
    "max_width",
    "val_certified_accuracy",
    "val_accuracy",
)


def _check_schema(path: Path, meta: dict) -> None:
    """The type of every metadata field the library and the command line read, or
    :class:`ModelFileError` naming the field (a hand edit with the hash recomputed)."""

    def bad(field: str, want: str, value) -> ModelFileError:
        return ModelFileError(
            f"{path}: inconsistent metadata: {field} must be {want}, got {_kind(value)} "
            f"{json.dumps(value, default=str)[:60]}"
        )

    def check(field: str, value, ok, want: str, optional: bool = False) -> None:
        if not ((optional and value is None) or ok(value)):
            raise bad(field, want + (" or null" if optional else ""), value)

    if "library_version" not in meta:
        raise ModelFileError(f"{path}: inconsistent metadata: missing entry 'library_version'")
    check("library_version", meta["library_version"], lambda v: isinstance(v, str), "a string")
    check("format_version", meta.get("format_version"), lambda v: type(v) is int, "an integer")
    for key in ("architecture", "dtype", "threat_model"):
        if key not in meta:
            raise ModelFileError(f"{path}: inconsistent metadata: missing entry {key!r}")
    check("dtype", meta["dtype"], lambda v: isinstance(v, str), "a string")
    arch = meta["architecture"]
    check("architecture", arch, lambda v: isinstance(v, dict), "an object")
    if "type" in arch:
        check("architecture.type", arch["type"], lambda v: isinstance(v, str), "a string")
    if _arch_type(arch) == "sequential":
        for key, ok, want in (
            ("string", lambda v: isinstance(v, str), "a string"),
            ("in_features", lambda v: type(v) is int and v >= 1, "an integer >= 1"),
            ("frozen", lambda v: type(v) is int and v >= 0, "an integer >= 0"),
            ("out_features", lambda v: type(v) is int and v >= 1, "an integer >= 1"),
        ):
            if key not in arch and key in ("string", "in_features"):
                raise ModelFileError(
                    f"{path}: inconsistent metadata: missing entry architecture.{key}"
                )
            if key in arch:
                check(f"architecture.{key}", arch[key], ok, want)
    threat = meta["threat_model"]
    check("threat_model", threat, lambda v: isinstance(v, dict), "an object")
    if "epsilon" not in threat:
        raise ModelFileError(f"{path}: inconsistent metadata: missing entry threat_model.epsilon")
    check("threat_model.epsilon", threat["epsilon"], _is_number, "a number")
    eps = threat.get("test_epsilon")
    check("threat_model.test_epsilon", eps, _is_number, "a number", optional=True)
    check(
        "threat_model.domain",
        threat.get("domain"),
        lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)),
        "an array of two numbers",
        optional=True,
    )

    def count(v) -> bool:
        return type(v) is int and v >= 0

    for key, ok, want, optional in (  # absent in files written before issue 13: the defaults
        ("poison_count", count, "an integer >= 0", True),
        ("label_flips", count, "an integer >= 0", False),
        ("label_target", count, "an integer >= 0", True),
        ("paired", lambda v: isinstance(v, bool), "a boolean", False),
    ):
        if key in threat:
            check(f"threat_model.{key}", threat[key], ok, want, optional)
    for key, kind, want in (
        ("config", dict, "an object"),
        ("dataset", dict, "an object"),
        ("history", list, "an array"),
        ("best", dict, "an object"),
        ("extra", dict, "an object"),
    ):
        if not isinstance(meta.get(key, kind()), kind):
            raise ModelFileError(
                f"{path}: inconsistent metadata: {key!r} is not a {kind.__name__} (must be "
                f"{want}, got {_kind(meta[key])})"
            )
    config = meta.get("config") or {}
    for key, ok, want, optional in (  # the training rules `info` shows
        ("steps", lambda v: type(v) is int and v >= 1, "an integer >= 1", True),
        ("clip", _is_number, "a number", True),
        ("clip_method", lambda v: isinstance(v, str), "a string", False),
        ("weight_decay", _is_number, "a number", False),
        ("momentum", _is_number, "a number", False),
        ("nesterov", lambda v: isinstance(v, bool), "a boolean", False),
        ("lr_decay", _is_number, "a number", False),
        ("lr_min", _is_number, "a number", False),
    ):
        if key in config:
            check(f"config.{key}", config[key], ok, want, optional)
    dataset = meta.get("dataset") or {}
    check("dataset.name", dataset.get("name"), lambda v: isinstance(v, str), "a string", True)
    for key in ("seed", "pretrain_size", "num_features", "num_classes", "train_size", "trusted"):
        check(
            f"dataset.{key}",
            dataset.get(key),
            lambda v: type(v) is int and v >= 0,
            "an integer >= 0",
            optional=True,
        )
    check("dataset.train", dataset.get("train"), lambda v: isinstance(v, str), "a string", True)
    rows = [(f"history[{i}]", r) for i, r in enumerate(meta.get("history") or [])]
    for where, row in [*rows, ("best", meta.get("best") or {})]:
        if not isinstance(row, dict):
            raise ModelFileError(
                f"{path}: inconsistent metadata: a history row is not an object ({where} is "
                f"{_kind(row)})"
            )
        for key in HISTORY_COLUMNS:
            check(f"{where}.{key}", row.get(key), _is_number, "a number", optional=True)


def _arch_type(arch: dict) -> str:
    """The architecture's type: ``"sequential"`` (a string), or ``"mlp"`` (format 1's sizes)."""
    return arch.get("type", "sequential" if "string" in arch else "mlp")


def _architecture_string(arch: dict) -> tuple[str, int, int, int]:
    """The architecture string, input and output sizes and frozen layers of the metadata
    (format 1's MLP as its string); ``KeyError``, ``TypeError`` or ``ValueError`` if bad."""
    kind = _arch_type(arch)
    if kind == "mlp":
        sizes = {k: arch[k] for k in ("in_features", "out_features", "layers", "hidden")}
        if not all(type(v) is int for v in sizes.values()):
            raise ValueError(f"architecture sizes must be integers, got {sizes}")
        if min(sizes["in_features"], sizes["out_features"], sizes["layers"]) < 1:
            raise ValueError(f"architecture sizes must be >= 1, got {sizes}")
        if sizes["layers"] > 1 and sizes["hidden"] < 1:
            raise ValueError(f"hidden must be >= 1 with {sizes['layers']} layers")
        hidden = max(sizes["hidden"], 1)
        string = architecture.mlp_string(hidden, sizes["layers"], sizes["out_features"])
        return string, sizes["in_features"], sizes["out_features"], 0
    if kind != "sequential":
        raise ValueError(f"unknown architecture type {kind!r}")
    string, n_in, frozen = arch["string"], arch["in_features"], arch.get("frozen", 0)
    n_out = arch.get("out_features")
    if not isinstance(string, str) or type(n_in) is not int or type(frozen) is not int:
        raise TypeError("architecture: string, in_features or frozen has the wrong type")
    specs = architecture.parse(string)
    last = [s.out for s in specs if s.kind == "linear"]
    if n_out is not None and last and n_out != last[-1]:
        raise ValueError(f"out_features {n_out!r} is not the {last[-1]} outputs of {string!r}")
    return string, n_in, last[-1] if last else 0, frozen


def _build(path: Path, meta: dict, backend: str, arrays: dict) -> tuple[Sequential, np.dtype]:
    """The (uninitialised) model the metadata describes, once it matches the stored arrays."""
    try:
        dtype = np.dtype(meta["dtype"])
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype {dtype} is not float32 or float64")
        string, n_in, _, frozen = _architecture_string(meta["architecture"])
        expected = architecture.parameter_count(string, n_in)  # shapes checked, nothing built
        architecture.check_frozen(string, frozen)
        meta["threat_model"] = ThreatModel.from_dict(meta["threat_model"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        what = f"missing entry {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ModelFileError(f"{path}: inconsistent metadata: {what}") from None
    for key, kind in (("config", dict), ("dataset", dict), ("history", list), ("best", dict)):
        if not isinstance(meta.setdefault(key, kind()), kind):
            raise ModelFileError(f"{path}: inconsistent metadata: {key!r} is not a {kind.__name__}")
    if not all(isinstance(row, dict) for row in meta["history"]):
        raise ModelFileError(f"{path}: inconsistent metadata: a history row is not an object")
    stored = sum(int(a.size) for k, a in arrays.items() if k.startswith("lo/"))
    if expected != stored:  # checked before allocating anything the metadata asks for
        raise ModelFileError(
            f"{path}: inconsistent file: the architecture {string!r} on {n_in} input features "
            f"has {expected} parameters, the file stores {stored}"
        )
    if backend in ("cupy", "gpu"):
        # the GPU refuses some dtypes (float32 under CuPy's flush-to-zero): say so plainly
        from .backend import get_backend

        get_backend(backend).require_dtype(dtype)
    model = architecture.build(string, n_in, frozen=frozen, dtype=dtype, backend=backend)
    return model, dtype


def load_model(path, backend: str = "numpy") -> tuple[Sequential, dict]:
    """Read and check a model file; returns the model and its metadata.

    Raises ``ModelFileError`` (a ``ValueError`` with a one-line message naming
    the file) for a missing, unreadable, truncated, corrupted, tampered
    (SHA-256 mismatch), wrong-version or inconsistent file: missing entries,
    shape or dtype mismatches, NaN or ``lo > hi`` bounds, a non-finite nominal
    parameter or one outside its box.  Nothing in the file is ever executed.
    """
    path = Path(path)
    arrays = _read(path)
    for key in ("meta", "sha256"):
        if key not in arrays:
            raise ModelFileError(f"{path}: not an intervalnn model file (no {key!r} entry)")
    stored = arrays.pop("sha256")
    stored = stored.tobytes().decode(errors="replace") if stored.dtype == np.uint8 else ""
    hash_ok = _digest(arrays) == stored
    meta = _meta(arrays.pop("meta"))
    if meta is not None and meta.get("format") == FORMAT:
        version = meta.get("format_version")
        if isinstance(version, int) and version not in READ_VERSIONS:
            _check_version(path, meta)  # another format version may hash differently
    if not hash_ok:
        raise ModelFileError(
            f"{path}: SHA-256 mismatch: the file was modified or corrupted after it was "
            "written; re-train or restore it from a copy"
        )
    if meta is None:
        raise ModelFileError(f"{path}: unreadable metadata (not a JSON object)")
    _check_version(path, meta)
    _check_schema(path, meta)
    model, dtype = _build(path, meta, backend, arrays)
    xp = model.backend.xp
    params, nominal = {}, {}
    names = set(model.named_params())
    extra = sorted(
        k
        for k in arrays
        if k.split("/", 1)[0] in ("lo", "hi", "nominal") and k.split("/", 1)[-1] not in names
    )
    if extra:
        raise ModelFileError(
            f"{path}: inconsistent file: entries {', '.join(extra)} do not belong to the "
            "architecture in its metadata"
        )
    for name, box in model.named_params().items():
        try:
            lo, hi, nom = arrays[f"lo/{name}"], arrays[f"hi/{name}"], arrays[f"nominal/{name}"]
        except KeyError as exc:
            raise ModelFileError(f"{path}: parameter entry {exc} is missing") from None
        for what, a in (("lower bounds", lo), ("upper bounds", hi), ("nominal values", nom)):
            if a.shape != box.shape or a.dtype != dtype:
                raise ModelFileError(
                    f"{path}: {what} of {name} have shape {a.shape} and dtype {a.dtype}, "
                    f"expected {box.shape} and {dtype} (inconsistent file)"
                )
        try:
            params[name] = Interval(xp.asarray(lo), xp.asarray(hi))
        except ValueError as exc:
            raise ModelFileError(f"{path}: parameter {name}: {exc}") from None
        if not bool(np.isfinite(nom).all()):
            raise ModelFileError(f"{path}: the nominal {name} holds NaN or infinite values")
        nominal[name] = xp.asarray(nom)
        if not bool(params[name].contains(nominal[name]).all()):
            raise ModelFileError(f"{path}: the nominal {name} lies outside its parameter box")
    model.load(params, nominal)
    return model, meta
