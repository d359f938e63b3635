"""The soundness audits (intervalnn.audit, ``intervalnn audit`` / ``audit-training``).

Small, fast versions of the model audit (exact oracle, falsification, naive
rounding) and of the training audit on Two-Moons, and proof that the audits
can fail: an engine made to round to nearest, or to claim bounds it did not
prove, is caught.
"""

from __future__ import annotations

import json
import zlib
from fractions import Fraction

import numpy as np
import pytest
from oracle import dual_forward, exact_ibp, fraction_array, zero_tangents

import intervalnn.kernels.bounds as bounds_module
import intervalnn.kernels.gemm as gemm_module
from intervalnn.audit import (
    Dense,
    audit_model,
    audit_training,
    dense_layers,
    oracle_bounds,
)
from intervalnn.audit.falsification import _exact_forward, _forward, _input_grad
from intervalnn.audit.training import _layer_kinds, _layer_params, _Reference
from intervalnn.datasets import two_moons_splits
from intervalnn.engine import FusedEngine
from intervalnn.interval import Interval
from intervalnn.io import save_model
from intervalnn.kernels import cpu
from intervalnn.layers import Linear, ReLU, Sequential, mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train

FAST = {"models": 2, "inputs": 2, "pgd_steps": 5}
LAYERED = {"fused": False} if "fused" in TrainConfig.__dataclass_fields__ else {}


@pytest.fixture(scope="module")
def moons():
    """A 2x20 MLP trained for 2 epochs on 300 Two-Moons points with epsilon 0.01."""
    sp = two_moons_splits(seed=0, n_train=300, n_val=100, n_test=100)
    threat = ThreatModel(1e-2)
    model = mlp(2, 1, hidden=20, layers=2, seed=0)
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=100)
    train(model, sp.train.x, sp.train.y, threat, cfg)
    return sp, threat, model


# ---------------------------------------------------------------- the oracle


@pytest.mark.parametrize("shift", [0.0, 1.5])  # negative inputs (general path), non-negative
def test_oracle_encloses_exact_ibp_within_its_precision(shift):
    rng = np.random.default_rng(7)
    sizes = [3, 4, 4, 2]
    layers = []
    for i, (n, p) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w, b = rng.normal(size=(n, p)) / 3, rng.normal(size=p) / 3
        dw, db = rng.uniform(0, 0.05, size=(n, p)), rng.uniform(0, 0.05, size=p)
        layers.append(Dense(w - dw, w + dw, w, b - db, b + db, b, relu=i < len(sizes) - 2))
    x = rng.uniform(-1, 1, size=(5, 3)) + shift
    lo, hi = oracle_bounds(layers, x, 0.01, precision=120)
    ex_lo, ex_hi = exact_ibp(layers, x, 0.01)
    for r in range(5):
        for j in range(2):
            ql, qh = Fraction(*lo[r, j].as_integer_ratio()), Fraction(*hi[r, j].as_integer_ratio())
            assert ql <= ex_lo[r][j] and ex_hi[r][j] <= qh  # directed rounding is outward
            scale = 1 + abs(ex_lo[r][j]) + abs(ex_hi[r][j])
            assert ex_lo[r][j] - ql <= scale * Fraction(1, 2**100)  # and tight
            assert qh - ex_hi[r][j] <= scale * Fraction(1, 2**100)


# ---------------------------------------------------------------- the model audit


def test_audit_model_passes_on_moons(moons):
    sp, threat, model = moons
    r = audit_model(model, sp.test.x, sp.test.y, threat, **FAST)
    assert r["checked"] == r["certified"] > 0
    assert r["refuted"] == r["violations"] == 0
    assert r["counterexamples"] == r["outside_bounds"] == r["inconsistent"] == 0
    assert r["passed"]
    assert r["max_slack_ulps"] >= 0  # the engine's bounds contain the oracle's
    assert r["falsification"]["evaluations"] > 0
    # plain round-to-nearest endpoint IBP misses the tightest bounds on some outputs
    assert r["naive_violations"] > 0
    assert set(r["naive"]) == {"endpoint", "midrad"}
    json.dumps(r)  # JSON-ready


