"""The user's files are safe (issue 12): no command overwrites an input, appends to a file of
another kind, or finds an unwritable output only after the work; divergent runs print no
NumPy warnings; Ctrl-C exits 130 with one line everywhere."""

from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

from intervalnn.experiment.outputs import OutputError, check_output, check_results_file

QUICK = ["--epsilon", "0.01", "--epochs", "1", "--hidden", "4", "--batch-size", "250"]
SMALL = ["--dataset", "moons", "--epochs", "1", "--batch-size", "250", "--hidden", "4"]


def _blobs(n=60, d=2, k=2, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    return rng.normal(size=(n, d)) + y[:, None], y


@pytest.fixture(scope="module")
def model(tmp_path_factory, run):
    path = tmp_path_factory.mktemp("user") / "moons.npz"
    run("train", "--dataset", "moons", *QUICK, "-o", path, "--json")
    return path


def _fail_if_called(monkeypatch, module, name):
    """Make the library function ``module.name`` fail the test: checks come before work."""

    def boom(*args, **kwargs):
        raise AssertionError(f"{name} ran before the output was checked")

    monkeypatch.setattr(module, name, boom)


# ------------------------------------------------------------------ an output that is an input


def test_per_sample_onto_the_model_is_refused(model, error):
    before = model.read_bytes()
    msg = error("certify", model, "--per-sample", model, code=2)
    assert msg == (f"Error: --per-sample: {model} is the model file itself; choose another file")
    assert model.read_bytes() == before
    # the same file by another name
    other = model.parent / "sub" / ".." / model.name
    (model.parent / "sub").mkdir(exist_ok=True)
    assert "is the model file itself" in error("certify", model, "--per-sample", other, code=2)


def test_per_sample_onto_the_data_set_is_refused(model, tmp_path, error, npz):
    data = npz("d.npz", x=_blobs()[0], y=_blobs()[1])
    before = data.read_bytes()
    msg = error("certify", model, "--dataset", data, "--per-sample", data, code=2)
    assert "--per-sample" in msg and "is the data set itself" in msg
    assert data.read_bytes() == before


def test_train_output_onto_the_data_set_is_refused(tmp_path, monkeypatch, error, npz):
    import intervalnn.cli.commands

    _fail_if_called(monkeypatch, intervalnn.cli.commands, "prepare")
    data = npz("ok.npz", x=_blobs()[0], y=_blobs()[1])
    before = data.read_bytes()
    msg = error("train", "--dataset", data, "-o", data, code=2)
    assert msg == f"Error: --output: {data} is the data set itself; choose another file"
    assert data.read_bytes() == before
    monkeypatch.chdir(tmp_path)  # a relative name for the same file
    assert "is the data set itself" in error("train", "--dataset", data, "-o", "ok.npz", code=2)


def test_a_data_set_name_is_not_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_output("moons", "--output", [("data set", "moons")]).name == "moons"


# ------------------------------------------------------------------ sweep --results


def test_sweep_refuses_a_model_file_as_results(model, error):
    before = model.read_bytes()
    msg = error("sweep", *SMALL, "--serial", "--results", model, code=2)
    assert "--results" in msg and "is not a JSON-lines results file" in msg
    assert "skipped" not in msg
    assert model.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [
        b"\xff\xfe not text\n",
        b'{"a": 1}\n',
        b"[1, 2]\n",
        b"hello\n",
        b'{"key": "k", "status": "ok"}\nnot json\n{"key": "k2", "status": "ok"}\n',
    ],
)
def test_sweep_refuses_a_foreign_results_file(tmp_path, content, monkeypatch, error):
    import intervalnn.cli.sweep

    _fail_if_called(monkeypatch, intervalnn.cli.sweep, "run_sweep")
    path = tmp_path / "r.jsonl"
    path.write_bytes(content)
    msg = error("sweep", *SMALL, "--serial", "--results", path, code=2)
    assert "--results" in msg and "not a JSON-lines results file" in msg
    assert path.read_bytes() == content


def test_sweep_refuses_its_data_set_as_results(tmp_path, error, npz):
    data = npz("d.npz", x=_blobs()[0], y=_blobs()[1])
    before = data.read_bytes()
    args = ["--dataset", data, "--epochs", "1", "--hidden", "4", "--serial"]
    msg = error("sweep", *args, "--results", data, code=2)
    assert "is the data set itself" in msg
    assert data.read_bytes() == before


