"""The ``intervalnn`` command group (installed as the ``intervalnn`` console script).

Exit codes: 0 success, 1 data or model errors, 2 usage errors.
"""

import json
import math
import sys
from pathlib import Path

import click

from intervalnn import __version__

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class Failure(click.ClickException):
    """A one-line error about data or a model file (exit code 1)."""

    def show(self, file=None):
        click.echo(f"Error: {self.format_message()}", err=True)


def _guard(fn, *args, **kwargs):
    """Run ``fn`` turning expected errors into one-line messages, never a traceback."""
    from intervalnn.datasets import DataError
    from intervalnn.io import ModelFileError

    try:
        return fn(*args, **kwargs)
    except (DataError, ModelFileError) as exc:
        raise Failure(str(exc)) from None
    except (ValueError, TypeError, RuntimeError, OSError) as exc:
        raise Failure(str(exc)) from None


class _Bounded(click.ParamType):
    """A finite number >= 0 (> 0 with ``positive``); subclasses say what it is."""

    example = ""  # "a radius such as 0.01"
    rule = ""  # the sentence an out-of-range value gets
    positive = False

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number; give {self.example}", param, ctx)
        if not math.isfinite(v) or v < 0 or (self.positive and v == 0):
            self.fail(f"{value} is not allowed: {self.rule}", param, ctx)
        return v


class Radius(_Bounded):
    """A finite number >= 0 (an l-infinity radius)."""

    name = "EPS"
    example = "a radius such as 0.01"
    rule = "a radius must be a finite number >= 0"


class Rate(_Bounded):
    """A finite number > 0 (a learning rate)."""

    name = "RATE"
    example = "a rate such as 0.5"
    rule = "a learning rate must be > 0 (e.g. 0.5)"
    positive = True


class Radii(click.ParamType):
    """Comma-separated radii, e.g. ``0,1e-4,1e-3``."""

    name = "EPS,EPS,..."

    def convert(self, value, param, ctx):
        if isinstance(value, list | tuple):
            return list(value)
        parts = [p.strip() for p in str(value).split(",") if p.strip()]
        if not parts:
            self.fail("give at least one radius, e.g. 0,1e-3,1e-2", param, ctx)
        return sorted({Radius().convert(p, param, ctx) for p in parts})


class Size(click.ParamType):
    """An image size in pixels, ``WIDTHxHEIGHT``."""

    name = "WxH"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            w, h = (int(v) for v in str(value).lower().split("x"))
        except ValueError:
            self.fail(f"{value!r} is not WIDTHxHEIGHT in pixels, e.g. 800x600", param, ctx)
        if not (50 <= w <= 20000 and 50 <= h <= 20000):
            self.fail(f"{value}: width and height must be 50..20000 pixels", param, ctx)
        return (w, h)


def _image_path(ctx, param, value):
    if value is not None and Path(value).suffix.lower() not in (".png", ".pdf"):
        raise click.BadParameter(
            f"{value!r} must end in .png or .pdf (the suffix picks the format)", ctx, param
        )
    return value


def _version(fn):
    return click.version_option(__version__, "-V", "--version", prog_name="intervalnn")(fn)


@click.group(context_settings=CONTEXT)
@_version
def main():
    """Sound certified training and certification of neural networks (FullCert).

    \b
    Examples:
      intervalnn demo
      intervalnn train --dataset moons --epsilon 0.001 --output moons.npz
      intervalnn certify moons.npz --dataset moons --epsilon 0.001 --json
      intervalnn info moons.npz
      intervalnn plot barriers moons.npz -o barriers.png

    \b
    Run 'intervalnn COMMAND --help' for each command's options.
    Exit codes: 0 success, 1 data or model errors, 2 usage errors.
    """


