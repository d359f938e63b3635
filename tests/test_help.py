"""Every option of every command explains itself in ``--help`` (issue 12, item 17)."""

from __future__ import annotations

import click
import pytest

from intervalnn.cli import main


def _commands():
    """(path, command) for the group and every command and subcommand in it."""
    out = []

    def walk(cmd, ctx, path):
        out.append((path, cmd))
        if isinstance(cmd, click.Group):
            for name in cmd.list_commands(ctx):
                sub = cmd.get_command(ctx, name)
                walk(sub, click.Context(sub, info_name=name, parent=ctx), f"{path} {name}")

    walk(main, click.Context(main, info_name="intervalnn"), "intervalnn")
    return out


COMMANDS = _commands()


def test_the_walk_finds_every_command():
    paths = {path for path, _ in COMMANDS}
    for name in ("demo", "train", "certify", "info", "sweep", "audit", "audit-training"):
        assert f"intervalnn {name}" in paths
    for name in ("barriers", "curves", "epsilon", "sweep", "poison-count"):
        assert f"intervalnn plot {name}" in paths


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_every_option_has_help(path, cmd):
    missing = [
        "/".join(p.opts)
        for p in cmd.params
        if isinstance(p, click.Option)
        and p.name not in ("help", "version")
        and not (p.help or "").strip()
    ]
    assert not missing, f"{path}: options without help: {missing}"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=[p for p, _ in COMMANDS])
def test_boundflow_is_explained_where_it_appears(path, cmd, run):
    text = run(*path.split()[1:], "--help").output
    if "BoundFlow" in " ".join(text.split()):
        assert "batch size twice" in " ".join(text.split()), text


def test_sweep_grid_options_say_they_take_lists():
    sweep = dict(COMMANDS)["intervalnn sweep"]
    helps = {p.name: p.help for p in sweep.params if isinstance(p, click.Option)}
    assert helps["epochs"].startswith("Passes over the training data.")
    assert "Comma-separated values to sweep" in helps["epochs"]
    assert helps["seed"] == "Seeds, e.g. 0-9 or 0,3,5."


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--dataset", "moons"],
        ["demo"],
        ["audit-training", "--dataset", "moons"],
        ["certify", "missing.npz"],
        ["sweep", "--dataset", "moons", "--dry-run"],
    ],
    ids=lambda a: a[0],
)
def test_negative_seed_is_a_usage_error_naming_the_option(args, error):
    if args[0] == "sweep":  # grid errors name the key, as for a grid file
        assert "Error: seed: -5 is not in the range x>=0" in error(*args, "--seeds", "-5", code=2)
    else:
        assert "'--seed'" in error(*args, "--seed", "-5", code=2)


def test_certify_help_lists_every_per_sample_column(run):
    """The columns experiment.saved.write_per_sample writes."""
    text = " ".join(run("certify", "--help").output.split())
    for column in ("index", "label", "certified", "margin", "nominal_correct"):
        assert column in text