def test_audit_model_sample_is_seeded(moons):
    sp, threat, model = moons
    a = audit_model(model, sp.test.x, sp.test.y, threat, max_points=10, seed=3, **FAST)
    b = audit_model(model, sp.test.x, sp.test.y, threat, max_points=10, seed=3, **FAST)
    assert a["exact"]["points"] == 10 and a["passed"]
    assert a["exact"] == b["exact"]


def _claim_nominal_outputs(engine, prepared):
    """A broken engine: the nominal model's output at the box centre as the 'bounds'."""
    z = engine.model.forward_nominal(prepared.box.mid)
    return np.asarray(z, np.float64), np.asarray(z, np.float64)


def test_audit_catches_an_engine_that_claims_unproved_bounds(moons, monkeypatch):
    sp, _, model = moons
    threat = ThreatModel(1e-2, test_epsilon=0.1)  # wide test boxes: many points not robust
    monkeypatch.setattr(FusedEngine, "logit_bounds", _claim_nominal_outputs)
    r = audit_model(model, sp.test.x, sp.test.y, threat, **FAST)
    assert not r["passed"]
    assert r["refuted"] > 0  # certificates the oracle does not confirm
    assert r["violations"] > 0  # bounds that do not contain the oracle's
    assert r["counterexamples"] > 0  # concrete models and inputs that flip the prediction
    assert r["outside_bounds"] > 0


def _rn_interval(op):
    def kernel(alo, ahi, blo, bhi):
        ends = [op(a, b) for a in (alo, ahi) for b in (blo, bhi)]
        return np.minimum.reduce(ends), np.maximum.reduce(ends)

    return kernel


def _round_to_nearest(monkeypatch):
    """Break the engine: every directed rounding becomes round-to-nearest, no error terms."""
    rn = {
        "add": lambda alo, ahi, blo, bhi: (alo + blo, ahi + bhi),
        "sub": lambda alo, ahi, blo, bhi: (alo - bhi, ahi - blo),
        "mul": _rn_interval(np.multiply),
        "div": _rn_interval(np.divide),
        "midrad": lambda lo, hi: ((lo + hi) / 2, (hi - lo) / 2),
        "mag_bound": lambda m, g, rad=None: g * np.abs(m) + (0 if rad is None else rad),
        "gemm_enclose": lambda p, s1, s2, c, k_eta, two: (
            p - (s1 if s2 is None else s1 + s2),
            p + (s1 if s2 is None else s1 + s2),
        ),
    }
    for name in ("add", "mul", "div"):
        op = {"add": np.add, "mul": np.multiply, "div": np.divide}[name]
        rn[f"{name}_rd"] = rn[f"{name}_ru"] = op
    for name in ("exp", "expm1", "log", "log1p"):
        rn[f"{name}_rd"] = rn[f"{name}_ru"] = getattr(np, name)
    for name, fn in rn.items():
        assert hasattr(cpu, name), name
        monkeypatch.setattr(cpu, name, fn)
    zero = np.float64(0.0)
    monkeypatch.setattr(gemm_module, "gemm_constants", lambda k, dt: (zero, 1.0, zero, zero))
    monkeypatch.setattr(bounds_module, "sum_error_factor", lambda n, dt: 0.0)
    monkeypatch.setattr(FusedEngine, "create", classmethod(lambda cls, *a, **k: None))


