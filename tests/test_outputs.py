"""What the commands report and write (issue 12: 18, 20): notes about the kept model and
foreign data, per-class certified accuracy, history export, figure files and legends."""

from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def moons(tmp_path_factory, run):
    """One quick Two-Moons model (1 epoch, trained) and its ``train --json`` summary."""
    model = tmp_path_factory.mktemp("outputs") / "moons.npz"
    result = run(
        "train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", "1", "-o", model, "--json"
    )
    return model, json.loads(result.stdout)


# ------------------------------------------------------------------ 18: what was kept


def test_train_says_when_the_kept_model_is_untrained(tmp_path, run):
    # a radius this large certifies less after every step than before the first
    model = tmp_path / "m.npz"
    args = ("train", "--dataset", "moons", "--epsilon", "0.3", "--epochs", "1", "-o", model)
    summary = json.loads(run(*args, "--json").stdout)
    assert summary["best_step"] == 0
    assert "untrained model at step 0" in summary["note"]
    text = run(*args).stdout
    assert any(ln.startswith("note") and "untrained" in ln for ln in text.splitlines())


def test_train_says_when_min_step_exceeds_the_steps(tmp_path, run):
    model = tmp_path / "m.npz"
    args = ("train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", "1", "-o", model)
    summary = json.loads(run(*args, "--min-step", "100000", "--json").stdout)
    assert summary["best_step"] is None
    assert summary["note"].startswith(f"--min-step 100000 exceeds the {summary['steps']} steps")
    assert "last model" in summary["note"]


def test_train_has_no_note_for_a_trained_model(moons):
    _, summary = moons
    assert summary["best_step"] > 0 and "note" not in summary
