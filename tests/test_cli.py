"""The ``intervalnn`` command line: round trips, plots, and one-line errors with exit codes.

Exit codes: 0 success, 1 data or model errors, 2 usage errors.
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from intervalnn import __version__
from intervalnn.datasets import MNIST_FILES

MNIST_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
COMMANDS = [
    ["demo"],
    ["train"],
    ["certify"],
    ["info"],
    ["plot"],
    ["plot", "barriers"],
    ["plot", "curves"],
    ["plot", "epsilon"],
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, run):
    """One quick Two-Moons model (1 epoch) and the summary ``train --json`` printed."""
    d = tmp_path_factory.mktemp("model")
    model = d / "moons.npz"
    result = run(
        "train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", "1", "-o", model, "--json"
    )
    return model, json.loads(result.stdout)


def _blobs(n=60, d=2, k=2, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    x = rng.normal(size=(n, d)) + y[:, None]
    return x, y


# ------------------------------------------------------------------ help, version


def test_version_everywhere(run):
    assert run("--version").output.strip() == f"intervalnn, version {__version__}"
    for cmd in COMMANDS:
        assert __version__ in run(*cmd, "--version").output


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_help_has_examples(cmd, run):
    out = run(*cmd, "--help").output
    assert "Example" in out and "intervalnn " + cmd[0] in out
    assert run(*cmd, "-h").output == out


def test_group_help_lists_commands_and_exit_codes(run):
    out = run("--help").output
    for name in ("train", "certify", "info", "plot", "demo"):
        assert name in out
    assert "Exit codes" in out


def test_console_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "intervalnn.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and __version__ in proc.stdout


# ------------------------------------------------------------------ train, certify, info


def test_train_then_certify_round_trips(trained, run):
    model, summary = trained
    assert summary["model"] == str(model) and model.is_file()
    assert 0 <= summary["certified_accuracy"] <= summary["accuracy"] <= 1
    assert summary["n"] == 200 and summary["epsilon"] == 0.01
    cert = json.loads(run("certify", model, "--json").stdout)
    assert cert["certified_accuracy"] == summary["certified_accuracy"]
    assert cert["accuracy"] == summary["accuracy"]
    assert cert["n"] == 200 and cert["epsilon"] == 0.01 and cert["split"] == "test"
    again = json.loads(run("certify", model, "--dataset", "moons", "--json").stdout)
    assert again == cert


def test_certify_table_and_epsilon_override(trained, run):
    model, _ = trained
    out = run("certify", model, "--epsilon", "0.1").stdout
    assert "certified_accuracy" in out and "0.1" in out
    zero = json.loads(run("certify", model, "--epsilon", "0", "--json").stdout)
    wide = json.loads(run("certify", model, "--epsilon", "0.1", "--json").stdout)
    assert zero["epsilon"] == 0 and wide["certified_accuracy"] <= zero["certified_accuracy"]


def test_per_sample_csv(trained, tmp_path, run):
    model, _ = trained
    out = tmp_path / "per.csv"
    cert = json.loads(run("certify", model, "--split", "val", "--per-sample", out, "--json").stdout)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cert["n"] == 200
    assert list(rows[0]) == ["index", "label", "certified", "margin", "nominal_correct"]
    assert [int(r["index"]) for r in rows] == list(range(200))
    certified = [int(r["certified"]) for r in rows]
    assert sum(certified) / 200 == cert["certified_accuracy"]
    assert all((float(r["margin"]) > 0) == bool(int(r["certified"])) for r in rows)


def test_per_sample_unwritable(trained, tmp_path, error):
    model, _ = trained
    msg = error("certify", model, "--per-sample", tmp_path / "no" / "dir" / "x.csv")
    assert "cannot write --per-sample file" in msg


def test_info(trained, run):
    model, summary = trained
    out = run("info", model).stdout
    for word in ("Linear(2, 20)", "training_epsilon", "SHA-256 ok", "format_version"):
        assert word in out
    info = json.loads(run("info", model, "--json").stdout)
    assert info["dataset"]["name"] == "moons" and len(info["dataset"]["train"]) == 64
    assert info["config"]["epochs"] == 1 and info["history_rows"] == 11
    assert info["mean_parameter_width"] == summary["mean_parameter_width"]


def test_train_text_summary_and_user_npz(tmp_path, run, npz):
    x, y = _blobs(80, d=3, k=3)
    data = npz("blobs.npz", x=x, y=y)
    model = tmp_path / "sub" / "blobs.npz"
    result = run(
        "train", "--dataset", data, "--loss", "ce", "--epochs", "1", "--batch-size", "20",
        "--hidden", "5", "--dtype", "float32", "--validate-every", "epoch", "-o", model,
    )  # fmt: skip
    assert "certified_accuracy" in result.stdout and model.is_file()
    info = json.loads(run("info", model, "--json").stdout)
    assert info["dtype"] == "float32" and "Linear(5, 3)" in info["architecture"]


def test_pretraining(tmp_path, run):
    summary = json.loads(
        run(
            "train", "--dataset", "moons", "--epochs", "1", "--pretrain-epochs", "1",
            "--pretrain-size", "100", "-o", tmp_path / "m.npz", "--json",
        ).stdout
    )  # fmt: skip
    assert summary["n"] == 200


# ------------------------------------------------------------------ bad data


def test_missing_data_directory(tmp_path, error):
    msg = error("train", "--dataset", "mnist17", "--data-dir", tmp_path / "nope")
    assert "does not exist" in msg and "--data-dir" in msg


def test_data_directory_is_a_file(tmp_path, error):
    f = tmp_path / "file"
    f.write_text("x")
    assert "is a file, not a directory" in error("train", "--dataset", "mnist17", "--data-dir", f)


def test_unreadable_data_directory(tmp_path, monkeypatch, error):
    d = tmp_path / "locked"
    d.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, m, **k: False if Path(p) == d else real(p, m))
    msg = error("train", "--dataset", "mnist17", "--data-dir", d)
    assert "not readable" in msg and "permission" in msg


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_data_directory_for_real(tmp_path, error):
    d = tmp_path / "locked"
    d.mkdir()
    d.chmod(0)
    try:
        assert "not readable" in error("train", "--dataset", "mnist17", "--data-dir", d)
    finally:
        d.chmod(0o755)


def test_mnist_without_data_dir(monkeypatch, error):
    monkeypatch.delenv("INTERVALNN_MNIST_DIR", raising=False)
    assert "needs --data-dir" in error("train", "--dataset", "mnist17")


def test_mnist_missing_files(tmp_path, error):
    assert "MNIST files missing" in error("train", "--dataset", "mnist17", "--data-dir", tmp_path)


@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="no MNIST files in shared/data/mnist")
def test_mnist_wrong_checksum(tmp_path, error):
    for base in MNIST_FILES.values():
        src = MNIST_DIR / (base + ".gz")
        if not src.is_file():
            pytest.skip(f"{src} missing")
        shutil.copy(src, tmp_path / src.name)
    # one changed label, stored uncompressed (found before the .gz copy)
    name = MNIST_FILES["train_labels"]
    raw = bytearray(gzip.decompress((tmp_path / (name + ".gz")).read_bytes()))
    raw[100] = (raw[100] + 1) % 10
    (tmp_path / name).write_bytes(bytes(raw))
    (tmp_path / (name + ".gz")).unlink()
    msg = error("train", "--dataset", "mnist17", "--data-dir", tmp_path)
    assert "MD5" in msg and name in msg and "corrupt" in msg


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_user_data(tmp_path, value, error, npz):
    x, y = _blobs()
    x[7, 1] = value
    msg = error("train", "--dataset", npz("d.npz", x=x, y=y))
    assert "non-finite feature (NaN or inf) in row 7" in msg


def test_non_finite_user_data_in_certify(trained, tmp_path, error, npz):
    x, y = _blobs()
    x[3, 0] = np.nan
    msg = error("certify", trained[0], "--dataset", npz("d.npz", x=x, y=y))
    assert "NaN or inf" in msg


def test_negative_labels(tmp_path, error, npz):
    x, y = _blobs()
    y[4] = -1
    msg = error("train", "--dataset", npz("d.npz", x=x, y=y))
    assert "negative label -1 in row 4" in msg


def test_labels_beyond_num_classes(tmp_path, error, npz):
    x, y = _blobs(k=3)
    msg = error("train", "--dataset", npz("d.npz", x=x, y=y, num_classes=np.array(2)))
    assert "label 2 out of range 0..1" in msg


def test_binary_loss_with_three_classes(tmp_path, error, npz):
    x, y = _blobs(k=3)
    msg = error("train", "--dataset", npz("d.npz", x=x, y=y))
    assert "--loss bce needs 2 classes" in msg and "--loss ce" in msg


def test_certify_labels_the_model_cannot_predict(trained, tmp_path, error, npz):
    x, y = _blobs(k=3)
    msg = error("certify", trained[0], "--dataset", npz("d.npz", x=x, y=y))
    assert "labels 0..2" in msg and "predicts 2 classes" in msg


def test_model_for_another_input_shape(trained, tmp_path, error, npz):
    x, y = _blobs(d=3)
    msg = error("certify", trained[0], "--dataset", npz("d3.npz", x=x, y=y))
    assert "trained for inputs with 2 features" in msg and "has 3" in msg


def test_unknown_dataset(error):
    assert "unknown data set 'cifar'" in error("train", "--dataset", "cifar")


def test_missing_user_data_file(tmp_path, error):
    assert "file not found" in error("train", "--dataset", tmp_path / "none.npz")


# ------------------------------------------------------------------ bad options (usage, exit 2)


@pytest.mark.parametrize("value", ["-1", "-1e-9", "nan", "inf", "abc"])
@pytest.mark.parametrize("option", ["--epsilon", "--inference-epsilon"])
def test_bad_epsilon_train(value, option, error):
    msg = error("train", "--dataset", "moons", option, value, code=2)
    if option == "--epsilon" and value == "inf":  # allowed, but not on its own (issue 13)
        assert "--epsilon = inf needs a finite --inference-epsilon" in msg
        return
    assert option in msg and (
        "finite number >= 0" in msg or "number >= 0 or inf" in msg or "not a number" in msg
    )


def test_bad_epsilon_elsewhere(trained, error):
    assert "finite number >= 0" in error("certify", trained[0], "--epsilon", "-0.5", code=2)
    assert "number >= 0" in error("demo", "--epsilon", "-1", code=2)
    msg = error("plot", "epsilon", trained[0], "--epsilons", "0,-1e-3", code=2)
    assert "--epsilons" in msg and "finite number >= 0" in msg


@pytest.mark.parametrize("value", ["0", "-0.5", "nan", "inf"])
@pytest.mark.parametrize("option", ["--learning-rate", "--pretrain-learning-rate"])
def test_bad_learning_rate(value, option, error):
    msg = error("train", "--dataset", "moons", option, value, code=2)
    assert option in msg and "must be > 0" in msg


def test_dataset_required(error):
    assert "--dataset is required" in error("train", code=2)


def test_pretrain_epochs_need_pretrain_data(error):
    msg = error("train", "--dataset", "moons", "--pretrain-epochs", "2", code=2)
    assert "--pretrain-size" in msg


def test_bad_choices(error):
    assert "'adam'" in error("train", "--dataset", "moons", "--loss", "adam", code=2)
    assert "'tpu'" in error("train", "--dataset", "moons", "--device", "tpu", code=2)


# ------------------------------------------------------------------ GPU


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_gpu_without_cupy(trained, error):
    for args in (("train", "--dataset", "moons"), ("certify", str(trained[0]))):
        msg = error(*args, "--device", "gpu")
        assert "--device gpu needs CuPy" in msg and "pip install" in msg
        assert "--device cpu" in msg


def test_gpu_without_a_gpu(monkeypatch, error):
    """CuPy installed but no CUDA device (or no driver): a clear message, not CUDA's."""

    def no_device():
        raise RuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")

    fake = types.ModuleType("cupy")
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=no_device))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    msg = error("train", "--dataset", "moons", "--device", "gpu")
    assert "no usable CUDA GPU" in msg and "cudaErrorNoDevice" in msg and "--device cpu" in msg