def test_audit_catches_round_to_nearest_arithmetic(monkeypatch):
    """A round-to-nearest engine's point bounds miss the exact outputs: violations > 0."""
    sp = two_moons_splits(seed=1, n_train=10, n_val=10, n_test=60)
    model = mlp(2, 1, hidden=20, layers=2, seed=1)  # untrained: a point parameter box
    threat = ThreatModel(0.0)
    sound = audit_model(model, sp.test.x, sp.test.y, threat, **FAST)
    assert sound["passed"] and sound["violations"] == 0
    _round_to_nearest(monkeypatch)
    r = audit_model(model, sp.test.x, sp.test.y, threat, **FAST)
    assert r["violations"] > 0 and not r["passed"]
    assert r["naive_violations"] > 0


# ---------------------------------------------------------------- the training audit


def test_audit_training_passes_on_moons():
    sp = two_moons_splits(seed=0, n_train=200)
    model = mlp(2, 1, hidden=10, layers=2, seed=0)
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=50, seed=3)
    r = audit_training(model, sp.train.x, sp.train.y, ThreatModel(1e-3), cfg)
    assert r["steps"] == r["planned_steps"] == 8
    assert r["passed"] and r["outside"] == 0 and r["max_excursion"] <= 0
    assert r["clean_vs_nominal"] < 1e-12  # same initial model, batches and learning rates
    assert {"clean", "plus", "minus", "vertex", "random", "adversarial-init"} <= set(r["by_kind"])
    assert "adversarial-step" in r["by_kind"]


@pytest.mark.parametrize("loss", ["bce", "ce"])
def test_audit_training_exact_rational_sgd(loss):
    sp = two_moons_splits(seed=2, n_train=24)
    k = 1 if loss == "bce" else 2
    model = mlp(2, k, hidden=4, layers=2, seed=2)
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=12, seed=1, loss=loss)
    r = audit_training(
        model, sp.train.x, sp.train.y, ThreatModel(1e-2), cfg, vertices=1, randoms=1, exact=True
    )
    assert r["exact_runs"] == 6 and r["steps"] == 4
    assert r["passed"] and r["max_excursion"] <= 0
    assert all(row["outside"] == 0 for row in r["by_kind"].values())


def test_audit_training_catches_round_to_nearest_training(monkeypatch):
    """Round-to-nearest interval training (layered path) collapses the box: runs leave it."""
    _round_to_nearest(monkeypatch)
    sp = two_moons_splits(seed=0, n_train=32)
    model = mlp(2, 1, hidden=4, layers=2, seed=0)
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=16, seed=0, **LAYERED)
    r = audit_training(
        model, sp.train.x, sp.train.y, ThreatModel(0.0), cfg, vertices=0, randoms=0, exact=True
    )
    assert not r["passed"]
    assert r["outside"] > 0 and r["max_excursion"] > 0
    assert r["by_kind"]["clean (exact)"]["outside"] > 0  # the real SGD trajectory left the box


# ---------------------------------------------------------------- reference SGD, any layer order


def _set_linear(layer, w, b):
    layer.weight, layer.bias = Interval(w), Interval(b)
    layer.nominal = {"weight": w.copy(), "bias": b.copy()}
    return layer


def _relu_last_model():
    """Linear(2, 1) - ReLU with ``z = -1.25`` on the only point: the true gradient is 0."""
    w, b = np.array([[1.0], [-1.0]]), np.array([0.25])
    lin = _set_linear(Linear(2, 1, rng=np.random.default_rng(0)), w, b)
    return Sequential(lin, ReLU()), np.array([[-1.0, 0.5]]), np.array([1])


def _random_arch(seed):
    rng = np.random.default_rng(seed)
    kinds = list(rng.choice(["linear", "relu"], size=int(rng.integers(2, 7))))
    if "linear" not in kinds:
        kinds[int(rng.integers(len(kinds)))] = "linear"
    return tuple(str(k) for k in kinds)


ARCHS = [
    ("linear", "relu"),  # a ReLU after the last Linear
    ("linear", "linear"),  # Linear after Linear
    ("linear", "relu", "relu", "linear"),  # consecutive ReLUs
    ("linear", "relu", "linear", "relu", "relu"),  # both, ReLU last
    ("linear", "linear", "relu", "linear", "relu"),
    ("relu", "linear", "relu"),  # a ReLU first: the reference alone (Sequential needs a Linear)
] + [_random_arch(s) for s in range(6)]


