"""What the commands report and write (issue 12: 18, 20): notes about the kept model and
foreign data, per-class certified accuracy, history export, figure files and legends."""

from __future__ import annotations

import csv
import json
import os
import stat

import numpy as np
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


def _blobs(npz, name="d.npz", shift=0.0):
    rng = np.random.default_rng(0)
    y = np.arange(300) % 2
    return npz(name, x=rng.normal(size=(300, 2)) + y[:, None] + shift, y=y)


def test_certify_notes_data_other_than_the_training_data(tmp_path, npz, run):
    data, other = _blobs(npz), _blobs(npz, "other.npz", shift=0.01)
    model = tmp_path / "m.npz"
    run("train", "--dataset", data, "--epsilon", "0.01", "--epochs", "1", "-o", model)
    same = run("certify", model, "--json")
    assert json.loads(same.stdout)["data_matches_training"] is True
    assert "Note" not in same.stderr
    for args in (("--dataset", other), ("--seed", "7")):
        result = run("certify", model, *args, "--json")
        assert json.loads(result.stdout)["data_matches_training"] is False
        notes = [ln for ln in result.stderr.splitlines() if ln.startswith("Note")]
        assert len(notes) == 1 and "not the data set the model was trained on" in notes[0]


def test_certify_pretrained_model_matches_its_data(tmp_path, npz, run):
    # pretraining points are held out of the training split: the check loads it the same way
    data = _blobs(npz)
    model = tmp_path / "m.npz"
    run(
        "train", "--dataset", data, "--epsilon", "0.01", "--epochs", "1",
        "--pretrain-size", "50", "--pretrain-epochs", "1", "-o", model,
    )  # fmt: skip
    assert json.loads(run("certify", model, "--json").stdout)["data_matches_training"] is True


def test_certify_reports_per_class_accuracy(moons, tmp_path, run):
    model, _ = moons
    per_sample = tmp_path / "s.csv"
    cert = json.loads(run("certify", model, "--json", "--per-sample", per_sample).stdout)
    with open(per_sample, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in cert["per_class"]] == [0, 1]
    for r in cert["per_class"]:
        mine = [s for s in rows if int(s["label"]) == r["class"]]
        assert r["n"] == len(mine) > 0
        assert r["certified_accuracy"] == sum(int(s["certified"]) for s in mine) / len(mine)
        assert r["accuracy"] == sum(int(s["nominal_correct"]) for s in mine) / len(mine)
    assert sum(r["n"] for r in cert["per_class"]) == cert["n"]
    text = run("certify", model).stdout
    for r in cert["per_class"]:
        line = next(ln for ln in text.splitlines() if ln.startswith(f"class {r['class']} "))
        assert f"certified {r['certified_accuracy']:.1%}" in line and f"n={r['n']}" in line


# ------------------------------------------------------------------ 20: info's history


def test_info_json_has_the_history_rows(moons, run):
    model, summary = moons
    info = json.loads(run("info", model, "--json").stdout)
    assert len(info["history"]) == info["history_rows"] == summary["steps"] + 1
    best = [r for r in info["history"] if r["step"] == summary["best_step"]]
    assert best[0]["val_certified_accuracy"] == summary["val_certified_accuracy"]
    assert "history " not in run("info", model).stdout  # the text stays one line per field


def test_info_exports_the_history_as_csv(moons, tmp_path, run):
    model, _ = moons
    out = tmp_path / "h.csv"
    info = json.loads(run("info", model, "--json", "--history", out).stdout)
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(info["history"])
    for row, want in zip(rows, info["history"], strict=True):
        assert int(row["step"]) == want["step"] and int(row["epoch"]) == want["epoch"]
        for key in ("loss_hi", "mean_width", "val_certified_accuracy"):
            got = float(row[key])
            assert got == want[key] or (np.isnan(got) and np.isnan(want[key]))
    assert stat.S_IMODE(os.stat(out).st_mode) == stat.S_IMODE(os.stat(model).st_mode)


def test_info_history_refuses_the_model_itself(moons, error):
    model, _ = moons
    before = model.read_bytes()
    message = error("info", model, "--history", model, code=2)
    assert "--history" in message and "is the model file itself" in message
    assert model.read_bytes() == before


