"""Model files: round trip, atomic writes, and clear errors for every kind of bad file."""

from __future__ import annotations

import io as _stdio
import json
import math
import os
import zipfile

import numpy as np
import pytest

from intervalnn import __version__
from intervalnn import io as mio
from intervalnn.architecture import describe, mlp_string, parse
from intervalnn.interval import Interval
from intervalnn.io import FORMAT_VERSION, ModelFileError, load_model, save_model
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel

HISTORY = [
    {"epoch": 0, "step": 0, "loss_lo": math.nan, "loss_hi": math.nan, "mean_width": 0.0},
    {"epoch": 1, "step": 1, "loss_lo": 0.5, "loss_hi": 0.75, "val_certified_accuracy": 0.8},
]


def _model(dtype=np.float64, layers=2):
    """A small MLP with a genuine parameter box (nominal strictly inside)."""
    model = mlp(3, 2, hidden=4, layers=layers, seed=1, dtype=np.dtype(dtype))
    rng = np.random.default_rng(2)
    boxes = {}
    for name, nom in model.named_nominal().items():
        lo = (nom - rng.uniform(0, 0.01, nom.shape)).astype(dtype)
        hi = (nom + rng.uniform(0, 0.01, nom.shape)).astype(dtype)
        boxes[name] = Interval(np.minimum(lo, nom), np.maximum(hi, nom))
    model.load(boxes, model.named_nominal())
    return model


def _save(path, model=None, **kw):
    model = _model() if model is None else model
    threat = ThreatModel(1e-3, 5e-4, (0.0, 1.0))
    save_model(
        path,
        model,
        threat,
        config={"epochs": 3, "learning_rate": 0.5, "seed": 7},
        dataset={"name": "toy.npz", "seed": 7, "train": "ab" * 32, "num_features": 3},
        history=HISTORY,
        best={"step": 1, "val_certified_accuracy": 0.8},
        **kw,
    )
    return model, threat


