"""Model files: one ``.npz`` per model, safe to load, versioned, written atomically.

Layout (NumPy ``.npz``, always read with ``allow_pickle=False``, so loading
never executes code):

* ``nominal/<name>``, ``lo/<name>``, ``hi/<name>``: the nominal parameters and
  the parameter box, one array each per parameter (``0.weight``, ``0.bias``, ...);
* ``meta``: UTF-8 JSON (as uint8) with the format and library versions, the
  architecture, dtype, threat model, training configuration and seed,
  dataset fingerprint, history and best step;
* ``sha256``: the SHA-256 (as uint8 hex) over every other entry, name by name
  (name, dtype, shape, bytes), so truncation, corruption and tampering are
  detected.

Files are written to a temporary file in the target directory, fsynced and
renamed over the target, so a crash never leaves a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from . import __version__
from .interval import Interval
from .layers import Sequential, mlp
from .threat import ThreatModel

FORMAT = "intervalnn-model"
FORMAT_VERSION = 1


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
    linear = [la for la in model.layers if hasattr(la, "weight")]
    return {
        "type": "mlp",
        "in_features": model.in_features,
        "out_features": model.out_features,
        "layers": len(linear),
        "hidden": linear[0].weight.shape[1] if len(linear) > 1 else 0,
    }


def save_model(
    path,
    model: Sequential,
    threat: ThreatModel,
    *,
    config: dict | None = None,
    dataset: dict | None = None,
    history: list | None = None,
    best: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Write ``model`` (box and nominal parameters) with its metadata to ``path`` atomically."""
    path = Path(path)
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

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
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


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: not a readable intervalnn model file (truncated or corrupted: {exc})"
        ) from None


def load_model(path, backend: str = "numpy") -> tuple[Sequential, dict]:
    """Read and check a model file; returns the model and its metadata.

    Raises ``ModelFileError`` for a missing, truncated, corrupted, tampered,
    wrong-version or inconsistent file.
    """
    path = Path(path)
    arrays = _read(path)
    for key in ("meta", "sha256"):
        if key not in arrays:
            raise ModelFileError(f"{path}: not an intervalnn model file (no {key!r} entry)")
    stored = arrays.pop("sha256").tobytes().decode(errors="replace")
    if _digest(arrays) != stored:
        raise ModelFileError(f"{path}: SHA-256 mismatch: the file was modified or corrupted")
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path}: unreadable metadata ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an intervalnn model file")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model format version {meta.get('format_version')} is not supported by "
            f"intervalnn {__version__} (format {FORMAT_VERSION}); re-train or upgrade"
        )
    arch, dtype = meta["architecture"], np.dtype(meta["dtype"])
    model = mlp(
        arch["in_features"],
        arch["out_features"],
        hidden=max(arch["hidden"], 1),
        layers=arch["layers"],
        dtype=dtype,
        backend=backend,
    )
    xp = model.backend.xp
    params, nominal = {}, {}
    for name, box in model.named_params().items():
        try:
            lo, hi, nom = arrays[f"lo/{name}"], arrays[f"hi/{name}"], arrays[f"nominal/{name}"]
        except KeyError as exc:
            raise ModelFileError(f"{path}: parameter entry {exc} is missing") from None
        for what, a in (("lower bounds", lo), ("upper bounds", hi), ("nominal values", nom)):
            if a.shape != box.shape or a.dtype != dtype:
                raise ModelFileError(
                    f"{path}: {what} of {name} have shape {a.shape} and dtype {a.dtype}, "
                    f"expected {box.shape} and {dtype}"
                )
        try:
            params[name] = Interval(xp.asarray(lo), xp.asarray(hi))
        except ValueError as exc:
            raise ModelFileError(f"{path}: parameter {name}: {exc}") from None
        if not bool(params[name].contains(xp.asarray(nom)).all()):
            raise ModelFileError(f"{path}: the nominal {name} lies outside its parameter box")
        nominal[name] = xp.asarray(nom)
    model.load(params, nominal)
    meta["threat_model"] = ThreatModel.from_dict(meta["threat_model"])
    return model, meta