# ------------------------------------------------------------------ model files


def test_missing_model_file(tmp_path, error):
    for cmd in (["certify"], ["info"], ["plot", "curves"]):
        msg = error(*cmd, tmp_path / "none.npz")
        assert "no such model file" in msg


def test_tampered_model_file(trained, tmp_path, error):
    bad = tmp_path / "tampered.npz"
    with np.load(trained[0], allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["hi/0.bias"] = arrays["hi/0.bias"] + 0.5  # a wider box, hash left stale
    np.savez(bad, **arrays)
    for cmd in (["certify"], ["info"], ["plot", "curves"]):
        assert "SHA-256 mismatch" in error(*cmd, bad)


def test_truncated_model_file(trained, tmp_path, error):
    bad = tmp_path / "short.npz"
    bad.write_bytes(trained[0].read_bytes()[:1000])
    assert "truncated or corrupted" in error("certify", bad)


def test_data_file_given_as_model(tmp_path, error, npz):
    x, y = _blobs()
    data = npz("d.npz", x=x, y=y)
    assert "not an intervalnn model file" in error("info", data)


# ------------------------------------------------------------------ plots


def _png_size(path) -> tuple[int, int]:
    from matplotlib.image import imread

    img = imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    assert float(img[..., :3].std()) > 0.01  # not a blank image
    return img.shape[1], img.shape[0]


@pytest.fixture(scope="module")
def second(tmp_path_factory, run):
    model = tmp_path_factory.mktemp("model2") / "moons-1e-3.npz"
    run("train", "--dataset", "moons", "--epsilon", "0.001", "--epochs", "1", "-o", model, "--json")
    return model


@pytest.mark.parametrize(
    ("cmd", "extra"),
    [
        (["plot", "barriers"], ["--grid", "60"]),
        (["plot", "curves"], []),
        (["plot", "epsilon"], ["--epsilons", "0,1e-3,1e-2,0.1"]),
    ],
    ids=["barriers", "curves", "epsilon"],
)
def test_plots_png_and_pdf(trained, tmp_path, cmd, extra, run):
    pytest.importorskip("matplotlib")
    png, pdf = tmp_path / "fig.png", tmp_path / "fig.PDF"
    run(*cmd, trained[0], *extra, "-o", png, "--size", "640x480")
    assert _png_size(png) == (640, 480)
    run(*cmd, trained[0], *extra, "-o", pdf)
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 1000
    run(*cmd, trained[0], *extra, "-o", png, "--size", "333x222", "--dpi", "72")
    assert _png_size(png) == (333, 222)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.PDF", "fig.png"]


def test_plot_barriers_several_models(trained, second, tmp_path, run):
    pytest.importorskip("matplotlib")
    out = tmp_path / "fig2.png"
    result = run(
        "plot", "barriers", trained[0], second, "--epsilon", "0", "--grid", "40",
        "--size", "1000x400", "-o", out,
    )  # fmt: skip
    assert _png_size(out) == (1000, 400) and "barrier_area" in result.stdout


def test_plot_barriers_numbers(trained, tmp_path, run):
    pytest.importorskip("matplotlib")
    out = run("plot", "barriers", trained[0], "--grid", "40", "-o", tmp_path / "b.png").stdout
    fields = dict(line.split(None, 1) for line in out.strip().splitlines())
    assert 0 < float(fields["barrier_area"]) < 1
    assert float(fields["certified_accuracy"]) == trained[1]["certified_accuracy"]


def test_plot_epsilon_table_and_json(trained, second, tmp_path, run):
    pytest.importorskip("matplotlib")
    out = tmp_path / "eps.png"
    table = run("plot", "epsilon", trained[0], second, "--epsilons", "0.01,0", "-o", out).stdout
    assert trained[0].name in table and second.name in table and "figure: " in table
    result = json.loads(
        run("plot", "epsilon", trained[0], "--epsilons", "0.01,0", "-o", out, "--json").stdout
    )
    assert result["epsilons"] == [0.0, 0.01]
    (row,) = result["models"]
    assert row["certified_accuracy"][1] == trained[1]["certified_accuracy"]
    assert row["certified_accuracy"][0] >= row["certified_accuracy"][1]


def test_plot_barriers_needs_two_features(tmp_path, run, error, npz):
    pytest.importorskip("matplotlib")
    x, y = _blobs(d=3)
    data = npz("d3.npz", x=x, y=y)
    model = tmp_path / "m3.npz"
    run("train", "--dataset", data, "--epochs", "1", "-o", model, "--json")
    msg = error("plot", "barriers", model, "-o", tmp_path / "b.png")
    assert "2 input features" in msg and "has 3" in msg
    assert not (tmp_path / "b.png").exists()
    run("plot", "epsilon", model, "--epsilons", "0,0.1", "-o", tmp_path / "e.png")


@pytest.mark.parametrize("name", ["fig.jpg", "fig", "fig.svg"])
def test_plot_output_suffix(trained, tmp_path, name, error):
    msg = error("plot", "curves", trained[0], "-o", tmp_path / name, code=2)
    assert "must end in .png or .pdf" in msg


@pytest.mark.parametrize("size", ["800", "axb", "10x10", "800x600x3"])
def test_plot_bad_size(trained, tmp_path, size, error):
    msg = error("plot", "curves", trained[0], "--size", size, "-o", tmp_path / "c.png", code=2)
    assert "--size" in msg


def test_plot_into_missing_directory(trained, tmp_path, error):
    msg = error("plot", "curves", trained[0], "-o", tmp_path / "no" / "c.png")
    assert "does not exist" in msg


def test_plot_without_matplotlib(trained, tmp_path, monkeypatch, error):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    for cmd in (["plot", "barriers"], ["plot", "curves"], ["plot", "epsilon"]):
        msg = error(*cmd, trained[0], "-o", tmp_path / "x.png")
        assert msg == (
            "Error: plotting needs matplotlib, which is not installed: "
            "pip install 'intervalnn[plot]'"
        )
    assert not (tmp_path / "x.png").exists()
