"""``intervalnn demo``: certified training and certification on Two-Moons in seconds."""

import time

import numpy as np

from intervalnn.certify import certify
from intervalnn.datasets import two_moons_splits
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train


def run_demo(
    epsilon: float, seed: int, epochs: int, learning_rate: float, dtype: str, echo=print
) -> dict:
    """Train a 2x20 MLP with FullCert on Two-Moons and certify the test split."""
    splits = two_moons_splits(seed=seed)
    threat = ThreatModel(epsilon)
    model = mlp(2, 1, hidden=20, layers=2, seed=seed, dtype=np.dtype(dtype))
    config = TrainConfig(
        epochs=epochs, learning_rate=learning_rate, batch_size=100, seed=seed, validate_every="step"
    )
    echo(f"Two-Moons (1000 train / 200 val / 200 test), 2-layer MLP (20 hidden), {dtype}")
    echo(f"threat model: every training feature and every test feature within eps = {epsilon}")
    t0 = time.perf_counter()
    result = train(
        model, splits.train.x, splits.train.y, threat, config, splits.val.x, splits.val.y
    )
    cert = certify(result.model, splits.test.x, splits.test.y, threat)
    seconds = time.perf_counter() - t0
    best = result.best
    echo(
        f"trained {epochs} epochs in {seconds:.2f} s; best certified validation accuracy "
        f"{best['val_certified_accuracy']:.1%} at step {best['step']}"
    )
    if result.stopped:
        echo(f"note: {result.stopped}")
    echo(f"nominal test accuracy:   {cert.nominal_accuracy:.1%}")
    echo(
        f"certified test accuracy: {cert.certified_accuracy:.1%} "
        f"({int(cert.certified.sum())} of {cert.n} test points)"
    )
    return cert.summary()
