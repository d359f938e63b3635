"""Regressions named after the items of the adversarial soundness review (issue 10).

Each test failed on the code the review ran against and checks the exact
(real-number) truth, not the library's own arithmetic.
"""

from fractions import Fraction

import numpy as np
import pytest

import intervalnn as inn
from intervalnn.certify import certify
from intervalnn.engine.fused import forward_bounds
from intervalnn.layers import Linear, ReLU, Sequential, mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train


def _linear(w, b, dtype=np.float64, lo=None, hi=None):
    """A Linear layer with weight ``w`` (in, out), bias ``b``: a point box unless lo/hi given."""
    w, b = np.array(w, dtype), np.array(b, dtype)
    layer = Linear(*w.shape, rng=np.random.default_rng(0), dtype=dtype)
    layer.weight = (
        inn.Interval(w) if lo is None else inn.Interval(np.array(lo, dtype), np.array(hi, dtype))
    )
    layer.bias = inn.Interval(b)
    layer.nominal = {"weight": w.copy(), "bias": b.copy()}
    return layer


def _encloses(box: inn.Interval, exact) -> bool:
    lo, hi = np.ravel(box.lo), np.ravel(box.hi)
    return all(
        Fraction(float(a)) <= Fraction(e) <= Fraction(float(b))
        for a, e, b in zip(lo, np.ravel(exact), hi, strict=True)
    )


@pytest.mark.parametrize("fused", [True, False])
def test_item1_fused_step_through_a_relu_after_the_last_linear(fused):
    # z = -1 * 1 + 0.5 * -1 + 0.25 = -1.25 < 0: relu'(z) = 0, so SGD leaves W and b unchanged.
    model = Sequential(_linear([[1.0], [-1.0]], [0.25]), ReLU())
    config = TrainConfig(epochs=1, learning_rate=0.5, batch_size=1, fused=fused)
    train(model, np.array([[-1.0, 0.5]]), np.array([1]), ThreatModel(0.0), config)
    assert _encloses(model.layers[0].weight, [1, -1])
    assert _encloses(model.layers[0].bias, [Fraction(1, 4)])


def test_item2_overflow_guard_reads_magnitudes_not_nominals_certify():
    # exactly z1 = -1e200 * 1e200 + (-1e200) * (-1e200) + 1 = 1, output 1 - 1/2 > 0: class 1
    model = Sequential(_linear([[-1e200], [-1e200]], [1.0]), ReLU(), _linear([[1.0]], [-0.5]))
    x = np.array([[1e200, -1e200]])
    result = certify(model, x, np.array([0]), ThreatModel(0.0))
    assert not result.certified[0]
    bounds = forward_bounds(model, inn.Interval(x))
    if bounds is not None:
        assert bounds[0][0, 0] <= 0.5 <= bounds[1][0, 0]


def test_item2_overflow_guard_reads_magnitudes_not_nominals_training():
    w1_lo, w1_hi = [[-1e300], [-1e300]], [[-1e300], [1e300]]
    first = _linear([[-1e300], [0.0]], [1.0], lo=w1_lo, hi=w1_hi)
    model = Sequential(first, ReLU(), _linear([[1.0]], [-0.5]))
    config = TrainConfig(epochs=1, learning_rate=1.0, batch_size=1)
    result = train(model, np.array([[1e10, 1e10]]), np.array([1]), ThreatModel(0.0), config)
    # real SGD from W1 = [[-1e300], [1e300]]: z1 = 1, W2 = 1 + (1 - sigmoid(1/2)) = 1.3775...
    w2 = model.layers[2].weight
    stopped = result.stopped is not None and "infinite" in result.stopped
    assert stopped or (w2.lo[0, 0] <= 1.3775 and w2.hi[0, 0] >= 1.3776)


def test_item2_infinite_weight_box_with_finite_nominal_is_not_fused():
    layer = _linear([[0.5]], [0.0], lo=[[-np.inf]], hi=[[np.inf]])
    model = Sequential(layer)
    bounds = forward_bounds(model, inn.Interval(np.array([[1.0]])))
    assert bounds is None or (bounds[0][0, 0] == -np.inf and bounds[1][0, 0] == np.inf)
    assert not certify(model, np.array([[1.0]]), np.array([1]), ThreatModel(0.0)).certified[0]


def test_item3_integer_operands_are_enclosed_not_rounded_in_float32():
    one = inn.Interval(np.array([1.0], np.float32))
    big = 2**24 + 1  # not a float32
    assert _encloses(one * np.int64(big), [big])
    assert _encloses(one + np.array([big]), [big + 1])
    assert _encloses(np.array([big]) - one, [big - 1])
    assert not bool(inn.Interval(np.array([16777216.0], np.float32)).contains(np.array([big]))[0])
    assert bool(inn.Interval(np.array([16777216.0], np.float32)).contains(np.array([2**24]))[0])


