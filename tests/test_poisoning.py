"""Soundness of k-of-n poisoning, label flips, clipping and the training rules (issue 13).

The library's parameter box after every SGD step (``train(..., on_step=...)``)
must contain every parameter that SGD reaches on any dataset of the threat
model.  Each test trains a tiny random network (1-3 Linear layers, widths
1-5, bce or ce, 3-12 points, float64 or float32, magnitudes from 1e-300 to
1e100), then poisons the data *concretely and adversarially* within the
threat model -- which k points (random, most influential at the start, all
in the first batch), where their features go (eps-box vertices, the
gradient-sign vertex, far away for eps = inf), which labels flip (to the
target or to other classes), never a trusted row -- and replays the same
batches with the independent reference SGD of ``tests/oracle.py``
(:func:`oracle.per_sample_sgd`: exact rationals with MPFR for sigmoid /
softmax / square roots, and round-to-nearest float SGD).  Every exact and
float parameter after every step must lie in that step's box, compared
exactly; so must the nominal model.

Unit tests check :class:`intervalnn.poisoning.Clipping` against exact clipping
of box members and :func:`intervalnn.poisoning._select` /
``Poisoning.batch_gradient``'s accumulation against a brute force over all
poisoned subsets of at most ``k'`` rows.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from oracle import (
    Exact,
    FloatArith,
    arch_of,
    clip_gradient,
    epoch_batches,
    fraction,
    min_subset_sum,
    outside_box,
    per_sample_sgd,
    q,
    rates_of,
)

from intervalnn.interval import Interval
from intervalnn.layers import Linear, ReLU, Sequential
from intervalnn.losses import get_loss
from intervalnn.poisoning import Clipping, Poisoning, _products, _select
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train

DTYPES = (np.float64, np.float32)
# the float SGD replay: sums left to right as written, no fused multiply-adds
ORDER, FMA = "natural", False


# ---------------------------------------------------------------- a random tiny problem


def random_model(rng, n_in, n_out, depth, dtype, w_scale):
    """Linear/ReLU stack of ``depth`` Linear layers (widths 1-5), weights scaled by ``w_scale``.

    Every order the path accepts: 0, 1 or 2 ReLUs after each Linear (Linear after
    Linear, consecutive ReLUs, a ReLU last).
    """
    sizes = [n_in] + [int(rng.integers(1, 6)) for _ in range(depth - 1)] + [n_out]
    layers = []
    for i in range(depth):
        layers.append(Linear(sizes[i], sizes[i + 1], rng=rng, dtype=dtype))
        relus = int(rng.choice([0, 1, 1, 1, 2])) if i < depth - 1 else int(rng.random() < 0.15)
        layers.extend(ReLU() for _ in range(relus))
    model = Sequential(*layers)
    params = {
        k: (v.lo.astype(np.float64) * w_scale).astype(dtype)
        for k, v in model.named_params().items()
    }
    model.load(
        {k: Interval(v) for k, v in params.items()}, {k: v.copy() for k, v in params.items()}
    )
    return model


class Case:
    """A random training problem, threat model and configuration; the library's boxes."""

    def __init__(
        self, seed, threat_kind, rule=None, dtype=None, magnitude=None, n=None, k=None, batch=None
    ):
        rng = np.random.default_rng(seed)
        self.rng = rng
        self.dtype = dtype or DTYPES[int(rng.integers(2))]
        self.loss = "bce" if rng.random() < 0.5 else "ce"
        k_out = 1 if self.loss == "bce" else int(rng.integers(2, 5))
        self.classes = max(k_out, 2)
        n = self.n = int(rng.integers(3, 13)) if n is None else n
        d = int(rng.integers(1, 4))
        mag = (
            magnitude
            if magnitude is not None
            else rng.choice(["tiny", "small", "unit", "unit", "large"])
        )
        self.magnitude = mag
        x_scale, w_scale = {"tiny": (1e-300, 1.0), "small": (1e-3, 1.0), "unit": (1.0, 1.0),
                            "large": (1e100, 1e-100)}[mag]  # fmt: skip
        big = 1e100 if self.dtype == np.float64 else 1e15
        if mag == "large":
            x_scale, w_scale = (big, 1 / big) if rng.random() < 0.5 else (1.0, big)
        self.x = rng.uniform(-1, 1, size=(n, d)) * x_scale
        self.y = rng.integers(0, self.classes, size=n)
        depth = int(rng.integers(1, 4))
        self.model = random_model(rng, d, k_out, depth, self.dtype, w_scale)
        self.init = {k: v.copy() for k, v in self.model.named_nominal().items()}
        self.arch = arch_of(self.model)
        self.batch_size = int(rng.integers(1, n + 1)) if batch is None else batch
        self.k = k
        self.steps = int(rng.integers(1, 5)) if mag != "large" else int(rng.integers(1, 3))
        lr = float(rng.choice([0.05, 0.25, 1.0])) if mag != "large" else 1e-3
        self.trusted = None
        if rng.random() < 0.3:
            self.trusted = rng.random(n) < 0.4
        self.threat = self._threat(threat_kind, rng, n, x_scale)
        kw = dict(rule or {})
        needs_clip = math.isinf(self.threat.epsilon) and self.threat.domain is None
        if needs_clip and "clip" not in kw:
            kw["clip"] = float(rng.choice([0.1, 1.0, 3.0]))
            kw["clip_method"] = str(rng.choice(["clamp", "norm"]))
        if "clip" not in kw and rng.random() < 0.25:
            kw["clip"] = float(rng.choice([0.05, 0.5, 2.0]))
            kw["clip_method"] = str(rng.choice(["clamp", "norm"]))
        self.config = TrainConfig(
            epochs=1, learning_rate=lr, batch_size=self.batch_size, seed=int(rng.integers(100)),
            loss=self.loss, steps=self.steps, **kw,
        )  # fmt: skip
        self.boxes, self.nominals = [], []

        def hook(step, box, nominal):
            self.boxes.append({k: (b.lo.copy(), b.hi.copy()) for k, b in box.items()})
            self.nominals.append({k: v.tolist() for k, v in nominal.items()})

        self.result = train(self.model, self.x, self.y, self.threat, self.config,
                            on_step=hook, trusted=self.trusted)  # fmt: skip
        self.stopped = self.result.stopped
        self.batches = epoch_batches(n, self.batch_size, self.config.seed, len(self.boxes))
        self.rates = rates_of(lr, len(self.boxes), self.config.lr_decay, self.config.lr_min)

    def _threat(self, kind, rng, n, x_scale):
        eps = x_scale * float(rng.choice([1e-3, 0.05, 0.5]))
        k = int(rng.integers(1, n)) if self.k is None else self.k  # 1..n-1
        kl = int(rng.integers(1, n + 1)) if self.k is None else self.k
        target = int(rng.integers(self.classes)) if rng.random() < 0.5 else None
        if kind == "features":
            return ThreatModel(eps, poison_count=k)
        if kind == "inf":
            return ThreatModel(math.inf, test_epsilon=0.0, poison_count=k)
        if kind == "labels":
            return ThreatModel(0.0, label_flips=kl, label_target=target)
        if kind == "paired":
            return ThreatModel(
                eps, poison_count=k, label_flips=kl, label_target=target, paired=True
            )
        if kind == "independent":
            e = math.inf if rng.random() < 0.3 else eps
            return ThreatModel(e, test_epsilon=0.0, poison_count=k, label_flips=kl,
                               label_target=target)  # fmt: skip
        if kind == "fullcert":
            return ThreatModel(eps)
        dom = (-x_scale * float(rng.choice([1.0, 2.0])), x_scale * float(rng.choice([1.0, 1.5])))
        if kind == "domain":  # a clipped ball, k of n points
            return ThreatModel(eps, domain=dom, poison_count=k)
        if kind == "inf-domain":  # anywhere in the domain, no clipping needed
            kl = kl if rng.random() < 0.5 else 0
            return ThreatModel(math.inf, test_epsilon=0.0, domain=dom, poison_count=k,
                               label_flips=kl)  # fmt: skip
        raise AssertionError(kind)

    # ------------------------------------------------------------ concrete poisonings

    def _input_gradients(self):
        """Each row's d loss / d x at the initial nominal model, in float64 (NumPy)."""
        h, acts = self.x.astype(np.float64), []
        with np.errstate(all="ignore"):
            for kind, name in self.arch:
                acts.append(h)
                if kind == "relu":
                    h = np.maximum(h, 0)
                else:
                    h = (
                        h @ self.init[f"{name}.weight"].astype(np.float64)
                        + self.init[f"{name}.bias"]
                    )
            if self.loss == "bce":
                g = 1 / (1 + np.exp(-h)) - self.y[:, None]
            else:
                p = np.exp(h - h.max(axis=1, keepdims=True))
                g = p / p.sum(axis=1, keepdims=True) - np.eye(h.shape[1])[self.y]
            for (kind, name), a in zip(reversed(self.arch), reversed(acts), strict=True):
                g = (
                    g * (a > 0)
                    if kind == "relu"
                    else g @ self.init[f"{name}.weight"].astype(np.float64).T
                )
        return np.nan_to_num(g)

    def poisonings(self, count=4):
        """Concrete poisoned datasets ``(x as Fraction rows, y)`` within the threat model."""
        rng, n, th = self.rng, self.n, self.threat
        free = np.flatnonzero(~self.trusted) if self.trusted is not None else np.arange(n)
        kf, kl = th.feature_budget(n), th.label_flips
        grad = self._input_gradients()
        influence = np.abs(grad).sum(axis=1)
        first = self.batches[0] if self.batches else []
        out = []
        for j in range(count):
            strategy = ("random", "influential", "first-batch", "random")[j % 4]
            if strategy == "influential":
                order = sorted(free, key=lambda i: -influence[i])
            elif strategy == "first-batch":
                order = [i for i in first if i in free] + [i for i in free if i not in first]
            else:
                order = list(rng.permutation(free))
            if th.paired:
                chosen = order[: max(kf, kl)]
                feat, lab = chosen[:kf], list(rng.permutation(chosen))[:kl] if chosen else []
            else:
                feat = order[:kf]
                # disjoint sets (kf + kl points touched), or random (overlapping) ones
                lab = list(rng.permutation(free))[:kl] if j % 2 else (order[kf:] + order[:kf])[:kl]
            if rng.random() < 0.25 and len(feat) > 1:  # sometimes fewer than the budget
                feat = feat[: int(rng.integers(1, len(feat)))]
            xs = [[Fraction(float(v)) for v in row] for row in self.x]
            y = self.y.copy()
            for i in feat:
                xs[i] = self._move(i, grad[i], j)
            for i in lab:
                if th.label_target is not None:
                    y[i] = th.label_target
                else:
                    y[i] = (y[i] + int(rng.integers(1, self.classes))) % self.classes
            out.append((xs, y))
        return out

    def _move(self, i, g, j):
        rng, eps, dom = self.rng, self.threat.epsilon, self.threat.domain
        row = self.x[i]
        if dom is not None:
            lo, hi = Fraction(dom[0]), Fraction(dom[1])
            if math.isinf(eps):  # a vertex of the domain, or a random point in it
                if j % 2:
                    return [hi if v > 0 else lo for v in g]
                return [lo + (hi - lo) * Fraction(float(rng.random())) for _ in row]
            sign = rng.choice([-1, 1], size=row.shape)
            moved = [
                Fraction(float(v)) + int(s) * Fraction(eps) for v, s in zip(row, sign, strict=True)
            ]
            return [min(max(v, lo), hi) for v in moved]
        if math.isinf(eps):
            far = float(rng.choice([1e6, 1e300, 1.0, 1e-300]))
            sign = np.where(g > 0, 1.0, -1.0) if j % 2 else rng.choice([-1.0, 1.0], size=row.shape)
            return [Fraction(float(s * far)) for s in sign]
        if j % 2:
            sign = np.where(g >= 0, 1.0, -1.0) * (1 if rng.random() < 0.7 else -1)
        else:
            sign = rng.choice([-1.0, 1.0], size=row.shape)
        return [Fraction(float(v)) + int(s) * Fraction(eps) for v, s in zip(row, sign, strict=True)]

    # ------------------------------------------------------------ replay

    def replay(self, xs, y, arith):
        c = self.config
        return per_sample_sgd(
            self.arch, self.init, xs, y, self.loss, self.batches, self.rates, arith,
            clip=c.clip, clip_method=c.clip_method, weight_decay=c.weight_decay,
            momentum=c.momentum, nesterov=c.nesterov,
        )  # fmt: skip

    def float_rows(self, xs):
        """The float64 rows of an exact poisoned dataset, or None where one is not a float."""
        rows = np.array([[float(v) for v in r] for r in xs])
        exact = all(Fraction(float(v)) == v for r in xs for v in r)
        return rows if exact and np.isfinite(rows).all() else None

    def check(self, float_too=True):
        """Nominal, clean exact SGD and every poisoning (exact and float64) inside the boxes."""
        assert self.boxes, f"no step recorded: {self.stopped}"
        bad = outside_box(self.nominals, self.boxes)
        assert not bad, f"{self}: nominal outside: {bad[:3]}"
        clean = [[Fraction(float(v)) for v in r] for r in self.x]
        datasets = [(clean, self.y.copy())] + self.poisonings()
        for xs, y in datasets:
            bad = outside_box(self.replay(xs, y, Exact()), self.boxes)
            assert not bad, f"{self}: exact SGD outside: {bad[:3]}"
            rows = self.float_rows(xs) if float_too else None
            if rows is not None:
                ar = FloatArith(self.dtype, np.random.default_rng(0), order=ORDER, fma=FMA)
                with np.errstate(over="ignore"):  # the nominal's own data: rows in its dtype
                    rows = rows.astype(self.dtype)
                if not np.isfinite(rows).all():
                    continue
                traj = self.replay(rows, y, ar)
                bad = outside_box(traj, self.boxes)
                assert not bad, f"{self}: {self.dtype.__name__} SGD outside: {bad[:3]}"

    def __str__(self):
        return (
            f"[{self.loss} {np.dtype(self.dtype).name} {self.magnitude} n={self.n} "
            f"b={self.batch_size} arch={self.arch} {self.threat} clip={self.config.clip} "
            f"{self.config.clip_method} wd={self.config.weight_decay} mu={self.config.momentum} "
            f"nesterov={self.config.nesterov} trusted={self.trusted}]"
        )


