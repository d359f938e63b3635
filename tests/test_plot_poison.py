"""``intervalnn plot poison-count``: certified accuracy against k and the largest certified k
per test point, checked on hand-made results files and model files whose certificates are
known by construction (the numbers plotted, not the pixels)."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from intervalnn.interval import Interval
from intervalnn.io import save_model
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel

pytest.importorskip("matplotlib")

from intervalnn.cli.plots import (  # noqa: E402  (after the skip: the module needs no matplotlib)
    _k_axis,
    accuracy_against_poison_count,
    certified_at_least,
    largest_certified_k,
)

# ------------------------------------------------------------------ hand-made sweeps


def _row(index, config, certified=0.5, accuracy=0.9, val=None, model=None):
    row = {
        "key": f"cell{index}",
        "index": index,
        "status": "ok",
        "config": {"dataset": "moons", "seed": 0, "epsilon": 0.01, **config},
        "metrics": {
            "certified_accuracy": certified,
            "accuracy": accuracy,
            "val_certified_accuracy": val,
        },
    }
    if model is not None:
        row["model"] = str(model)
    return row


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_accuracy_against_k_means_over_seeds_with_all_last():
    # two lines (epsilon 0.01 and 0.1), k in {1, 100, all}, two seeds each
    table = {  # (epsilon, k) -> certified accuracy of seeds 0 and 1
        (0.01, 1): (0.9, 0.8),
        (0.01, 100): (0.6, 0.4),
        (0.01, None): (0.2, 0.2),
        (0.1, 1): (0.5, 0.7),
        (0.1, 100): (0.1, 0.3),
        (0.1, None): (0.0, 0.0),
    }
    rows = []
    for (eps, k), accs in table.items():
        for seed, acc in enumerate(accs):
            config = {"epsilon": eps, "poison_count": k, "seed": seed}
            rows.append(_row(len(rows), config, certified=acc, accuracy=0.95 - 0.05 * seed))
    got = accuracy_against_poison_count(rows)
    assert got["columns"] == ["epsilon"]
    assert [line["cell"] for line in got["lines"]] == [{"epsilon": 0.01}, {"epsilon": 0.1}]
    for line in got["lines"]:
        eps = line["cell"]["epsilon"]
        assert [p["poison_count"] for p in line["points"]] == [1, 100, None]  # "all" last
        for p in line["points"]:
            a, b = table[(eps, p["poison_count"])]
            assert p["seeds"] == 2
            assert p["certified_accuracy"]["mean"] == pytest.approx((a + b) / 2)
            assert p["certified_accuracy"]["std"] == pytest.approx(abs(a - b) / math.sqrt(2))
            assert p["accuracy"]["mean"] == pytest.approx(0.925)


def test_largest_certified_k_on_a_constructed_case():
    ks = [1, 10, 100, None]
    certified = [
        [1, 1, 1, 0, 0],  # k = 1
        [1, 1, 0, 0, 0],  # k = 10
        [1, 0, 1, 0, 0],  # k = 100: point 2 again (models are trained separately)
        [1, 0, 0, 0, 1],  # all points: point 4 only there
    ]
    largest = largest_certified_k(ks, certified)
    assert largest[:3].tolist() == [math.inf, 10.0, 100.0]
    assert math.isnan(largest[3])  # no model certifies it
    assert largest[4] == math.inf
    assert certified_at_least(largest, ks) == [4 / 5, 4 / 5, 3 / 5, 2 / 5]
    assert certified_at_least(largest, [0]) == [4 / 5]
    # the order of the cells does not matter
    order = [3, 0, 2, 1]
    again = largest_certified_k([ks[i] for i in order], [certified[i] for i in order])
    np.testing.assert_array_equal(again, largest)
    with pytest.raises(ValueError, match="one row of certified flags per poison_count"):
        largest_certified_k(ks, certified[:3])


def test_all_is_placed_right_of_the_largest_k():
    # log axis (k spans two decades): "all" a decade right of the largest k
    assert _k_axis([1, 10, 100, None]) == ({1: 1.0, 10: 10.0, 100: 100.0, None: 1000.0}, True)
    assert _k_axis([0, 1, 100]) == ({0: 0.0, 1: 1.0, 100: 100.0}, True)  # symlog with 0
    # linear: one mean step right
    assert _k_axis([2, 4, 10, None]) == ({2: 2.0, 4: 4.0, 10: 10.0, None: 14.0}, False)
    assert _k_axis([None]) == ({None: 1.0}, False)


# ------------------------------------------------------------------ models with known certificates

# test points x = -2, -1, 1, 2 (labels 0, 0, 1, 1); a model z = x + b with b in [lo, hi]
# certifies class 0 where x + hi < 0 and class 1 where x + lo > 0 (test epsilon 0)
X_TEST = np.array([[-2.0], [-1.0], [1.0], [2.0]])
Y_TEST = np.array([0, 0, 1, 1])
BIAS = {  # k -> (lo, hi) of the bias, and the certified flags that gives
    1: ((0.0, 0.0), [1, 1, 1, 1]),
    10: ((-1.5, -1.5), [1, 1, 0, 1]),
    100: ((0.5, 1.5), [1, 0, 1, 1]),
    None: ((-1.9, 1.5), [1, 0, 0, 1]),
}


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "line.npz"
    x_train = np.linspace(-2, 2, 8).reshape(-1, 1)
    np.savez(
        path,
        x_train=x_train,
        y_train=(x_train[:, 0] > 0).astype(int),
        x_val=X_TEST,
        y_val=Y_TEST,
        x_test=X_TEST,
        y_test=Y_TEST,
    )
    return path


def _model(path, data, k, bias, seed=0):
    model = mlp(1, 1, layers=1)
    layer = model.layers[0]
    layer.weight = Interval(np.array([[1.0]]))
    layer.bias = Interval(np.array([bias[0]]), np.array([bias[1]]))
    layer.nominal = {"weight": np.array([[1.0]]), "bias": np.array([bias[0]])}
    threat = ThreatModel(0.01, 0.0, poison_count=k)
    save_model(path, model, threat, dataset={"name": str(data), "seed": seed})
    return path


def _sweep(tmp_path, data, seeds=(0,), models=True, certificates=None):
    """A results file over k in BIAS (and seeds), each cell's model in ``models/``."""
    certificates = certificates or {}
    rows = []
    (tmp_path / "models").mkdir(exist_ok=True)
    for seed in seeds:
        for k, (bias, flags) in BIAS.items():
            bias, flags = certificates.get((seed, k), (bias, flags))
            i = len(rows)
            path = _model(tmp_path / "models" / f"cell{i}.npz", data, k, bias, seed)
            config = {"dataset": str(data), "seed": seed, "poison_count": k}
            row = _row(i, config, certified=sum(flags) / 4, accuracy=1.0)
            if models:
                row["model"] = str(path)
            rows.append(row)
    return _write(tmp_path / "k.jsonl", rows)


