"""Smoke tests for the paper reproductions in benchmarks/paper (one tiny run per data set)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "paper"))

import common  # noqa: E402


def _check(row: dict, n_test: int) -> None:
    assert 0.0 <= row["certified_accuracy"] <= row["accuracy"] <= 1.0
    assert 0.0 <= row["val_certified_accuracy"] <= 1.0
    assert 0.0 <= row["start_certified_accuracy"] <= 1.0
    k = row["certified_accuracy"] * n_test  # a count of test points
    assert math.isclose(k, round(k))
    assert row["best_step"] is not None and 1 <= row["best_step"] <= row["steps"]
    assert row["best_max_width"] >= row["best_mean_width"] > 0  # trained on a box: widths grew
    assert row["stopped"] is None
    assert row["seconds"] > 0


def test_moons_one_epoch():
    row = common.run(dataset="moons", epsilon=1e-2, epochs=1, learning_rate=0.5, batch_size=100)
    assert row["steps"] == 10 and row["n_train"] == 1000
    assert row["domain"] is None
    _check(row, 200)
    # an MLP trained for a few steps on Two-Moons is far better than chance
    assert row["certified_accuracy"] > 0.6


def test_moons_pretraining_and_selection():
    grid = [{"learning_rate": 0.5}, {"learning_rate": 1.0}]
    rows = common.select(
        grid,
        [0],
        dataset="moons",
        epsilon=1e-3,
        epochs=1,
        pretrain_size=20,
        pretrain_epochs=5,
        pretrain_learning_rate=1.0,
    )
    assert [r["candidate"] for r in rows] == [0, 1]
    assert sum(r["selected"] for r in rows) == 1
    assert sum(r["selected_global"] for r in rows) == 1
    best = common.picked(rows)[0]
    assert best["val_certified_accuracy"] == max(r["val_certified_accuracy"] for r in rows)
    for r in rows:
        _check(r, 200)
        assert r["pretrain_epochs"] == 5


@pytest.mark.skipif(not common.mnist_available(), reason=f"no MNIST files in {common.MNIST_DIR}")
def test_mnist17_one_step():
    row = common.run(
        dataset="mnist17",
        epsilon=1e-4,
        epochs=1,
        learning_rate=0.5,
        batch_size=None,
        hidden=10,
        max_train=500,
        max_eval=200,
    )
    assert row["steps"] == 1 and row["n_train"] == 500
    assert row["domain"] == [0.0, 1.0]
    _check(row, 200)
