"""End-to-end soundness of certified training and certification.

Concrete SGD runs on poisoned datasets sampled from the threat model's box
(vertices and random points), with the same batches as the interval run,
must stay inside the parameter box at every step; certified test points must
keep their label under concrete models and inputs sampled from the boxes.
"""

from fractions import Fraction

import gmpy2
import numpy as np
import pytest
from oracle import (
    arch_of,
    box_member,
    count_excursions,
    float64_sgd,
    fraction_sgd,
    mpfr_fraction,
    poisoned,
)

from intervalnn.certify import certify, margins
from intervalnn.datasets import two_moons_splits
from intervalnn.layers import Linear, mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, batch_indices, train


def _sigmoid_exact(z: Fraction) -> Fraction:
    """sigmoid(z) to 300 bits (MPFR): exact for our purpose, errors near 2^-300.

    Rounded once as a whole (``fraction_sgd``'s default sigmoid rounds only ``exp(-z)``).
    """
    return mpfr_fraction(lambda v: 1 / (1 + gmpy2.exp(-v)), z)


def test_exact_rational_sgd_stays_in_box(record_steps):
    """A 2-3-1 network, 6 points, 4 full-batch steps: Fraction SGD inside the box at every step."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(6, 2))
    y = np.array([0, 1, 0, 1, 1, 0])
    eps, lr = 0.05, 0.5
    model = mlp(2, 1, hidden=3, layers=2, seed=1)
    init = {k: v.lo.copy() for k, v in model.named_params().items()}
    arch = arch_of(model)
    steps = {}
    cfg = TrainConfig(epochs=4, learning_rate=lr, batch_size=6, seed=0)
    train(model, x, y, ThreatModel(eps), cfg, on_step=record_steps(steps, check_nominal=False))
    assert sorted(steps) == [1, 2, 3, 4]

    for trial in range(6):
        kind = "vertex" if trial % 2 == 0 else "random"
        xp = poisoned(x, eps, rng, kind) if trial else x
        trajectory = fraction_sgd(init, arch, xp, y, 4, lr, "bce", 1, sigmoid=_sigmoid_exact)
        for step, exact in enumerate(trajectory, start=1):
            for name, value in exact.items():
                lo, hi = steps[step][name]
                flat = np.ravel(np.array(value, dtype=object))
                assert all(
                    Fraction(float(a)) <= v <= Fraction(float(b))
                    for a, v, b in zip(lo.ravel(), flat, hi.ravel(), strict=True)
                ), (trial, step, name)


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_float_sgd_on_poisoned_moons_stays_in_box(loss, record_steps):
    """The paper's 2x20 MLP on Two-Moons: float64 SGD on sampled poisoned data stays inside."""
    sp = two_moons_splits(seed=0, n_train=300)
    eps, lr, epochs, bs = 1e-3, 0.5, 2, 100
    k = 1 if loss == "bce" else 2
    model = mlp(2, k, hidden=20, layers=2, seed=0)
    init = {name: box.lo.copy() for name, box in model.named_params().items()}
    steps = {}
    cfg = TrainConfig(epochs=epochs, learning_rate=lr, batch_size=bs, seed=5, loss=loss)
    on_step = record_steps(steps, check_nominal=False)
    train(model, sp.train.x, sp.train.y, ThreatModel(eps), cfg, on_step=on_step)
    rng = np.random.default_rng(5)
    batches = [b for _ in range(epochs) for b in batch_indices(len(sp.train.y), bs, rng)]
    sample = np.random.default_rng(11)
    excursions = 0
    for trial in range(8):
        xp = poisoned(sp.train.x, eps, sample, "vertex" if trial % 2 else "random")
        trajectory = float64_sgd(init, arch_of(model), xp, sp.train.y, batches, lr, loss)
        excursions += count_excursions(trajectory, steps)
    assert excursions == 0


def test_certified_points_keep_their_label():
    sp = two_moons_splits(seed=1)
    threat = ThreatModel(1e-2)
    model = mlp(2, 1, hidden=20, layers=2, seed=1)
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=100, validate_every="step")
    result = train(model, sp.train.x, sp.train.y, threat, cfg, sp.val.x, sp.val.y)
    cert = certify(result.model, sp.test.x, sp.test.y, threat)
    assert cert.certified.sum() > 0
    rng = np.random.default_rng(0)
    boxes = result.model.named_params()
    xc, yc = sp.test.x[cert.certified], sp.test.y[cert.certified]
    for trial in range(20):
        pick = box_member(rng, boxes, vertex=trial % 2 == 1)
        xs = xc + 1e-2 * rng.choice([-1.0, 1.0], size=xc.shape)
        z = (
            np.maximum(xs @ pick["0.weight"] + pick["0.bias"], 0) @ pick["2.weight"]
            + pick["2.bias"]
        )
        assert np.all((z[:, 0] > 0) == (yc == 1))


