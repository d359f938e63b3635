"""The ``intervalnn`` command group (installed as the ``intervalnn`` console script)."""

import click

from intervalnn import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="intervalnn")
def main():
    """Sound interval arithmetic for certified neural networks.

    \b
    Examples:
      intervalnn demo                 show the sound engine on a small network
      intervalnn demo --dtype float32
    """


@main.command()
@click.option(
    "--dtype",
    type=click.Choice(["float64", "float32"]),
    default="float64",
    show_default=True,
    help="Endpoint precision.",
)
@click.option(
    "--epsilon",
    type=click.FloatRange(min=0),
    default=1e-3,
    show_default=True,
    help="l-infinity radius of the input box.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
def demo(dtype, epsilon, seed):
    """Bound a random 2-layer network on an input box, soundly and naively.

    \b
    Example:
      intervalnn demo --epsilon 0.01
    """
    from .demo import run_demo

    run_demo(dtype=dtype, epsilon=epsilon, seed=seed, echo=click.echo)
