"""The audits on convolutional models (issue 14): ``intervalnn audit`` and ``audit-training``.

The model audit's view (:mod:`intervalnn.audit.network`) and the training
audit's reference SGD read Conv2d, AvgPool2d, MaxPool2d, Flatten and
Unflatten by their own definitions; here both are checked against direct
loop definitions in exact rationals, the oracle against sampled members of
the box, and the audits against tiny trained CNNs (a frozen prefix, and a
trainable convolution under FullCert).  Broken bounds must be caught: an
over-claiming engine, a shrunken convolution bound, a shrunken parameter box,
a frozen parameter that moves.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

import intervalnn.audit.network as network_module
import intervalnn.conv as conv_module
from intervalnn.audit import audit_model, audit_training, network_layers, oracle_bounds
from intervalnn.audit import training as training_module
from intervalnn.audit.falsification import _exact_forward, _forward, _input_grad, _sample_model
from intervalnn.audit.oracle import pair_columns
from intervalnn.audit.training import _layer_kinds, _layer_params, _Reference
from intervalnn.conv import AvgPool2d, Conv2d, Flatten, MaxPool2d, Unflatten
from intervalnn.datasets import two_moons_splits
from intervalnn.engine import FusedEngine, LayeredEngine
from intervalnn.interval import Interval
from intervalnn.io import load_model, save_model
from intervalnn.layers import Linear, ReLU, Sequential, class_pairs
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train

FAST = {"models": 2, "inputs": 2, "pgd_steps": 4}


# ---------------------------------------------------------------- direct definitions


def _fr(a):
    """Exact rationals of a float array (an object array of rationals as it is)."""
    a = np.asarray(a)
    return a.copy() if a.dtype == object else np.vectorize(Fraction, otypes=[object])(a)


def _conv(x, w, b, stride, padding):
    """``z[o, i, j] = b[o] + sum_{c,u,v} w[o, c, u, v] x[c, i*sh + u - ph, j*sw + v - pw]``."""
    c, h, wd = x.shape
    out, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    z = np.empty((out, oh, ow), dtype=object)
    for o in range(out):
        for i in range(oh):
            for j in range(ow):
                acc = b[o]
                for ci in range(c):
                    for u in range(kh):
                        for v in range(kw):
                            r, s = i * sh + u - ph, j * sw + v - pw
                            if 0 <= r < h and 0 <= s < wd:
                                acc += w[o, ci, u, v] * x[ci, r, s]
                z[o, i, j] = acc
    return z


def _pool(x, kernel, stride, op):
    c, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    z = np.empty((c, oh, ow), dtype=object)
    for ci in range(c):
        for i in range(oh):
            for j in range(ow):
                win = [x[ci, i * sh + u, j * sw + v] for u in range(kh) for v in range(kw)]
                z[ci, i, j] = max(win) if op == "max" else sum(win) / Fraction(len(win))
    return z


def _direct(model: Sequential, params, x_row):
    """The exact output of ``model`` with parameters ``params`` (by layer index, rationals) on
    one flat row, from the definitions above (no audit or library code)."""
    a = _fr(x_row)
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Unflatten):
            a = a.reshape(layer.shape)
        elif isinstance(layer, Flatten):
            a = a.reshape(-1)
        elif isinstance(layer, ReLU):
            a = np.where(a > 0, a, Fraction(0))
        elif isinstance(layer, Conv2d):
            a = _conv(a, *params[i], layer.stride, layer.padding)
        elif isinstance(layer, (AvgPool2d, MaxPool2d)):
            op = "max" if isinstance(layer, MaxPool2d) else "avg"
            a = _pool(a, layer.kernel_size, layer.stride, op)
        else:
            a = a @ params[i][0] + params[i][1]
    return a


def _outputs(model, params, x):
    return np.array([_direct(model, params, row) for row in x], dtype=object)


def _odd_cnn(seed=0):
    """Padding, stride 2, overlapping max windows, a 3x3 mean (1/9 is no float), a ReLU last
    on a pool."""
    rng = np.random.default_rng(seed)
    return Sequential(
        Unflatten((2, 7, 7)),
        Conv2d(2, 3, 3, stride=2, padding=1, rng=rng),  # (3, 4, 4)
        ReLU(),
        MaxPool2d(2, stride=1),  # (3, 3, 3)
        Conv2d(3, 4, (2, 1), padding=(1, 0), rng=rng),  # (4, 4, 3)
        AvgPool2d(3, stride=1),  # (4, 2, 1)
        ReLU(),
        Flatten(),
        Linear(8, 3, rng=rng),
    )


def _nominal_by_index(model):
    """The nominal parameters as rationals, by layer index."""
    return {
        i: (_fr(layer.nominal["weight"]), _fr(layer.nominal["bias"]))
        for i, layer in enumerate(model.layers)
        if layer.params
    }


def test_views_match_the_direct_definitions_exactly():
    """The model audit's view, the reference SGD and loops over the definitions agree exactly;
    the library's nominal forward agrees to rounding (the same layouts)."""
    model = _odd_cnn(1)
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 98))
    layers = network_layers(model)
    assert [type(la).__name__ for la in layers] == ["Conv", "Pool", "Conv", "Pool", "Dense"]
    assert [la.relu for la in layers] == [True, False, False, True, False]
    params = _sample_model(layers, "nominal", rng)
    view = _exact_forward(params, layers, x)
    ref = _Reference(_layer_kinds(model), _layer_params(model), "ce", exact=True)
    reference = ref.logits(x)
    nominal = _nominal_by_index(model)
    for r in range(3):
        want = _direct(model, nominal, x[r])
        assert [Fraction(v) for v in view[r]] == list(want)
        assert [Fraction(v) for v in reference[r]] == list(want)
    z, _ = _forward(params, layers, x)
    np.testing.assert_allclose(z, model.forward_nominal(x), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(z, np.array(view, dtype=np.float64), rtol=1e-13, atol=1e-13)


def _difference_quotient(model, params, x, layer, which, index, h):
    """``(z(theta + h e) - z(theta)) / h`` in rationals for one parameter entry."""
    moved = {k: (w.copy(), b.copy()) for k, (w, b) in params.items()}
    moved[layer][which][index] += h
    return (_outputs(model, moved, x) - _outputs(model, params, x)) / h


def test_reference_and_falsification_gradients_are_exact_derivatives():
    """Piecewise linear in the parameters and inputs: a step of 2^-40 crosses no kink, so the
    exact difference quotient is the derivative, which both backward passes must give
    exactly (rationals) for the parameters and the input."""
    rng = np.random.default_rng(5)
    model = Sequential(
        Unflatten((1, 5, 5)),
        Conv2d(1, 2, 3, padding=1, rng=rng),
        ReLU(),
        MaxPool2d(2),  # (2, 2, 2)
        AvgPool2d((1, 2), stride=1),  # (2, 2, 1)
        Flatten(),
        Linear(4, 3, rng=rng),
    )
    x = rng.normal(size=(2, 25))
    y = np.array([0, 2])
    h = Fraction(1, 2**40)
    ref = _Reference(_layer_kinds(model), _layer_params(model), "ce", exact=True)
    grads, gx = ref.gradients(x, y)
    gz = np.array(ref._out_grad(ref.logits(x), y)) * Fraction(1, 2)  # d mean-loss / d logits
    gz = np.vectorize(Fraction, otypes=[object])(gz)
    params = _nominal_by_index(model)
    for li, pair in zip((1, 6), grads, strict=True):
        for which, g in enumerate(pair):
            shape = params[li][which].shape
            for index in list(np.ndindex(shape))[:: max(1, int(np.prod(shape)) // 6)]:
                dz = _difference_quotient(model, params, x, li, which, index, h)
                assert Fraction(g[index]) == (gz * dz).sum(), (li, which, index)
    layers = network_layers(model)
    nominal = _sample_model(layers, "nominal", rng)
    direction = rng.normal(size=(2, 3))
    _, tape = _forward(nominal, layers, x)
    gin = _input_grad(nominal, layers, tape, direction)
    for idx in [(0, 0), (0, 7), (0, 12), (1, 18), (1, 24)]:
        moved = _fr(x)
        moved[idx] += h
        dz = (_outputs(model, params, moved) - _outputs(model, params, x)) / h
        assert Fraction(gx[idx]) == (gz * dz).sum(), idx
        assert gin[idx] == pytest.approx(float((_fr(direction) * dz).sum()), rel=1e-12)


def _boxed(model, rng, radius):
    """``model`` with every parameter box widened by up to ``radius`` around its nominal."""
    for layer in model.layers:
        for k in list(layer.params):
            nom = layer.nominal[k]
            lo = nom - radius * rng.uniform(0, 1, nom.shape)
            hi = nom + radius * rng.uniform(0, 1, nom.shape)
            layer.set_params({**layer.params, k: Interval._new(lo, hi)})
    return model


def test_oracle_encloses_sampled_members_and_is_tight_on_points():
    rng = np.random.default_rng(3)
    model = _boxed(_odd_cnn(4), rng, 0.05)
    layers = network_layers(model)
    x = rng.normal(size=(3, 98))
    eps = 0.02
    lo, hi = oracle_bounds(layers, x, eps, precision=120)
    for kind in ("nominal", "vertex", "random", "random"):
        params = _sample_model(layers, kind, rng)
        signs = rng.choice([-1.0, 1.0], size=x.shape)
        for xs in (x, x + eps * signs, x + eps * rng.uniform(-1, 1, size=x.shape)):
            z = _exact_forward(params, layers, xs)
            assert (lo <= z).all() and (z <= hi).all()
    # a point box (widths 0, eps 0): the oracle's bounds are the exact output within 2^-100
    point = _odd_cnn(4)
    layers = network_layers(point)
    lo, hi = oracle_bounds(layers, x, 0.0, precision=200)
    z = _exact_forward(_sample_model(layers, "nominal", rng), layers, x)
    for idx in np.ndindex(z.shape):
        ql, qh = Fraction(*lo[idx].as_integer_ratio()), Fraction(*hi[idx].as_integer_ratio())
        assert ql <= Fraction(z[idx]) <= qh
        assert qh - ql <= (1 + abs(Fraction(z[idx]))) * Fraction(1, 2**100)


def test_oracle_difference_bounds_enclose_sampled_members():
    """The oracle's logit-difference layer (the set of W_c - W_j, rounded outward) encloses
    every member's exact differences, and is never looser than lower(z_c) - upper(z_j)."""
    from intervalnn.audit.oracle import Oracle

    rng = np.random.default_rng(8)
    model = _boxed(_odd_cnn(9), rng, 0.05)
    layers = network_layers(model)
    x = rng.normal(size=(3, 98))
    oracle = Oracle(layers, 120)
    lo, hi, dlo, dhi = oracle.forward(*oracle.input_box(x, 0.02, None), True)
    pairs = pair_columns(3)
    for kind in ("vertex", "random", "random"):
        params = _sample_model(layers, kind, rng)
        z = _exact_forward(params, layers, x + 0.02 * rng.uniform(-1, 1, size=x.shape))
        for col, (c, j) in enumerate(pairs):
            assert (dlo[:, col] <= z[:, c] - z[:, j]).all()
            assert (z[:, c] - z[:, j] <= dhi[:, col]).all()
    with oracle.down:
        naive = lo[:, [c for c, _ in pairs]] - hi[:, [j for _, j in pairs]]
    assert (dlo >= naive).all()


def test_unknown_layers_are_one_line_errors():
    class Custom(ReLU):  # a layer the audits have no definition of
        pass

    model = Sequential(Linear(2, 3, rng=np.random.default_rng(0)), Custom())
    with pytest.raises(ValueError, match="not Custom"):
        network_layers(model)
    with pytest.raises(ValueError, match="not Custom"):
        _layer_kinds(model)


def test_oracle_difference_columns_are_the_library_s():
    c, j = class_pairs(5)
    assert pair_columns(5) == list(zip(c.tolist(), j.tolist(), strict=True))


# ---------------------------------------------------------------- trained tiny CNNs


def _bars(n, seed):
    """6x6 images in [0, 1] with a bright vertical bar at columns 2c, 2c+1 for class c."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = rng.uniform(0, 0.3, size=(n, 6, 6))
    for r in range(n):
        x[r, :, 2 * y[r] : 2 * y[r] + 2] = rng.uniform(0.7, 1.0)
    return x.reshape(n, 36), y


def _cnn(frozen=0, seed=0):
    """Conv - ReLU - MaxPool - AvgPool(3x3: 1/9 is no float) - Flatten - Linear - ReLU - Linear."""
    rng = np.random.default_rng(seed)
    return Sequential(
        Unflatten((1, 6, 6)),
        Conv2d(1, 3, 3, padding=1, rng=rng),  # (3, 6, 6)
        ReLU(),
        MaxPool2d(2, stride=1),  # (3, 5, 5)
        AvgPool2d(3, stride=2),  # (3, 2, 2)
        Flatten(),
        Linear(12, 8, rng=rng),
        ReLU(),
        Linear(8, 3, rng=rng),
        frozen=frozen,
    )


TRAIN = _bars(48, 0)
PRETRAIN = _bars(60, 1)
TEST = _bars(40, 2)
FROZEN = 5  # the convolutional prefix, up to the average pool (features (3, 2, 2), unflat)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The frozen-prefix CNN, pretrained clean, its head trained certified (FullCert 1e-3),
    saved to a model file and loaded back."""
    model = _cnn(FROZEN)
    threat = ThreatModel(1e-3, domain=(0.0, 1.0))
    cfg = TrainConfig(
        epochs=3, learning_rate=0.5, batch_size=16, loss="ce", pretrain_epochs=30,
        pretrain_learning_rate=0.5, seed=0,
    )  # fmt: skip
    train(model, *TRAIN, threat, cfg, pretrain_x=PRETRAIN[0], pretrain_y=PRETRAIN[1])
    path = save_model(
        tmp_path_factory.mktemp("cnn") / "cnn.npz", model, threat,
        dataset={"name": "moons", "seed": 0},
    )  # fmt: skip
    loaded, _ = load_model(path)
    assert loaded.frozen == FROZEN
    return loaded, threat


def test_audit_model_passes_on_a_trained_cnn(trained):
    model, threat = trained
    r = audit_model(model, *TEST, threat, **FAST)
    assert r["certified"] > 0 and r["checked"] == r["certified"]
    assert r["refuted"] == r["violations"] == 0
    assert r["exact"]["violations_differences"] == 0  # 3 classes: the difference bounds
    assert r["counterexamples"] == r["outside_bounds"] == r["inconsistent"] == 0
    assert r["passed"] and r["max_slack_ulps"] >= 0
    assert r["falsification"]["evaluations"] > 0
    json.dumps(r)


def test_windows_in_row_chunks_give_the_same_audit(trained, monkeypatch):
    """Large batches form their windows a few rows at a time: the same report."""
    model, threat = trained
    whole = audit_model(model, *TEST, threat, **FAST)
    monkeypatch.setattr(network_module, "WINDOW_ENTRIES", 200)  # a row or two per chunk
    chunked = audit_model(model, *TEST, threat, **FAST)
    assert chunked["exact"] == whole["exact"]  # MPFR with directed rounding: bit for bit
    for key in ("evaluations", "counterexamples", "outside_bounds", "models"):
        assert chunked["falsification"][key] == whole["falsification"][key], key
    for method in ("endpoint", "midrad"):  # float sums may group differently: not compared
        assert chunked["naive"][method]["bounds"] == whole["naive"][method]["bounds"]


def _claim_nominal(engine, prepared):
    """A broken engine: the nominal output at the box centre as the 'bounds'."""
    box = getattr(prepared, "box", prepared)
    z = np.asarray(engine.model.forward_nominal(box.mid), np.float64)
    return z, z.copy()


def test_audit_catches_an_over_claiming_engine_on_a_cnn(trained, monkeypatch):
    model, _ = trained
    threat = ThreatModel(1e-3, test_epsilon=0.3, domain=(0.0, 1.0))  # wide test boxes
    monkeypatch.setattr(FusedEngine, "logit_bounds", _claim_nominal)
    monkeypatch.setattr(LayeredEngine, "logit_bounds", _claim_nominal)
    r = audit_model(model, *TEST, threat, **FAST)
    assert not r["passed"]
    assert r["refuted"] > 0 and r["violations"] > 0
    assert r["counterexamples"] > 0 and r["outside_bounds"] > 0
    assert r["exact"]["violations_differences"] > 0  # the bounds the certificates read
    assert r["falsification"]["outside_difference_bounds"] > 0


def test_audit_catches_a_shrunken_convolution_bound(trained, monkeypatch):
    """Conv2d's interval output shrunk to its middle half: the oracle's bounds stick out."""
    model, threat = trained
    real = conv_module.Conv2d.forward

    def shrunk(self, x):
        out = real(self, x)
        mid, rad = (out.lo + out.hi) / 2, (out.hi - out.lo) / 4
        return Interval._new(mid - rad, mid + rad)

    monkeypatch.setattr(conv_module.Conv2d, "forward", shrunk)
    r = audit_model(model, *TEST, ThreatModel(1e-2, domain=(0.0, 1.0)), **FAST)
    assert not r["passed"] and r["violations"] > 0


# ---------------------------------------------------------------- the training audit


def _audit_training(threat, frozen=FROZEN, exact=True, **extra):
    cfg = TrainConfig(
        **{
            "epochs": 2, "learning_rate": 0.5, "batch_size": 16, "loss": "ce", "seed": 1,
            "pretrain_epochs": 10, "pretrain_learning_rate": 0.5, **extra,
        }
    )  # fmt: skip
    x, y = TRAIN[0][:32], TRAIN[1][:32]
    return audit_training(
        _cnn(frozen), x, y, threat, cfg, pretrain_x=PRETRAIN[0], pretrain_y=PRETRAIN[1],
        test_x=TEST[0][:20], test_y=TEST[1][:20], vertices=1, randoms=1, exact=exact,
    )  # fmt: skip


THREATS = {
    "fullcert": (ThreatModel(1e-2, domain=(0.0, 1.0)), {}),
    "k-of-n-clip-flips": (
        ThreatModel(math.inf, 0.0, domain=(0.0, 1.0), poison_count=2, label_flips=2),
        {"clip": 0.5},
    ),
}


@pytest.mark.parametrize("case", sorted(THREATS))
def test_audit_training_frozen_cnn_stays_inside(case):
    threat, extra = THREATS[case]
    r = _audit_training(threat, **extra)
    assert r["frozen"] == FROZEN and r["frozen_changed"] == 0
    assert r["steps"] == 4 and r["exact_runs"] > 0
    assert r["passed"] and r["outside"] == 0 and r["max_excursion"] <= 0, r["by_kind"]
    assert r["clean_vs_nominal"] < 1e-12
    assert r["certified_flipped"] == 0


def test_audit_training_trainable_cnn_fullcert():
    """No frozen prefix: the convolution trains too (FullCert), exact runs included."""
    r = _audit_training(ThreatModel(1e-2, domain=(0.0, 1.0)), frozen=0, pretrain_epochs=0)
    assert r["frozen"] == 0 and r["exact_runs"] > 0
    assert r["passed"] and r["outside"] == 0 and r["max_excursion"] <= 0, r["by_kind"]
    assert r["clean_vs_nominal"] < 1e-12


def test_training_audit_in_row_chunks_is_the_same(monkeypatch):
    """Attack planning and test predictions a few rows at a time: the same runs and results."""
    threat, extra = THREATS["k-of-n-clip-flips"]
    whole = _audit_training(threat, exact=False, **extra)
    monkeypatch.setattr(training_module, "CHUNK_FLOATS", 300)  # a row or two per chunk
    chunked = _audit_training(threat, exact=False, **extra)
    assert chunked["by_kind"] == whole["by_kind"] and chunked["runs"] == whole["runs"]


def _hooked(monkeypatch, change):
    real = training_module.train

    def hooked(*args, on_step, **kw):
        def hook(step, box, nominal):
            change(box)
            on_step(step, box, nominal)

        return real(*args, on_step=hook, **kw)

    monkeypatch.setattr(training_module, "train", hooked)


def test_a_shrunken_head_box_is_caught(monkeypatch):
    def shrink(box):
        for k, b in box.items():
            mid, rad = (b.lo + b.hi) / 2, (b.hi - b.lo) / 4
            box[k] = type(b)._new(mid - rad, mid + rad)

    _hooked(monkeypatch, shrink)
    r = _audit_training(THREATS["fullcert"][0], exact=False)
    assert not r["passed"] and r["outside"] > 0 and r["max_excursion"] > 0
    assert r["frozen_changed"] == 0  # the frozen points shrink to themselves


def test_a_frozen_parameter_that_moves_is_caught(monkeypatch):
    def widen(box):
        b = box["1.weight"]
        box["1.weight"] = type(b)._new(b.lo - 1e-3, b.hi + 1e-3)  # still contains the point

    _hooked(monkeypatch, widen)
    r = _audit_training(THREATS["fullcert"][0], exact=False)
    assert r["outside"] == 0 and r["frozen_changed"] > 0 and not r["passed"]


# ---------------------------------------------------------------- the command


def test_cli_audit_on_a_cnn_model_file(tmp_path, invoke):
    sp = two_moons_splits(seed=0, n_train=200, n_val=50, n_test=60)
    rng = np.random.default_rng(0)
    model = Sequential(
        Unflatten((1, 1, 2)), Conv2d(1, 6, (1, 2), rng=rng), ReLU(), Flatten(),
        Linear(6, 1, rng=rng), frozen=0,
    )  # fmt: skip
    threat = ThreatModel(1e-2)
    train(model, sp.train.x, sp.train.y, threat, TrainConfig(epochs=2, learning_rate=0.5,
          batch_size=50))  # fmt: skip
    path = save_model(tmp_path / "cnn.npz", model, threat, dataset={"name": "moons", "seed": 0})
    args = ["audit", path, "--models", 1, "--inputs", 1, "--pgd-steps", 2, "--max-points", 20]
    res = invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and report["refuted"] == report["violations"] == 0
    assert report["certified"] > 0
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "audit passed" in res.stdout


def test_cli_audit_training_on_a_cnn_with_a_frozen_prefix(invoke):
    arch = "unflatten(2,1,1)-conv(4,1)-relu-flatten-linear(8)-relu-linear(2)"
    args = ["audit-training", "--dataset", "moons", "--arch", arch, "--freeze", 3, "--loss", "ce"]
    args += ["--train-size", 40, "--test-size", 50, "--epochs", 1, "--batch-size", 20]
    res = invoke(*args, "--epsilon", 0.01, "--exact", "--vertices", 1, "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["passed"] and r["frozen"] == 3 and r["frozen_changed"] == 0
    assert r["exact_runs"] > 0 and r["max_excursion"] <= 0 and r["steps"] == 2
    kofn = ["--epsilon", "inf", "--inference-epsilon", 0, "--poison-count", 2, "--clip", 0.5]
    res = invoke(*args, *kofn, "--label-flips", 2)
    assert res.exit_code == 0, res.output
    assert "frozen prefix: 3 layers" in res.stdout and "training audit passed" in res.stdout
