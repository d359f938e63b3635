"""``intervalnn sweep`` and ``intervalnn certify --workers/--scheduler`` on a small Dask cluster.

Covers: TOML grids and their errors, serial and distributed results being
identical (and equal to ``intervalnn train``), resuming, failing cells,
Ctrl-C losing nothing, the validation-only search in the table, sharded
certification, and the message without Dask.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from intervalnn.experiment import VOLATILE, Grid, GridError, read_results, summarize
from intervalnn.experiment.sweep import default_cells_per_task

distributed = pytest.importorskip("distributed", reason="needs the dask extra")

SMALL = ["--dataset", "moons", "--epochs", "1", "--batch-size", "250", "--hidden", "4"]


@pytest.fixture(scope="session")
def run(run):
    """conftest's ``run`` without its check that a failing exit is a ``SystemExit``."""
    return functools.partial(run, system_exit=False)


@pytest.fixture(scope="module")
def scheduler():
    """The address of a two-worker local cluster, as a user's 'dask scheduler' would give."""
    from intervalnn.experiment.cluster import ONE_THREAD

    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", env=ONE_THREAD
    ) as cluster:
        yield cluster.scheduler_address


def stable(rows: list[dict]) -> dict[str, dict]:
    """Rows by cell key without what legitimately differs between runs (timing, place)."""
    out = {}
    for r in rows:
        r = {k: v for k, v in r.items() if k not in VOLATILE}
        r["metrics"] = {k: v for k, v in r["metrics"].items() if k != "seconds"}
        out[r["key"]] = r
    return out


# ------------------------------------------------------------------ grids


TOML = """
search = ["learning_rate"]
[grid]
dataset = "moons"
epsilon = [1e-3, 0.01]
learning_rate = [0.5, 1]
seed = "0-2"
[[cases.arch]]
hidden = 4
[[cases.arch]]
hidden = 8
layers = 3
"""