def test_plot_writes_figure_and_per_point_table(tmp_path, data, run):
    results = _sweep(tmp_path, data)
    out, table = tmp_path / "k.png", tmp_path / "k.csv"
    res = run("plot", "poison-count", results, "-o", out, "--table", table, "--json")
    assert out.stat().st_size > 0
    got = json.loads(res.stdout)
    (line,) = got["lines"]
    assert [p["poison_count"] for p in line["points"]] == [1, 10, 100, None]
    assert [p["certified_accuracy"]["mean"] for p in line["points"]] == [1.0, 0.75, 0.75, 0.5]
    (per_point,) = got["per_point"]["lines"]
    assert per_point["poison_counts"] == [1, 10, 100, None]
    # largest certified k per point: all, 10, 100, all
    fractions = [s["mean"] for s in per_point["certified_at_least"]]
    assert fractions == [1.0, 1.0, 0.75, 0.5]
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["largest_k"] for r in rows] == ["all", "10", "100", "all"]
    assert [r["label"] for r in rows] == ["0", "0", "1", "1"]
    for k, (_, flags) in BIAS.items():
        column = f"certified_k={'all' if k is None else k}"
        assert [int(r[column]) for r in rows] == flags
    assert {r["seed"] for r in rows} == {"0"}


def test_per_point_table_agrees_with_certify_per_sample(tmp_path, data, run):
    results = _sweep(tmp_path, data)
    table = tmp_path / "k.csv"
    run("plot", "poison-count", results, "-o", tmp_path / "k.png", "--table", table)
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    for i, k in enumerate(BIAS):
        per_sample = tmp_path / f"s{i}.csv"
        run("certify", tmp_path / "models" / f"cell{i}.npz", "--per-sample", per_sample)
        with open(per_sample, newline="") as f:
            want = [r["certified"] for r in csv.DictReader(f)]
        assert [r[f"certified_k={'all' if k is None else k}"] for r in rows] == want


def test_per_point_mean_and_spread_over_seeds(tmp_path, data, run):
    # seed 1: every model certifies every point
    every = {(1, k): ((0.0, 0.0), [1, 1, 1, 1]) for k in BIAS}
    results = _sweep(tmp_path, data, seeds=(0, 1), certificates=every)
    got = json.loads(
        run("plot", "poison-count", results, "-o", tmp_path / "k.png", "--json").stdout
    )
    (line,) = got["per_point"]["lines"]
    assert line["groups"] == 2
    seed0 = [1.0, 1.0, 0.75, 0.5]
    for s, a in zip(line["certified_at_least"], seed0, strict=True):
        assert s["mean"] == pytest.approx((a + 1.0) / 2)
        assert s["std"] == pytest.approx((1.0 - a) / math.sqrt(2))


