"""The training audit under the threat models beyond FullCert (issue 13).

Concrete poisonings within each threat model (k-of-n features, epsilon =
inf with clipping, label flips, paired, trusted points) and the training
rules (momentum, weight decay, rate decay, clipping) must stay inside the
certified box at every step, and no poisoned model may flip a certified test
point; a broken bound (an accumulation with k' - 1 terms, a box that ignores
momentum, a shrunken box, a certifier that claims too much) must be caught.
"""

from __future__ import annotations

import dataclasses
import math
from fractions import Fraction

import numpy as np
import pytest

import intervalnn.certify as certify_module
import intervalnn.engine.layered as layered_module
import intervalnn.poisoning as poisoning_module
from intervalnn.audit import audit_training
from intervalnn.audit import training as training_module
from intervalnn.audit.training import Rules, _Reference, learning_rate, plan_attacks
from intervalnn.certify import certify
from intervalnn.datasets import two_moons_splits
from intervalnn.layers import mlp
from intervalnn.optim import PLAIN, SGD
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train

SPLITS = two_moons_splits(seed=0, n_train=100, n_pretrain=300, n_test=200)
BASE = dict(epochs=3, learning_rate=0.5, batch_size=50, pretrain_epochs=20, seed=1, fused=False)
TRUSTED = np.arange(100) < 50  # the first half of the training points

# name: (threat model, extra training options, trusted mask)
CASES = {
    "k-of-n": (ThreatModel(0.1, 0.0, poison_count=2), {}, None),
    "fullcert-clip-decay": (ThreatModel(0.01, 0.0), dict(fused=True, clip=0.5, lr_decay=0.3), None),
    "inf-clamp": (ThreatModel(math.inf, 0.0, poison_count=2), dict(clip=0.5), None),
    "inf-norm": (
        ThreatModel(math.inf, 0.0, poison_count=2),
        dict(clip=0.5, clip_method="norm"),
        None,
    ),
    "flips": (ThreatModel(0.0, 0.0, label_flips=2), dict(clip=0.2), None),
    "flips-target": (ThreatModel(0.0, 0.0, label_flips=2, label_target=1), dict(clip=0.2), None),
    "paired": (
        ThreatModel(0.1, 0.0, poison_count=2, label_flips=2, paired=True),
        dict(clip=0.2),
        None,
    ),
    "trusted": (ThreatModel(0.1, 0.0, poison_count=2, label_flips=1), dict(clip=0.2), TRUSTED),
    "momentum-wd": (
        ThreatModel(0.05, 0.0, poison_count=2),
        dict(momentum=0.9, weight_decay=0.1, lr_decay=0.1, lr_min=0.05),
        None,
    ),
    "nesterov-norm-steps": (
        ThreatModel(0.05, 0.0, poison_count=2),
        dict(momentum=0.9, nesterov=True, clip=0.5, clip_method="norm", steps=5),
        None,
    ),
}


def _audit(threat, extra, trusted=None, *, splits=SPLITS, hidden=8, exact=False, **kw):
    model = mlp(2, 1, hidden=hidden, layers=2, seed=0)
    cfg = TrainConfig(**{**BASE, **extra})
    sp = splits
    return audit_training(
        model, sp.train.x, sp.train.y, threat, cfg,
        pretrain_x=sp.pretrain.x, pretrain_y=sp.pretrain.y,
        test_x=sp.test.x, test_y=sp.test.y, trusted=trusted,
        vertices=1, randoms=1, exact=exact, **kw,
    )  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_poisoned_runs_stay_inside_and_flip_no_certified_point(case):
    threat, extra, trusted = CASES[case]
    r = _audit(threat, extra, trusted)
    assert r["steps"] == r["planned_steps"] == extra.get("steps", 6)
    assert r["passed"], r["by_kind"]
    assert r["outside"] == 0 and r["max_excursion"] <= 0
    assert r["certified_flipped"] == 0
    assert all(row["certified_flipped"] == 0 for row in r["by_kind"].values())
    assert r["test_certified"] > 0  # the certificate claims something ...
    assert r["uncertified_flipped"] > 0  # ... and the attacks do flip the points it leaves out
    # the reference follows the library's rules: its clean run is the nominal model
    assert r["clean_vs_nominal"] < 1e-12
    kinds = set(r["by_kind"])
    first = (
        "flip" if threat.label_flips else "vertex" if math.isfinite(threat.epsilon) else "far-1e6"
    )
    if threat.is_fullcert:  # every point moves: no choice of points
        assert {"clean", "plus", "minus", "vertex", "adversarial-step"} <= kinds
    else:
        assert {"clean", f"influential/{first}", f"random/{first}"} <= kinds
    k = threat.feature_budget(100)
    for kind, row in r["by_kind"].items():  # the attacks stay within the budgets
        assert row["features"] <= k and row["labels"] <= threat.label_flips, kind
        if threat.paired and row["features"] and row["labels"]:
            assert kind.endswith("+flip")


