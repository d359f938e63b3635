"""Frozen prefixes: the cached-feature engine against recomputing the prefix at every step."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from intervalnn.certify import certify
from intervalnn.engine import LayeredEngine, PrefixEngine, make_engine
from intervalnn.engine.prefix import features, nominal_features
from intervalnn.layers import (
    AvgPool2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Unflatten,
)
from intervalnn.poisoning import Clipping, Poisoning
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train

SIDE = 6


def random_cnn(seed: int, classes: int, dtype=np.float64) -> tuple[Sequential, int]:
    """A random small CNN and a random frozen boundary that leaves a Linear head."""
    rng = np.random.default_rng(seed)
    layers: list = [Unflatten((1, SIDE, SIDE))]
    shape: tuple = (1, SIDE, SIDE)
    for _ in range(rng.integers(1, 4)):
        kind = rng.choice(["conv", "relu", "max", "avg"])
        if kind == "conv":
            k = int(rng.integers(1, min(shape[1:]) + 1))
            layer = Conv2d(shape[0], int(rng.integers(1, 4)), k, rng=rng, dtype=dtype)
        elif kind == "relu":
            layer = ReLU()
        else:
            k = int(rng.integers(1, min(shape[1:]) + 1))
            stride = int(rng.integers(1, k + 1))
            layer = (MaxPool2d if kind == "max" else AvgPool2d)(k, stride=stride)
        shape = layer.output_shape(shape)
        layers.append(layer)
    layers.append(Flatten())
    width = int(np.prod(shape))
    if rng.random() < 0.5:  # a frozen Linear in the prefix too
        layers += [Linear(width, 5, rng=rng, dtype=dtype), ReLU()]
        width = 5
    frozen = len(layers)
    layers += [
        Linear(width, 4, rng=rng, dtype=dtype),
        ReLU(),
        Linear(4, classes, rng=rng, dtype=dtype),
    ]
    return Sequential(*layers, frozen=frozen), frozen


def _data(seed: int, n: int, classes: int):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, size=(n, SIDE * SIDE))
    return x, rng.integers(0, classes, n)


THREATS = {
    "fullcert": (ThreatModel(0.01), None),
    "k-of-n": (ThreatModel(0.05, poison_count=3), None),
    "flips": (ThreatModel(0.0, label_flips=2), None),
    "clamp": (ThreatModel(math.inf, 0.01, poison_count=2), Clipping(0.5)),
    "norm": (ThreatModel(0.1, poison_count=2, label_flips=1), Clipping(1.0, "norm")),
}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("threat_name", sorted(THREATS))
def test_cached_prefix_gives_the_box_of_recomputing_it(seed, threat_name):
    """Bit for bit: PrefixEngine's cached features vs the layered engine running the prefix."""
    threat, clipping = THREATS[threat_name]
    dtype = np.float32 if seed % 2 else np.float64
    classes = 2 + seed % 2
    x, y = _data(seed, 30, classes)
    box = threat.train_box(x, dtype)
    xs = x.astype(dtype)
    clean = ThreatModel(0.0).train_box(x, dtype)
    poisoning = Poisoning(threat, 30, None, clipping)
    cached_model, frozen = random_cnn(seed, classes, dtype)
    recomputed_model, _ = random_cnn(seed, classes, dtype)
    cached = make_engine(cached_model, "ce", box, xs, y, 8, False, poisoning, clean=clean)
    assert isinstance(cached, PrefixEngine)
    recomputed = LayeredEngine(recomputed_model, "ce", box, xs, y, poisoning, clean=clean)
    frozen_before = {k: v.lo.copy() for k, v in cached_model.named_params().items()}
    for step in range(4):
        idx = np.arange(step * 7, step * 7 + 7)
        a = cached.step(idx, Fraction(1, 4))
        b = recomputed.step(idx, Fraction(1, 4))
        assert a == b
        assert a.outside is None
    (pa, na), (pb, nb) = cached.parameters(), recomputed.parameters()
    assert pa.keys() == pb.keys() == frozen_before.keys()
    for name in pa:
        np.testing.assert_array_equal(pa[name].lo, pb[name].lo)
        np.testing.assert_array_equal(pa[name].hi, pb[name].hi)
        np.testing.assert_array_equal(na[name], nb[name])
        if int(name.split(".")[0]) < frozen:  # frozen: still the point it started at
            np.testing.assert_array_equal(pa[name].lo, frozen_before[name])
            np.testing.assert_array_equal(pa[name].hi, frozen_before[name])
    assert cached.widths() == recomputed.widths()