def test_text_output_and_no_per_point(tmp_path, data, run):
    results = _sweep(tmp_path, data)
    out = run("plot", "poison-count", results, "-o", tmp_path / "k.pdf", "--no-per-point").stdout
    assert "k=10" in out and "75.0 ± 0.0" in out and "k=all" in out
    assert "test points certified" not in out
    assert (tmp_path / "k.pdf").read_bytes().startswith(b"%PDF")


def test_models_not_saved_are_skipped_with_a_note(tmp_path, data, run, error):
    results = _sweep(tmp_path, data, models=False)
    res = run("plot", "poison-count", results, "-o", tmp_path / "k.png")
    assert "skipped 1 of 1 groups" in res.stderr and "saved no model file" in res.stderr
    assert "k=100" in res.stdout and (tmp_path / "k.png").is_file()
    msg = error(
        "plot", "poison-count", results, "-o", tmp_path / "k.png", "--table", tmp_path / "t.csv"
    )
    assert "--table: no group of cells" in msg and "--models DIR" in msg
    assert not (tmp_path / "t.csv").exists()
    # saved, but since moved away
    results = _sweep(tmp_path, data)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    rows[2]["model"] = str(tmp_path / "gone" / "cell2.npz")
    (tmp_path / "models" / "cell2.npz").unlink()
    _write(results, rows)
    res = run("plot", "poison-count", results, "-o", tmp_path / "k.png")
    assert "1 model files not found (e.g. " in res.stderr and "gone" in res.stderr


def test_relative_model_paths_are_found_next_to_the_results(tmp_path, data, run, monkeypatch):
    # the sweep ran in tmp_path and stored "models/cellI.npz"; plot from another directory
    results = _sweep(tmp_path, data)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    for r in rows:
        r["model"] = f"models/{r['key']}.npz"
    _write(results, rows)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    got = json.loads(run("plot", "poison-count", results, "-o", "k.png", "--json").stdout)
    assert got["per_point"]["groups"] == 1 and got["per_point"]["skipped"]["groups"] == 0
    assert (elsewhere / "k.png").is_file()


def test_a_model_file_replaced_since_the_sweep_is_refused(tmp_path, data, error):
    results = _sweep(tmp_path, data)
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    rows[1]["model_sha256"] = "0" * 64
    _write(results, rows)
    msg = error("plot", "poison-count", results, "-o", tmp_path / "k.png")
    assert "is not the model file cell 1 saved" in msg


# ------------------------------------------------------------------ one-line errors


def test_a_bad_table_path_is_refused_before_any_work(tmp_path, data, monkeypatch, error):
    import intervalnn.cli.plots

    def fail(*args, **kw):
        raise AssertionError("plotted before checking --table")

    monkeypatch.setattr(intervalnn.cli.plots, "plot_poison_count", fail)
    results = _sweep(tmp_path, data)
    out = tmp_path / "k.png"
    msg = error("plot", "poison-count", results, "-o", out, "--table", tmp_path, code=2)
    assert "--table" in msg and "is a directory" in msg
    msg = error("plot", "poison-count", results, "-o", out, "--table", out, code=2)
    assert "--table" in msg and "is the --output file" in msg
    msg = error("plot", "poison-count", results, "-o", out, "--table", tmp_path / "no" / "t.csv")
    assert msg.startswith("Error: cannot write --table file") and "does not exist" in msg


def test_errors(tmp_path, error):
    out = tmp_path / "k.png"
    msg = error("plot", "poison-count", tmp_path / "none.jsonl", "-o", out)
    assert msg == f"Error: results file {tmp_path / 'none.jsonl'} does not exist"
    plain = _write(tmp_path / "plain.jsonl", [_row(0, {}), _row(1, {"seed": 1})])
    msg = error("plot", "poison-count", plain, "-o", out)
    assert "holds no rows with a poison_count" in msg and "--poison-count" in msg
    empty = _write(tmp_path / "empty.jsonl", [])
    assert "no finished sweep cells" in error("plot", "poison-count", empty, "-o", out)
    bad = _write(tmp_path / "bad.jsonl", [_row(0, {"poison_count": "ten"})])
    assert "cell 0 has poison_count 'ten'" in error("plot", "poison-count", bad, "-o", out)
    good = _write(tmp_path / "good.jsonl", [_row(0, {"poison_count": 1})])
    msg = error("plot", "poison-count", good, "--table", good, "-o", out, code=2)
    assert "--table" in msg and "is the results file itself" in msg
    msg = error(
        "plot", "poison-count", good, "--no-per-point", "--table", tmp_path / "t.csv", code=2
    )
    assert "drop --no-per-point" in msg
    msg = error("plot", "poison-count", good, "--metric", "val_certified_accuracy", "-o", out)
    assert msg == "Error: no finished cell has a val_certified_accuracy to plot"
    assert not out.exists()
