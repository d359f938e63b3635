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
      intervalnn plot poison-count k.jsonl -o k.png --table k.csv
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


@plot_group.command("poison-count", short_help="Certified accuracy against poisoned points k.")
@version
@click.argument("results", type=click.Path(readable=False), metavar="RESULTS.jsonl")
@click.option(
    "--metric",
    type=click.Choice(["certified_accuracy", "val_certified_accuracy"]),
    default="certified_accuracy",
    show_default=True,
    help="What the left panel shows against k: certified test or validation accuracy.",
)
@click.option(
    "--per-point/--no-per-point",
    default=True,
    show_default=True,
    help="Certify every saved model on its test split for the right panel (largest certified "
    "k per test point); --no-per-point draws the left panel from the results alone.",
)
@click.option(
    "--table",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.csv",
    help="Also write the per-point table as CSV: group, seed, index, label, certified_k=K "
    "(1/0) per k, largest_k.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where the models' data set lives (default: each cell's --data-dir).",
)
@json_option("Also print the numbers as JSON.")
@figure_options("poison-count.png")
def plot_poison_count_command(results, as_json, **options):
    """Certified accuracy against k, the number of poisoned training points (from a sweep
    over --poison-count), and per test point the largest k for which it is certified.

    Left: certified accuracy (mean ± std over seeds, as the sweep's table:
    with a search, each seed's cell chosen on validation) against k, one line
    per combination of the other swept options (epsilon, label_flips,
    clip ...), dotted: nominal test accuracy.  Cells without a poison_count
    (every point poisoned, FullCert's threat model) are the right-most point,
    labelled "all" (a decade right of the largest k on a log axis, one step
    on a linear one).  The axis is logarithmic when k spans two decades.

    Right (--per-point, needs the sweep's model files): cells that differ
    only in k (same seed, every other option alike) form a group; each cell's
    model certifies the test split as 'intervalnn certify --per-sample' does.
    A test point's largest certified k is the largest k whose model
    certifies it ("all" above every k; the models are trained separately,
    so it need not be certified at every smaller k).  The panel shows the
    fraction of test points whose largest certified k is >= k (mean ± std
    over the seeds of a line; options searched on validation give lines of
    their own here, nothing is chosen); --table writes the per-point flags.
    Groups whose models were not saved are skipped with a note.

    \b
    Examples:
      intervalnn sweep --poison-count 1,10,100,1000 --seed 0-4 --results k.jsonl
      intervalnn plot poison-count k.jsonl -o k.png --table k.csv
      intervalnn plot poison-count k.jsonl --no-per-point -o k.pdf --json
    """
    table = options["table"]
    if table is not None and not options["per_point"]:
        raise click.UsageError("--table writes the per-point results: drop --no-per-point")
    _check_figure(options["output"], [("results file", results)], options)
    if table is not None:
        if Path(table).resolve() == Path(options["output"]).resolve():
            raise click.UsageError(f"--table: {table} is the --output file; choose another file")
        check_output(table, "--table", [("results file", results)], make_dirs=False)
    from .plots import ALL, plot_poison_count

    drawn = plot_poison_count(results, **options)
    if drawn.get("invalid"):
        bad = drawn["invalid"]
        note = f"skipped {bad['rows']} results rows whose metrics are not numbers in [0, 1]"
        echo_err(f"Note: {note} (e.g. {bad['example']})")
    per_point = drawn.get("per_point")
    if per_point is not None:
        skipped = per_point["skipped"]
        if skipped["groups"]:
            why = []
            if skipped["unsaved"]:
                why.append(f"{skipped['unsaved']} cells saved no model file")
            if skipped["missing"]:
                why.append(
                    f"{len(skipped['missing'])} model files not found (e.g. "
                    f"{skipped['missing'][0]})"
                )
            echo_err(
                f"Note: per-point panel: skipped {skipped['groups']} of "
                f"{skipped['groups'] + per_point['groups']} groups of cells ({'; '.join(why)}); "
                "run the sweep with --models DIR to keep them"
            )
    if as_json:
        emit(drawn, True)
        return

    def k_text(k):
        return ALL if k is None else str(k)

    def label(columns, cell):
        return ", ".join(f"{c}={cell[c]}" for c in columns) or "all cells"

    def stats(s):
        return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"

    metric = drawn["metric"]
    click.echo(f"{metric} (%, mean ± std over seeds) against poison_count k:")
    for line in drawn["lines"]:
        click.echo(f"  {label(drawn['columns'], line['cell'])}")
        for p in line["points"]:
            click.echo(
                f"    k={k_text(p['poison_count']):<8} {stats(p[metric]):>14}  "
                f"(nominal {stats(p['accuracy'])}, {p['seeds']} seeds)"
            )
    if per_point is not None and per_point["lines"]:
        click.echo("test points certified by a model for >= k (%, mean ± std over seeds):")
        for line in per_point["lines"]:
            click.echo(f"  {label(per_point['columns'], line['cell'])}")
            for k, s in zip(line["poison_counts"], line["certified_at_least"], strict=True):
                click.echo(f"    k>={k_text(k):<7} {stats(s):>14}  ({line['groups']} seeds)")
    if drawn.get("table"):
        click.echo(f"table: {drawn['table']}")
    click.echo(f"figure: {drawn['output']}")