@pytest.mark.parametrize("seed", range(4))
def test_frozen_certificates_bound_every_member_and_track_the_whole_model(seed):
    """Certifying through the cached prefix (the head's difference bounds on the fused
    engine) bounds sampled inputs' logit margins and is close to the whole model's margins."""
    classes = 2 + seed % 2
    model, frozen = random_cnn(seed, classes)
    x, y = _data(seed + 10, 40, classes)
    threat = ThreatModel(0.01, 0.002)
    cfg = TrainConfig(steps=3, learning_rate=0.2, batch_size=10, loss="ce", min_step=0)
    train(model, x, y, threat, cfg)
    assert isinstance(make_engine(model), PrefixEngine)
    whole = Sequential(*model.layers)
    a, b = certify(model, x, y, threat), certify(whole, x, y, threat)
    np.testing.assert_array_equal(a.nominal_correct, b.nominal_correct)
    np.testing.assert_allclose(a.margin, b.margin, atol=1e-3)
    rng = np.random.default_rng(seed)
    for _ in range(20):  # members of the test box: the nominal margin is above the bound
        member = x + rng.choice([-0.002, 0.0, 0.002], size=x.shape)
        z = model.forward_nominal(member)
        others = np.where(np.arange(classes) == y[:, None], np.inf, z)
        true_margin = z[np.arange(40), y] - others.min(axis=1)
        assert np.all(a.margin <= true_margin + 1e-12)


def test_training_moves_only_the_head_and_pretraining_moves_every_layer():
    rng = np.random.default_rng(3)
    model = Sequential(
        Unflatten((1, SIDE, SIDE)), Conv2d(1, 2, 3, rng=rng), AvgPool2d(2), Flatten(),
        Linear(8, 6, rng=rng), ReLU(), Linear(6, 3, rng=rng), frozen=4,
    )  # fmt: skip
    frozen = 4
    x, y = _data(0, 60, 3)
    start = {k: v.lo.copy() for k, v in model.named_params().items()}
    cfg = TrainConfig(
        steps=4, learning_rate=0.1, batch_size=20, loss="ce", pretrain_epochs=1,
        pretrain_learning_rate=0.5, min_step=1,
    )  # fmt: skip
    pretrained: dict = {}
    result = train(
        model, x[:40], y[:40], ThreatModel(0.01), cfg, pretrain_x=x[40:], pretrain_y=y[40:],
        on_step=lambda s, box, nom: pretrained.setdefault("box", box),
    )  # fmt: skip
    assert result.engine == "fused"  # the head is a Linear/ReLU stack: the fused kernel runs it
    after = model.named_params()
    first = pretrained["box"]
    for name, box in after.items():
        index = int(name.split(".")[0])
        assert not np.array_equal(first[name].lo, start[name]), f"pretraining left {name}"
        if index < frozen:
            assert bool(box.is_point().all()) and np.array_equal(box.lo, first[name].lo)
        else:
            assert not bool(box.is_point().all()), f"training left {name} a point"


def test_unbounded_poisoning_with_a_frozen_prefix():
    """epsilon = inf, no domain: the moved rows' features are unbounded and never read."""
    model, _ = random_cnn(5, 2)
    x, y = _data(1, 40, 2)
    threat = ThreatModel(math.inf, 0.01, poison_count=2, label_flips=1)
    cfg = TrainConfig(steps=5, learning_rate=0.5, batch_size=10, loss="ce", clip=0.2)
    result = train(model, x, y, threat, cfg)
    assert result.stopped is None
    widths = [float(v.width.max()) for v in model.named_params(trainable=True).values()]
    assert all(0 < w < math.inf for w in widths)


