"""Damaged inputs (issue 12): byte-damaged data and model files, bad results rows, bad grids.

Every damage is a clean error (the library's documented exception class, a
one-line ``Error`` on the command line) or, where the damage missed everything
that matters, an identical load; never a traceback.  The fuzzers are seeded
and bounded (``MUTATIONS`` byte mutations per file: flip, insert, delete,
truncate) and count their outcomes in ``FUZZ_COUNTS``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile

import numpy as np
import pytest

from intervalnn.datasets import DataError, load_dataset, load_npz
from intervalnn.experiment import format_table, read_results, summarize
from intervalnn.experiment.grid import Grid, GridError
from intervalnn.interval import Interval
from intervalnn.io import ModelFileError, load_model, save_model
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel

MUTATIONS = 300
FUZZ_COUNTS: dict[str, dict[str, int]] = {}


# ------------------------------------------------------------------ helpers


def _npy(array, shape=None) -> bytes:
    """The ``.npy`` bytes of ``array``; with ``shape`` its header claims that shape instead."""
    buf = io.BytesIO()
    if shape is None:
        np.save(buf, array)
        return buf.getvalue()
    header = np.lib.format.header_data_from_array_1_0(array)
    header["shape"] = shape
    np.lib.format.write_array_header_1_0(buf, header)
    buf.write(np.ascontiguousarray(array).tobytes())
    return buf.getvalue()


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (40, 3)), np.arange(40) % 2


def _model():
    model = mlp(3, 2, hidden=4, layers=2, seed=1)
    rng = np.random.default_rng(2)
    boxes = {}
    for name, nom in model.named_nominal().items():
        lo, hi = nom - rng.uniform(0, 0.01, nom.shape), nom + rng.uniform(0, 0.01, nom.shape)
        boxes[name] = Interval(np.minimum(lo, nom), np.maximum(hi, nom))
    model.load(boxes, model.named_nominal())
    return model


def _save_model(path):
    save_model(
        path,
        _model(),
        ThreatModel(1e-3, 5e-4, (0.0, 1.0)),
        config={"epochs": 1, "seed": 0},
        dataset={"name": "moons", "seed": 0},
        history=[{"epoch": 0, "step": 0, "loss_lo": math.nan, "mean_width": 0.0}],
        best={"step": 0},
    )
    return path


def _model_entries(path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ------------------------------------------------------------------ data files (5, 6, 7, 11)


def test_damaged_npy_header_is_a_data_error_not_token_error(tmp_path, error):
    x, y = _data()
    raw = _npy(x)
    assert b"(40, 3)" in raw
    bad = raw.replace(b"(40, 3)", b"(40, 3 ")  # an unclosed bracket: tokenize.TokenError
    path = _zip(tmp_path / "d.npz", {"x.npy": bad, "y.npy": _npy(y)})
    with pytest.raises(DataError, match="'x' is truncated or corrupted") as exc:
        load_npz(path)
    assert "unpickling" not in str(exc.value)
    msg = error("train", "--dataset", path, "--epochs", "1", "-o", tmp_path / "m.npz")
    assert str(path) in msg and "header" in msg


def test_member_that_is_not_npy_is_a_data_error(tmp_path, error):
    x, y = _data()
    path = _zip(tmp_path / "d.npz", {"x": _npy(x), "y.npy": _npy(y)})
    with pytest.raises(DataError, match="member 'x' is not an .npy array"):
        load_npz(path)
    assert "not an .npy" in error("train", "--dataset", path, "--epochs", "1")


def test_header_claiming_terabytes_is_checked_before_allocating(tmp_path, error):
    x, y = _data()
    big = _npy(x, shape=(10**12, 3))
    path = _zip(tmp_path / "d.npz", {"x.npy": big, "y.npy": _npy(y)})
    with pytest.raises(DataError, match=r"claims shape \(1000000000000, 3\)"):
        load_npz(path)
    assert "truncated or corrupted" in error("train", "--dataset", path, "--epochs", "1")


def test_truncated_member_says_truncated_not_unpickling(tmp_path):
    x, y = _data()
    path = _zip(tmp_path / "d.npz", {"x.npy": _npy(x)[:-50], "y.npy": _npy(y)})
    with pytest.raises(DataError, match="truncated or corrupted") as exc:
        load_npz(path)
    assert "unpickling" not in str(exc.value)


def test_pickled_data_is_still_refused_as_unpickling(tmp_path, npz):
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}] * 3, dtype=object), allow_pickle=True)
    x, y = _data()
    path = _zip(tmp_path / "d.npz", {"x.npy": buf.getvalue(), "y.npy": _npy(y)})
    with pytest.raises(DataError, match="unpickling"):
        load_npz(path)


def test_dataset_that_is_a_directory_says_so(tmp_path, error):
    with pytest.raises(DataError, match="is a directory") as exc:
        load_dataset(tmp_path)
    assert "unknown data set" not in str(exc.value) and ".npz" in str(exc.value)
    (tmp_path / "dir.npz").mkdir()
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(tmp_path / "dir.npz")
    msg = error("train", "--dataset", tmp_path, "--epochs", "1")
    assert "is a directory" in msg and "mnist17" in msg


def test_single_npy_file_is_named(tmp_path):
    x, _ = _data()
    path = tmp_path / "d.npz"
    path.write_bytes(_npy(x))
    with pytest.raises(DataError, match="single .npy array"):
        load_npz(path)


# ------------------------------------------------------------------ model files (6, 7)


def test_model_sha256_member_that_is_not_npy(tmp_path, error):
    path = _save_model(tmp_path / "m.npz")
    entries = _model_entries(path)
    members = {f"{k}.npy": _npy(v) for k, v in entries.items() if k != "sha256"}
    members["sha256"] = entries["sha256"].tobytes()
    _zip(path, members)
    with pytest.raises(ModelFileError, match="member 'sha256' is not an .npy array"):
        load_model(path)
    assert "not an .npy array" in error("info", path)


def test_model_member_claiming_terabytes(tmp_path, error):
    path = _save_model(tmp_path / "m.npz")
    entries = _model_entries(path)
    members = {f"{k}.npy": _npy(v) for k, v in entries.items()}
    members["lo/0.weight.npy"] = _npy(entries["lo/0.weight"], shape=(10**12, 3))
    _zip(path, members)
    with pytest.raises(ModelFileError, match="claims shape"):
        load_model(path)
    assert "truncated or corrupted" in error("info", path)


# ------------------------------------------------------------------ results rows (8)


def _row(index, seed, eps, cert, status="ok"):
    metrics = {"certified_accuracy": cert, "accuracy": 0.9, "val_certified_accuracy": 0.5}
    cfg = {"dataset": "moons", "seed": seed, "epsilon": eps}
    return {"key": f"k{index}", "index": index, "status": status, "config": cfg, "metrics": metrics}


@pytest.mark.parametrize("bad", ["abc", math.nan, math.inf, None, True, 7.0, [0.5]])
def test_results_rows_with_bad_metrics_are_skipped_and_noted(tmp_path, bad):
    rows = [_row(0, 0, 0.1, 0.5), _row(1, 1, 0.1, bad), _row(2, 0, 0.2, 0.25)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    read, unreadable = read_results(path)
    assert unreadable == 0 and len(read) == 3
    summary = summarize(read)
    assert summary["invalid"]["rows"] == 1 and "cell 1" in summary["invalid"]["example"]
    assert [e["seeds"] for e in summary["rows"]] == [1, 1]
    table = format_table(summary)
    notes = [ln for ln in table.splitlines() if "Skipped 1 results rows" in ln]
    assert len(notes) == 1 and "certified_accuracy" in notes[0]


def test_plot_sweep_skips_rows_with_bad_metrics(tmp_path, run):
    pytest.importorskip("matplotlib")
    rows = [_row(i, s, eps, 0.5) for i, (s, eps) in enumerate([(0, 0.1), (1, 0.1), (0, 0.2)])]
    rows += [_row(3, 1, 0.2, "abc"), _row(4, 2, 0.2, math.nan)]
    path = tmp_path / "r.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = run("plot", "sweep", path, "-o", tmp_path / "s.png")
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    assert "skipped 2 results rows" in res.stderr


def test_results_rows_with_unhashable_config_are_unreadable(tmp_path):
    row = _row(0, [0], 0.1, 0.5)
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(row) + "\n" + json.dumps({**_row(1, 0, 0.1, 0.5), "search": 3}))
    assert read_results(path) == ([], 2)


# ------------------------------------------------------------------ grid files (9)


def test_grid_file_that_is_not_utf8(tmp_path, error):
    path = tmp_path / "g.toml"
    path.write_bytes(b'[grid]\ndataset = "mo\xffons"\n')
    with pytest.raises(GridError, match="not UTF-8") as exc:
        Grid.from_toml(path)
    assert str(path) in str(exc.value)
    msg = error("sweep", path, "--serial", code=2)
    assert str(path) in msg and "UTF-8" in msg


def test_grid_file_nested_too_deeply(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text("[grid]\nseed = " + "[" * 100_000)
    with pytest.raises(GridError, match="not valid TOML"):
        Grid.from_toml(path)


# ------------------------------------------------------------------ fuzzers


def _mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    op = ("flip", "insert", "delete", "truncate")[int(rng.integers(4))]
    i = int(rng.integers(len(data)))
    if op == "flip":
        return op, data[:i] + bytes([data[i] ^ int(rng.integers(1, 256))]) + data[i + 1 :]
    if op == "insert":
        return op, data[:i] + bytes([int(rng.integers(256))]) + data[i:]
    if op == "delete":
        return op, data[:i] + data[i + 1 :]
    return op, data[:i]


def _count(name: str, outcome: str) -> None:
    counts = FUZZ_COUNTS.setdefault(name, {"runs": 0, "clean": 0, "identical": 0, "traceback": 0})
    counts["runs"] += 1
    counts[outcome] += 1


def _same_model(a, b) -> bool:
    (ma, meta_a), (mb, meta_b) = a, b
    pa, pb = ma.named_params(), mb.named_params()
    na, nb = ma.named_nominal(), mb.named_nominal()
    return (
        pa.keys() == pb.keys()
        and all(np.array_equal(pa[k].lo, pb[k].lo) for k in pa)
        and all(np.array_equal(pa[k].hi, pb[k].hi) for k in pa)
        and all(np.array_equal(na[k], nb[k]) for k in na)
        and json.dumps(meta_a, default=repr) == json.dumps(meta_b, default=repr)
    )


def _same_splits(a, b) -> bool:
    parts = ("train", "val", "test")
    return all(
        np.array_equal(getattr(a, s).x, getattr(b, s).x)
        and np.array_equal(getattr(a, s).y, getattr(b, s).y)
        for s in parts
    ) and (a.domain, a.num_classes) == (b.domain, b.num_classes)


def test_fuzz_model_file(tmp_path, invoke):
    """Byte mutations of a valid model file: ``load_model`` raises ``ModelFileError`` or
    loads the identical model; every 10th also through ``intervalnn info`` (one-line error
    or success)."""
    original = _save_model(tmp_path / "orig.npz").read_bytes()
    reference = load_model(tmp_path / "orig.npz")
    rng = np.random.default_rng(12)
    path = tmp_path / "m.npz"
    failures = []
    for i in range(MUTATIONS):
        op, data = _mutate(original, rng)
        path.write_bytes(data)
        try:
            loaded = load_model(path)
        except ModelFileError as exc:
            assert "\n" not in str(exc)
            _count("model", "clean")
        except BaseException as exc:  # noqa: BLE001 - counted and reported below
            _count("model", "traceback")
            failures.append((i, op, repr(exc)))
            continue
        else:
            same = _same_model(loaded, reference)
            _count("model", "identical" if same else "traceback")
            if not same:
                failures.append((i, op, "loaded a different model"))
        if i % 10 == 0:
            result = invoke("info", path)
            lines = result.stderr.strip().splitlines()
            clean = result.exit_code == 0 or (
                result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error")
            )
            if not clean or "Traceback" in result.output:
                failures.append((i, op, f"info: {result.output!r} {result.exception!r}"))
    print("fuzz model file:", FUZZ_COUNTS["model"])
    assert not failures, failures[:5]


def test_fuzz_data_file(tmp_path, invoke):
    """Byte mutations of a valid data file (plain and compressed): ``load_npz`` raises
    ``DataError`` or loads identical splits; every 25th also through ``intervalnn train``."""
    x, y = _data()
    failures = []
    for name, save in (("data", np.savez), ("data-compressed", np.savez_compressed)):
        save(tmp_path / f"{name}.npz", x=x, y=y, domain=np.array([0.0, 1.0]))
        original = (tmp_path / f"{name}.npz").read_bytes()
        reference = load_npz(tmp_path / f"{name}.npz")
        rng = np.random.default_rng(12)
        path = tmp_path / "d.npz"
        for i in range(MUTATIONS):
            op, data = _mutate(original, rng)
            path.write_bytes(data)
            try:
                loaded = load_npz(path)
            except DataError as exc:
                assert "\n" not in str(exc)
                _count(name, "clean")
            except BaseException as exc:  # noqa: BLE001 - counted and reported below
                _count(name, "traceback")
                failures.append((name, i, op, repr(exc)))
                continue
            else:
                same = _same_splits(loaded, reference)
                _count(name, "identical" if same else "traceback")
                if not same:
                    failures.append((name, i, op, "loaded different data"))
            if i % 25 == 0:
                out = tmp_path / "m.npz"
                result = invoke("train", "--dataset", path, "--epochs", "1", "-o", out)
                lines = result.stderr.strip().splitlines()
                clean = result.exit_code == 0 or (
                    result.exit_code == 1 and lines and lines[-1].startswith("Error")
                )
                if not clean or "Traceback" in result.output:
                    failures.append((name, i, op, f"train: {result.output!r}"))
        print(f"fuzz {name} file:", FUZZ_COUNTS[name])
    assert not failures, failures[:5]