@pytest.mark.parametrize(
    "threat, extra, trusted",
    [
        (ThreatModel(0.05, 0.0, poison_count=2), {}, None),
        (ThreatModel(math.inf, 0.0, poison_count=1), dict(clip=0.5), None),
        (ThreatModel(math.inf, 0.0, poison_count=1), dict(clip=0.5, clip_method="norm"), None),
        (ThreatModel(0.0, 0.0, label_flips=2, label_target=0), dict(clip=0.2), None),
        (
            ThreatModel(0.05, 0.0, poison_count=1, label_flips=2, paired=True),
            dict(clip=0.2, momentum=0.5, nesterov=True, weight_decay=0.2, lr_decay=0.5),
            np.arange(24) < 6,
        ),
    ],
    ids=["k-of-n", "inf-clamp", "inf-norm", "flips-target", "paired-trusted-rules"],
)
def test_exact_rational_sgd_stays_inside(threat, extra, trusted):
    sp = two_moons_splits(seed=2, n_train=24, n_pretrain=100, n_test=50)
    extra = {"epochs": 2, "batch_size": 12, **extra}
    r = _audit(threat, extra, trusted, splits=sp, hidden=4, exact=True)
    assert r["exact_runs"] >= 3 and r["steps"] == 4
    assert r["passed"] and r["max_excursion"] <= 0, r["by_kind"]
    exact = {k: row for k, row in r["by_kind"].items() if k.endswith("(exact)")}
    assert "clean (exact)" in exact and len(exact) == r["exact_runs"]
    assert all(row["outside"] == 0 for row in exact.values())
    assert r["certified_flipped"] == 0


def test_the_kept_step_is_the_one_train_keeps_by_validation():
    threat, extra, trusted = CASES["inf-clamp"]
    extra = {**extra, "epochs": 4, "min_step": 2}
    sp = SPLITS
    r = _audit(threat, extra, trusted, val_x=sp.val.x, val_y=sp.val.y)
    model = mlp(2, 1, hidden=8, layers=2, seed=0)
    cfg = TrainConfig(**{**BASE, **extra})
    res = train(model, sp.train.x, sp.train.y, threat, cfg, sp.val.x, sp.val.y, sp.pretrain.x,
                sp.pretrain.y)  # fmt: skip
    assert r["steps"] == 8 and r["kept_step"] == res.best["step"] == 2
    assert r["test_certified"] == int(certify(model, sp.test.x, sp.test.y, threat).certified.sum())
    assert r["passed"] and r["certified_flipped"] == 0 and r["uncertified_flipped"] > 0
    # without validation the last model is kept and checked
    assert _audit(threat, extra, trusted)["kept_step"] == 8


