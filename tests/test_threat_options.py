"""Issue 13's threat models and training rules wherever a run is set up: the run
specification, ``train`` / ``certify`` / ``sweep`` / ``audit-training``, user ``.npz``
files (``trusted``), model files and ``info``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from intervalnn.datasets import DataError, load_npz
from intervalnn.experiment import RunSpec, SpecError, prepare, read_results
from intervalnn.experiment.schema import FIELDS
from intervalnn.io import load_model

TINY = ["--dataset", "moons", "--epochs", "1", "--hidden", "4", "--batch-size", "250"]

# every new option of issue 13, set away from its default
ALL = [
    *["--epsilon", "inf", "--inference-epsilon", "0", "--poison-count", "10"],
    *["--label-flips", "2", "--label-target", "1", "--paired", "--trusted", "5"],
    *["--clip", "1", "--clip-method", "norm", "--weight-decay", "0.01", "--momentum", "0.9"],
    *["--nesterov", "--lr-decay", "0.1", "--lr-min", "0.01", "--steps", "3"],
]
RULES = {
    "clip": 1.0,
    "clip_method": "norm",
    "weight_decay": 0.01,
    "momentum": 0.9,
    "nesterov": True,
    "lr_decay": 0.1,
    "lr_min": 0.01,
    "steps": 3,
}


# ------------------------------------------------------------------ the run specification


def test_the_spec_carries_every_new_option_to_the_library():
    spec = RunSpec.from_options(
        dataset="moons", epsilon="Infinity", inference_epsilon=0, poison_count=10,
        label_flips=2, label_target=1, paired=True, trusted=5, **RULES,
    )  # fmt: skip
    assert math.isinf(spec.threat.epsilon) and spec.threat.trusted == 5
    threat = spec.threat.threat_model((0.0, 1.0))
    assert (threat.poison_count, threat.label_flips, threat.label_target) == (10, 2, 1)
    assert threat.paired and threat.test_epsilon == 0 and threat.domain == (0.0, 1.0)
    config = spec.train_config()
    assert {k: getattr(config, k) for k in RULES} == RULES
    assert RunSpec.from_options(spec.options()) == spec  # the flat options round trip


def test_defaults_come_from_the_library_and_mean_fullcert():
    from intervalnn.train import TrainConfig

    spec = RunSpec.from_options(dataset="moons")
    assert spec.threat.threat_model().is_fullcert and spec.threat.trusted == 0
    config, library = spec.train_config(), TrainConfig()
    assert {k: getattr(config, k) for k in RULES} == {k: getattr(library, k) for k in RULES}


def test_only_the_training_epsilon_may_be_infinite():
    assert FIELDS["epsilon"].parse("inf") == math.inf
    assert FIELDS["epsilon"].parse("INFINITY") == math.inf
    for name in ("inference_epsilon", "learning_rate", "clip", "momentum"):
        with pytest.raises(SpecError):
            FIELDS[name].parse("inf")
    for bad in ("-inf", "nan"):
        with pytest.raises(SpecError):
            FIELDS["epsilon"].parse(bad)


def test_poison_count_all_is_every_point_and_flags_read_true_false():
    assert FIELDS["poison_count"].parse("all") is None
    assert FIELDS["paired"].parse("true") is True and FIELDS["nesterov"].parse("no") is False
    with pytest.raises(SpecError, match="not true or false"):
        FIELDS["paired"].parse("maybe")


@pytest.mark.parametrize(
    "options, named",
    [
        ({"nesterov": True}, "nesterov"),
        ({"paired": True, "poison_count": 3}, "paired"),
        ({"label_target": 1}, "label_target"),
        ({"learning_rate": 0.5, "weight_decay": 2.0}, "learning_rate"),
        ({"momentum": 1.0}, "momentum"),
        ({"clip": 0.0}, "clip"),
        ({"epsilon": math.inf}, "epsilon"),
    ],
)
def test_invalid_combinations_are_spec_errors_with_the_librarys_words(options, named):
    with pytest.raises(SpecError) as exc:
        RunSpec.from_options(dataset="moons", **options)
    assert exc.value.field == named and "\n" not in str(exc.value)


# ------------------------------------------------------------------ usage errors (exit 2)


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--epsilon", "inf", "--inference-epsilon", "0"],
            "--epsilon = inf needs gradient clipping (--clip)",
        ),
        (["--epsilon", "inf", "--clip", "1"], "--epsilon = inf needs a finite --inference-epsilon"),
        (["--poison-count", "5000"], "--poison-count = 5000 exceeds the 1000 training points"),
        (["--label-flips", "5000"], "--label-flips = 5000 exceeds the 1000 training points"),
        (["--label-flips", "1", "--label-target", "2"], "--label-target 2 is not a class"),
        (["--weight-decay", "2"], "--learning-rate * --weight-decay must be < 1"),
        (["--nesterov"], "--nesterov needs --momentum > 0"),
        (["--paired", "--poison-count", "3"], "--paired needs --label-flips >= 1"),
        (["--paired", "--label-flips", "3"], "--paired needs a --poison-count"),
        (["--label-target", "1"], "--label-target needs --label-flips >= 1"),
        (["--momentum", "1"], "--momentum must be in [0, 1)"),
        (["--clip", "0"], "--clip must be a finite number > 0"),
        (["--clip", "inf"], "'--clip'"),
        (["--lr-decay", "-1"], "--lr-decay must be a finite number >= 0"),
        (["--trusted", "5000"], "'--trusted': 5000 trusted points, but the training set has only"),
        (["--steps", "0"], "'--steps'"),
        (["--clip-method", "sign"], "'--clip-method'"),
        (["--poison-count", "-1"], "'--poison-count'"),
    ],
)
def test_invalid_options_are_one_line_usage_errors_naming_the_option(args, message, error):
    assert message in error("train", *TINY, *args, code=2)


def test_audit_training_and_sweep_get_the_options_and_their_checks(error, run):
    assert "--nesterov needs --momentum" in error("audit-training", *TINY, "--nesterov", code=2)
    msg = error("audit-training", *TINY, "--poison-count", "5000", code=2)
    assert "--poison-count = 5000 exceeds" in msg
    for command in ("train", "audit-training", "sweep"):
        text = run(command, "--help").stdout
        for option in (
            "--poison-count",
            "--label-flips",
            "--label-target",
            "--paired",
            "--trusted",
        ):
            assert option in text, (command, option)
        for option in ("--clip-method", "--weight-decay", "--nesterov", "--lr-min", "--steps"):
            assert option in text, (command, option)
    msg = error("sweep", *TINY, "--nesterov", "true", "--dry-run", code=2)
    assert "nesterov needs momentum > 0" in msg
    out = run("sweep", *TINY, "--poison-count", "all,10", "--epsilon", "inf", "--clip", "1",
              "--inference-epsilon", "0", "--dry-run").stdout  # fmt: skip
    assert "poison_count=None" in out and "poison_count=10" in out and "epsilon=inf" in out


# ------------------------------------------------------------------ train -> model file -> info


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from click.testing import CliRunner

    from intervalnn.cli import main

    path = tmp_path_factory.mktemp("threat") / "k.npz"
    result = CliRunner().invoke(main, ["train", *TINY, *ALL, "-o", str(path), "--json"])
    assert result.exit_code == 0, result.output
    return path, json.loads(result.stdout)


def test_train_info_and_the_model_file_hold_the_threat_model_and_rules(trained, run):
    path, summary = trained
    assert summary["epsilon"] == math.inf and summary["steps"] == 3
    assert "at most 10 of 1000 training points" in summary["threat"]
    assert "momentum 0.9, Nesterov" in summary["training_rules"]

    _, meta = load_model(path)
    threat = meta["threat_model"]
    assert math.isinf(threat.epsilon) and threat.test_epsilon == 0
    assert (threat.poison_count, threat.label_flips, threat.label_target) == (10, 2, 1)
    assert threat.paired
    assert {k: meta["config"][k] for k in RULES} == RULES
    assert meta["dataset"]["trusted"] == 5 and meta["dataset"]["train_size"] == 1000

    info = json.loads(run("info", path, "--json").stdout)
    assert info["training_epsilon"] == math.inf and info["poison_count"] == 10
    assert (info["label_flips"], info["label_target"], info["paired"]) == (2, 1, True)
    assert info["trusted"] == 5 and info["train_size"] == 1000 and info["rules"] == RULES
    text = run("info", path).stdout
    assert "at most 10 of 1000 training points poisoned within epsilon inf" in text
    assert "at most 2 labels flipped to class 1 (the same points); 5 trusted points" in text
    assert "clip 1 (norm), weight decay 0.01, momentum 0.9, Nesterov" in text
    assert "fixed 3 steps" in text


def test_certify_of_an_infinite_epsilon_model_uses_its_finite_test_radius(trained, run):
    path, summary = trained
    done = json.loads(run("certify", path, "--json").stdout)
    assert done["epsilon"] == 0 and done["training_epsilon"] == math.inf
    assert done["certified_accuracy"] == summary["certified_accuracy"]
    wider = json.loads(run("certify", path, "--epsilon", "0.01", "--json").stdout)
    assert wider["epsilon"] == 0.01 and wider["certified_accuracy"] <= done["certified_accuracy"]
    assert "'--epsilon'" in run("certify", path, "--epsilon", "inf", code=2).stderr


def test_a_fixed_step_count_trains_that_many_steps(run):
    spec = RunSpec.from_options(dataset="moons", steps=7, batch_size=250, epochs=1)
    assert prepare(spec).validations == 8  # validation at step 0 and after each step
    spec = spec.replace(validate_every="epoch")
    assert prepare(spec).validations == 3  # 7 steps of 4 a epoch: 2 epochs, and step 0


# ------------------------------------------------------------------ trusted points


def test_trusted_points_reach_training(tmp_path, run):
    """All points trusted: nothing can be poisoned, so the box stays (almost) a point."""
    base = [*TINY, "--epsilon", "0.01", "--json"]
    free = json.loads(run("train", *base, "-o", tmp_path / "a.npz").stdout)
    safe = json.loads(run("train", *base, "--trusted", "1000", "-o", tmp_path / "b.npz").stdout)
    assert free["max_parameter_width"] > 1e-4 and safe["max_parameter_width"] < 1e-9
    assert "1000 trusted points" in safe["threat"]


def _user_data(npz, trusted=None, n=60):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] > 0).astype(np.int64)
    arrays = {"x": x, "y": y} if trusted is None else {"x": x, "y": y, "trusted": trusted}
    return npz("u.npz", **arrays)


def test_a_npz_trusted_mask_follows_its_rows_into_the_training_split(npz):
    n = 60
    flags = np.arange(n) % 3 == 0
    x = np.column_stack([np.arange(n, dtype=float), np.zeros(n)])  # row i has x[:, 0] == i
    path = npz("t.npz", x=x, y=np.arange(n) % 2, trusted=flags)
    splits = load_npz(path, seed=4)
    rows = splits.train.x[:, 0].astype(int)
    assert np.array_equal(splits.trusted, flags[rows]) and not splits.trusted.flags.writeable
    predefined = npz(
        "p.npz", x_train=x, y_train=np.arange(n) % 2, x_test=x[:5], y_test=np.arange(5) % 2,
        trusted=flags,
    )  # fmt: skip
    splits = load_npz(predefined, seed=4)
    assert np.array_equal(splits.trusted, flags[splits.train.x[:, 0].astype(int)])
    assert load_npz(npz("none.npz", x=x, y=np.arange(n) % 2)).trusted is None


@pytest.mark.parametrize(
    "trusted, message",
    [
        (np.ones(60, dtype=np.int64), "'trusted' must be a boolean array"),
        (np.ones(59, dtype=bool), "'trusted' must have one entry per example of x (60)"),
    ],
)
def test_a_bad_trusted_array_is_a_one_line_data_error(npz, trusted, message, error):
    path = _user_data(npz, trusted)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_npz(path)
    assert message in error("train", "--dataset", path, "--epochs", "1")


def test_trusted_n_and_the_files_mask_unite(npz):
    flags = np.zeros(60, dtype=bool)
    flags[-10:] = True  # the last ten rows of the file
    path = _user_data(npz, flags)
    spec = RunSpec.from_options(dataset=str(path), trusted=3, epochs=1)
    run = prepare(spec)
    own = run.splits.trusted
    assert run.trusted[:3].all() and np.array_equal(run.trusted[3:], own[3:])
    assert np.count_nonzero(run.trusted) == np.count_nonzero(own | (np.arange(len(own)) < 3))
    assert np.array_equal(prepare(spec.replace(trusted=0)).trusted, own)
    assert prepare(RunSpec.from_options(dataset="moons")).trusted is None


# ------------------------------------------------------------------ sweeps over poison_count


def test_a_sweep_over_poison_count(tmp_path, run):
    results = tmp_path / "k.jsonl"
    args = [*TINY, "--epsilon", "0.05", "--poison-count", "5,200", "--serial", "-q"]
    out = run("sweep", *args, "--results", results, "--no-models").stdout
    assert "poison_count" in out
    rows, _ = read_results(results)
    assert sorted(r["config"]["poison_count"] for r in rows) == [5, 200]
    assert all(r["status"] == "ok" for r in rows)
    by_k = {r["config"]["poison_count"]: r["metrics"] for r in rows}
    # fewer poisoned points: a narrower box (same data, same model, same batches)
    assert by_k[5]["max_parameter_width"] <= by_k[200]["max_parameter_width"]
    assert "at most 5 of 1000" in by_k[5]["threat"]


def test_cells_at_the_new_defaults_keep_their_keys():
    """Results files written before issue 13 still resume: a cell's key leaves the new
    options out at their defaults."""
    from intervalnn.experiment.grid import LATER_OPTIONS, cell_key

    cell = RunSpec.from_options(dataset="moons").options()
    old = {k: v for k, v in cell.items() if k not in LATER_OPTIONS}
    assert cell_key(cell) == cell_key(old)
    assert cell_key({**cell, "poison_count": 5}) != cell_key(cell)
    assert cell_key({**cell, "label_flips": False}) != cell_key(cell)  # 0 and False differ


def test_a_toml_grid_takes_inf_flags_and_all(tmp_path):
    from intervalnn.experiment import Grid, GridError

    path = tmp_path / "g.toml"
    head = '[grid]\ndataset = "moons"\nepsilon = inf\ninference_epsilon = 0\nclip = 1.0\n'
    path.write_text(head + "poison_count = [5, 10]\nlabel_flips = 1\npaired = [true, false]\n")
    cells = Grid.from_toml(path).cells()
    assert all(math.isinf(c["epsilon"]) for c in cells)
    assert sorted((c["poison_count"], c["paired"]) for c in cells) == [
        (5, False), (5, True), (10, False), (10, True)
    ]  # fmt: skip
    path.write_text(head + 'poison_count = ["all", 10]\n')
    assert [c["poison_count"] for c in Grid.from_toml(path).cells()] == [None, 10]
    path.write_text(head + 'poison_count = ["all", 10]\nlabel_flips = 1\npaired = true\n')
    with pytest.raises(GridError, match="paired needs a poison_count"):
        Grid.from_toml(path).cells()


def test_splits_refuse_a_trusted_mask_that_does_not_fit():
    from intervalnn.datasets import Splits, two_moons_splits

    sp = two_moons_splits(seed=0, n_train=20)
    with pytest.raises(DataError, match="trusted must be a boolean mask of the 20 training rows"):
        Splits(sp.train, sp.val, sp.test, trusted=np.ones(19, dtype=bool))


def test_infinite_epsilon_needs_clipping_only_without_a_data_domain(npz):
    """The library's rule: with a domain every poisoned feature stays bounded."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, size=(80, 2))
    y = (x[:, 0] > 0.5).astype(np.int64)
    boxed = npz("box.npz", x=x, y=y, domain=np.array([0.0, 1.0]))
    spec = RunSpec.from_options(dataset=str(boxed), epsilon="inf", inference_epsilon=0)
    run = prepare(spec)
    assert math.isinf(run.threat.epsilon) and run.threat.domain == (0.0, 1.0)
    free = npz("free.npz", x=x, y=y)
    with pytest.raises(SpecError, match="needs gradient clipping"):
        prepare(spec.replace(dataset=str(free)))
    assert prepare(spec.replace(dataset=str(free), clip=1.0)).config.clip == 1.0
