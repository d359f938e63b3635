"""The ``intervalnn`` command group (installed as the ``intervalnn`` console script).

Exit codes: 0 success, 1 data or model errors, 2 usage errors.
"""

import json
import sys

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


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="intervalnn")
def main():
    """Sound certified training and certification of neural networks (FullCert).

    \b
    Examples:
      intervalnn demo
      intervalnn train --dataset moons --epsilon 0.001 --output moons.npz
      intervalnn certify moons.npz --dataset moons --epsilon 0.001 --json
      intervalnn info moons.npz
    """


@main.command()
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0),
    default=1e-2,
    show_default=True,
    help="l-infinity radius of the poisoning and test-time boxes.",
)
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--learning-rate",
    type=click.FloatRange(min=0, min_open=True),
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
      intervalnn demo --epsilon 0.001 --seed 3
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
        type=click.Path(file_okay=False),
        default=None,
        help="Directory with the MNIST IDX files (for --dataset mnist17).",
    )(fn)
    fn = click.option(
        "--dataset",
        default=None,
        metavar="moons|mnist17|PATH.npz",
        help="Data set: Two-Moons, MNIST 1/7, or your own .npz with x and y.",
    )(fn)
    return fn


@main.command("train")
@_dataset_options
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0),
    default=1e-3,
    show_default=True,
    help="Poisoning radius: every training feature may move by this much.",
)
@click.option(
    "--inference-epsilon",
    type=click.FloatRange(min=0),
    default=None,
    help="Test-time radius for validation (default: --epsilon; 0: poisoning only).",
)
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option(
    "--learning-rate",
    type=float,
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
@click.option("--pretrain-epochs", type=click.IntRange(min=0), default=0, show_default=True)
@click.option(
    "--pretrain-size",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Clean training points for pretraining the nominal model.",
)
@click.option("--pretrain-learning-rate", type=float, default=0.5, show_default=True)
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
def train_command(
    dataset,
    data_dir,
    epsilon,
    inference_epsilon,
    epochs,
    learning_rate,
    schedule,
    batch_size,
    hidden,
    layers,
    loss,
    seed,
    validate_every,
    pretrain_epochs,
    pretrain_size,
    pretrain_learning_rate,
    dtype,
    device,
    output,
    as_json,
):
    """Train with FullCert on a box of poisoned datasets and save the model.

    \b
    Examples:
      intervalnn train --dataset moons --epsilon 0.01 --output moons.npz
      intervalnn train --dataset mnist17 --data-dir ~/mnist --epsilon 1e-4 \\
          --layers 2 --hidden 10 --batch-size 11007 --epochs 3 -o mnist17.npz
    """
    from .commands import run_train

    if dataset is None:
        raise click.UsageError("--dataset is required (moons, mnist17 or a .npz file)")
    if learning_rate <= 0 or pretrain_learning_rate <= 0:
        raise click.BadParameter("learning rates must be > 0", param_hint="--learning-rate")
    summary = _guard(
        run_train,
        dataset=dataset,
        data_dir=data_dir,
        epsilon=epsilon,
        inference_epsilon=inference_epsilon,
        epochs=epochs,
        learning_rate=learning_rate,
        schedule=schedule,
        batch_size=batch_size,
        hidden=hidden,
        layers=layers,
        loss=loss,
        seed=seed,
        validate_every=validate_every,
        pretrain_epochs=pretrain_epochs,
        pretrain_size=pretrain_size,
        pretrain_learning_rate=pretrain_learning_rate,
        dtype=dtype,
        device=device,
        output=output,
        quiet=as_json,
    )
    _emit(summary, as_json)


@main.command("certify")
@click.argument("model", type=click.Path(dir_okay=False))
@_dataset_options
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0),
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
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def certify_command(model, dataset, data_dir, epsilon, split, seed, device, per_sample, as_json):
    """Certify a saved model on a data split.

    \b
    Examples:
      intervalnn certify moons.npz --dataset moons --epsilon 0.01
      intervalnn certify moons.npz --dataset moons --json --per-sample out.csv
    """
    from .commands import run_certify

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
    )
    _emit(summary, as_json)


@main.command("info")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the metadata as JSON.")
def info_command(model, as_json):
    """Show what a model file holds (architecture, threat model, training, checks).

    \b
    Example:
      intervalnn info moons.npz
    """
    from .commands import run_info

    _emit(_guard(run_info, model_path=model), as_json)


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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