def _random_params(kinds, n_in, k, rng):
    n_lin = kinds.count("linear")
    sizes = [n_in] + [int(rng.integers(2, 5)) for _ in range(n_lin - 1)] + [k]
    return [
        (rng.normal(size=(a, b)) * 0.8, rng.normal(size=b) * 0.5)
        for a, b in zip(sizes[:-1], sizes[1:], strict=True)
    ]


def test_audit_reference_model_ending_with_relu():
    """relu'(z) of the LAST layer is part of the chain rule: z = -1.25 < 0, gradient 0."""
    model, x, y = _relu_last_model()
    assert _layer_kinds(model) == ["linear", "relu"]
    for exact in (True, False):
        ref = _Reference(_layer_kinds(model), _layer_params(model), "bce", exact)
        ((gw, gb),) = ref.gradients(x, y)[0]
        assert all(v == 0 for v in [*gw.ravel(), *gb.ravel()])
        ref.step(x, y, Fraction(1, 2))
        ((w, b),) = ref.params
        assert [float(v) for v in w.ravel()] == [1.0, -1.0] and float(b[0]) == 0.25
    # and relu'(0) = 0 (the engine's convention) at z = 0 exactly; 1 at z > 0
    ref = _Reference(["linear", "relu"], _layer_params(model), "bce", exact=True)
    xs = np.array([[-1.0, 0.5], [-0.75, 0.5], [1.0, 0.0]])  # z = -1.25, 0, 1.25
    ((gw, gb),) = ref.gradients(xs, np.array([1, 1, 1]))[0]
    out = ref._out_grad(ref.logits(xs[2:]), np.array([1]))[0, 0] / 3  # only the last row counts
    assert list(gw[:, 0]) == [out * 1, out * 0] and gb[0] == out and out < 0


