"""``intervalnn plot``: the figure commands (the drawing is in :mod:`.plots`)."""

from __future__ import annotations

from pathlib import Path

import click

from intervalnn.experiment.outputs import check_output

from .common import CONTEXT, Group, echo_err, emit, version
from .options import (
    Radii,
    dataset_options,
    epsilon_option,
    figure_options,
    json_option,
    model_argument,
    models_argument,
    seed_option,
    split_option,
)


def _check_figure(output, inputs, options) -> None:
    """Refuse ``--output`` before any work: an input, a directory, an unwritable place."""
    inputs = [*inputs, ("data set", options.get("dataset"))]
    check_output(output, "--output", inputs, make_dirs=False)


@click.group(
    "plot",
    cls=Group,
    context_settings=CONTEXT,
    short_help="Figures: decision barriers, training curves, accuracy vs epsilon.",
)
@version
def plot_group():
    """Figures from model files, as PNG or PDF (needs matplotlib: pip install 'intervalnn[plot]').

    \b
    Examples:
      intervalnn plot barriers moons.npz -o barriers.png
      intervalnn plot curves moons.npz -o curves.pdf
      intervalnn plot epsilon moons.npz --epsilons 0,1e-4,1e-3,1e-2,0.1 -o eps.png
      intervalnn plot sweep sweep.jsonl --x epsilon -o sweep.png
    """


@plot_group.command("barriers", short_help="Decision barriers of 2-D models (FullCert Fig. 2).")
@version
@models_argument
@dataset_options
@epsilon_option("Test-time radius (default: each model's inference epsilon; 0: poisoning only).")
@split_option
@seed_option("Data seed (default: the model's).")
@click.option(
    "--grid",
    type=click.IntRange(20, 2000),
    default=200,
    show_default=True,
    help="Grid points per axis.",
)
@figure_options("barriers.png")
def plot_barriers_command(models, **options):
    """Decision barriers of 2-D models (FullCert's Fig. 2), one panel per model.

    Shades where every model in the parameter box predicts the same class for
    the whole test box around the point (certified, per class), and in grey
    the barrier where some model of the family may disagree; draws the
    nominal decision boundary and the data points.

    \b
    Examples:
      intervalnn plot barriers moons.npz -o barriers.png
      intervalnn plot barriers eps1e-3.npz eps1e-2.npz --epsilon 0 -o fig2.pdf
    """
    _check_figure(options["output"], [("model file", m) for m in models], options)
    from .plots import plot_barriers

    emit(plot_barriers(models, **options), False)


@plot_group.command("curves", short_help="Training curves from a model file's history.")
@version
@model_argument
@figure_options("curves.png")
def plot_curves_command(model, **options):
    """Training curves from the history stored in a model file.

    Certified and nominal validation accuracy, the bounds on the training
    loss, and the mean and largest parameter width, against the step (or
    epoch) of training; the kept (best) model is marked.

    \b
    Example:
      intervalnn plot curves moons.npz -o curves.png
    """
    _check_figure(options["output"], [("model file", model)], options)
    from .plots import plot_curves

    emit(plot_curves(model, **options), False)


@plot_group.command("epsilon", short_help="Certified accuracy against the test-time epsilon.")
@version
@models_argument
@dataset_options
@click.option(
    "--epsilons",
    type=Radii(),
    default="0,1e-4,1e-3,1e-2,0.1",
    show_default=True,
    help="Comma-separated test-time radii.",
)
@split_option
@seed_option("Data seed (default: the model's).")
@json_option("Also print the numbers as JSON.")
@figure_options("epsilon.png")
def plot_epsilon_command(models, as_json, **options):
    """Certified accuracy against the test-time radius epsilon, one line per model.

    Each model keeps the parameter box it was trained for (its training
    epsilon); only the radius of the test-time box varies.  Prints the table.

    \b
    Examples:
      intervalnn plot epsilon moons.npz --epsilons 0,1e-4,1e-3,1e-2,0.1 -o eps.png
      intervalnn plot epsilon a.npz b.npz --split val -o eps.pdf --json
    """
    _check_figure(options["output"], [("model file", m) for m in models], options)
    from .plots import plot_epsilon

    result = plot_epsilon(models, **options)
    if as_json:
        emit(result, True)
        return
    names = [Path(m["model"]).name for m in result["models"]]
    width = max(12, *(len(n) for n in names))
    click.echo(f"{'epsilon':<10}" + "".join(f"  {n:>{width}}" for n in names))
    for i, eps in enumerate(result["epsilons"]):
        cells = "".join(f"  {m['certified_accuracy'][i]:>{width}.1%}" for m in result["models"])
        click.echo(f"{eps:<10.3g}" + cells)
    click.echo(f"(certified accuracy on the {result['split']} split; figure: {result['output']})")


@plot_group.command("sweep", short_help="Certified accuracy against a swept option.")
@version
@click.argument("results", type=click.Path(readable=False), metavar="RESULTS.jsonl")
@click.option(
    "--x",
    "x",
    metavar="OPTION",
    default=None,
    help="The swept option on the x axis (default: the only one swept besides seeds).",
)
@figure_options("sweep.png")
def plot_sweep_command(results, **options):
    """Certified accuracy (mean ± std over seeds) against an option swept by 'intervalnn sweep'.

    One line per combination of the other swept options; with a search, each
    seed contributes its cell chosen on validation, as in the sweep's table.

    \b
    Examples:
      intervalnn plot sweep table1.jsonl --x epsilon -o table1.png
      intervalnn plot sweep arch.jsonl --x hidden -o hidden.pdf
    """
    _check_figure(options["output"], [("results file", results)], options)
    from .plots import plot_sweep

    drawn = plot_sweep(results, **options)
    if drawn.get("invalid"):
        bad = drawn["invalid"]
        note = f"skipped {bad['rows']} results rows whose metrics are not numbers in [0, 1]"
        echo_err(f"Note: {note} (e.g. {bad['example']})")
    click.echo(f"figure: {drawn['output']}")