# ------------------------------------------------------------------ 20: figures


@pytest.fixture
def figures(monkeypatch):
    """The matplotlib figures ``intervalnn plot`` saves, in order (they are still written)."""
    pytest.importorskip("matplotlib")
    import intervalnn.cli.plots as plots

    drawn, save = [], plots._save

    def keep(fig, output):
        drawn.append(fig)
        return save(fig, output)

    monkeypatch.setattr(plots, "_save", keep)
    return drawn


def _legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def test_figures_get_a_model_files_permissions(moons, tmp_path, run):
    pytest.importorskip("matplotlib")
    model, _ = moons
    old = os.umask(0o022)
    try:
        for name in ("c.png", "c.pdf"):
            run("plot", "curves", model, "-o", tmp_path / name)
            assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o644
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(model).st_mode) == 0o644
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left


def test_curves_loss_ticks_do_not_overlap(moons, tmp_path, figures, run):
    from intervalnn.io import load_model, save_model

    net, meta = load_model(moons[0])
    history = [  # diverging loss bounds, 1 to 1e40: forty decades in a small panel
        {"epoch": 0, "step": i, "loss_lo": 0.5, "loss_hi": 10.0 ** (i / 2),
         "mean_width": 1e-3 * (i + 1), "max_width": 1e-2 * (i + 1)}
        for i in range(81)
    ]  # fmt: skip
    model = save_model(
        tmp_path / "div.npz", net, meta["threat_model"], config={"validate_every": "step"},
        dataset=meta["dataset"], history=history, best={"step": 3, "epoch": 0},
    )  # fmt: skip
    for path in (model, moons[0]):  # diverging and ordinary bounds
        run("plot", "curves", path, "-o", tmp_path / "c.png", "--size", "640x480")
        fig = figures[-1]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        ax = fig.axes[1]
        assert ax.get_ylabel() == "training loss"
        lo, hi = sorted(ax.get_ylim())
        shown = [
            label.get_window_extent(renderer)
            for label, tick in zip(ax.get_yticklabels(), ax.get_yticks(), strict=True)
            if lo <= tick <= hi and label.get_text()
        ]
        assert 2 <= len(shown) <= 6
        for i, a in enumerate(shown):
            assert not any(a.overlaps(b) for b in shown[i + 1 :]), path


def test_plot_epsilon_has_one_legend_entry_per_model(moons, tmp_path, figures, run):
    model, _ = moons
    for d in ("a", "b"):  # the same file name in two directories
        (tmp_path / d).mkdir()
        (tmp_path / d / "moons.npz").write_bytes(model.read_bytes())
    models = [tmp_path / "a" / "moons.npz", tmp_path / "b" / "moons.npz", model]
    run("plot", "epsilon", *models, "--epsilons", "0,0.01", "-o", tmp_path / "e.png")
    labels = _legend(figures[-1])
    assert len(labels) == len(set(labels)) == len(models)
    for path, label in zip(models, labels, strict=True):
        assert str(path) in label


def test_plot_sweep_has_a_legend_entry_for_the_certified_line(tmp_path, figures, run):
    def row(i, seed, eps, hidden=None):
        config = {"dataset": "moons", "seed": seed, "epsilon": eps}
        if hidden is not None:
            config["hidden"] = hidden
        metrics = {"certified_accuracy": 0.5, "accuracy": 0.9, "val_certified_accuracy": 0.5}
        return {"key": f"k{i}", "index": i, "status": "ok", "config": config, "metrics": metrics}

    one = [row(i, s, e) for i, (s, e) in enumerate([(0, 0.1), (1, 0.1), (0, 0.2), (1, 0.2)])]
    two = [row(i, 0, e, h) for i, (e, h) in enumerate([(0.1, 4), (0.2, 4), (0.1, 8), (0.2, 8)])]
    for rows, lines in ((one, []), (two, ["hidden=4", "hidden=8"])):
        path = tmp_path / "r.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        run("plot", "sweep", path, "--x", "epsilon", "-o", tmp_path / "s.png")
        labels = _legend(figures[-1])
        assert "certified accuracy (mean ± std)" in labels and "nominal accuracy" in labels
        assert all(line in labels for line in lines)