def test_toml_grid_gives_every_cell_with_defaults(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text(TOML)
    grid = Grid.from_toml(path)
    cells = grid.cells()
    assert len(cells) == 2 * 2 * 2 * 3
    assert grid.search == ("learning_rate",)
    assert grid.varying() == ["epsilon", "learning_rate", "hidden", "layers", "seed"]
    assert cells[0]["hidden"] == 4 and cells[0]["layers"] == 2  # the default fills in
    assert cells[-1] == {**cells[-1], "hidden": 8, "layers": 3, "seed": 2, "epsilon": 0.01}
    assert cells[0]["batch_size"] == 100 and cells[0]["validate_every"] == "step"
    assert isinstance(cells[0]["learning_rate"], float)
    assert len({json.dumps(c, sort_keys=True) for c in cells}) == len(cells)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[grid]\nlearning_rat = 0.5\ndataset = "moons"', "did you mean 'learning_rate'"),
        ('grids = 1\n[grid]\ndataset = "moons"', "unknown top-level key 'grids'"),
        ('[grid]\ndataset = "moons"\nepsilon = [0.1, -1]', "epsilon: -1"),
        ('[grid]\ndataset = "moons"\nepochs = 1.5', "epochs: 1.5 is not an integer"),
        ('[grid]\ndataset = "moons"\nhidden = true', "is not an integer"),
        ('[grid]\ndataset = "moons"\nloss = ["bce", "mse"]', "loss: 'mse' is not one of"),
        ('[grid]\ndataset = "moons"\nepsilon = []', "give at least one value"),
        ('[grid]\ndataset = "moons"\nseed = [1, 1]', "1 is given twice"),
        ('[grid]\ndataset = "moons"\nseed = "5-2"', "empty range"),
        ('[grid]\ndataset = "moons"\nepsilon = [0.1', "not valid TOML"),
        ('search = ["seed"]\n[grid]\ndataset = "moons"\nseed = "0-1"', "must not include seed"),
        ('search = ["loss"]\n[grid]\ndataset = "moons"', "the grid does not vary"),
        ('[grid]\ndataset = "moons"\nhidden = 3\n[[cases]]\nhidden = 4', "set both in [[cases]]"),
        ("[grid]\nepsilon = 0.1", "dataset is required"),
        ('[grid]\ndataset = "moons"\npretrain_epochs = 2', "needs clean pretraining data"),
        ("cases = 3\n[grid]\ndataset = 'moons'", "cases must be arrays of tables"),
        ("results = 3\n[grid]\ndataset = 'moons'", "results must be a file name"),
        ('[grid]\ndataset = "moons"\nlearning-rate = 1\nlearning_rate = 2', "twice ('learning-r"),
        ('[grid]\ndataset = "moons"\nseed = "0-100000000"', "has over 100,000 values"),
        ('[grid]\ndataset = "moons"\nseed = "0-99999"\nhidden = "1-20"', "more than 1,000,000"),
        (
            'search = ["hidden"]\n[grid]\ndataset = "moons"\n'
            "[[cases]]\nhidden = 4\nbatch_size = 50\n[[cases]]\nhidden = 8\nbatch_size = 100",
            "ties to batch_size",
        ),
        ('[grid]\ndataset = "moons"\nseed = "0,1"', "seed: '0,1' is not a valid integer"),
    ],
)
def test_bad_grids_are_usage_errors_naming_the_problem(tmp_path, text, message, run):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(GridError) as info:
        Grid.from_toml(path).cells()
    assert message in str(info.value)
    result = run("sweep", path, "--serial", code=2)
    assert message in result.stderr and "Error" in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--serial", "--workers", "2"], "one of --serial, --workers and --scheduler"),
        (["--scheduler", " "], "--scheduler needs an address"),
        (["--serial", "--cells-per-task", "3"], "--serial runs no tasks"),
        (["--no-models", "--models", "m"], "not both"),
        (["--results", "grid.toml"], "would overwrite a grid"),
        (["--search", "seed", "--seeds", "0-1"], "must not include seed"),
    ],
)
def test_conflicting_sweep_options_are_usage_errors(tmp_path, args, message, run):
    assert message in run("sweep", *SMALL, *args, code=2).stderr


def test_unwritable_models_or_results_fail_before_any_cell_runs(tmp_path, run):
    (tmp_path / "r-models").write_text("a file where the models should go")
    out = run("sweep", *SMALL, "--serial", "--results", tmp_path / "r.jsonl", code=1).stderr
    assert "is a file, not a directory" in out and not (tmp_path / "r.jsonl").exists()
    out = run("sweep", *SMALL, "--models", tmp_path / "r-models", code=2).stderr
    assert "is a file" in out
    bad = tmp_path / "r-models" / "r.jsonl"
    out = run("sweep", *SMALL, "--serial", "--no-models", "--results", bad, code=1)
    assert "cannot write results file" in out.stderr
    assert "does not exist" in run("plot", "sweep", tmp_path / "none.jsonl", code=1).stderr


def test_paths_are_absolute_and_one_sweep_writes_a_results_file(tmp_path, monkeypatch, run):
    import fcntl

    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "g.toml").write_text('results = "r.jsonl"\n[grid]\ndataset = ["d.npz", "moons"]')
    grid = Grid.from_toml(sub / "g.toml")  # relative to the grid file, wherever run from
    assert grid.axes["dataset"] == [str(sub / "d.npz"), "moons"]
    assert grid.results == str(sub / "r.jsonl")
    monkeypatch.chdir(sub)
    out = run("sweep", "--dataset", "./d.npz", "--dry-run").stdout  # from the working directory
    assert f"dataset={sub / 'd.npz'}" in out

    results = tmp_path / "busy.jsonl"
    with open(results, "a") as other:  # another sweep holds the file
        fcntl.flock(other.fileno(), fcntl.LOCK_EX)
        msg = run("sweep", *SMALL, "--serial", "--no-models", "--results", results, code=1)
    assert "being written by another sweep" in msg.stderr and results.read_text() == ""


