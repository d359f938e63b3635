"""The soundness audits (intervalnn.audit, ``intervalnn audit`` / ``audit-training``).

Small, fast versions of the model audit (exact oracle, falsification, naive
rounding) and of the training audit on Two-Moons, and proof that the audits
can fail: an engine made to round to nearest, or to claim bounds it did not
prove, is caught.
"""

from __future__ import annotations

import json
from fractions import Fraction
from itertools import product

import numpy as np
import pytest
from click.testing import CliRunner

import intervalnn.certify as certify_module
import intervalnn.interval as interval_module
import intervalnn.linalg as linalg_module
from intervalnn.audit import Dense, audit_model, audit_training, oracle_bounds
from intervalnn.cli import main
from intervalnn.datasets import two_moons_splits
from intervalnn.io import save_model
from intervalnn.kernels import cpu
from intervalnn.layers import mlp
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


def _exact_ibp(layers, x, eps):
    """Tightest IBP in exact rationals, by brute force over the endpoint products."""
    lo = [[Fraction(v) - Fraction(eps) for v in row] for row in x]
    hi = [[Fraction(v) + Fraction(eps) for v in row] for row in x]
    for la in layers:
        n, p = la.w_lo.shape
        new_lo, new_hi = [], []
        for a_row, b_row in zip(lo, hi, strict=True):
            rl, rh = [], []
            for j in range(p):
                sl, sh = Fraction(la.b_lo[j]), Fraction(la.b_hi[j])
                for i in range(n):
                    ps = [
                        u * Fraction(w)
                        for u, w in product((a_row[i], b_row[i]), (la.w_lo[i, j], la.w_hi[i, j]))
                    ]
                    sl, sh = sl + min(ps), sh + max(ps)
                rl.append(max(sl, Fraction(0)) if la.relu else sl)
                rh.append(max(sh, Fraction(0)) if la.relu else sh)
            new_lo.append(rl)
            new_hi.append(rh)
        lo, hi = new_lo, new_hi
    return lo, hi


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
    ex_lo, ex_hi = _exact_ibp(layers, x, 0.01)
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


def _claim_nominal_outputs(model, box):
    """A broken engine: the nominal model's output at the box centre as the 'bounds'."""
    z = model.forward_nominal(box.mid)
    return np.asarray(z, np.float64), np.asarray(z, np.float64)


def test_audit_catches_an_engine_that_claims_unproved_bounds(moons, monkeypatch):
    sp, _, model = moons
    threat = ThreatModel(1e-2, test_epsilon=0.1)  # wide test boxes: many points not robust
    monkeypatch.setattr(certify_module, "forward_bounds", _claim_nominal_outputs, raising=False)
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
    monkeypatch.setattr(linalg_module, "_gemm_constants", lambda k, dt: (zero, 1.0, zero, zero))
    monkeypatch.setattr(interval_module, "_error_factor", lambda n, dt: 0.0)
    monkeypatch.setattr(certify_module, "forward_bounds", lambda m, b: None, raising=False)


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


# ---------------------------------------------------------------- the commands


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_cli_audit_json_and_table(moons, tmp_path):
    sp, threat, model = moons
    path = save_model(tmp_path / "m.npz", model, threat, dataset={"name": "moons", "seed": 0})
    args = ["audit", path, "--models", 1, "--inputs", 1, "--pgd-steps", 2, "--max-points", 20]
    res = _invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    for key in ("checked", "refuted", "violations", "naive_violations", "max_slack_ulps"):
        assert key in report
    assert report["refuted"] == report["violations"] == 0 and report["passed"]
    assert res.stderr == ""  # no progress bar with --json
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    assert "refuted" in res.stdout and "audit passed" in res.stdout


def test_cli_audit_exits_1_when_the_engine_is_broken(moons, tmp_path, monkeypatch):
    sp, threat, model = moons
    path = save_model(tmp_path / "m.npz", model, threat, dataset={"name": "moons", "seed": 0})
    monkeypatch.setattr(certify_module, "forward_bounds", _claim_nominal_outputs, raising=False)
    res = _invoke("audit", path, "--epsilon", 0.1, "--models", 1, "--inputs", 1, "--json")
    assert res.exit_code == 1
    assert "audit FAILED" in res.stderr and "Traceback" not in res.output
    assert json.loads(res.stdout)["refuted"] > 0


def test_cli_audit_training(tmp_path):
    args = ["audit-training", "--dataset", "moons", "--epsilon", 0.01, "--train-size", 20]
    args += ["--hidden", 3, "--epochs", 1, "--batch-size", 10, "--exact", "--vertices", 1]
    res = _invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    report = json.loads(res.stdout)
    assert report["passed"] and report["exact_runs"] > 0 and report["steps"] == 2
    res = _invoke(*args[:-3])
    assert res.exit_code == 0, res.output
    assert "max excursion" in res.stdout and "passed" in res.stdout
    bad = _invoke("audit-training", "--dataset", "moons", "--output", "x.npz")
    assert bad.exit_code == 2  # usage error: audit-training writes no model