@pytest.mark.parametrize("paired", [False, True])
def test_three_classes_flipped_to_the_most_likely_other_class(paired):
    """Cross-entropy on three blobs, untargeted flips (exact runs too)."""
    rng = np.random.default_rng(0)
    centers = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])

    def blobs(m):
        y = rng.integers(0, 3, m)
        return centers[y] + rng.normal(size=(m, 2)), y

    (x, y), (px, py), (tx, ty) = blobs(24), blobs(200), blobs(100)
    threat = ThreatModel(0.1, 0.0, poison_count=2, label_flips=2, paired=paired)
    model = mlp(2, 3, hidden=4, layers=2, seed=0)
    cfg = TrainConfig(
        epochs=2, batch_size=12, learning_rate=0.2, loss="ce", pretrain_epochs=20, clip=0.2
    )
    r = audit_training(
        model, x, y, threat, cfg, pretrain_x=px, pretrain_y=py, test_x=tx, test_y=ty,
        exact=True, vertices=1, randoms=1,
    )  # fmt: skip
    assert r["passed"] and r["outside"] == 0 and r["exact_runs"] == 9
    assert r["test_certified"] > 0 and r["certified_flipped"] == 0
    assert r["uncertified_flipped"] > 0
    assert r["by_kind"]["influential/flip"]["labels"] == 2


# ---------------------------------------------------------------- the attacks themselves


@pytest.mark.parametrize("paired", [False, True])
@pytest.mark.parametrize("eps", [0.1, math.inf])
def test_attacks_respect_the_threat_model(eps, paired):
    rng = np.random.default_rng(7)
    n, classes = 40, 3
    x = rng.uniform(0, 1, size=(n, 3))
    y = rng.integers(0, classes, size=n)
    trusted = rng.random(n) < 0.3
    threat = ThreatModel(
        eps, 0.0, domain=(0.0, 1.0), poison_count=4, label_flips=6, label_target=2, paired=paired
    )
    params = [(rng.normal(size=(3, 5)), rng.normal(size=5)), (rng.normal(size=(5, 3)), np.zeros(3))]
    probe = _Reference(["linear", "relu", "linear"], params, "ce", False)
    attacks = plan_attacks(x, y, threat, trusted, probe, classes, rng, vertices=2, randoms=2)
    assert attacks[0].kind == "clean" and (attacks[0].inputs(x) == x).all()
    assert {a.kind.split("/")[0] for a in attacks[1:]} == {"influential", "random"}
    for a in attacks:
        flipped = a.labels != y
        assert not (trusted & (a.moved | flipped)).any(), a.kind  # trusted rows untouched
        assert a.moved.sum() <= 4 and flipped.sum() <= 6, a.kind
        assert (a.labels[flipped] == 2).all()  # only to the target class
        if paired:
            assert (a.moved | flipped).sum() <= 6, a.kind
        if a.values is None:  # re-poisoned every step
            continue
        data = a.inputs(x)
        moved = (data != x).any(axis=1)
        assert not (moved & ~a.moved).any(), a.kind  # only the chosen rows move
        assert ((data >= 0) & (data <= 1)).all()  # in the domain
        if math.isfinite(eps):
            assert (np.abs(data - x) <= eps).all(), a.kind
    if math.isinf(eps):  # the domain's corners
        corner = next(a for a in attacks if a.kind == "influential/corner+flip")
        assert corner.moved.any() and np.isin(corner.values, [0.0, 1.0]).all()
    full = plan_attacks(x, y, ThreatModel(0.1), np.zeros(n, bool), probe, classes, rng)
    assert {"plus", "minus", "adversarial-init", "adversarial-step"} <= {a.kind for a in full}
    assert all(a.moved.all() for a in full[1:])


def test_untargeted_flips_go_to_the_most_likely_other_class():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(20, 2)), rng.integers(0, 3, size=20)
    probe = _Reference(["linear"], [(rng.normal(size=(2, 3)), np.zeros(3))], "ce", False)
    attacks = plan_attacks(x, y, ThreatModel(0.0, label_flips=5), np.zeros(20, bool), probe, 3, rng)
    z = probe.logits(x)
    assert [a.kind for a in attacks] == ["clean", "influential/flip", "random/flip"]
    for a in attacks[1:]:
        rows = np.flatnonzero(a.labels != y)
        assert rows.size == 5
        for r in rows:
            other = z[r].copy()
            other[y[r]] = -np.inf
            assert a.labels[r] == other.argmax()