def test_the_table_follows_the_current_grid_not_the_file(tmp_path, run):
    args = ["sweep", *SMALL, "--serial", "-q", "--results", tmp_path / "t.jsonl", "--json"]
    run(*args, "--epsilon", "0.01", "--loss", "bce,ce", "--seeds", "0-1")
    table = json.loads(run(*args, "--epsilon", "0.001,0.01", "--loss", "bce,ce", "--seeds",
                           "0-1", "--search", "loss").stdout)  # fmt: skip
    assert table["search"] == ["loss"] and table["columns"] == ["epsilon"]
    assert [r["cell"]["epsilon"] for r in table["rows"]] == [0.001, 0.01]  # grid order
    table = json.loads(run(*args, "--epsilon", "0.01", "--loss", "bce,ce", "--seeds", "0-1").stdout)
    assert table["search"] == [] and len(table["rows"]) == 2  # without --search: one row per loss


def test_tasks_are_named_by_everything_they_compute():
    from intervalnn.experiment.sweep import _task_key

    a, b, c = ({"seed": i} for i in range(3))
    keys = {
        _task_key([(0, a), (1, b)], (), True),
        _task_key([(0, a), (1, c)], (), True),  # same first cell and length
        _task_key([(0, a), (1, b)], (), False),
        _task_key([(0, a), (1, b)], ("loss",), True),
    }
    assert len(keys) == 4
    assert _task_key([(0, a)], (), True) == _task_key([(0, dict(a))], (), True)


def test_command_line_lists_override_the_file(tmp_path, run):
    path = tmp_path / "g.toml"
    path.write_text(TOML)
    out = run("sweep", path, "--seeds", "4", "--epsilon", "0,0.1", "--dry-run").stdout
    assert out.strip().endswith("\n8 cells")
    assert "seed=4" in out and "epsilon=0.0 " in out and "seed=0" not in out
    assert "24 cells" in run("sweep", path, "--dry-run").stdout
    assert "5 cells" in run("sweep", "--dataset", "moons", "--seeds", "0-4", "--dry-run").stdout
    msg = run("sweep", "--dataset", "moons", "--hidden", "3,x", "--dry-run", code=2).stderr
    assert "hidden: 'x' is not a valid integer" in msg


# ------------------------------------------------------------------ running


def test_serial_and_dask_results_are_identical_and_equal_train(tmp_path, run):
    grid = [*SMALL, "--epsilon", "1e-3,0.01", "--seeds", "0-1", "--learning-rate", "0.5,2"]
    run("sweep", *grid, "--serial", "--results", tmp_path / "serial.jsonl", "-q")
    run("sweep", *grid, "--workers", "2", "--results", tmp_path / "dask.jsonl", "-q")
    run("sweep", *grid, "--workers", "2", "--cells-per-task", "3", "--results",
        tmp_path / "chunked.jsonl", "-q")  # fmt: skip
    serial, _ = read_results(tmp_path / "serial.jsonl")
    dask, _ = read_results(tmp_path / "dask.jsonl")
    chunked, _ = read_results(tmp_path / "chunked.jsonl")
    assert len(serial) == len(dask) == len(chunked) == 8
    assert stable(serial) == stable(dask) == stable(chunked)  # metrics, model digest: bit for bit
    assert all(Path(r["model"]).is_file() for r in serial + dask)

    # a cell of the sweep is exactly `intervalnn train` with its options
    row = next(r for r in dask if r["index"] == 5)
    c = row["config"]
    out = run(
        "train", *SMALL, "--epsilon", c["epsilon"], "--seed", c["seed"],
        "--learning-rate", c["learning_rate"], "-o", tmp_path / "m.npz", "--json",
    ).stdout  # fmt: skip
    trained = json.loads(out)
    for key in ("certified_accuracy", "accuracy", "best_step", "mean_parameter_width"):
        assert trained[key] == row["metrics"][key]
    info = json.loads(run("certify", row["model"], "--json").stdout)
    assert info["certified_accuracy"] == row["metrics"]["certified_accuracy"]