# ---------------------------------------------------------------- 1. every threat model


KINDS = ["features", "inf", "labels", "paired", "independent", "domain", "inf-domain"]


@pytest.mark.parametrize("kind", KINDS)
def test_adversarial_poisonings_stay_in_the_box(kind):
    """k-of-n features, eps = inf with clipping, label flips, paired, independent budgets."""
    checked = 0
    for seed in range(40):
        case = Case(1000 * seed + KINDS.index(kind), kind)
        if case.boxes:  # else the nominal model overflowed at the first step
            case.check()
            checked += 1
    assert checked >= 35


@pytest.mark.parametrize("method", ["clamp", "norm"])
def test_unbounded_poisoning_with_clipping_stays_in_the_box(method):
    """eps = inf (test_epsilon = 0): points moved to 1e6 / 1e300, gradients clipped."""
    for seed in range(10):
        rule = {"clip": float([0.1, 1.0][seed % 2]), "clip_method": method}
        Case(7000 + seed, "inf", rule=rule).check()


@pytest.mark.parametrize(
    "rule",
    [
        {"weight_decay": 0.3},
        {"momentum": 0.9},
        {"momentum": 0.5, "nesterov": True},
        {"lr_decay": 0.5, "lr_min": 0.01},
        {"momentum": 0.7, "nesterov": True, "weight_decay": 0.1, "lr_decay": 1.0},
        {"momentum": 0.9, "clip": 0.5, "clip_method": "norm", "weight_decay": 0.05},
    ],
    ids=["wd", "momentum", "nesterov", "decay", "all", "all-norm"],
)
def test_training_rules_stay_in_the_box(rule):
    """Weight decay, momentum, Nesterov, lr decay: poisoned exact and float SGD stay inside."""
    kinds = ["features", "labels", "paired", "independent", "fullcert"]
    for seed in range(8):
        Case(500 + 31 * seed, kinds[seed % len(kinds)], rule=rule).check()


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize("magnitude", ["tiny", "large"])
def test_extreme_magnitudes_stay_in_the_box(dtype, magnitude):
    """Inputs of 1e-300 and 1e100 (or weights of 1e100), where training stays finite."""
    kinds = ["features", "labels", "independent", "inf"]
    checked = 0
    for seed in range(12):
        case = Case(9000 + seed, kinds[seed % 4], dtype=dtype, magnitude=magnitude)
        if case.boxes:  # else the nominal model overflowed at the first step
            case.check()
            checked += 1
    assert checked >= 6