def test_item4_float64_inputs_are_enclosed_by_a_float32_models_box():
    # exactly z = -2^40 (1 + 2^-30) + 2^40 + 1 = -1023 (class 0); RN32(x) would give z = 1
    model = Sequential(_linear([[-(2.0**40)], [2.0**40]], [1.0], dtype=np.float32))
    x = np.array([[1 + 2.0**-30, 1.0]])
    assert not certify(model, x, np.array([1]), ThreatModel(0.0)).certified[0]
    box = ThreatModel(0.0).train_box(x, np.float32)
    assert box.dtype == np.float32 and _encloses(box, [Fraction(1) + Fraction(1, 2**30), 1])


def test_item4_training_box_of_a_float32_model_encloses_float64_data():
    model = Sequential(_linear([[-(2.0**40)], [2.0**40]], [1.0], dtype=np.float32))
    x = np.array([[1 + 2.0**-30, 1.0]])
    seen = {}
    config = TrainConfig(epochs=1, learning_rate=1.0, batch_size=1)
    train(model, x, np.array([0]), ThreatModel(0.0), config, on_step=lambda s, p, n: seen.update(p))
    # exact SGD: z = -1023, dL/dz = sigmoid(-1023) ~ 0: the weights hardly move; the exact
    # gradient of W[0] is x0 * sigmoid(-1023) > 0, so the box must reach below -2^40
    assert seen["0.weight"].lo[0, 0] < -(2.0**40)


@pytest.mark.parametrize(
    ("outputs", "labels"),
    [(3, [0, -1, 2]), (3, [0, 1, 3]), (1, [0, 7]), (1, [0, -1]), (3, [0.5, 1, 2])],
)
def test_item5_labels_outside_the_models_classes_are_refused(outputs, labels):
    model = mlp(2, outputs, hidden=3)
    x = np.zeros((len(labels), 2))
    with pytest.raises(ValueError, match="label"):
        certify(model, x, np.array(labels), ThreatModel(0.0))


def test_item6_layered_cross_entropy_with_overflowing_logit_differences():
    x = np.array([[1000.0, -1000.0], [-1000.0, 1000.0]])
    model = mlp(2, 3, hidden=4)
    config = TrainConfig(epochs=1, learning_rate=0.5, batch_size=2, loss="ce", fused=False)
    train(model, x, np.array([0, 1]), ThreatModel(0.0), config)
    z = inn.Interval(np.array([[800.0, -800.0, 0.0]]))
    from intervalnn.losses import get_loss

    grad = get_loss("ce").grad(z, np.array([1]))  # exp(1600) overflows: a valid, wide bound
    assert grad.lo[0, 1] <= -1 / 1 + np.exp(-800.0) and grad.hi[0, 0] >= 0


def test_item7_ball_accepts_points_on_the_domain_edge():
    box = inn.Interval.ball(np.array([0.9]), 0.1, domain=(0.0, 0.9))
    assert _encloses(box, [Fraction(0.9)]) and box.hi[0] == 0.9
    with pytest.raises(ValueError, match="outside the data domain"):
        inn.Interval.ball(np.array([0.95]), 0.1, domain=(0.0, 0.9))


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), np.float64(np.inf)])
def test_item8_infinite_scalar_operands_are_not_real_numbers(value):
    with pytest.raises(ValueError, match="not a real number"):
        inn.Interval([1.0]) * value


# ---------------------------------------------------------------- found by the second review


@pytest.mark.parametrize(("dtype", "n"), [(np.float64, 3), (np.float64, 64), (np.float32, 3)])
def test_layered_forward_contains_a_float_sum_that_adds_the_bias_first(dtype, n):
    # |b| >> sum |x w| and every addition rounds the same way: ((b + w1) + w2) + ... drifts by
    # n/2 ulps of b, which the GEMM bound of x @ W alone (b added afterwards) did not cover.
    tiny = -5 * 2.0 ** (-56 if dtype == np.float64 else -27)
    model = Sequential(_linear(np.full((n, 1), tiny), [-0.75], dtype=dtype))
    x = np.ones((1, n), dtype)
    total = dtype(-0.75)
    for w in model.layers[0].nominal["weight"][:, 0]:
        total = dtype(total + w)  # the bias first, then each product (exact: x = 1)
    z = model.forward(inn.Interval(x))
    assert z.lo[0, 0] <= total <= z.hi[0, 0]
    exact = Fraction(-3, 4) + n * Fraction(float(tiny))
    assert _encloses(z, [exact])


def test_training_labels_and_learning_rate_are_checked():
    x = np.zeros((3, 2))
    for loss, outputs, labels in (
        ("ce", 3, [0, -1, 2]),
        ("ce", 3, [0, 7, 1]),
        ("bce", 1, [2, 0, 1]),
    ):
        config = TrainConfig(epochs=1, loss=loss, batch_size=3)
        with pytest.raises(ValueError, match="training labels"):
            train(mlp(2, outputs, hidden=2), x, np.array(labels), ThreatModel(0.0), config)
    with pytest.raises(ValueError, match="1 output"):
        train(mlp(2, 3), x, np.array([0, 1, 0]), ThreatModel(0.0), TrainConfig(loss="bce"))
    with pytest.raises(ValueError, match="finite"):
        TrainConfig(learning_rate=float("inf"))