def test_results_files_that_resume(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    check_results_file(empty)
    check_results_file(tmp_path / "missing.jsonl")
    row = json.dumps({"key": "k", "index": 0, "status": "ok", "config": {}, "metrics": {}})
    cut = tmp_path / "cut.jsonl"
    for tail in ['{"key": "x", "c', '{"ke', '{"key": "\xe9'[:-1]]:
        cut.write_bytes((row + "\n" + tail).encode())
        check_results_file(cut)
    cut.write_bytes((row + "\n").encode() + '{"key": "é'.encode()[:-1])  # a cut UTF-8 char
    check_results_file(cut)
    with pytest.raises(OutputError, match="line 1"):
        cut.write_bytes(b"PK\x03\x04" + row.encode())
        check_results_file(cut)


def test_an_empty_results_file_is_accepted(tmp_path, run):
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    run("sweep", *SMALL, "--seeds", "0", "--serial", "--no-models", "--results", path, "-q")
    assert len(path.read_text().splitlines()) == 1


# ------------------------------------------------------------------ unwritable outputs, early


@pytest.mark.parametrize("where", ["directory", "empty", "proc"])
def test_train_refuses_a_bad_output_before_training(tmp_path, where, monkeypatch, run):
    import intervalnn.cli.commands

    _fail_if_called(monkeypatch, intervalnn.cli.commands, "prepare")
    output = {"directory": tmp_path, "empty": "", "proc": "/proc/m.npz"}[where]
    code = 1 if where == "proc" else 2
    out = run("train", "--dataset", "moons", "-o", output, code=code)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and "--output" in errors[0], out.stderr
    assert ".tmp" not in out.stderr


@pytest.mark.skipif(os.geteuid() == 0 if hasattr(os, "geteuid") else True, reason="root")
def test_train_refuses_a_read_only_directory(tmp_path, monkeypatch, error):
    import intervalnn.cli.commands

    _fail_if_called(monkeypatch, intervalnn.cli.commands, "prepare")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        msg = error("train", "--dataset", "moons", "-o", ro / "m.npz")
    finally:
        ro.chmod(0o755)
    assert "cannot write --output file" in msg and "ermission denied" in msg


def test_a_read_only_directory_is_found_by_trying(tmp_path, monkeypatch, error):
    """As root a read-only directory is writable: the check creates a file to find out."""
    import tempfile

    import intervalnn.cli.commands

    _fail_if_called(monkeypatch, intervalnn.cli.commands, "prepare")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    msg = error("train", "--dataset", "moons", "-o", tmp_path / "m.npz")
    assert msg == f"Error: cannot write --output file {tmp_path / 'm.npz'}: Permission denied"


def test_a_late_write_error_names_the_option(tmp_path, monkeypatch, error):
    import intervalnn.cli.commands

    def full(path, data):
        raise OSError(28, "No space left on device", str(tmp_path / ".m.npz.abc.tmp"))

    monkeypatch.setattr(intervalnn.cli.commands, "write_atomic", full)
    msg = error("train", "--dataset", "moons", *QUICK, "-o", tmp_path / "m.npz")
    assert msg == f"Error: cannot write --output file {tmp_path / 'm.npz'}: No space left on device"


@pytest.mark.parametrize("output", ["", "DIR", "/proc/x.png", "MODEL"])
def test_plot_refuses_a_bad_output_before_plotting(model, tmp_path, output, monkeypatch, run):
    import intervalnn.cli.plots

    _fail_if_called(monkeypatch, intervalnn.cli.plots, "plot_curves")
    named = tmp_path / "model.png"  # a model file may have any name
    named.write_bytes(model.read_bytes())
    (tmp_path / "d.png").mkdir()
    output = {"DIR": str(tmp_path / "d.png"), "MODEL": str(named)}.get(output, output)
    out = run("plot", "curves", named, "-o", output, code=1 if output.startswith("/proc") else 2)
    errors = [ln for ln in out.stderr.splitlines() if ln.startswith("Error")]
    assert len(errors) == 1 and ".tmp" not in out.stderr, out.stderr
    assert "--output" in errors[0]
    assert named.read_bytes() == model.read_bytes()


def test_per_sample_refuses_before_certifying(model, tmp_path, monkeypatch, error):
    import intervalnn.cli.commands

    _fail_if_called(monkeypatch, intervalnn.cli.commands, "certify_saved")
    assert "is a directory" in error("certify", model, "--per-sample", tmp_path, code=2)
    assert "the path is empty" in error("certify", model, "--per-sample", "", code=2)
    msg = error("certify", model, "--per-sample", "/proc/x.csv")
    assert msg.startswith("Error: cannot write --per-sample file /proc/x.csv")


# ------------------------------------------------------------------ divergent runs


@pytest.mark.parametrize("option", [("--epsilon", "1e6"), ("--learning-rate", "1e300")])
def test_divergent_runs_print_no_runtime_warnings(option, tmp_path, run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = run("train", "--dataset", "moons", *option, "-o", tmp_path / "m.npz")
    assert "RuntimeWarning" not in out.stderr
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], caught


# ------------------------------------------------------------------ Ctrl-C


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("module", "name", "args"),
    [
        ("intervalnn.cli.commands", "train_and_certify", ["train", "--dataset", "moons", *QUICK]),
        ("intervalnn.cli.commands", "certify_saved", ["certify", "MODEL"]),
        ("intervalnn.cli.audit", "audit_saved", ["audit", "MODEL"]),
        ("intervalnn.cli.audit", "audit_run", ["audit-training", "--dataset", "moons"]),
        (
            "intervalnn.cli.sweep",
            "run_sweep",
            ["sweep", *SMALL, "--serial", "--results", "RESULTS"],
        ),
    ],
)
def test_ctrl_c_exits_130_with_one_line(model, tmp_path, monkeypatch, invoke, module, name, args):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), name, _interrupt)
    args = [
        {"MODEL": model, "RESULTS": tmp_path / "r.jsonl"}.get(a, a) if isinstance(a, str) else a
        for a in args
    ]
    if args[0] == "train":
        args += ["-o", tmp_path / "m.npz"]
    args += ["-q"] if args[0] == "sweep" else ["--json"]  # no progress bar label on stderr
    result = invoke(*args)
    assert result.exit_code == 130, (result.output, result.exception)
    line = result.stderr.strip().splitlines()[-1]  # after the sweep's plan: one line
    assert line.startswith(f"{args[0]}: interrupted; "), result.stderr
    assert result.stderr.count("interrupted") == 1 and "Aborted" not in result.output
    if args[0] == "train":
        assert "nothing was written" in line and not (tmp_path / "m.npz").exists()