@pytest.mark.parametrize("kind", ["features", "labels", "independent"])
def test_large_budgets_in_large_batches_stay_in_the_box(kind):
    """n = 40: budgets above 24 in batches with more rows take the kernel's selection (not
    its sorted list) path."""
    for seed in range(3):
        Case(4000 + 10 * seed + len(kind), kind, n=40, k=25 + 3 * seed, batch=40).check()


def test_trusted_rows_never_move_and_the_rest_stays_in_the_box():
    """Trusted rows contribute clean gradients only; the others are attacked up to k."""
    checked = 0
    for seed in range(40):
        case = Case(3000 + seed, ["features", "labels", "paired"][seed % 3])
        if case.trusted is None:
            continue
        case.check()
        checked += 1
    assert checked >= 5


# ---------------------------------------------------------------- 2. k = n against FullCert


def _fullcert_pair(seed, poison_count, clip=None):
    """The boxes after each of 3 steps for FullCert and for ``poison_count(n)``, same start."""
    boxes = []
    for k, c in ((None, None), (poison_count, clip)):
        rng = np.random.default_rng(seed)
        dtype = DTYPES[seed % 2]
        n, d = int(rng.integers(3, 9)), int(rng.integers(1, 4))
        x, y = rng.uniform(-1, 1, (n, d)), rng.integers(0, 2, n)
        eps = float(rng.choice([1e-3, 0.02]))
        model = random_model(rng, d, 1, int(rng.integers(1, 4)), dtype, 1.0)
        config = TrainConfig(epochs=1, learning_rate=0.5, batch_size=int(rng.integers(1, n + 1)),
                             seed=3, steps=3, fused=False, clip=c)  # fmt: skip
        rec = []

        def hook(step, box, nominal, rec=rec):
            rec.append({name: (b.lo.copy(), b.hi.copy()) for name, b in box.items()})

        threat = ThreatModel(eps, poison_count=None if k is None else k(n))
        with np.errstate(over="ignore"):  # a float32 threshold of 1e300 is inf: no clipping
            train(model, x, y, threat, config, on_step=hook)
        boxes.append(rec)
    return boxes