def test_resume_skips_finished_cells_and_survives_a_cut_line(tmp_path, scheduler, run):
    results = tmp_path / "r.jsonl"
    base = ["sweep", *SMALL, "--results", results, "--scheduler", scheduler, "-q"]
    run(*base, "--seeds", "0-1")
    first = read_results(results)[0]
    assert len(first) == 2

    out = run(*base, "--seeds", "0-3")
    assert "4 cells, 2 already done" in out.stderr and "2 to run" in out.stderr
    rows = read_results(results)[0]
    assert len(rows) == 4 and rows[:2] == first  # nothing rewritten
    assert len(list((tmp_path / "r-models").glob("*.npz"))) == 4

    with open(results, "a") as f:  # a crash in the middle of writing a row
        f.write('{"key": "abc", "con')
    out = run(*base, "--seeds", "0-3")
    assert "skipped 1 unreadable lines" in out.stderr and "0 to run" in out.stderr
    assert "| 4 | 0 |" in out.stdout  # one table row: 4 seeds, 0 failed

    results.write_text("".join(json.dumps(r) + "\n" for r in rows[:3]) + '{"key": "x", "c')
    out = run(*base, "--seeds", "0-3")
    assert "1 to run" in out.stderr
    again = read_results(results)[0]
    assert len(again) == 4 and stable(again) == stable(rows)  # the rerun cell: bit-identical


def test_a_failing_cell_is_recorded_and_the_rest_complete(tmp_path, scheduler, run):
    results = tmp_path / "f.jsonl"
    missing = tmp_path / "missing.npz"
    args = ["sweep", *SMALL[2:], "--dataset", f"moons,{missing}", "--seeds", "0-1"]
    args += ["--results", results, "--scheduler", scheduler, "--cells-per-task", "4", "-q"]
    out = run(*args, code=1)  # one task: two cells fail inside it, two succeed
    assert "2 of 4 cells failed" in out.stderr and "missing.npz" in out.stderr
    rows = read_results(results)[0]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 4 and len(failed) == 2
    assert all(r["config"]["dataset"] == str(missing) for r in failed)
    assert all(r["error"].startswith("DataError:") and "missing.npz" in r["error"] for r in failed)
    assert all(r["metrics"]["n"] == 200 for r in rows if r["status"] == "ok")
    assert "| - | - | - | 0 | 2 |" in out.stdout  # the missing data set: no seed, 2 failed
    assert "| 2 | 0 |" in out.stdout

    out = run(*args, code=1)  # a rerun retries only the failed cells
    assert "2 already done" in out.stderr and "2 to run" in out.stderr


