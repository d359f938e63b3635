"""The ``intervalnn`` command group (installed as the ``intervalnn`` console script)."""

import click

from intervalnn import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="intervalnn")
def main():
    """Sound interval arithmetic for certified neural networks.

    \b
    Examples:
      intervalnn demo                 certified training + certification on Two-Moons
      intervalnn demo --dtype float32 --epsilon 0.001
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