@main.command(short_help="Train and certify Two-Moons in seconds (the Quickstart).")
@_version
@click.option(
    "--epsilon",
    type=Radius(),
    default=1e-3,
    show_default=True,
    help="l-infinity radius of the poisoning and test-time boxes (the paper's 1e-3).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--learning-rate",
    type=Rate(),
    default=0.5,
    show_default=True,
    help="SGD step size (mean-loss convention).",
)
@click.option(
    "--dtype",
    type=click.Choice(["float64", "float32"]),
    default="float64",
    show_default=True,
    help="Endpoint precision.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def demo(epsilon, epochs, learning_rate, dtype, seed):
    """Certified training and certification on Two-Moons, printing certified accuracy.

    \b
    Example:
      intervalnn demo --epsilon 0.01 --seed 3
    """
    from .demo import run_demo

    run_demo(
        epsilon=epsilon,
        seed=seed,
        epochs=epochs,
        learning_rate=learning_rate,
        dtype=dtype,
        echo=click.echo,
    )


def _dataset_options(fn):
    fn = click.option(
        "--data-dir",
        type=click.Path(readable=False),
        default=None,
        metavar="DIR",
        help="Directory with the MNIST IDX files (for --dataset mnist17).",
    )(fn)
    fn = click.option(
        "--dataset",
        default=None,
        metavar="moons|mnist17|PATH.npz",
        help="Data set: Two-Moons, MNIST 1/7, or your own .npz with x and y.",
    )(fn)
    return fn


def check_training_options(options: dict) -> None:
    """Checks across the options of ``intervalnn train`` (also each cell of a sweep)."""
    if options["dataset"] is None:
        raise click.UsageError("--dataset is required: moons, mnist17 or a path to a .npz file")
    if options["pretrain_epochs"] and not options["pretrain_size"]:
        raise click.UsageError(
            "--pretrain-epochs needs clean pretraining data: add --pretrain-size N (e.g. 100)"
        )


@main.command("train", short_help="Certified training (FullCert); writes a model file.")
@_version
@_dataset_options
@click.option(
    "--epsilon",
    type=Radius(),
    default=1e-3,
    show_default=True,
    help="Poisoning radius: every training feature may move by this much.",
)
@click.option(
    "--inference-epsilon",
    type=Radius(),
    default=None,
    help="Test-time radius for validation (default: --epsilon; 0: poisoning only).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--learning-rate",
    type=Rate(),
    default=0.5,
    show_default=True,
    help="SGD step size, mean-loss convention (BoundFlow's rate / batch size).",
)
@click.option(
    "--schedule", type=click.Choice(["constant", "1/t"]), default="constant", show_default=True
)
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="Number of Linear layers (2 = Linear-ReLU-Linear).",
)
@click.option("--loss", type=click.Choice(["bce", "ce"]), default="bce", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--validate-every",
    type=click.Choice(["step", "epoch"]),
    default="step",
    show_default=True,
    help="How often to certify the validation split.",
)
@click.option(
    "--min-step",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Keep only models after at least this many SGD steps (1: never the initial model).",
)
@click.option(
    "--patience",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Stop after this many validations in a row certify nothing (0: never).",
)
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--pretrain-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Clean training points for pretraining the nominal model.",
)
@click.option("--pretrain-learning-rate", type=Rate(), default=0.5, show_default=True)
@click.option(
    "--dtype", type=click.Choice(["float64", "float32"]), default="float64", show_default=True
)
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default="model.npz",
    show_default=True,
    help="Where to write the model file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def train_command(**options):
    """Train with FullCert on a box of poisoned datasets and save the model.

    \b
    Examples:
      intervalnn train --dataset moons --epsilon 0.01 --output moons.npz
      intervalnn train --dataset mnist17 --data-dir ~/mnist --epsilon 1e-4 \\
          --layers 2 --hidden 10 --batch-size 11007 --epochs 3 -o mnist17.npz
    """
    from .commands import run_train

    check_training_options(options)
    as_json = options.pop("as_json")
    summary = _guard(run_train, quiet=as_json, **options)
    _emit(summary, as_json)