@pytest.mark.parametrize("loss", ["bce", "ce"])
@pytest.mark.parametrize("kinds", ARCHS, ids=["-".join(a) for a in ARCHS])
def test_audit_reference_gradient_is_the_exact_derivative(kinds, loss):
    """The reference's backward pass against exact forward-mode derivatives (Fractions).

    Given the loss gradient at the logits, every parameter and input
    gradient entry is a directional derivative, computed exactly by pushing
    a tangent through the forward pass; they must agree to the last bit.
    """
    rng = np.random.default_rng(zlib.crc32(f"{kinds}{loss}".encode()))
    n_in, k, m = 3, (1 if loss == "bce" else 3), 4
    params = _random_params(list(kinds), n_in, k, rng)
    x = rng.normal(size=(m, n_in))
    y = rng.integers(0, 2 if loss == "bce" else k, size=m)
    ref = _Reference(kinds, params, loss, exact=True)
    grads, gx = ref.gradients(x, y)
    fp = [(fraction_array(w), fraction_array(b)) for w, b in params]
    fx = fraction_array(x)
    zero_p, zero_x = zero_tangents(fp, fx)
    z, _ = dual_forward(kinds, fp, fx, zero_p, zero_x)
    assert (fraction_array(ref.logits(x)) == z).all()  # the forward passes agree exactly
    gz = fraction_array(ref._out_grad(ref.logits(x), y)) / m  # d mean-loss / d logits
    # the loss gradient itself: sigmoid / softmax minus the one-hot label (float64 check)
    zf = np.array(z, dtype=np.float64)
    if loss == "bce":
        want = (1 / (1 + np.exp(-zf[:, 0])) - y)[:, None]
    else:
        e = np.exp(zf - zf.max(axis=1, keepdims=True))
        want = e / e.sum(axis=1, keepdims=True) - np.eye(k)[y]
    np.testing.assert_allclose(np.array(gz * m, dtype=np.float64), want, rtol=1e-13, atol=1e-15)

    def along(dparams, dx):
        _, t = dual_forward(kinds, fp, fx, dparams, dx)
        return (gz * t).sum()

    for li, (w, b) in enumerate(fp):
        for which, arr in ((0, w), (1, b)):
            for idx in np.ndindex(arr.shape):
                d = [(dw.copy(), db.copy()) for dw, db in zero_p]
                d[li][which][idx] = Fraction(1)
                assert fraction_array(grads[li][which])[idx] == along(d, zero_x), (li, which, idx)
    for idx in np.ndindex(fx.shape):
        dx = zero_x.copy()
        dx[idx] = Fraction(1)
        assert fraction_array(gx)[idx] == along(zero_p, dx), idx
    # the float64 reference: the same gradients to rounding error
    fgrads, fgx = _Reference(kinds, params, loss, exact=False).gradients(x, y)
    for (gw, gb), (fw, fb) in zip(grads, fgrads, strict=True):
        np.testing.assert_allclose(fw, np.array(gw, np.float64), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(fb, np.array(gb, np.float64), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fgx, np.array(gx, np.float64), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("kinds", [a for a in ARCHS if a[0] == "linear"], ids="-".join)
def test_audit_model_views_handle_any_relu_placement(kinds):
    """The model audit's MLP view (Dense, falsification, oracle) on the same architectures."""
    rng = np.random.default_rng(zlib.crc32(str(kinds).encode()))
    params = _random_params(list(kinds), 3, 2, rng)
    it = iter(params)
    model = Sequential(
        *(
            _set_linear(Linear(2, 2, rng=rng), *next(it)) if kind == "linear" else ReLU()
            for kind in kinds
        )
    )
    layers = dense_layers(model)
    relu = [la.relu for la in layers]
    pf = [(la.w_nom, la.b_nom) for la in layers]
    x = rng.normal(size=(5, 3))
    fp = [(fraction_array(w), fraction_array(b)) for w, b in params]
    fx = fraction_array(x)
    zero_p, zero_x = zero_tangents(fp, fx)
    z, _ = dual_forward(kinds, fp, fx, zero_p, zero_x)
    assert (fraction_array(_exact_forward(pf, relu, x)) == z).all()
    zf, pre = _forward(pf, relu, x)
    np.testing.assert_allclose(zf, np.array(z, np.float64), rtol=1e-12, atol=1e-14)
    direction = rng.normal(size=zf.shape)
    grad = _input_grad(pf, relu, pre, direction)
    for idx in np.ndindex(fx.shape):
        dx = zero_x.copy()
        dx[idx] = Fraction(1)
        _, t = dual_forward(kinds, fp, fx, zero_p, dx)
        want = float((fraction_array(direction) * t).sum())
        assert grad[idx] == pytest.approx(want, rel=1e-9, abs=1e-12), idx
    lo, hi = oracle_bounds(layers, x, 0.0)  # a point box: the oracle encloses the exact output
    for idx in np.ndindex(z.shape):
        assert (
            Fraction(*lo[idx].as_integer_ratio()) <= z[idx] <= Fraction(*hi[idx].as_integer_ratio())
        )


def test_audit_model_passes_with_relu_last_and_consecutive_relus():
    sp = two_moons_splits(seed=1, n_train=10, n_val=10, n_test=40)
    rng = np.random.default_rng(3)
    model = Sequential(Linear(2, 4, rng=rng), ReLU(), ReLU(), Linear(4, 2, rng=rng), ReLU())
    r = audit_model(model, sp.test.x, sp.test.y, ThreatModel(1e-2), **FAST)
    assert r["passed"] and r["refuted"] == r["violations"] == 0
    assert r["counterexamples"] == r["outside_bounds"] == 0


@pytest.mark.parametrize("fused", [False, True], ids=["layered", "fused"])
def test_audit_training_exact_on_a_model_ending_with_relu(fused):
    """z < 0 at the last ReLU: real SGD leaves W at [1, -1], and so must the box."""
    model, x, y = _relu_last_model()
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=1, seed=0, fused=fused)
    r = audit_training(model, x, y, ThreatModel(0.0), cfg, vertices=0, randoms=0, exact=True)
    assert r["fused"] is fused
    assert r["steps"] == 2 and r["exact_runs"] == 4  # clean, plus, minus, adversarial-init
    assert r["passed"] and r["outside"] == 0, r["by_kind"]
    w = model.layers[0].nominal["weight"]
    assert list(w[:, 0]) == [1.0, -1.0]


ARCH_MODELS = {
    "relu-last": lambda rng: [Linear(2, 4, rng=rng), ReLU(), Linear(4, 1, rng=rng), ReLU()],
    "linear-linear": lambda rng: [Linear(2, 4, rng=rng), Linear(4, 1, rng=rng)],
    "relu-relu": lambda rng: [Linear(2, 4, rng=rng), ReLU(), ReLU(), Linear(4, 1, rng=rng)],
}


@pytest.mark.parametrize("fused", [False, True], ids=["layered", "fused"])
@pytest.mark.parametrize("arch", sorted(ARCH_MODELS))
def test_audit_training_exact_any_relu_placement(arch, fused):
    sp = two_moons_splits(seed=4, n_train=16)
    model = Sequential(*ARCH_MODELS[arch](np.random.default_rng(5)))
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=8, seed=2, fused=fused)
    r = audit_training(
        model, sp.train.x, sp.train.y, ThreatModel(1e-2), cfg, vertices=1, randoms=1, exact=True
    )
    assert r["fused"] is fused and r["steps"] == 4 and r["exact_runs"] == 6
    assert r["passed"] and r["max_excursion"] <= 0, r["by_kind"]
    assert r["clean_vs_nominal"] < 1e-12