def test_influential_points_have_the_largest_gradients():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(30, 2)), rng.integers(0, 2, size=30)
    probe = _Reference(["linear"], [(rng.normal(size=(2, 1)), np.zeros(1))], "bce", False)
    threat = ThreatModel(0.1, poison_count=3)
    attacks = plan_attacks(x, y, threat, np.zeros(30, bool), probe, 2, rng, 1, 0)
    chosen = next(a for a in attacks if a.kind == "influential/vertex").moved
    norms = [
        sum(float((p**2).sum()) for pair in probe.sample_gradients(x[i : i + 1], y[i : i + 1])
            for p in pair)
        for i in range(30)
    ]  # fmt: skip
    assert set(np.flatnonzero(chosen)) == set(np.argsort(norms)[-3:])


# ---------------------------------------------------------------- the reference's rules


def test_reference_rules_by_hand():
    """One weight, one point, the rules spelled out in exact rationals."""
    w0 = Fraction(1, 2)
    params = [(np.array([[0.5]]), np.array([0.0]))]
    rules = Rules(clip=0.125, weight_decay=0.25, momentum=0.5, nesterov=True)
    ref = _Reference(["linear"], params, "bce", True, rules)
    x, y = np.array([[1.0]]), np.array([0])
    cfg = TrainConfig(learning_rate=0.5, lr_decay=1.0, lr_min=0.1)
    w, v = w0, None
    for t in (1, 2, 3):
        rate = learning_rate(cfg, t)
        assert rate == SGD(0.5, decay=1.0, lr_min=0.1).rate(t)  # the library's schedule
        s = 1 / (1 + math.exp(-float(w)))
        g = min(Fraction(1, 8), Fraction(s))  # d loss / dw = sigmoid(w) x with y = 0, clamped
        v = g if v is None else Fraction(1, 2) * v + g
        d = g + Fraction(1, 2) * v
        w = (1 - rate * Fraction(1, 4)) * w - rate * d
        ref.step(x, y, rate)
        assert ref.params[0][0][0, 0] == w  # clamped (sigmoid >= 1/2 > 1/8): exact


def test_reference_norm_clipping_scales_each_sample():
    rng = np.random.default_rng(0)
    params = [(rng.normal(size=(2, 1)), rng.normal(size=1))]
    x, y = rng.normal(size=(5, 2)) * 10, np.array([0, 1, 0, 1, 1])
    ref = _Reference(["linear"], params, "bce", False, Rules(clip=0.3, clip_method="norm"))
    per = ref.sample_gradients(x, y)
    clipped = ref._clip(per)
    for i in range(5):
        n_in = math.sqrt(sum(float((p[i] ** 2).sum()) for pair in per for p in pair))
        n_out = math.sqrt(sum(float((p[i] ** 2).sum()) for pair in clipped for p in pair))
        assert n_out == pytest.approx(min(n_in, 0.3), rel=1e-12)
    mean = ref.batch_gradient(x, y)
    for (gw, gb), (cw, cb) in zip(mean, clipped, strict=True):
        np.testing.assert_allclose(gw, cw.mean(axis=0), rtol=1e-14)
        np.testing.assert_allclose(gb, cb.mean(axis=0), rtol=1e-14)


# ---------------------------------------------------------------- broken bounds are caught


def _fewer_terms(monkeypatch):
    """A k-of-n accumulation with k' - 1 terms (AGT's sum one poisoned point short)."""
    plan = poisoning_module.Poisoning.plan

    def broken(self, attackable):
        p = plan(self, attackable)
        return p._replace(k=max(p.k - 1, 0))

    monkeypatch.setattr(poisoning_module.Poisoning, "plan", broken)


@pytest.mark.parametrize("case", ["inf-clamp", "flips"])
def test_an_accumulation_one_term_short_is_caught(case, monkeypatch):
    threat, extra, trusted = CASES[case]
    threat = ThreatModel(
        threat.epsilon, 0.0, poison_count=threat.poison_count and 1,
        label_flips=min(threat.label_flips, 1),
    )  # fmt: skip
    assert _audit(threat, extra, trusted)["passed"]  # sound: passes
    _fewer_terms(monkeypatch)
    r = _audit(threat, extra, trusted)
    assert not r["passed"] and r["outside"] > 0 and r["max_excursion"] > 0
    assert r["by_kind"]["clean"]["outside"] == 0  # the clean run is still inside
    assert (
        r["by_kind"]["influential/far-1e6" if case == "inf-clamp" else "influential/flip"][
            "outside"
        ]
        > 0
    )