def test_margins_binary_and_multiclass():
    lo = np.array([[0.5], [-1.0], [-0.1]])
    hi = np.array([[1.0], [-0.2], [0.3]])
    assert np.allclose(margins(lo, hi, np.array([1, 0, 1])), [0.5, 0.2, -0.1])
    lo3 = np.array([[2.0, 0.0, 0.5]])
    hi3 = np.array([[3.0, 1.0, 1.5]])
    assert margins(lo3, hi3, np.array([0]))[0] == 0.5
    assert margins(lo3, hi3, np.array([1]))[0] == 0.0 - 3.0


def test_training_is_deterministic_and_keeps_best():
    sp = two_moons_splits(seed=2, n_train=200)
    runs = []
    for _ in range(2):
        model = mlp(2, 1, hidden=10, layers=2, seed=4)
        cfg = TrainConfig(epochs=3, learning_rate=0.2, batch_size=50, seed=4)
        runs.append(
            train(model, sp.train.x, sp.train.y, ThreatModel(1e-3), cfg, sp.val.x, sp.val.y)
        )
    a, b = (r.model.named_params() for r in runs)
    assert all(np.array_equal(a[k].lo, b[k].lo) and np.array_equal(a[k].hi, b[k].hi) for k in a)
    best = max(r["val_certified_accuracy"] for r in runs[0].history)
    assert runs[0].best["val_certified_accuracy"] == best


def test_blow_up_stops_with_a_message():
    sp = two_moons_splits(seed=0, n_train=200)
    model = mlp(2, 1, hidden=20, layers=3, seed=0)
    cfg = TrainConfig(epochs=200, learning_rate=50.0, batch_size=200)
    result = train(model, sp.train.x, sp.train.y, ThreatModel(0.1), cfg, sp.val.x, sp.val.y)
    assert result.stopped is not None and "infinite" in result.stopped
    for box in result.model.named_params().values():
        assert np.all(np.isfinite(box.lo)) and np.all(np.isfinite(box.hi))


@pytest.mark.parametrize("validate_every", ["step", "epoch"])
def test_patience_stops_once_validation_certifies_nothing(validate_every):
    sp = two_moons_splits(seed=0, n_train=200)

    def fit(patience):
        model = mlp(2, 1, hidden=8, layers=2, seed=0)
        cfg = TrainConfig(
            epochs=6, learning_rate=1.0, batch_size=100, patience=patience,
            validate_every=validate_every,
        )  # fmt: skip
        return train(model, sp.train.x, sp.train.y, ThreatModel(0.5), cfg, sp.val.x, sp.val.y)

    never, patient = fit(0), fit(2)
    assert all(r["val_certified_accuracy"] == 0 for r in never.history[1:])  # eps 0.5: nothing
    assert len(never.history) == 1 + (12 if validate_every == "step" else 6)
    assert never.stopped is None
    assert [r["step"] for r in patient.history] == [0, 1, 2] if validate_every == "step" else [
        0, 2, 4
    ]  # fmt: skip
    assert patient.stopped == "early stop: nothing certified on validation for 2 validations"


def test_min_step_never_keeps_an_earlier_model():
    sp = two_moons_splits(seed=0, n_train=200)
    kept = {}
    for min_step in (0, 1, 3):
        model = mlp(2, 1, hidden=8, layers=2, seed=0)
        cfg = TrainConfig(epochs=2, learning_rate=4.0, batch_size=50, min_step=min_step)
        cfg = TrainConfig(**{**cfg.to_dict(), "validate_every": "step"})
        res = train(model, sp.train.x, sp.train.y, ThreatModel(0.5), cfg, sp.val.x, sp.val.y)
        eligible = [r for r in res.history if r["step"] >= min_step]
        best = max(r["val_certified_accuracy"] for r in eligible)
        first = next(r for r in eligible if r["val_certified_accuracy"] == best)
        assert res.best == first
        kept[min_step] = res.best["step"]
    assert kept == {0: 0, 1: 1, 3: 3}  # eps 0.5 certifies nothing: ties go to the first


def test_linear_init_matches_pytorch_default_bounds():
    layer = Linear(50, 7, rng=np.random.default_rng(0))
    w = layer.weight.lo
    assert w.shape == (50, 7) and np.all(np.abs(w) <= 1 / np.sqrt(50))
    assert np.abs(w).max() > 0.9 / np.sqrt(50)


def test_memory_stays_flat_over_epochs():
    """Caches are dropped by backward: live memory does not grow with the number of steps."""
    import tracemalloc

    sp = two_moons_splits(seed=0, n_train=400)
    model = mlp(2, 1, hidden=20, layers=2, seed=0)
    live = {}

    def on_step(step, params, nominal):
        live[step] = tracemalloc.get_traced_memory()[0]

    layered = {"fused": False} if "fused" in TrainConfig.__dataclass_fields__ else {}
    cfg = TrainConfig(epochs=12, learning_rate=0.01, batch_size=100, **layered)
    tracemalloc.start()
    try:
        train(model, sp.train.x, sp.train.y, ThreatModel(1e-4), cfg, on_step=on_step)
    finally:
        tracemalloc.stop()
    assert len(live) == 48
    assert live[48] - live[8] < 64 * 1024, (live[8], live[48])