@main.command("certify", short_help="Certify a saved model on a data split.")
@_version
@click.argument("model", type=click.Path(readable=False))
@_dataset_options
@click.option(
    "--epsilon",
    type=Radius(),
    default=None,
    help="Test-time radius (default: the model's inference epsilon).",
)
@click.option(
    "--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True
)
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Data seed (default: the one the model was trained with).",
)
@click.option("--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True)
@click.option(
    "--per-sample",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write per-sample results (index, label, certified, margin) as CSV.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Shard the data across this many local Dask worker processes.",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="Shard the data across the workers of this running Dask cluster.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certify_command(
    model, dataset, data_dir, epsilon, split, seed, device, per_sample, workers, scheduler, as_json
):
    """Certify a saved model on a data split.

    With --workers or --scheduler the split is cut into shards certified on
    Dask workers (pip install 'intervalnn[dask]'); the results are identical
    to the serial run.

    \b
    Examples:
      intervalnn certify moons.npz --dataset moons --epsilon 0.01
      intervalnn certify moons.npz --dataset moons --json --per-sample out.csv
      intervalnn certify mnist17.npz --data-dir ~/mnist --workers 2
    """
    from .commands import run_certify

    if workers and scheduler:
        raise click.UsageError("use --workers (a local cluster) or --scheduler, not both")
    if (workers or scheduler) and device == "gpu":
        raise click.UsageError("--workers/--scheduler shard across CPU workers: use --device cpu")

    summary = _guard(
        run_certify,
        model_path=model,
        dataset=dataset,
        data_dir=data_dir,
        epsilon=epsilon,
        split=split,
        seed=seed,
        device=device,
        per_sample=per_sample,
        workers=workers,
        scheduler=scheduler,
    )
    _emit(summary, as_json)


@main.command("info", short_help="Show what a model file holds.")
@_version
@click.argument("model", type=click.Path(readable=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info_command(model, as_json):
    """Show what a model file holds (architecture, threat model, training, checks).

    \b
    Example:
      intervalnn info moons.npz
    """
    from .commands import run_info

    _emit(_guard(run_info, model_path=model), as_json)


@main.group("plot", short_help="Figures: decision barriers, training curves, accuracy vs epsilon.")
@_version
def plot_group():
    """Figures from model files, as PNG or PDF (needs matplotlib: pip install 'intervalnn[plot]').

    \b
    Examples:
      intervalnn plot barriers moons.npz -o barriers.png
      intervalnn plot curves moons.npz -o curves.pdf
      intervalnn plot epsilon moons.npz --epsilons 0,1e-4,1e-3,1e-2,0.1 -o eps.png
      intervalnn plot sweep sweep.jsonl --x epsilon -o sweep.png
    """


def _figure_options(default: str):
    def wrap(fn):
        fn = click.option("--dpi", type=click.IntRange(20, 1200), default=100, show_default=True)(
            fn
        )
        fn = click.option(
            "--size",
            type=Size(),
            default="800x600",
            show_default=True,
            help="Image size in pixels (PDF: size / dpi inches).",
        )(fn)
        fn = click.option(
            "--output",
            "-o",
            default=default,
            metavar="FILE",
            show_default=True,
            callback=_image_path,
            help="Where to write the figure; .png or .pdf picks the format.",
        )(fn)
        return fn

    return wrap


@plot_group.command("barriers", short_help="Decision barriers of 2-D models (FullCert Fig. 2).")
@_version
@click.argument(
    "models", nargs=-1, required=True, type=click.Path(readable=False), metavar="MODEL..."
)
@_dataset_options
@click.option(
    "--epsilon",
    type=Radius(),
    default=None,
    help="Test-time radius (default: each model's inference epsilon; 0: poisoning only).",
)
@click.option(
    "--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True
)
@click.option("--seed", type=int, default=None, help="Data seed (default: the model's).")
@click.option(
    "--grid",
    type=click.IntRange(20, 2000),
    default=200,
    show_default=True,
    help="Grid points per axis.",
)
@_figure_options("barriers.png")
def plot_barriers_command(models, dataset, data_dir, epsilon, split, seed, grid, output, size, dpi):
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
    from .plots import plot_barriers

    _emit(
        _guard(
            plot_barriers,
            models,
            dataset=dataset,
            data_dir=data_dir,
            epsilon=epsilon,
            split=split,
            seed=seed,
            grid=grid,
            output=output,
            size=size,
            dpi=dpi,
        ),
        False,
    )


@plot_group.command("curves", short_help="Training curves from a model file's history.")
@_version
@click.argument("model", type=click.Path(readable=False))
@_figure_options("curves.png")
def plot_curves_command(model, output, size, dpi):
    """Training curves from the history stored in a model file.

    Certified and nominal validation accuracy, the bounds on the training
    loss, and the mean and largest parameter width, against the step (or
    epoch) of training; the kept (best) model is marked.

    \b
    Example:
      intervalnn plot curves moons.npz -o curves.png
    """
    from .plots import plot_curves

    _emit(_guard(plot_curves, model, output=output, size=size, dpi=dpi), False)


@plot_group.command("epsilon", short_help="Certified accuracy against the test-time epsilon.")
@_version
@click.argument(
    "models", nargs=-1, required=True, type=click.Path(readable=False), metavar="MODEL..."
)
@_dataset_options
@click.option(
    "--epsilons",
    type=Radii(),
    default="0,1e-4,1e-3,1e-2,0.1",
    show_default=True,
    help="Comma-separated test-time radii.",
)
@click.option(
    "--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True
)
@click.option("--seed", type=int, default=None, help="Data seed (default: the model's).")
@click.option("--json", "as_json", is_flag=True, help="Also print the numbers as JSON.")
@_figure_options("epsilon.png")
def plot_epsilon_command(
    models, dataset, data_dir, epsilons, split, seed, as_json, output, size, dpi
):
    """Certified accuracy against the test-time radius epsilon, one line per model.

    Each model keeps the parameter box it was trained for (its training
    epsilon); only the radius of the test-time box varies.  Prints the table.

    \b
    Examples:
      intervalnn plot epsilon moons.npz --epsilons 0,1e-4,1e-3,1e-2,0.1 -o eps.png
      intervalnn plot epsilon a.npz b.npz --split val -o eps.pdf --json
    """
    from .plots import plot_epsilon

    result = _guard(
        plot_epsilon,
        models,
        dataset=dataset,
        data_dir=data_dir,
        epsilons=epsilons,
        split=split,
        seed=seed,
        output=output,
        size=size,
        dpi=dpi,
    )
    if as_json:
        _emit(result, True)
        return
    names = [Path(m["model"]).name for m in result["models"]]
    width = max(12, *(len(n) for n in names))
    click.echo(f"{'epsilon':<10}" + "".join(f"  {n:>{width}}" for n in names))
    for i, eps in enumerate(result["epsilons"]):
        cells = "".join(f"  {m['certified_accuracy'][i]:>{width}.1%}" for m in result["models"])
        click.echo(f"{eps:<10.3g}" + cells)
    click.echo(f"(certified accuracy on the {split} split; figure: {result['output']})")


@plot_group.command("sweep", short_help="Certified accuracy against a swept option.")
@_version
@click.argument("results", type=click.Path(readable=False), metavar="RESULTS.jsonl")
@click.option(
    "--x",
    "x",
    metavar="OPTION",
    default=None,
    help="The swept option on the x axis (default: the only one swept besides seeds).",
)
@_figure_options("sweep.png")
def plot_sweep_command(results, x, output, size, dpi):
    """Certified accuracy (mean ± std over seeds) against an option swept by 'intervalnn sweep'.

    One line per combination of the other swept options; with a search, each
    seed contributes its cell chosen on validation, as in the sweep's table.

    \b
    Examples:
      intervalnn plot sweep table1.jsonl --x epsilon -o table1.png
      intervalnn plot sweep arch.jsonl --x hidden -o hidden.pdf
    """
    from .plots import plot_sweep

    result = _guard(plot_sweep, results, x=x, output=output, size=size, dpi=dpi)
    click.echo(f"figure: {result['output']}")


def _emit(summary: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
        return
    width = max(len(k) for k in summary)
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, dict | list):
            value = json.dumps(value, default=str)
        click.echo(f"{key:<{width}}  {value}")


from . import audit as _audit  # noqa: E402,F401  (registers audit and audit-training)
from . import sweep as _sweep  # noqa: E402,F401  (registers sweep)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