# ---------------------------------------------------------------- the commands


def test_cli_audit_json_and_table(moons, tmp_path, invoke):
    sp, threat, model = moons
    path = save_model(tmp_path / "m.npz", model, threat, dataset={"name": "moons", "seed": 0})
    args = ["audit", path, "--models", 1, "--inputs", 1, "--pgd-steps", 2, "--max-points", 20]
    res = invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    for key in ("checked", "refuted", "violations", "naive_violations", "max_slack_ulps"):
        assert key in report
    assert report["refuted"] == report["violations"] == 0 and report["passed"]
    assert res.stderr == ""  # no progress bar with --json
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "refuted" in res.stdout and "audit passed" in res.stdout


def test_cli_audit_exits_1_when_the_engine_is_broken(moons, tmp_path, monkeypatch, invoke):
    sp, threat, model = moons
    path = save_model(tmp_path / "m.npz", model, threat, dataset={"name": "moons", "seed": 0})
    monkeypatch.setattr(FusedEngine, "logit_bounds", _claim_nominal_outputs)
    res = invoke("audit", path, "--epsilon", 0.1, "--models", 1, "--inputs", 1, "--json")
    assert res.exit_code == 1
    assert "audit FAILED" in res.stderr and "Traceback" not in res.output
    assert json.loads(res.stdout)["refuted"] > 0


def test_cli_audit_training(tmp_path, invoke):
    args = ["audit-training", "--dataset", "moons", "--epsilon", 0.01, "--train-size", 20]
    args += ["--hidden", 3, "--epochs", 1, "--batch-size", 10, "--exact", "--vertices", 1]
    res = invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and report["exact_runs"] > 0 and report["steps"] == 2
    res = invoke(*args[:-3])
    assert res.exit_code == 0, res.output
    assert "max excursion" in res.stdout and "passed" in res.stdout
    bad = invoke("audit-training", "--dataset", "moons", "--output", "x.npz")
    assert bad.exit_code == 2  # usage error: audit-training writes no model
