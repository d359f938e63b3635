"""The experiment API (intervalnn.experiment) and the thin CLI over it.

Covers: the run specification and its errors, the option schema parsing as
click does, the library run being the CLI's run, which errors the CLI turns
into one line (and that bugs keep their traceback), the throttled progress
bar, and the lazy command registration.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import click
import numpy as np
import pytest
from click.testing import CliRunner

from intervalnn.cli import main
from intervalnn.experiment import (
    FIELDS,
    DataSpec,
    RunSpec,
    SpecError,
    TrainingSpec,
    prepare,
    train_and_certify,
)
from intervalnn.io import load_model

SMALL = {"dataset": "moons", "epochs": 1, "batch_size": 250, "hidden": 4}


def test_spec_defaults_and_round_trip():
    spec = RunSpec.from_options(dataset="moons")
    assert spec.options() == {**{n: f.default for n, f in FIELDS.items()}, "dataset": "moons"}
    assert list(spec.options()) == list(FIELDS)
    again = RunSpec.from_options(spec.options())
    assert again == spec and hash(again) == hash(spec)
    changed = spec.replace(**{"learning-rate": "2", "seed": 3})
    assert changed.training.learning_rate == 2.0 and changed.seed == 3
    assert spec.training.learning_rate == 0.5  # frozen: replace made a copy
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.seed = 1
    config = spec.train_config(fused=False)
    assert config.seed == 0 and config.validate_every == "step" and not config.fused


@pytest.mark.parametrize(
    "options, field, message",
    [
        ({}, "dataset", "dataset is required"),
        ({"epochs": 0}, "epochs", "epochs: 0 is not in the range x>=1."),
        ({"epochs": 1.5}, "epochs", "epochs: 1.5 is not an integer"),
        ({"loss": "mse"}, "loss", "loss: 'mse' is not one of 'bce', 'ce'."),
        ({"epsilon": -1}, "epsilon", "epsilon: -1 is not allowed"),
        ({"learning_rate": 0}, "learning_rate", "a learning rate must be > 0"),
        ({"learning_rat": 1}, "learning_rat", "did you mean 'learning_rate'"),
        ({"pretrain_epochs": 2}, "pretrain_epochs", "add pretrain_size N"),
        ({"hidden": True}, "hidden", "True is not an integer"),
    ],
)
def test_spec_errors_name_the_field(options, field, message):
    if field != "dataset":
        options = {"dataset": "moons", **options}
    with pytest.raises(SpecError) as info:
        RunSpec.from_options(options)
    assert info.value.field == field and message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_sentences_spell_options_per_front_end():
    with pytest.raises(SpecError) as info:
        RunSpec(DataSpec("moons"), training=TrainingSpec(pretrain_epochs=1))
    cli = info.value.render(lambda n: "--" + n.replace("_", "-"))
    assert cli == "--pretrain-epochs needs clean pretraining data: add --pretrain-size N (e.g. 100)"


def _click_type(f):
    """The click type the options had before the schema (the reference for messages)."""
    if f.kind == "count":
        return click.IntRange(min=f.minimum)
    if f.kind == "int":
        return click.INT
    if f.kind == "choice":
        return click.Choice(f.choices)
    return None


@pytest.mark.parametrize("name", [n for n, f in FIELDS.items() if _click_type(f)])
@pytest.mark.parametrize("text", ["x", "", "0", "-1", "1.5", " 7 ", "bce", "1/t", "float32", "gpu"])
def test_schema_parses_as_click_does(name, text):
    f, reference = FIELDS[name], _click_type(FIELDS[name])
    try:
        expected = reference.convert(text, None, None)
    except click.BadParameter as exc:
        with pytest.raises(SpecError) as info:
            f.parse(text)
        assert info.value.reason == exc.message
    else:
        assert f.parse(text) == expected


def test_the_library_run_is_the_cli_run(tmp_path):
    outcome = train_and_certify(RunSpec.from_options(SMALL, epsilon=0.01))
    args = [f"--{k.replace('_', '-')}={v}" for k, v in SMALL.items()]
    result = CliRunner().invoke(
        main, ["train", *args, "--epsilon", "0.01", "-o", str(tmp_path / "m.npz"), "--json"]
    )
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert {k: v for k, v in printed.items() if k not in ("model", "seconds")} == {
        k: v for k, v in outcome.summary.items() if k != "seconds"
    }
    (tmp_path / "lib.npz").write_bytes(outcome.model_file)
    a, meta_a = load_model(tmp_path / "m.npz")
    b, meta_b = load_model(tmp_path / "lib.npz")
    for name, box in a.named_params().items():
        other = b.named_params()[name]
        assert np.array_equal(box.lo, other.lo) and np.array_equal(box.hi, other.hi)
    assert meta_a["history"] == meta_b["history"] and meta_a["config"] == meta_b["config"]


def test_prepare_counts_the_validations():
    run = prepare(RunSpec.from_options(SMALL, epochs=3))
    assert run.validations == 3 * 4 + 1  # 1000 points, batch 250: 4 steps an epoch
    run = prepare(RunSpec.from_options(SMALL, epochs=3, validate_every="epoch"))
    assert run.validations == 4


# ------------------------------------------------------------------ the CLI's errors


def _invoke(monkeypatch, exc):
    import intervalnn.cli.commands as commands

    def broken(*args, **kwargs):
        raise exc

    monkeypatch.setattr(commands, "train_and_certify", broken)
    return CliRunner().invoke(main, ["train", "--dataset", "moons", "--epochs", "1"])


@pytest.mark.parametrize("exc", [TypeError("a bug"), KeyError("a bug"), RuntimeError("a bug")])
def test_bugs_keep_their_traceback(monkeypatch, exc):
    result = _invoke(monkeypatch, exc)
    assert result.exit_code == 1 and result.exception is exc  # not turned into a message
    assert "Error: " not in result.stderr
    assert result.exc_info[2] is not None  # the traceback, for click's caller to show


@pytest.mark.parametrize("exc", [ValueError("bad input"), OSError("disk full")])
def test_user_errors_are_one_line(monkeypatch, exc):
    result = _invoke(monkeypatch, exc)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert result.stderr.strip().splitlines()[-1] == f"Error: {exc}"


def test_spec_errors_are_usage_errors_with_flags(monkeypatch):
    result = _invoke(monkeypatch, SpecError("dtype", "float32 is refused here"))
    assert result.exit_code == 2
    assert "Error: Invalid value for '--dtype': float32 is refused here" in result.stderr


# ------------------------------------------------------------------ progress, registration


def test_progress_redraws_a_few_times_a_second(monkeypatch):
    from intervalnn.cli import common

    now = [0.0]
    monkeypatch.setattr(common.time, "monotonic", lambda: now[0])
    drawn = []
    with common.Progress(1000, "x") as bar:
        monkeypatch.setattr(bar._bar, "update", lambda n, item=None: drawn.append((n, item)))
        for i in range(1000):
            now[0] += 0.001  # a step every millisecond: one second in all
            bar.advance(i)
    assert 4 <= len(drawn) <= 7  # every 0.2 s, and the final state
    assert sum(n for n, _ in drawn) == 1000 and drawn[-1][1] == 999


def test_every_run_option_is_a_train_and_a_sweep_option():
    from intervalnn.cli.commands import train_command
    from intervalnn.cli.sweep import sweep_command

    for command in (train_command, sweep_command):
        names = [p.name for p in command.params]
        assert set(FIELDS) <= set(names)
    train = [p.name for p in train_command.params if p.name in FIELDS]
    assert train == list(FIELDS)  # in schema order


def test_commands_are_imported_when_used():
    code = (
        "import sys\nfrom intervalnn.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "assert 'intervalnn.experiment' not in sys.modules\n"
        "ctx = main.make_context('intervalnn', ['train'])\n"
        "main.get_command(ctx, 'train')\n"
        "loaded = {m for m in sys.modules if m.startswith('intervalnn.cli.')}\n"
        "assert loaded == {'intervalnn.cli.commands', 'intervalnn.cli.common', "
        "'intervalnn.cli.options'}, loaded\n"
        "assert 'matplotlib' not in sys.modules and 'distributed' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