def test_a_box_that_ignores_momentum_is_caught(monkeypatch):
    """Interval (and nominal) SGD without momentum: the real momentum SGD leaves the box."""
    real = layered_module.sgd_update

    def plain(params, grads, nominal, nominal_grads, rate, rule=PLAIN, velocity=None):
        return real(params, grads, nominal, nominal_grads, rate, rule._replace(momentum=0.0,
                    nesterov=False), None)  # fmt: skip

    threat, extra, _ = CASES["momentum-wd"]
    monkeypatch.setattr(layered_module, "sgd_update", plain)
    r = _audit(threat, extra)
    assert not r["passed"] and r["by_kind"]["clean"]["outside"] > 0


def test_a_shrunken_box_is_caught(monkeypatch):
    """The hook sees each parameter box shrunk to its middle half: the runs leave it."""
    real = training_module.train

    def shrinking(*args, on_step, **kw):
        def hook(step, box, nominal):
            for k, b in box.items():
                mid, rad = (b.lo + b.hi) / 2, (b.hi - b.lo) / 4
                box[k] = type(b)._new(mid - rad, mid + rad)
            on_step(step, box, nominal)

        return real(*args, on_step=hook, **kw)

    monkeypatch.setattr(training_module, "train", shrinking)
    threat, extra, trusted = CASES["k-of-n"]
    r = _audit(threat, extra, trusted)
    assert not r["passed"] and r["outside"] > 0 and r["max_excursion"] > 0


def test_a_certifier_that_claims_too_much_is_caught(monkeypatch):
    """Every test point 'certified': poisoned models misclassify some of them."""
    monkeypatch.setattr(certify_module, "margins", lambda lo, hi, y: np.ones(len(y)))
    threat, extra, trusted = CASES["inf-clamp"]
    r = _audit(threat, extra, trusted)
    assert r["outside"] == 0  # the box itself is sound
    assert r["test_certified"] == r["test_size"] == 200
    assert r["certified_flipped"] > 0 and not r["passed"]


def test_certified_points_are_attacked_in_their_test_box(monkeypatch):
    """A certifier claiming every correctly classified point: at test radius 0 the clean run
    flips none of them, at 0.3 the gradient-sign attack on the test inputs flips some."""
    real = certify_module.certify

    def claims_correct(model, x, y, threat, batch_size=1024):
        r = real(model, x, y, threat, batch_size)
        return dataclasses.replace(r, certified=r.nominal_correct.copy())

    monkeypatch.setattr(certify_module, "certify", claims_correct)
    for radius, flips in [(0.0, False), (0.3, True)]:
        r = _audit(ThreatModel(0.05, radius, poison_count=2), {})
        assert r["outside"] == 0
        assert (r["by_kind"]["clean"]["certified_flipped"] > 0) is flips, radius


# ---------------------------------------------------------------- the command


def test_cli_audit_training_poisoning(invoke):
    import json

    args = ["audit-training", "--dataset", "moons", "--epsilon", "inf", "--inference-epsilon", 0]
    args += ["--poison-count", 2, "--clip", 0.5, "--label-flips", 2, "--paired", "--trusted", 20]
    args += ["--train-size", 60, "--hidden", 4, "--epochs", 1, "--batch-size", 30]
    args += ["--momentum", 0.5, "--weight-decay", 0.1, "--test-size", 50]
    res = invoke(*args, "--json")
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["passed"] and r["steps"] == 2 and r["trusted"] == 20
    assert r["threat"]["poison_count"] == 2 and r["threat"]["paired"]
    assert r["certified_flipped"] == 0 and r["test_size"] == 50
    assert "influential/far-1e6+flip" in r["by_kind"] and r["kept_step"] == 2
    res = invoke(*args, "--validate", "--min-step", 1, "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["kept_step"] in (1, 2)
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    assert "cert. flipped" in res.stdout and "no certified point flipped" in res.stdout
    bad = invoke(*args[:-4], "--train-size", 1)
    assert bad.exit_code == 2 and "train-size" in bad.output