def test_interrupt_loses_nothing_and_resume_finishes(tmp_path):
    results = tmp_path / "i.jsonl"
    cmd = [sys.executable, "-m", "intervalnn.cli", "sweep", *SMALL, "--epochs", "3"]
    cmd += ["--seeds", "0-199", "--serial", "--results", str(results), "--no-models"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(read_results(results)[0]) < 3:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err
    rows, bad = read_results(results)
    assert bad == 0 and 3 <= len(rows) < 200
    assert all(r["status"] == "ok" for r in rows)

    cmd[cmd.index("0-199")] = "0-4"  # resume a shorter sweep over the same cells
    before = {r["config"]["seed"] for r in rows}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{len(before & set(range(5)))} already done" in done.stderr
    seeds = [r["config"]["seed"] for r in read_results(results)[0]]
    assert len(seeds) == len(set(seeds))  # no cell ran twice


def test_short_cells_go_a_few_to_a_task():
    assert default_cells_per_task(5120, 2) == 16  # Table 1: ~0.3 s tasks
    assert default_cells_per_task(1000, 2) == 15
    assert default_cells_per_task(40, 2) == 1  # few cells: one per task
    assert default_cells_per_task(0, 0) == 1


def test_a_lost_scheduler_stops_the_sweep_and_loses_nothing(tmp_path):
    """A real 'dask scheduler' / 'dask worker' pair; the scheduler dies mid-sweep."""
    import socket

    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    dask = [sys.executable, "-m", "dask"]
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    port = address.rsplit(":", 1)[1]
    scheduler = subprocess.Popen([*dask, "scheduler", "--port", port, "--dashboard-address", ":0"],
                                 **quiet)  # fmt: skip
    worker = subprocess.Popen([*dask, "worker", address, "--nworkers", "2", "--nthreads", "1"],
                              **quiet)  # fmt: skip
    results = tmp_path / "lost.jsonl"
    try:
        cmd = [sys.executable, "-m", "intervalnn.cli", "sweep", *SMALL, "--seeds", "0-9999"]
        cmd += ["--scheduler", address, "--results", str(results), "--no-models", "-q"]
        deadline = time.monotonic() + 90  # it connects once the scheduler is up
        sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while time.monotonic() < deadline and len(read_results(results)[0]) < 50:
            time.sleep(0.1)
        scheduler.kill()
        _, err = sweep.communicate(timeout=120)
    finally:
        for p in (scheduler, worker):
            p.kill()
            p.wait(timeout=30)
    assert sweep.returncode == 1, err
    assert "rerun the same command to resume" in err
    rows, bad = read_results(results)
    assert bad == 0 and 50 <= len(rows) < 10000
    assert all(r["status"] == "ok" for r in rows)  # nothing finished marked failed
    assert len({r["key"] for r in rows}) == len(rows)


def test_table_selects_on_validation_per_seed_first_on_ties():
    def row(index, seed, lr, val, test, status="ok"):
        cfg = {"epsilon": 0.1, "seed": seed, "learning_rate": lr, "dataset": "moons"}
        metrics = {"val_certified_accuracy": val, "certified_accuracy": test, "accuracy": 0.9}
        r = {"key": f"k{index}", "index": index, "status": status, "config": cfg}
        return {**r, "search": ["learning_rate"], "metrics": metrics}

    rows = [
        row(0, 0, 0.5, 0.80, 0.10),  # tie on validation with index 2: the first wins
        row(1, 1, 0.5, 0.70, 0.99),  # best test, but not best validation: never chosen
        row(2, 0, 1.0, 0.80, 0.50),
        row(3, 1, 1.0, 0.75, 0.30),
    ]
    summary = summarize(list(reversed(rows)))  # completion order does not matter
    assert summary["columns"] == [] and summary["search"] == ["learning_rate"]
    (entry,) = summary["rows"]
    assert entry["seeds"] == 2 and entry["runs"] == 4
    expected = {"mean": pytest.approx(0.2), "std": pytest.approx(np.std([0.1, 0.3], ddof=1))}
    assert entry["certified_accuracy"] == expected
    assert entry["chosen"] == {"learning_rate=0.5": 1, "learning_rate=1.0": 1}

    rows.append(row(4, 1, 2.0, 0.95, 0.0, status="failed"))  # failures choose nothing
    entry = summarize(rows)["rows"][0]
    assert entry["failed"] == 1 and entry["certified_accuracy"]["mean"] == pytest.approx(0.2)


def test_plot_sweep_draws_the_swept_option(tmp_path, scheduler, run):
    results = tmp_path / "p.jsonl"
    run("sweep", *SMALL, "--epsilon", "1e-3,0.1", "--seeds", "0-1", "--no-models",
        "--results", results, "--scheduler", scheduler, "-q")  # fmt: skip
    out = run("plot", "sweep", results, "-o", tmp_path / "s.png").stdout
    assert "s.png" in out and (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    msg = run("plot", "sweep", results, "--x", "hidden", "-o", tmp_path / "t.png", code=1)
    assert "choose --x from what" in msg.stderr and "epsilon" in msg.stderr


def test_without_dask_the_commands_say_how_to_install(monkeypatch, tmp_path, run):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import fails
    msg = run("sweep", *SMALL, "--results", tmp_path / "x.jsonl", code=1).stderr
    assert "pip install 'intervalnn[dask]'" in msg
    assert not (tmp_path / "x.jsonl").exists()
    run("sweep", *SMALL, "--results", tmp_path / "x.jsonl", "--serial", "-q")  # no Dask needed
    model = read_results(tmp_path / "x.jsonl")[0][0]["model"]
    msg = run("certify", model, "--workers", "2", code=1).stderr
    assert "pip install 'intervalnn[dask]'" in msg


# ------------------------------------------------------------------ sharded certification


def test_certify_on_workers_is_identical_to_serial(tmp_path, scheduler, run):
    from intervalnn.certify import certify
    from intervalnn.datasets import two_moons
    from intervalnn.experiment.cluster import certify_on_dask
    from intervalnn.io import load_model

    run("train", *SMALL, "--epsilon", "0.01", "-o", tmp_path / "m.npz", "--json")
    model, meta = load_model(tmp_path / "m.npz")
    data = two_moons(5000, noise=0.1, seed=7)  # five batches of certify: five shards
    x, y = data.x, data.y
    serial = certify(model, x, y, meta["threat_model"])
    sharded = certify_on_dask(model, x, y, meta["threat_model"], scheduler=scheduler)
    assert np.array_equal(serial.margin, sharded.margin)
    assert np.array_equal(serial.nominal_correct, sharded.nominal_correct)
    assert 0 < sharded.certified_accuracy < 1

    args = ["certify", tmp_path / "m.npz", "--json", "--per-sample"]
    a = run(*args, tmp_path / "a.csv").stdout
    b = run(*args, tmp_path / "b.csv", "--scheduler", scheduler).stdout
    assert a == b and (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    both = run(*args, tmp_path / "c.csv", "--workers", 2, "--scheduler", scheduler, code=2)
    assert "not both" in both.stderr


def test_unreachable_scheduler_is_a_clear_error(tmp_path, run):
    msg = run("sweep", *SMALL, "--scheduler", "tcp://127.0.0.1:9", "--results",
              tmp_path / "u.jsonl", code=1).stderr  # fmt: skip
    assert "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in msg


def test_workers_run_one_thread_each():
    from intervalnn.experiment.cluster import ONE_THREAD, dask_client

    def threads():
        from intervalnn.kernels import cpu

        return cpu.THREADS, os.environ.get("OPENBLAS_NUM_THREADS")

    with dask_client("test", workers=1) as client:
        assert list(client.run(threads).values()) == [(1, "1")]
    assert ONE_THREAD["INTERVALNN_THREADS"] == "1"


def test_a_ctrl_c_swallowed_inside_a_cell_records_no_row(tmp_path):
    """A Ctrl-C that a library turns into an ordinary error inside a cell (Numba compiling
    turns it into a RuntimeError) must stop the sweep, not record a failed cell."""
    from intervalnn.experiment import run_sweep

    path = tmp_path / "g.toml"
    path.write_text('[grid]\ndataset = "moons"\nepochs = 1\nbatch_size = 250\nseed = "0-1"\n')
    results = tmp_path / "r.jsonl"
    with pytest.raises(KeyboardInterrupt):
        run_sweep(Grid.from_toml(path), results, serial=True, interrupted=lambda: True)
    assert read_results(results) == ([], 0)
    done = run_sweep(Grid.from_toml(path), results, serial=True, interrupted=lambda: False)
    assert done.ran == 2 and len(read_results(results)[0]) == 2