def test_everything_frozen_and_trainable_convolutions_under_k_of_n_are_refused():
    model, _ = random_cnn(0, 2)
    x, y = _data(0, 20, 2)
    with pytest.raises(ValueError, match="every layer is frozen"):
        Sequential(*model.layers, frozen=len(model.layers)).split()
    conv = Sequential(
        Unflatten((1, SIDE, SIDE)), Conv2d(1, 2, 3, rng=np.random.default_rng(0)), Flatten(),
        Linear(32, 2, rng=np.random.default_rng(1)),
    )  # fmt: skip
    cfg = TrainConfig(steps=1, batch_size=10, loss="ce")
    with pytest.raises(ValueError, match="freeze the convolutional layers"):
        train(conv, x, y, ThreatModel(0.01, poison_count=2), cfg)
    with pytest.raises(ValueError, match="frozen must be between"):
        Sequential(ReLU(), frozen=2)


def test_features_are_the_prefix_forward_of_each_row():
    model, frozen = random_cnn(2, 2)
    x, _ = _data(2, 600, 2)  # more rows than one chunk
    box = ThreatModel(0.01).train_box(x, np.float64)
    engine = make_engine(model)
    prefix = Sequential(*model.layers[:frozen])
    features = engine.features(box)
    rows = [0, 255, 256, 599]
    direct = prefix.forward(box[rows])
    np.testing.assert_array_equal(features.lo[rows], direct.lo)
    np.testing.assert_array_equal(features.hi[rows], direct.hi)
    nominal = engine.nominal_features(x)
    assert bool(features.contains(nominal).all())


@pytest.mark.parametrize("kind", ["fullcert", "k-of-n momentum"])
def test_a_frozen_prefix_resumes_from_a_checkpoint_bit_identically(kind):
    x, y = _data(4, 60, 3)
    threat = ThreatModel(0.01) if kind == "fullcert" else ThreatModel(0.05, poison_count=2)
    extra = {} if kind == "fullcert" else {"clip": 0.5, "momentum": 0.9}
    cfg = TrainConfig(epochs=3, learning_rate=0.2, batch_size=20, loss="ce", **extra)
    states: list = []

    def run(resume=None):
        model, _ = random_cnn(1, 3)
        train(model, x, y, threat, cfg, x[:20], y[:20], checkpoint=states.append,
              checkpoint_every=0.0, resume=resume)  # fmt: skip
        return model

    whole = run()
    first = states[0]
    assert first.epoch == 1
    resumed = run(resume=first)
    for name, box in whole.named_params().items():
        other = resumed.named_params()[name]
        np.testing.assert_array_equal(box.lo, other.lo)
        np.testing.assert_array_equal(box.hi, other.hi)
        np.testing.assert_array_equal(whole.named_nominal()[name], resumed.named_nominal()[name])


def test_remembered_features_tell_prefixes_with_equal_parameters_apart():
    """Two prefixes with the same parameter arrays but other parameterless layers (a max
    against an average pool) must not share remembered features."""
    rng = np.random.default_rng(7)
    conv = Conv2d(1, 2, 3, rng=rng)
    x, _ = _data(7, 10, 2)
    box = ThreatModel(0.01).train_box(x, np.float64)
    got = {}
    for pool in (MaxPool2d(2), AvgPool2d(2)):
        prefix = Sequential(Unflatten((1, SIDE, SIDE)), conv, pool, Flatten())
        got[type(pool).__name__] = (features(prefix, box), nominal_features(prefix, x))
        direct = prefix.forward(box)
        np.testing.assert_array_equal(got[type(pool).__name__][0].lo, direct.lo)
        np.testing.assert_array_equal(got[type(pool).__name__][1], prefix.forward_nominal(x))
    assert not np.array_equal(got["MaxPool2d"][1], got["AvgPool2d"][1])
