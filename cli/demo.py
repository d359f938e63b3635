"""``intervalnn demo``: certified training and certification on Two-Moons in seconds."""

from __future__ import annotations

import time

import click

from intervalnn.experiment import RunSpec, train_and_certify

from .common import command
from .options import field_option


@command("demo", short_help="Train and certify Two-Moons in seconds (the Quickstart).")
@field_option(
    "epsilon", help="l-infinity radius of the poisoning and test-time boxes (the paper's 1e-3)."
)
@field_option("epochs")
@field_option("learning_rate", help="SGD step size (mean-loss convention).")
@field_option("dtype", help="Endpoint precision.")
@field_option("seed", help="Random seed.")
def demo_command(epsilon, epochs, learning_rate, dtype, seed):
    """Certified training and certification on Two-Moons, printing certified accuracy.

    \b
    Example:
      intervalnn demo --epsilon 0.01 --seed 3
    """
    spec = RunSpec.from_options(
        dataset="moons", epsilon=epsilon, epochs=epochs, learning_rate=learning_rate,
        dtype=dtype, seed=seed, hidden=20, layers=2, batch_size=100, validate_every="step",
    )  # fmt: skip
    echo = click.echo
    echo(f"Two-Moons (1000 train / 200 val / 200 test), 2-layer MLP (20 hidden), {dtype}")
    echo(f"threat model: every training feature and every test feature within eps = {epsilon}")
    t0 = time.perf_counter()
    outcome = train_and_certify(spec)
    seconds = time.perf_counter() - t0
    best, cert = outcome.training.best, outcome.test
    echo(
        f"trained {epochs} epochs in {seconds:.2f} s; best certified validation accuracy "
        f"{best['val_certified_accuracy']:.1%} at step {best['step']}"
    )
    if outcome.training.stopped:
        echo(f"note: {outcome.training.stopped}")
    echo(f"nominal test accuracy:   {cert.nominal_accuracy:.1%}")
    echo(
        f"certified test accuracy: {cert.certified_accuracy:.1%} "
        f"({int(cert.certified.sum())} of {cert.n} test points)"
    )