def test_poison_count_n_gives_fullcerts_box():
    """k = n: the box equals FullCert's (poison_count None) at every step."""
    for seed in range(10):
        full, k_n = _fullcert_pair(seed, lambda n: n)
        assert len(full) == len(k_n)
        for a, b in zip(full, k_n, strict=True):
            for name in a:
                np.testing.assert_array_equal(a[name][0], b[name][0])
                np.testing.assert_array_equal(a[name][1], b[name][1])


@pytest.mark.parametrize("clip", [None, 1e300], ids=["k=n-1", "k=n-per-sample"])
def test_per_sample_path_first_step_inside_fullcerts_box_up_to_an_ulp(clip):
    """The per-sample (k-of-n) path's first box lies in FullCert's, up to one ulp.

    ``k = n - 1`` (or ``k = n`` forced onto the per-sample path by a clipping
    threshold no gradient reaches) bounds a smaller (equal) set of datasets,
    so in exact arithmetic its box is inside FullCert's.  It sums per-sample
    endpoint products where FullCert takes one GEMM bound, so the two round
    differently: measured, about 1 entry in 150 ends one ulp outside
    FullCert's (never more).  Later steps start from different boxes, so only
    the first is compared.
    """
    outside = 0
    for seed in range(30):
        full, other = _fullcert_pair(seed, lambda n: n - 1 if clip is None else n, clip)
        for name in full[0]:
            lo_f, hi_f = full[0][name]
            lo_k, hi_k = other[0][name]
            ulp = np.spacing(np.maximum(np.abs(lo_f), np.abs(hi_f)))
            assert (lo_k >= lo_f - ulp).all() and (hi_k <= hi_f + ulp).all(), (seed, name)
            outside += int(((lo_k < lo_f) | (hi_k > hi_f)).sum())
    assert outside <= 10


# ---------------------------------------------------------------- 4. unit tests: clipping


def _random_boxes(rng, m, shapes, scale, dtype):
    boxes, members = {}, []
    for name, shape in shapes.items():
        a = rng.normal(size=(m, *shape)) * scale
        b = a + np.abs(rng.normal(size=(m, *shape))) * scale * rng.choice(
            [0, 1e-3, 1], size=(m, *shape)
        )
        lo, hi = np.minimum(a, b).astype(dtype), np.maximum(a, b).astype(dtype)
        boxes[name] = Interval(lo, hi)
    for j in range(6):
        member = {}
        for name, box in boxes.items():
            t = rng.random(box.shape) if j % 2 else (rng.random(box.shape) < 0.5).astype(float)
            v = box.lo.astype(np.float64) + t * (
                box.hi.astype(np.float64) - box.lo.astype(np.float64)
            )
            member[name] = np.clip(v.astype(dtype), box.lo, box.hi)
        members.append(member)
    return boxes, members