def _entries(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _rewrite(path, arrays, rehash: bool) -> None:
    """Write ``arrays`` back to ``path``; with ``rehash`` the SHA-256 is recomputed (forgery)."""
    arrays = dict(arrays)
    arrays.pop("sha256", None)
    if rehash:
        arrays["sha256"] = np.frombuffer(mio._digest(arrays).encode(), dtype=np.uint8)
    else:
        arrays["sha256"] = _entries(path)["sha256"]
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _meta_of(arrays) -> dict:
    return json.loads(arrays["meta"].tobytes().decode())


def _with_meta(arrays, meta) -> dict:
    out = dict(arrays)
    out["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return out


def _load_error(path) -> str:
    with pytest.raises(ModelFileError) as err:
        load_model(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# ------------------------------------------------------------------ round trip


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("layers", [1, 2, 3])
def test_round_trip_is_exact(tmp_path, dtype, layers):
    path = tmp_path / "m.npz"
    model, threat = _save(path, _model(dtype, layers))
    loaded, meta = load_model(path)
    assert repr(loaded) == repr(model) and loaded.dtype == np.dtype(dtype)
    for name, box in model.named_params().items():
        got = loaded.named_params()[name]
        assert got.lo.dtype == box.lo.dtype
        np.testing.assert_array_equal(got.lo, box.lo)
        np.testing.assert_array_equal(got.hi, box.hi)
        np.testing.assert_array_equal(loaded.named_nominal()[name], model.named_nominal()[name])
    assert meta["threat_model"] == threat
    assert meta["format_version"] == FORMAT_VERSION and meta["library_version"] == __version__
    assert meta["dtype"] == str(np.dtype(dtype))
    assert meta["config"]["seed"] == 7 and meta["dataset"]["train"] == "ab" * 32
    assert meta["best"] == {"step": 1, "val_certified_accuracy": 0.8}
    assert math.isnan(meta["history"][0]["loss_lo"])
    assert meta["history"][1] == HISTORY[1]
    arch = meta["architecture"]
    assert arch["in_features"] == 3 and arch["frozen"] == 0 and arch["out_features"] == 2
    assert arch["string"] == mlp_string(4, layers, 2) and arch["type"] == "sequential"
    # identical predictions and bounds
    x = Interval.ball(np.random.default_rng(0).uniform(0, 1, (5, 3)).astype(dtype), 1e-3)
    a, b = model.forward(x), loaded.forward(x)
    np.testing.assert_array_equal(a.lo, b.lo)
    np.testing.assert_array_equal(a.hi, b.hi)


def test_file_is_a_plain_npz_with_a_sha256(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    arrays = _entries(path)  # allow_pickle=False: nothing in the file needs unpickling
    assert {"meta", "sha256"} <= set(arrays)
    assert all(a.dtype != object for a in arrays.values())
    stored = arrays.pop("sha256").tobytes().decode()
    assert len(stored) == 64 and stored == mio._digest(arrays)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def test_saving_over_an_existing_file_replaces_it(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    other = mlp(3, 2, hidden=4, seed=9)
    save_model(path, other, ThreatModel(0.0))
    loaded, meta = load_model(path)
    want = other.named_nominal()["0.weight"]
    np.testing.assert_array_equal(loaded.named_nominal()["0.weight"], want)
    assert meta["threat_model"].epsilon == 0.0


# ------------------------------------------------------------------ atomicity


def _listing(d):
    return sorted(p.name for p in d.iterdir())


def test_failed_write_keeps_the_old_file_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    _save(path)
    before = path.read_bytes()

    def crash(f, **arrays):  # write half a file, then die
        f.write(b"PK\x03\x04 half a model")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(mio.np, "savez", crash)
    with pytest.raises(OSError, match="No space"):
        _save(path, mlp(3, 2, hidden=4, seed=5))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert _listing(tmp_path) == ["m.npz"]
    load_model(path)


def test_interrupted_rename_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    _save(path)
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(mio.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(path, mlp(3, 2, hidden=4, seed=5))
    monkeypatch.undo()
    assert path.read_bytes() == before and _listing(tmp_path) == ["m.npz"]


def test_failed_first_write_leaves_nothing(tmp_path, monkeypatch):
    path = tmp_path / "new" / "m.npz"
    monkeypatch.setattr(mio.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(5, "EIO")))
    with pytest.raises(OSError):
        _save(path)
    assert _listing(tmp_path / "new") == []


# ------------------------------------------------------------------ missing, truncated, corrupted


def test_missing_file(tmp_path):
    assert "no such model file" in _load_error(tmp_path / "nope.npz")


def test_directory_instead_of_file(tmp_path):
    assert "is a directory" in _load_error(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a zip file at all", b"\x93NUMPY\x01\x00"])
def test_not_a_model_file(tmp_path, content):
    path = tmp_path / "m.npz"
    path.write_bytes(content)
    assert "not an intervalnn model file" in _load_error(path)


def test_npz_that_is_not_a_model(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((3, 2)), y=np.zeros(3))
    assert "no 'meta' entry" in _load_error(path)


@pytest.mark.parametrize("keep", [0.95, 0.6, 0.2, 0.01])
def test_truncated(tmp_path, keep):
    path = tmp_path / "m.npz"
    _save(path)
    data = path.read_bytes()
    path.write_bytes(data[: max(4, int(len(data) * keep))])
    msg = _load_error(path)
    assert "truncated or corrupted" in msg


def test_flipped_byte_in_parameter_data(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    data = bytearray(path.read_bytes())
    # flip a byte inside the stored lower bounds of the first weight
    raw = np.ascontiguousarray(_entries(path)["lo/0.weight"]).tobytes()
    at = bytes(data).index(raw) + 5
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    assert "truncated or corrupted" in _load_error(path)


def test_every_single_byte_flip_is_detected_or_harmless(tmp_path):
    """Flip each byte (a stride through the file): load fails cleanly or gives the same model."""
    path = tmp_path / "m.npz"
    model, _ = _save(path)
    data = path.read_bytes()
    want = {k: v.copy() for k, v in _entries(path).items()}
    bad = tmp_path / "bad.npz"
    n_detected = 0
    for at in range(0, len(data), 7):
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        bad.write_bytes(bytes(flipped))
        try:
            loaded, _ = load_model(bad)
        except ModelFileError as exc:
            assert "\n" not in str(exc)
            n_detected += 1
            continue
        # undetected flips sit outside the content (zip timestamps, padding): same model
        got = _entries(bad)
        assert got.keys() == want.keys()
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert n_detected > len(data) // 7 // 2


# ------------------------------------------------------------------ tampered: hash mismatch


def test_rewritten_entry_without_new_hash_is_tampering(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    arrays = _entries(path)
    arrays["hi/2.bias"] = arrays["hi/2.bias"] + 1.0  # still a valid, wider box
    _rewrite(path, arrays, rehash=False)
    assert "SHA-256 mismatch" in _load_error(path)


def test_rewritten_metadata_without_new_hash_is_tampering(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    arrays = _entries(path)
    meta = _meta_of(arrays)
    meta["threat_model"]["epsilon"] = 0.5  # claim a stronger certificate
    _rewrite(path, _with_meta(arrays, meta), rehash=False)
    assert "SHA-256 mismatch" in _load_error(path)


def test_removed_or_added_entry_is_tampering(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    arrays = _entries(path)
    del arrays["nominal/0.bias"]
    _rewrite(path, arrays, rehash=False)
    assert "SHA-256 mismatch" in _load_error(path)
    _save(path)
    arrays = {**_entries(path), "extra": np.zeros(3)}
    _rewrite(path, arrays, rehash=False)
    assert "SHA-256 mismatch" in _load_error(path)


# ------------------------------------------------------------------ consistent hash, bad content


def _forge(path, edit) -> str:
    """Apply ``edit(arrays)`` and recompute the hash: only the consistency checks can object."""
    _save(path)
    arrays = _entries(path)
    edit(arrays)
    _rewrite(path, arrays, rehash=True)
    return _load_error(path)


def test_lo_above_hi(tmp_path):
    def edit(a):
        a["lo/0.weight"] = a["hi/0.weight"] + 1.0

    msg = _forge(tmp_path / "m.npz", edit)
    assert "0.weight" in msg and "lo > hi" in msg


@pytest.mark.parametrize("entry", ["lo/0.bias", "hi/2.weight"])
def test_nan_bound(tmp_path, entry):
    def edit(a):
        a[entry] = a[entry].copy()
        a[entry].flat[0] = np.nan

    msg = _forge(tmp_path / "m.npz", edit)
    assert "NaN" in msg and entry.split("/")[1] in msg


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_nominal(tmp_path, value):
    def edit(a):
        a["nominal/0.weight"] = a["nominal/0.weight"].copy()
        a["nominal/0.weight"].flat[3] = value
        a["hi/0.weight"] = np.full_like(a["hi/0.weight"], np.inf)

    assert "NaN or infinite" in _forge(tmp_path / "m.npz", edit)


def test_nominal_outside_its_box(tmp_path):
    def edit(a):
        a["nominal/2.bias"] = a["hi/2.bias"] + 1.0

    assert "outside its parameter box" in _forge(tmp_path / "m.npz", edit)


@pytest.mark.parametrize("entry", ["lo/0.weight", "hi/0.bias", "nominal/2.weight"])
def test_wrong_shape(tmp_path, entry):
    """Shapes are checked entry by entry (the total count separately, below)."""

    def edit(a):  # same number of values, another shape
        a[entry] = a[entry].reshape(a[entry].shape[::-1] if a[entry].ndim == 2 else (1, -1))

    msg = _forge(tmp_path / "m.npz", edit)
    assert "shape" in msg and "expected" in msg and entry.split("/")[1] in msg


def test_wrong_dtype(tmp_path):
    def edit(a):
        a["lo/0.weight"] = a["lo/0.weight"].astype(np.float32)

    assert "dtype float32" in _forge(tmp_path / "m.npz", edit)


def test_extra_values(tmp_path):
    def edit(a):
        a["lo/0.bias"] = np.concatenate([a["lo/0.bias"], a["lo/0.bias"]])

    assert "the file stores 30" in _forge(tmp_path / "m.npz", edit)


def test_missing_parameter_entry(tmp_path):
    def edit(a):
        del a["hi/2.bias"]

    assert "missing" in _forge(tmp_path / "m.npz", edit)


def _format_1(meta: dict) -> dict:
    """``meta`` as format 1 stored it (before issue 14): an MLP's ``layers`` and ``hidden``."""
    arch = meta["architecture"]
    linear = [s for s in parse(arch["string"]) if s.kind == "linear"]
    meta["format_version"] = 1
    meta["architecture"] = {
        "type": "mlp",
        "in_features": arch["in_features"],
        "out_features": arch["out_features"],
        "layers": len(linear),
        "hidden": linear[0].out if len(linear) > 1 else 0,
    }
    return meta


def _set_arch(**changes):
    def edit(a):
        meta = _meta_of(a)
        meta["architecture"].update(changes)
        a.update(_with_meta(a, meta))

    return edit


def test_architecture_that_does_not_match_the_arrays(tmp_path):
    edit = _set_arch(string="linear(5)-relu-linear(2)")
    msg = _forge(tmp_path / "m.npz", edit)
    assert "'linear(5)-relu-linear(2)' on 3 input features has 32 parameters" in msg
    assert "the file stores 26" in msg

    # refused before the model is allocated
    huge = _set_arch(in_features=10**9, string="linear(1000000000)-relu-linear(2)")
    assert "inconsistent file" in _forge(tmp_path / "m.npz", huge)

    def swapped(a):  # same parameter count, other shapes
        _set_arch(in_features=3, string="linear(4)-relu-linear(2)", out_features=2)(a)
        a["lo/0.weight"] = a["lo/0.weight"].T.copy()
        a["hi/0.weight"] = a["hi/0.weight"].T.copy()

    assert "expected (3, 4)" in _forge(tmp_path / "m.npz", swapped)
    assert "has 8 parameters" in _forge(tmp_path / "m.npz", _set_arch(string="linear(2)"))
    assert "'linear(2)' on 3 input features" in _forge(
        tmp_path / "m.npz", _set_arch(string="linear(2)")
    )
    cnn = _set_arch(string="unflatten(1,3,1)-conv(2,2)-flatten-linear(2)")
    assert "kernel 2 is larger than its input" in _forge(tmp_path / "m.npz", cnn)
    other = _set_arch(string="linear(4)-relu-linear(3)", out_features=3)
    assert "has 31 parameters" in _forge(tmp_path / "m.npz", other)
    assert "out_features 5 is not the 2 outputs" in _forge(
        tmp_path / "m.npz", _set_arch(out_features=5)
    )
    assert "cannot freeze 4 layers" in _forge(tmp_path / "m.npz", _set_arch(frozen=4))
    assert "leaves no layer with parameters" in _forge(tmp_path / "m.npz", _set_arch(frozen=3))
    assert "unknown layer 'lin'" in _forge(tmp_path / "m.npz", _set_arch(string="lin(4)"))


def test_a_format_1_file_loads(tmp_path):
    """Files written before issue 14 (format 1: an MLP's sizes) load as the same model."""
    for layers in (1, 2, 3):
        path = tmp_path / f"old{layers}.npz"
        model, _ = _save(path, _model(layers=layers))
        arrays = _entries(path)
        _rewrite(path, _with_meta(arrays, _format_1(_meta_of(arrays))), rehash=True)
        loaded, meta = load_model(path)
        assert meta["format_version"] == 1 and describe(loaded) == describe(model)
        assert repr(loaded) == repr(model) and loaded.frozen == 0
        for name, box in model.named_params().items():
            np.testing.assert_array_equal(loaded.named_params()[name].lo, box.lo)
            np.testing.assert_array_equal(loaded.named_params()[name].hi, box.hi)


def test_format_1_sizes_that_do_not_match_the_arrays(tmp_path):
    def old(**changes):
        def edit(a):
            meta = _format_1(_meta_of(a))
            meta["architecture"].update(changes)
            a.update(_with_meta(a, meta))

        return edit

    assert "has 32 parameters, the file stores 26" in _forge(tmp_path / "m.npz", old(hidden=5))
    assert "has 8 parameters" in _forge(tmp_path / "m.npz", old(layers=1))
    assert "must be >= 1" in _forge(tmp_path / "m.npz", old(layers=0))
    assert "must be integers" in _forge(tmp_path / "m.npz", old(hidden="20"))
    huge = old(in_features=10**9, hidden=10**9)  # refused before the model is allocated
    assert "inconsistent file" in _forge(tmp_path / "m.npz", huge)

    def stray_entry(a):
        a["lo/4.weight"] = np.zeros(0)

    assert "lo/4.weight do not belong" in _forge(tmp_path / "m.npz", stray_entry)


@pytest.mark.parametrize(
    ("change", "expect"),
    [
        (lambda m: m.pop("architecture"), "missing entry 'architecture'"),
        (lambda m: m.pop("threat_model"), "missing entry 'threat_model'"),
        (lambda m: m["architecture"].update(string="linear(0)"), "must be a positive integer"),
        (lambda m: m["architecture"].update(in_features="3"), "in_features must be an integer"),
        (lambda m: m["architecture"].update(string=5), "architecture.string must be a string"),
        (lambda m: m["architecture"].pop("string"), "missing entry architecture.string"),
        (lambda m: m["architecture"].update(frozen=True), "frozen must be an integer >= 0"),
        (lambda m: m["architecture"].update(type="resnet"), "unknown architecture type"),
        (lambda m: m.update(dtype="int64"), "not float32 or float64"),
        (lambda m: m.update(dtype="nonsense"), "inconsistent metadata"),
        (lambda m: m["threat_model"].update(epsilon=-1.0), "epsilon must be"),
        (lambda m: m.update(history={"not": "a list"}), "'history' is not a list"),
        (lambda m: m["history"].append(3), "a history row is not an object"),
    ],
)
def test_inconsistent_metadata(tmp_path, change, expect):
    def edit(a):
        meta = _meta_of(a)
        change(meta)
        a.update(_with_meta(a, meta))

    assert expect in _forge(tmp_path / "m.npz", edit)


def test_metadata_that_is_not_json(tmp_path):
    def edit(a):
        a["meta"] = np.frombuffer(b"{not json", dtype=np.uint8)

    assert "unreadable metadata" in _forge(tmp_path / "m.npz", edit)


@pytest.mark.parametrize("version", [0, 3, 99, "1", None])
def test_wrong_format_version(tmp_path, version):
    def edit(a):
        meta = _meta_of(a)
        meta["format_version"] = version
        a.update(_with_meta(a, meta))

    msg = _forge(tmp_path / "m.npz", edit)
    assert f"format version {version!r} is not supported" in msg and "re-train" in msg


def test_other_format_version_is_named_even_if_it_hashes_differently(tmp_path):
    """A future format may hash differently: say "version", not "tampered"."""
    path = tmp_path / "m.npz"
    _save(path)
    arrays = _entries(path)
    meta = _meta_of(arrays)
    meta["format_version"] = FORMAT_VERSION + 1
    _rewrite(path, _with_meta(arrays, meta), rehash=False)
    assert "is not supported" in _load_error(path)


def test_wrong_format_name(tmp_path):
    def edit(a):
        meta = _meta_of(a)
        meta["format"] = "someone-else"
        a.update(_with_meta(a, meta))

    assert "not an intervalnn model file" in _forge(tmp_path / "m.npz", edit)


def test_pickled_entries_are_refused_not_executed(tmp_path):
    path = tmp_path / "m.npz"
    _save(path)
    buf = _stdio.BytesIO()
    np.save(buf, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as z:
        z.writestr("evil.npy", buf.getvalue())
    assert "truncated or corrupted" in _load_error(path)