@pytest.mark.parametrize("method", ["clamp", "norm"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_clipping_boxes_contain_clipped_members_exactly_and_in_float(method, dtype):
    """clip(box) contains clip_nominal(member) and the exact real clipping of every member."""
    rng = np.random.default_rng(11)
    for trial in range(60):
        m = int(rng.integers(1, 4))
        shapes = {"0.weight": (int(rng.integers(1, 4)), int(rng.integers(1, 3))), "0.bias": (2,)}
        # squares stay finite (Clipping.clip on a box whose squared norm overflows raises)
        scales = (
            [1e-200, 1e-3, 1.0, 10.0, 1e100] if dtype == np.float64 else [1e-15, 1e-3, 1.0, 1e8]
        )
        scale = float(rng.choice(scales))
        gamma = float(rng.choice([1e-3, 0.3, 1.0, 5.0])) * (scale if rng.random() < 0.5 else 1)
        if method == "clamp":  # a threshold of the dtype (else see the xfail test below)
            gamma = float(np.dtype(dtype).type(gamma))
        clip = Clipping(gamma, method)
        boxes, members = _random_boxes(rng, m, shapes, scale, dtype)
        clipped = clip.clip(boxes)
        for member in members:
            nominal = clip.clip_nominal({k: v.copy() for k, v in member.items()})
            for name, box in clipped.items():
                assert bool(box.contains(nominal[name]).all()), (trial, method, name)
            for r in range(m):
                row = {k: v[r].tolist() for k, v in member.items()}
                real = clip_gradient(
                    {k: _to_q(v) for k, v in row.items()}, q(float(gamma)), method, Exact()
                )
                for name, box in clipped.items():
                    val = np.asarray(real[name], dtype=object)
                    lo, hi = box.lo[r], box.hi[r]
                    for idx in np.ndindex(val.shape):
                        assert q(lo[idx]) <= val[idx] <= q(hi[idx]), (trial, name, idx)


def _to_q(v):
    return [_to_q(u) for u in v] if isinstance(v, list) else q(float(v))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_norm_entry_bound_bounds_clipped_entries(dtype):
    """entry_bound >= |every entry| of a norm-clipped gradient, in floats and in reals."""
    rng = np.random.default_rng(2)
    for _ in range(200):
        p = int(rng.integers(1, 40))
        gamma = float(rng.choice([1e-3, 0.7, 1.0, 3.0]))
        clip = Clipping(gamma, "norm")
        bound = clip.entry_bound(p, dtype)
        g = rng.normal(size=p) * float(rng.choice([1e-30, 1e-3, 1.0, 1e10, 1e30]))
        if rng.random() < 0.5:  # one dominant entry: the clipped entry is about gamma
            g[int(rng.integers(p))] = float(rng.choice([1e3, 1e20])) * rng.choice([-1, 1])
        g = g.astype(dtype)
        nominal = clip.clip_nominal({"w": g[None, :]})["w"]
        assert (np.abs(nominal) <= bound).all()
        real = clip_gradient({"w": [q(float(v)) for v in g]}, q(gamma), "norm", Exact())["w"]
        assert all(abs(v) <= q(bound) for v in real)
        assert clip.entry_bound(p, dtype) >= gamma


# ---------------------------------------------------------------- 4. unit tests: accumulation


def _deviation_boxes(rng, m, dtype):
    """Per-sample base and extra boxes with inexact differences and some extra.lo > base.lo."""
    shape = (m, 3)
    base_lo = (rng.normal(size=shape) * rng.choice([1e-20, 1e-5, 1.0], size=shape)).astype(dtype)
    base_hi = (base_lo + np.abs(rng.normal(size=shape))).astype(dtype)
    base_hi = np.maximum(base_hi, base_lo)
    spread = rng.choice([0.0, 1.0, 1e3], size=shape)
    extra_lo = (base_lo - np.abs(rng.normal(size=shape)) * spread).astype(dtype)
    extra_hi = (base_hi + np.abs(rng.normal(size=shape)) * spread).astype(dtype)
    # some rows whose extra box does not reach below (above) base: a positive (negative)
    # difference that must never be selected
    up = rng.random(shape) < 0.3
    extra_lo = np.where(up, base_lo + np.abs(base_lo) * 0.5 + 0.25, extra_lo).astype(dtype)
    extra_hi = np.where(up, base_hi - np.abs(base_hi) * 0.5 - 0.25, extra_hi).astype(dtype)
    return (
        {"w": Interval._new(base_lo, base_hi)},
        {"w": Interval._new(extra_lo, np.maximum(extra_hi, extra_lo))},
    )


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_select_against_brute_force_over_subsets(dtype):
    """The selected deviations sum to at most (least) the exact extreme over all subsets.

    Rows are fed in fragments (the running selection); trusted rows never deviate.
    """
    rng = np.random.default_rng(4)
    for _ in range(150):
        m = int(rng.integers(1, 8))
        k = int(rng.integers(1, m + 1))
        att = rng.random(m) < 0.8
        base, extra = _deviation_boxes(rng, m, dtype)
        cut = int(rng.integers(0, m + 1))
        low = high = None
        for s in (slice(0, cut), slice(cut, m)):
            if s.start == s.stop:
                continue
            b = {"w": base["w"][s]}
            e = {"w": extra["w"][s]}
            low, high = _select(low, high, b, e, att[s], k)
        got_lo = [sum((fraction(v) for v in low["w"][:, j]), Fraction(0)) for j in range(3)]
        got_hi = [sum((fraction(v) for v in high["w"][:, j]), Fraction(0)) for j in range(3)]
        for j in range(3):
            rows = np.flatnonzero(att)
            d_lo = [fraction(extra["w"].lo[i, j]) - fraction(base["w"].lo[i, j]) for i in rows]
            d_hi = [fraction(base["w"].hi[i, j]) - fraction(extra["w"].hi[i, j]) for i in rows]
            want_lo, want_hi = min_subset_sum(d_lo, k), -min_subset_sum(d_hi, k)
            assert got_lo[j] <= want_lo, (m, k, j, float(got_lo[j]), float(want_lo))
            assert got_hi[j] >= want_hi, (m, k, j, float(got_hi[j]), float(want_hi))
            # tight too: each deviation is one rounding from the exact one
            slack = Fraction(2) ** (-20 if dtype == np.float32 else -49) * (1 + abs(want_lo))
            assert got_lo[j] >= want_lo - slack
            slack = Fraction(2) ** (-20 if dtype == np.float32 else -49) * (1 + abs(want_hi))
            assert got_hi[j] <= want_hi + slack


def _library_sample_grads(pois, model, loss, kind, box, clean, y, idx, att):
    """The library's own clipped per-sample gradient boxes of rows ``idx`` by parameter name
    (its internals: ``Poisoning._rows`` and ``poisoning._products``)."""
    rows = pois._rows(model, loss, kind, box, clean, y, idx, att)
    bound = None
    if pois.clipping is not None:
        size = sum(int(np.prod(p.shape)) for p in model.named_params().values())
        bound = pois.clipping.entry_bound(size, box.dtype)
    out = {}
    for layer in rows.factors:
        found = _products(rows, layer, slice(None), pois.clipping, bound, True)
        out.update({f"{layer}.{name}": g for name, g in found.items()})
    return out


@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
@pytest.mark.parametrize(
    "kind",
    ["features", "labels", "paired", "independent", "inf-clamp", "inf-clamp-0.3", "inf-norm"],
)
def test_batch_gradient_accumulation_against_brute_force(dtype, kind):
    """batch_gradient's box contains (sum base + extreme subset of k' deviations) / m, exactly.

    The per-sample boxes are the library's own (``_per_sample``): this checks the
    accumulation (selection, outward sums, 1/m), for every subset of at most k' rows.
    """
    rng = np.random.default_rng(len(kind) * 7 + ord(kind[-1]))
    loss = get_loss("ce")
    for trial in range(12):
        m = int(rng.integers(1, 7))
        n = m + int(rng.integers(0, 3))
        d = int(rng.integers(1, 3))
        model = random_model(rng, d, 3, int(rng.integers(1, 3)), dtype, 1.0)
        x = rng.uniform(-1, 1, (n, d))
        y = rng.integers(0, 3, n)
        k = int(rng.integers(1, n + 1))
        clip = None
        if kind == "features":
            threat = ThreatModel(0.1, poison_count=min(k, n - 1) or None)
        elif kind == "labels":
            threat = ThreatModel(0.0, label_flips=k, label_target=[None, 1][trial % 2])
        elif kind == "paired":
            threat = ThreatModel(
                0.1, poison_count=k, label_flips=int(rng.integers(1, n + 1)), paired=True
            )
        elif kind == "independent":
            threat = ThreatModel(
                0.1, poison_count=min(k, max(n - 1, 1)), label_flips=int(rng.integers(1, n + 1))
            )
        else:
            # 0.3 is no float32: float32 then takes the NumPy path (_accumulate_python)
            gamma = 0.3 if kind.endswith("0.3") else 0.5
            clip = Clipping(gamma, kind.split("-")[1])
            threat = ThreatModel(math.inf, test_epsilon=0.0, poison_count=k)
        trusted = rng.random(n) < 0.3 if trial % 3 == 0 else None
        pois = Poisoning(threat, n, trusted, clip)
        box = threat.train_box(x, dtype)
        xf = x.astype(dtype)
        clean = ThreatModel(0.0).train_box(x, dtype)
        idx = rng.permutation(n)[:m]
        grads, _, _ = pois.batch_gradient(model, loss, box, clean, xf, y, idx)
        att = pois.attackable(idx)
        plan = pois.plan(int(att.sum()))
        base = _library_sample_grads(pois, model, loss, plan.base, box, clean, y, idx, att)
        extra = base
        if plan.extra is not None and plan.k:
            extra = _library_sample_grads(pois, model, loss, plan.extra, box, clean, y, idx, att)
        for name, g in grads.items():
            b, e = base[name], extra[name]
            for pos in np.ndindex(g.shape):
                col = (slice(None), *pos)
                blo, bhi = b.lo[col], b.hi[col]
                elo, ehi = e.lo[col], e.hi[col]
                if not (np.isfinite(blo).all() and np.isfinite(bhi).all()):
                    continue
                rows = np.flatnonzero(att)
                lo = sum((fraction(v) for v in blo), Fraction(0)) + min_subset_sum(
                    [fraction(elo[i]) - fraction(blo[i]) for i in rows], plan.k
                )
                hi = sum((fraction(v) for v in bhi), Fraction(0)) - min_subset_sum(
                    [fraction(bhi[i]) - fraction(ehi[i]) for i in rows], plan.k
                )
                assert q(g.lo[pos]) <= q(lo / m), (kind, trial, name, pos, plan)
                assert q(hi / m) <= q(g.hi[pos]), (kind, trial, name, pos, plan)


def _assignments(att, kf, kl, paired):
    """Every admissible (features moved, label flipped) state per row of a batch.

    Independent budgets: at most ``kf`` rows moved and ``kl`` flipped; paired: the
    touched rows number at most ``max(kf, kl)`` (moved at most kf, flipped at most kl).
    Trusted rows stay clean.
    """
    from itertools import product

    rows = np.flatnonzero(att)
    for states in product(range(4), repeat=rows.shape[0]):
        moved = sum(s & 1 for s in states)
        flipped = sum(s >> 1 for s in states)
        touched = sum(s > 0 for s in states)
        if moved > kf or flipped > kl or (paired and touched > max(kf, kl)):
            continue
        full = [0] * att.shape[0]
        for r, st in zip(rows, states, strict=True):
            full[r] = st
        yield full


@pytest.mark.parametrize("kind", ["paired", "independent", "independent-inf"])
def test_batch_gradient_contains_every_admissible_assignment(kind):
    """The batch box contains sum_i box_i(state_i) / m for every admissible assignment of
    states (clean, moved, flipped, both) to the batch rows -- the threat model's definition,
    brute force, with the library's own per-state per-sample boxes."""
    rng = np.random.default_rng(len(kind))
    loss = get_loss("ce")
    dtype = np.float64
    for trial in range(15):
        m = int(rng.integers(2, 5))
        n = m + int(rng.integers(0, 2))
        d = int(rng.integers(1, 3))
        model = random_model(rng, d, 3, int(rng.integers(1, 3)), dtype, 1.0)
        x, y = rng.uniform(-1, 1, (n, d)), rng.integers(0, 3, n)
        kf = int(rng.integers(1, m))
        kl = int(rng.integers(1, m))
        clip = None
        eps = 0.5
        if kind == "independent-inf":
            eps, clip = math.inf, Clipping(float(rng.choice([0.05, 0.3])), "clamp")
        threat = ThreatModel(eps, test_epsilon=0.0, poison_count=kf, label_flips=kl,
                             paired=kind == "paired")  # fmt: skip
        trusted = rng.random(n) < 0.25 if trial % 3 == 0 else None
        pois = Poisoning(threat, n, trusted, clip)
        box = threat.train_box(x, dtype)
        clean = ThreatModel(0.0).train_box(x, dtype)
        idx = rng.permutation(n)[:m]
        grads, _, _ = pois.batch_gradient(model, loss, box, clean, x, y, idx)
        att = pois.attackable(idx)
        states = [
            _library_sample_grads(
                pois, model, loss, (bool(s & 1), bool(s >> 1)), box, clean, y, idx, att
            )  # fmt: skip
            for s in range(4)
        ]
        for name, g in grads.items():
            per = [
                (fraction_array_of(st[name].lo), fraction_array_of(st[name].hi)) for st in states
            ]
            lo_min = hi_max = None
            for assign in _assignments(att, kf, kl, threat.paired):
                lo = sum(per[s][0][i] for i, s in enumerate(assign))
                hi = sum(per[s][1][i] for i, s in enumerate(assign))
                lo_min = lo if lo_min is None else np.minimum(lo_min, lo)
                hi_max = hi if hi_max is None else np.maximum(hi_max, hi)
            for pos in np.ndindex(g.shape):
                assert q(g.lo[pos]) <= q(lo_min[pos] / m), (kind, trial, name, pos)
                assert q(hi_max[pos] / m) <= q(g.hi[pos]), (kind, trial, name, pos)


def fraction_array_of(a):
    return np.vectorize(fraction, otypes=[object])(np.asarray(a))


def _dyadic(rng, shape, dtype):
    """Floats with short mantissas over a wide range of exponents: their products are exact,
    their differences mostly not (so a deviation rounded to nearest shows)."""
    mant = rng.integers(-(2**10), 2**10, size=shape).astype(np.float64)
    exp = rng.integers(-30 if dtype == np.float32 else -60, 30, size=shape)
    return (mant * np.exp2(exp)).astype(dtype)


def _corner_hull(a0, a1, g0, g1):
    ps = [fraction(u) * fraction(v) for u in (a0, a1) for v in (g0, g1)]
    return min(ps), max(ps)


@pytest.mark.parametrize("selection", [None, "list", "select"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f64", "f32"])
def test_outer_kofn_against_brute_force_over_subsets(dtype, selection):
    """kernels.kofn.outer_kofn (the CPU path of the k-of-n accumulation) against exact
    rationals: per coordinate, [sum_s base_s + min over subsets of <= k attackable rows of
    sum (extra_s - base_s)] with base_s, extra_s the exact hulls of a_s g_s, ea_s eg_s."""
    from intervalnn.kernels.kofn import outer_kofn

    rng = np.random.default_rng(17 + (selection or "").__len__())
    for _ in range(120):
        b, n_in, n_out = int(rng.integers(1, 7)), int(rng.integers(1, 3)), int(rng.integers(1, 4))
        k = int(rng.integers(1, b + 1))
        attack = rng.random(b) < 0.8
        if selection is not None and k >= attack.sum():
            continue

        def box(shape):
            u, v = _dyadic(rng, shape, dtype), _dyadic(rng, shape, dtype)
            return np.minimum(u, v), np.maximum(u, v)

        a_lo, a_hi = box((b, n_in))
        g_lo, g_hi = box((b, n_out))
        # the poisoned boxes: wider, or (some rows) elsewhere (a positive deviation)
        ea_lo, ea_hi = box((b, n_in))
        eg_lo, eg_hi = box((b, n_out))
        wide = rng.random(b) < 0.7
        ea_lo = np.where(wide[:, None], np.minimum(ea_lo, a_lo), ea_lo)
        ea_hi = np.where(wide[:, None], np.maximum(ea_hi, a_hi), ea_hi)
        eg_lo = np.where(wide[:, None], np.minimum(eg_lo, g_lo), eg_lo)
        eg_hi = np.where(wide[:, None], np.maximum(eg_hi, g_hi), eg_hi)
        one = np.ones(b, dtype)
        no = np.zeros(b, bool)
        out = [np.empty((n_in, n_out), dtype) for _ in range(3)]
        outer_kofn(
            a_lo, a_hi, g_lo, g_hi, ea_lo, ea_hi, eg_lo, eg_hi, one, one, one, one, no, no,
            0.0, a_lo, g_lo, one, attack, k, 0.0, 1.0, 1.0, 1.0, *out, selection=selection,
        )  # fmt: skip
        rows = np.flatnonzero(attack)
        for i in range(n_in):
            for j in range(n_out):
                base = [
                    _corner_hull(a_lo[s, i], a_hi[s, i], g_lo[s, j], g_hi[s, j]) for s in range(b)
                ]
                extra = [
                    _corner_hull(ea_lo[s, i], ea_hi[s, i], eg_lo[s, j], eg_hi[s, j])
                    for s in range(b)
                ]
                lo = sum(x for x, _ in base) + min_subset_sum(
                    [extra[s][0] - base[s][0] for s in rows], k
                )
                hi = sum(y for _, y in base) - min_subset_sum(
                    [base[s][1] - extra[s][1] for s in rows], k
                )
                assert fraction(out[0][i, j]) <= lo, (b, k, i, j, float(out[0][i, j]), float(lo))
                assert hi <= fraction(out[1][i, j]), (b, k, i, j, float(out[1][i, j]), float(hi))


# ---------------------------------------------------------------- findings


def test_float32_clamp_threshold_below_gamma_stays_in_the_box():
    """Linear(1, 1) at w = b = 0, x = 10, y = 0, bce, rate 1, one step, clip = 0.7 (clamp).

    Found by these tests, fixed in b4d2a7c.  The exact per-sample weight gradient
    sigmoid(0) * 10 = 5 clamps to 0.7, so the exact weight after the step is -0.7; the
    float32 box's lower end was -float32(0.7) = -0.699999988 (clamped at float32(0.7)).
    """
    model = Sequential(Linear(1, 1, rng=np.random.default_rng(0), dtype=np.float32))
    zero = {"0.weight": np.zeros((1, 1), np.float32), "0.bias": np.zeros(1, np.float32)}
    model.load({k: Interval(v) for k, v in zero.items()}, {k: v.copy() for k, v in zero.items()})
    boxes = []
    config = TrainConfig(epochs=1, learning_rate=1.0, batch_size=1, steps=1, clip=0.7, loss="bce")
    train(model, np.array([[10.0]]), np.array([0]), ThreatModel(0.0, label_flips=1), config,
          on_step=lambda s, box, nom: boxes.append(box["0.weight"].lo[0, 0]))  # fmt: skip
    assert Fraction(float(boxes[0])) <= Fraction(-0.7)
    # and in the unit: a member above gamma clips to gamma, inside the clipped box
    clipped = Clipping(0.7, "clamp").clip({"w": Interval(np.array([[5.0]], np.float32))})
    assert Fraction(float(clipped["w"].hi[0, 0])) >= Fraction(0.7)


def test_norm_clipping_of_overflowing_gradients_trains():
    """Linear(2, 1) at w = (1, 1), b = 0, x = (1e200, 1e200) and (1, 1), k = 1 of 2, eps = 0.1,
    clip = 1 (norm): the per-sample weight gradient is about 1e200 per entry, its square
    overflows, ``F.sqr(...).sum(axis=1)`` is [-inf, inf] and ``F.sqrt`` raises.  Clipping
    bounds every clipped gradient by gamma whatever its norm, so training should go on.
    Found by these tests (a crash, not unsound), fixed in 945b53d.
    """
    model = Sequential(Linear(2, 1, rng=np.random.default_rng(0)))
    start = {"0.weight": np.ones((2, 1)), "0.bias": np.zeros(1)}
    model.load({k: Interval(v) for k, v in start.items()}, {k: v.copy() for k, v in start.items()})
    config = TrainConfig(epochs=1, learning_rate=1.0, batch_size=2, steps=1, clip=1.0,
                         clip_method="norm", loss="bce")  # fmt: skip
    x = np.array([[1e200, 1e200], [1.0, 1.0]])
    boxes = []

    def hook(step, box, nominal):
        boxes.append({k: (b.lo.copy(), b.hi.copy()) for k, b in box.items()})

    with np.errstate(over="ignore"):
        result = train(model, x, np.array([0, 1]), ThreatModel(0.1, poison_count=1), config,
                       on_step=hook)  # fmt: skip
    assert result.stopped is None
    arch = [("linear", "0")]
    for rows in (
        [[Fraction(v) for v in r] for r in x],
        [[Fraction(1e200) + Fraction(1, 10)] * 2, [1, 1]],
    ):
        traj = per_sample_sgd(arch, start, rows, [0, 1], "bce", [[0, 1]], [Fraction(1)], Exact(),
                              clip=1.0, clip_method="norm")  # fmt: skip
        assert not outside_box(traj, boxes)
