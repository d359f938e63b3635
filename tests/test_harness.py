"""Random-architecture soundness harness: both training paths, both certification paths.

Hypothesis draws a :class:`Spec` -- every layer order the fused path accepts
(ReLU last, Linear-Linear, consecutive ReLUs), 1-3 Linear layers of widths
1-4, BCE or cross-entropy with K = 2-10, batches of 1-3, float32 or float64,
magnitudes from subnormal to 1e300 in data and parameters, point and wide
parameter boxes around off-centre nominals, epsilon from 0 to 1e10, a data
domain or none, learning rates floats cannot hold (0.1, 0.3, 1/3 as floats
and as exact Fractions) with the constant and 1/t schedules -- and
:func:`make_case` turns it (with its seed) into a concrete network and data.
``train`` then runs with ``fused=True`` (the Numba kernel) and ``fused=False``
(the layered path), recording the parameter box after every step.

The oracles (``tests/oracle.py``, independent of the library: one generic
chain rule over the layer list) check, at every recorded step:

* **real numbers**: exact rational SGD (MPFR for the irrational loss
  gradients) from concrete members of the initial box (the nominal,
  vertices, random points) on concrete poisoned datasets of the threat model
  (clean, vertices, random points, clipped to the domain) stays in the box;
* **floats**: plain float SGD in the model's dtype (the formulas of
  ``intervalnn/losses.py``, exp correctly rounded or faithful, every sum left
  to right, shuffled or in a random binary tree, FMA or not, ``theta - lr_t g``
  with ``lr_t`` rounded to the dtype in three plausible ways) from float members
  of the initial box (the nominal first) on the clean data (and float poisoned
  data) stays in the box; the README promises this for both paths;
* the nominal model the library reports lies in the box (and training raises
  nothing on these valid inputs);
* **certification**: exact logits of sampled member models (from the final
  box) at sampled member inputs (from the test box), and float forward passes
  of float members in the dtype, lie in the bounds of the layered
  ``model.forward(test_box)`` and the fused ``forward_bounds``; every point
  that ``certify`` or the training-validation path (``Certifier``)
  reports certified has the right class for every sampled member.

Explicit examples pin the bugs this harness was written against (see below).

``INTERVALNN_HARNESS_EXAMPLES=400 pytest -s tests/test_harness.py`` searches
deeper (the default is small, for CI); ``-s`` shows the counters that the
last test prints (architectures, steps, members checked, violations).  With
``INTERVALNN_HARNESS_KEEP_GOING=1`` every violation is recorded and the search
goes on (the last test lists them all and fails) instead of stopping at the
first one to shrink it.
"""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from dataclasses import dataclass
from fractions import Fraction

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpq
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from oracle import Exact, FloatArith, flat, forward, q, round_to, sgd

from intervalnn.certify import Certifier, certify
from intervalnn.engine.fused import FusedEngine, forward_bounds
from intervalnn.interval import Interval
from intervalnn.layers import Linear, ReLU, Sequential
from intervalnn.threat import ThreatModel
from intervalnn.train import SoundnessError, TrainConfig, train

EXAMPLES = int(os.environ.get("INTERVALNN_HARNESS_EXAMPLES", 60))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# INTERVALNN_HARNESS_KEEP_GOING=1: record violations and go on (the last test lists them
# and fails); the default stops at the first one so that Hypothesis shrinks it.
KEEP_GOING = os.environ.get("INTERVALNN_HARNESS_KEEP_GOING", "") not in ("", "0")
MAX_STEPS = 8  # per run: exact rationals grow with every step (3-layer nets: 5)
MAX_BITS = 200_000  # an exact SGD run stops early once a parameter's rational is this long

# What the harness checked, for the closing report (printed by the last test with -s).
COUNTS: Counter = Counter()
FOUND: list = []  # violations recorded in KEEP_GOING mode
ARCHITECTURES: set = set()
SECONDS: Counter = Counter()


# ------------------------------------------------------------------ random cases

LEARNING_RATES = (
    0.1,
    0.3,
    1 / 3,
    Fraction(1, 3),
    Fraction(1, 10),
    Fraction(3, 10),
    0.5,
    1.0,
    2.0,
    10.0,
    1e-3,
    2.0**-60,
    1e6,
)
EPSILONS = (0.0, 5e-324, 1e-300, 1e-40, 1e-12, 1e-6, 1e-3, 0.1, 1.0, 1e3, 1e10)
# "unit" first (Hypothesis shrinks towards it) and twice as likely; the extremes stay common
SCALES = ("unit", "unit", "small", "large", "zero", "subnormal", "tiny", "huge")
# base-2 exponent ranges of each scale, per dtype (float64: up to ~1e300 = 2^996)
_EXPONENTS = {
    np.dtype(np.float64): {
        "subnormal": (-1074, -1023),
        "tiny": (-1022, -700),
        "small": (-60, -2),
        "unit": (-3, 3),
        "large": (2, 60),
        "huge": (700, 996),
    },
    np.dtype(np.float32): {
        "subnormal": (-149, -127),
        "tiny": (-126, -100),
        "small": (-30, -2),
        "unit": (-3, 3),
        "large": (2, 40),
        "huge": (100, 126),
    },
}
BOXES = ("point", "ulps", "relative", "absolute")


@dataclass(frozen=True)
class Spec:
    """Everything random about one case; :func:`make_case` builds it (deterministically)."""

    dtype: str
    loss: str
    layers: str  # "L" Linear, "R" ReLU, in order; the first is "L"
    sizes: tuple  # n_0 (features), then each Linear's outputs (the last is K)
    w_scales: tuple  # per Linear: scale of the weights
    b_scales: tuple  # per Linear: scale of the bias
    boxes: tuple  # per Linear: how the parameter box sits around the nominal
    x_scale: str
    n: int  # training points
    eps: float
    test_eps: float | None
    domain: str  # "none", "tight" (the data's hull: clipping bites) or "loose"
    lr: float | Fraction
    schedule: str
    batch_size: int
    epochs: int
    seed: int
    n_test: int = 3
    data64: bool = False  # float32 model fed float64 data off the float32 grid (review item 4)


@st.composite
def specs(draw, max_epochs: int = 3, min_epochs: int = 1) -> Spec:
    dtype = draw(st.sampled_from(["float64", "float32"]))
    loss = draw(st.sampled_from(["bce", "ce"]))
    k = 1 if loss == "bce" else draw(st.integers(2, 10))
    nlin = draw(st.integers(1, 3))
    sizes = tuple(draw(st.integers(1, 4)) for _ in range(nlin)) + (k,)
    layers = "".join("L" + "R" * draw(st.integers(0, 2)) for _ in range(nlin))
    scale = st.sampled_from(SCALES)
    n = draw(st.integers(1, 6))
    batch_size = draw(st.integers(1, 3))
    per_epoch = -(-n // batch_size)
    cap = MAX_STEPS if nlin < 3 else 5
    epochs = draw(st.integers(min(min_epochs, max_epochs), max_epochs))
    epochs = min(epochs, max(cap // per_epoch, min_epochs))
    return Spec(
        dtype=dtype,
        loss=loss,
        layers=layers,
        sizes=sizes,
        w_scales=tuple(draw(scale) for _ in range(nlin)),
        b_scales=tuple(draw(scale) for _ in range(nlin)),
        boxes=tuple(draw(st.sampled_from(BOXES)) for _ in range(nlin)),
        x_scale=draw(scale),
        n=n,
        eps=draw(st.sampled_from(EPSILONS)),
        test_eps=draw(st.sampled_from((None,) + EPSILONS)),
        domain=draw(st.sampled_from(["none", "tight", "loose"])),
        lr=draw(st.sampled_from(LEARNING_RATES)),
        schedule=draw(st.sampled_from(["constant", "1/t"])),
        batch_size=batch_size,
        epochs=epochs,
        seed=draw(st.integers(0, 2**32 - 1)),
        n_test=draw(st.integers(1, 4)),
        data64=dtype == "float32" and draw(st.booleans()),
    )


@dataclass
class Case:
    spec: Spec
    dt: np.dtype
    arch: list  # ("linear", "0") / ("relu", None): the oracle's layer list
    init: dict  # name -> (lo, hi, nominal) arrays in dt
    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray
    domain: tuple | None
    threat: ThreatModel

    def __repr__(self) -> str:
        def arr(a):
            return np.asarray(a, dtype=np.float64).tolist()

        init = {k: [arr(v) for v in t] for k, t in self.init.items()}
        return (
            f"Case({self.spec!r},\n  init={init!r},\n  x={arr(self.x)!r}, y={self.y.tolist()!r},"
            f"\n  x_test={arr(self.x_test)!r}, threat={self.threat!r})"
        )


def _values(rng, dt, scale, shape):
    """Random values of a scale: random signs and mantissas, exponents in the scale's range."""
    if scale == "zero":
        return np.zeros(shape, dtype=dt)
    e_lo, e_hi = _EXPONENTS[dt][scale]
    e = rng.integers(e_lo, e_hi + 1, size=shape)
    v = rng.choice([-1.0, 1.0], size=shape) * rng.uniform(1, 2, size=shape)
    with np.errstate(all="ignore"):
        out = np.array(
            [round_to(q(m) * q(2) ** int(k), dt) for m, k in zip(v.ravel(), e.ravel(), strict=True)]
        )
    out = out.astype(dt).reshape(shape)
    out[rng.random(shape) < 0.1] = 0  # some exact zeros
    return out


def _finite(a, dt):
    big = np.finfo(dt).max
    return np.clip(a, -big, big).astype(dt)


def _box_around(rng, dt, nominal, kind, scale):
    """An off-centre box ``lo <= nominal <= hi`` of the given kind (finite endpoints)."""
    if kind == "point":
        return nominal.copy(), nominal.copy()
    with np.errstate(all="ignore"):
        if kind == "ulps":
            lo, hi = nominal.copy(), nominal.copy()
            for _ in range(int(rng.integers(0, 4))):
                lo = np.nextafter(lo, dt.type(-np.inf))
            for _ in range(int(rng.integers(1, 6))):
                hi = np.nextafter(hi, dt.type(np.inf))
        else:
            if kind == "relative":
                base = np.abs(nominal)
                base = np.where(base == 0, dt.type(np.finfo(dt).smallest_subnormal), base)
                d1 = base * dt.type(2.0) ** rng.integers(-40, 2, size=nominal.shape).astype(dt)
                d2 = base * dt.type(2.0) ** rng.integers(-40, 2, size=nominal.shape).astype(dt)
            else:
                d1 = np.abs(_values(rng, dt, scale, nominal.shape))
                d2 = np.abs(_values(rng, dt, scale, nominal.shape))
            d1 = (d1 * dt.type(rng.uniform(0, 1))).astype(dt)  # off-centre
            lo, hi = (nominal - d1).astype(dt), (nominal + d2).astype(dt)
    lo, hi = _finite(lo, dt), _finite(hi, dt)
    return np.minimum(lo, nominal), np.maximum(hi, nominal)


def make_case(spec: Spec) -> Case:
    rng = np.random.default_rng(spec.seed)
    dt = np.dtype(spec.dtype)
    arch, init, lin = [], {}, 0
    for i, c in enumerate(spec.layers):
        if c == "R":
            arch.append(("relu", None))
            continue
        arch.append(("linear", str(i)))
        n_in, n_out = spec.sizes[lin], spec.sizes[lin + 1]
        w = _values(rng, dt, spec.w_scales[lin], (n_in, n_out))
        b = _values(rng, dt, spec.b_scales[lin], (n_out,))
        scale_w = spec.w_scales[lin] if spec.w_scales[lin] != "zero" else "unit"
        scale_b = spec.b_scales[lin] if spec.b_scales[lin] != "zero" else "unit"
        init[f"{i}.weight"] = (*_box_around(rng, dt, w, spec.boxes[lin], scale_w), w)
        init[f"{i}.bias"] = (*_box_around(rng, dt, b, spec.boxes[lin], scale_b), b)
        lin += 1
    k = spec.sizes[-1]
    x = _values(rng, dt, spec.x_scale, (spec.n, spec.sizes[0]))
    y = rng.integers(0, 2 if spec.loss == "bce" else k, size=spec.n).astype(np.int64)
    x_test = np.concatenate([x, _values(rng, dt, spec.x_scale, (spec.n_test, spec.sizes[0]))])
    x_test = x_test[rng.permutation(len(x_test))[: spec.n_test]]
    if spec.data64:  # the box must enclose the data as given, not its float32 rounding

        def off_grid(a):  # 0.49 float32 ulps up: the most RN32 can lose
            step = np.spacing(np.abs(a.astype(np.float32))).astype(np.float64)
            return np.where(np.abs(a) < 2.0**100, a.astype(np.float64) + 0.49 * step, a)

        x, x_test = off_grid(x), off_grid(x_test)
    domain = None
    if spec.domain != "none":
        lo, hi = float(min(x.min(), x_test.min())), float(max(x.max(), x_test.max()))
        if spec.domain == "loose":
            big = float(np.finfo(dt).max)
            lo, hi = max(lo - abs(lo) - 1, -big), min(hi + abs(hi) + 1, big)
        domain = (lo, hi)
    threat = ThreatModel(spec.eps, spec.test_eps, domain)
    return Case(spec, dt, arch, init, x, y, x_test, domain, threat)


def build_model(case: Case) -> Sequential:
    layers = []
    for kind, name in case.arch:
        if kind == "relu":
            layers.append(ReLU())
            continue
        (wl, wh, wn), (bl, bh, bn) = case.init[name + ".weight"], case.init[name + ".bias"]
        la = Linear(*wn.shape, rng=np.random.default_rng(0), dtype=case.dt)
        la.weight, la.bias = Interval(wl, wh), Interval(bl, bh)
        la.nominal = {"weight": wn.copy(), "bias": bn.copy()}
        layers.append(la)
    return Sequential(*layers)


def replay_batches(n: int, batch_size: int, seed: int, epochs: int) -> list:
    """The batches of ``train`` (re-implemented, not imported): one permutation per epoch."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(epochs):
        order = rng.permutation(n)
        out += [order[i : i + batch_size] for i in range(0, n, batch_size)]
    return out


def exact_rates(spec: Spec, steps: int) -> list:
    lr = Fraction(spec.lr)
    return [lr if spec.schedule == "constant" else lr / t for t in range(1, steps + 1)]


# How float SGD rounds the learning rate lambda_t to the dtype: to nearest; through float64
# first (what ``dt(float(rate))`` does); or lambda rounded once, then divided by t in the dtype.
# The promise: the learning rate of step t rounded to the dtype, directly or through float64
# (both lie in [RD(lr_t), RU(lr_t)]).  RN(RN(lr)/t) rounds twice in the dtype and can fall
# outside that range (lr = 0.3, t = 11 in float32): not promised, so not drawn.
RATE_MODES = ("RN(lr_t)", "RN(RN64(lr_t))")


def float_rates(spec: Spec, dt, steps: int, mode: str) -> list:
    exact = exact_rates(spec, steps)
    if mode == "RN(lr_t)":
        return [round_to(q(r), dt) for r in exact]
    assert mode == "RN(RN64(lr_t))", mode
    return [dt.type(float(r)) for r in exact]


# ------------------------------------------------------------------ running the library


@dataclass
class Run:
    case: Case
    fused: bool
    model: Sequential
    boxes: dict  # step -> name -> (lo, hi) float64 arrays (exact copies)
    nominals: dict  # step -> name -> nominal array
    stopped: str | None


def run_training(case: Case, fused: bool) -> Run:
    model = build_model(case)
    boxes, nominals = {}, {}
    bad: list = []

    def on_step(step, params, nominal):
        boxes[step] = {
            k: (np.asarray(v.lo, dtype=np.float64), np.asarray(v.hi, dtype=np.float64))
            for k, v in params.items()
        }
        nominals[step] = {k: np.array(v) for k, v in nominal.items()}
        for k, (lo, hi) in boxes[step].items():
            COUNTS["nominal checks"] += 1
            nom = nominals[step][k].astype(np.float64)
            if not bool(np.all((lo <= nom) & (nom <= hi))):
                bad.append(f"step {step}: the reported nominal {k} = {nom} is outside {lo}..{hi}")

    s = case.spec
    config = TrainConfig(
        epochs=s.epochs,
        learning_rate=s.lr,
        batch_size=s.batch_size,
        schedule=s.schedule,
        loss=s.loss,
        seed=s.seed,
        fused=fused,
    )
    t0 = time.perf_counter()
    try:
        with np.errstate(all="ignore"):
            result = train(model, case.x, case.y, case.threat, config, on_step=on_step)
    except SoundnessError as err:
        _violation("nominal", f"train raised SoundnessError: {err}", case, fused)
    except Exception as err:  # no documented error applies to these valid inputs
        _violation("train raised", f"{type(err).__name__}: {err}", case, fused)
    SECONDS["library training"] += time.perf_counter() - t0
    COUNTS["training runs"] += 1
    COUNTS["steps recorded"] += len(boxes)
    if result.stopped:
        COUNTS["runs stopped early (infinite bounds)"] += 1
    sig = (s.dtype, s.loss, s.layers, s.sizes)
    ARCHITECTURES.add(sig)
    if bad:
        _violation("nominal", bad[0], case, fused)
    steps = sorted(boxes)
    assert steps == list(range(1, len(steps) + 1)), steps
    return Run(case, fused, result.model, boxes, nominals, result.stopped)


class Violation(AssertionError):
    pass


def _violation(kind: str, what: str, case: Case, fused, member: str = "") -> None:
    COUNTS["violations"] += 1
    path = {True: "fused", False: "layered", None: "-"}[fused]
    COUNTS[f"violations: {kind}, {path}, {case.spec.dtype}"] += 1
    raise Violation(f"[{kind}] path={path} {member}\n{what}\n{case!r}")


def _example(check) -> None:
    """Run one example's checks; in KEEP_GOING mode record a violation instead of failing."""
    try:
        check()
    except Violation as v:
        if not KEEP_GOING:
            raise
        FOUND.append(str(v))


# ------------------------------------------------------------------ members of the boxes


def _rand_between(rng, lo: mpq, hi: mpq) -> mpq:
    return lo + (hi - lo) * mpq(int(rng.integers(0, 2**20 + 1)), 2**20)


def _finite_q(lo: float, hi: float) -> tuple[mpq, mpq]:
    """Exact endpoints of a member range; an infinite end is replaced by a far finite one."""
    far = mpq(2) ** 1100
    lo_q = q(lo) if math.isfinite(lo) else (q(hi) if math.isfinite(hi) else 0) - far
    hi_q = q(hi) if math.isfinite(hi) else (q(lo) if math.isfinite(lo) else 0) + far
    return lo_q, hi_q


def _pick(rng, mode: str, lo, hi, nom):
    """One real member of ``[lo, hi]`` (all mpq) by mode."""
    if mode == "mixed":
        mode = ("nominal", "vertex", "random")[int(rng.integers(3))]
    if mode == "nominal":
        return nom
    if mode == "vertex":
        return lo if rng.random() < 0.5 else hi
    return _rand_between(rng, lo, hi)


def _nested(flat, shape):
    if len(shape) == 1:
        return list(flat)
    p = shape[1]
    return [list(flat[i * p : (i + 1) * p]) for i in range(shape[0])]


def exact_params(rng, boxes: dict, nominal: dict, mode: str) -> dict:
    """A real parameter vector inside ``boxes`` (name -> (lo, hi)) as nested mpq lists."""
    out = {}
    for name, (lo, hi) in boxes.items():
        nom = np.asarray(nominal[name], dtype=np.float64)
        vals = []
        for a, b, c in zip(lo.ravel(), hi.ravel(), nom.ravel(), strict=True):
            lo_q, hi_q = _finite_q(float(a), float(b))
            c_q = q(c) if math.isfinite(c) and lo_q <= q(c) <= hi_q else lo_q
            vals.append(_pick(rng, mode, lo_q, hi_q, c_q))
        out[name] = _nested(vals, lo.shape)
    return out


def exact_data(rng, case: Case, x, eps, mode: str) -> list:
    """A real poisoned copy of the rows ``x``: each feature ``x + e``, ``|e| <= eps``, clipped."""
    eps_q = q(eps)
    a, b = (q(case.domain[0]), q(case.domain[1])) if case.domain else (None, None)
    rows = []
    for row in x:
        out = []
        for v in row:
            v_q = q(v)
            m = mode if mode != "mixed" else ("clean", "vertex", "random")[int(rng.integers(3))]
            if m == "vertex":
                v_q = v_q + (eps_q if rng.random() < 0.5 else -eps_q)
            elif m == "random":
                v_q = v_q + eps_q * (2 * mpq(int(rng.integers(0, 2**20 + 1)), 2**20) - 1)
            if a is not None:
                v_q = min(max(v_q, a), b)
            out.append(v_q)
        rows.append(out)
    return rows


def float_data(rng, case: Case, x, eps, mode: str) -> list:
    """A float poisoned copy of the rows ``x`` in the dtype (exactly within eps, clipped).

    With data wider than the dtype (``data64``) the user's input is the dtype's rounding
    of a point of the (clipped) ball: that is what float SGD of such data computes with.
    """
    dt, eps_q = case.dt, q(eps)
    if np.asarray(x).dtype != dt:
        return _rounded_data(rng, case, x, eps_q, mode)
    rows = []
    for row in x:
        out = []
        for v in row:
            v_q = q(v)
            m = mode if mode != "mixed" else ("clean", "vertex", "random")[int(rng.integers(3))]
            if m == "clean":
                out.append(dt.type(v))
                continue
            t = (
                eps_q
                if m == "vertex"
                else eps_q * (2 * mpq(int(rng.integers(0, 2**20)), 2**20) - 1)
            )
            t = t if rng.random() < 0.5 else -t
            f = round_to(v_q + t, dt)
            if not math.isfinite(f):
                f = dt.type(np.finfo(dt).max) * dt.type(np.sign(f))
            if case.domain is not None:  # clip to the floats inside the domain
                a = round_to(q(case.domain[0]), dt, gmpy2.RoundUp)
                b = round_to(q(case.domain[1]), dt, gmpy2.RoundDown)
                f = min(max(f, a), b)
            toward = dt.type(v)
            while abs(q(f) - v_q) > eps_q:  # RN may overshoot by an ulp: step back towards v
                f = dt.type(np.nextafter(f, toward))
            assert _in_domain(f, case)
            out.append(f)
        rows.append(out)
    return rows


def _rounded_data(rng, case: Case, x, eps_q, mode: str) -> list:
    rows = []
    for row in exact_data(rng, case, x, eps_q, mode):
        rows.append([round_to(v, case.dt) for v in row])
    return rows


def _in_domain(f, case: Case) -> bool:
    return case.domain is None or case.domain[0] <= float(f) <= case.domain[1]


# ------------------------------------------------------------------ containment checks


class BoxQ:
    """The boxes of one run as exact rationals (converted once per step)."""

    def __init__(self, run: Run):
        self.run = run
        self._q: dict = {}

    def at(self, step: int):
        got = self._q.get(step)
        if got is None:
            got = {}
            for name, (lo, hi) in self.run.boxes[step].items():
                got[name] = [
                    (None if a == -np.inf else q(a), None if b == np.inf else q(b), a, b)
                    for a, b in zip(lo.ravel(), hi.ravel(), strict=True)
                ]
            self._q[step] = got
        return got


def _show(v) -> str:
    """A rational for messages: its nearest float, or 17 digits where floats cannot hold it."""
    try:
        return repr(float(v))
    except OverflowError:
        return str(gmpy2.mpfr(v, 57))


def _bits(v) -> int:
    return max(max(x.numerator.bit_length(), x.denominator.bit_length()) for x in flat(v))


def check_exact_step(boxq: BoxQ, step: int, params: dict, member: str) -> None:
    box = boxq.at(step)
    for name, entries in box.items():
        for idx, (v, (lo_q, hi_q, lo, hi)) in enumerate(
            zip(flat(params[name]), entries, strict=True)
        ):
            COUNTS["exact parameter checks"] += 1
            if math.isnan(lo) or math.isnan(hi):
                _violation(
                    "real",
                    f"step {step}: {name}[{idx}] box has NaN",
                    boxq.run.case,
                    boxq.run.fused,
                    member,
                )
            if (lo_q is not None and v < lo_q) or (hi_q is not None and v > hi_q):
                _violation(
                    "real",
                    f"step {step}: exact SGD {name}[{idx}] = {_show(v)} ({v}) outside "
                    f"[{float(lo)!r}, {float(hi)!r}]",
                    boxq.run.case,
                    boxq.run.fused,
                    member,
                )


def check_float_step(run: Run, step: int, params: dict, member: str, overflowed: bool) -> None:
    """Float SGD's parameters in the box; ``overflowed``: it met inf or NaN on the way.

    The promise covers float SGD in which no value overflows (README, "Real and
    float SGD"); a run that overflowed is counted, not checked.
    """
    if overflowed:
        COUNTS["float SGD steps after an overflow (outside the promise)"] += 1
        return
    kind = "float"
    for name, (lo, hi) in run.boxes[step].items():
        for idx, (v, a, b) in enumerate(
            zip(flat(params[name]), lo.ravel(), hi.ravel(), strict=True)
        ):
            COUNTS["float parameter checks"] += 1
            v = float(v)
            if not _float_in(v, a, b):
                _violation(
                    kind,
                    f"step {step}: float SGD {name}[{idx}] = {v!r} ({v.hex()}) outside "
                    f"[{float(a)!r}, {float(b)!r}] = [{float(a).hex()}, {float(b).hex()}] "
                    f"(ulps of dtype: below {_ulps(a, v, run.case.dt)}, "
                    f"above {_ulps(v, b, run.case.dt)})",
                    run.case,
                    run.fused,
                    member,
                )


def _ulps(a, b, dt):
    """How many ``dt`` floats from ``a`` up to ``b`` (for messages)."""
    if not (math.isfinite(a) and math.isfinite(b)) or a <= b:
        return 0
    n, x = 0, dt.type(b)
    while x < dt.type(a) and n < 10**6:
        x, n = np.nextafter(x, dt.type(np.inf)), n + 1
    return n


def _init_nominal(case: Case) -> dict:
    return {k: v[2] for k, v in case.init.items()}


def _init_boxes(case: Case) -> dict:
    return {k: (v[0].astype(np.float64), v[1].astype(np.float64)) for k, v in case.init.items()}


def check_real_sgd(run: Run, rng, members: int) -> None:
    case, s = run.case, run.case.spec
    steps = len(run.boxes)
    if not steps:
        return
    batches = replay_batches(s.n, s.batch_size, s.seed, s.epochs)[:steps]
    rates = exact_rates(s, steps)
    boxq = BoxQ(run)
    y = case.y.tolist()
    modes = [("nominal", "clean")] + [
        (
            ("vertex", "random", "mixed", "nominal")[int(rng.integers(4))],
            ("vertex", "random", "mixed", "clean")[int(rng.integers(4))],
        )
        for _ in range(members - 1)
    ]
    for p_mode, d_mode in modes:
        params = exact_params(rng, _init_boxes(case), _init_nominal(case), p_mode)
        data = exact_data(rng, case, case.x, s.eps, d_mode)
        member = f"member: params={p_mode}, data={d_mode}"
        t0 = time.perf_counter()
        for t, p in sgd(case.arch, params, data, y, s.loss, batches, rates, Exact()):
            check_exact_step(boxq, t, p, member)
            COUNTS["exact SGD steps"] += 1
            if max(_bits(v) for v in p.values()) > MAX_BITS:
                COUNTS["exact SGD members cut short (rationals too long)"] += 1
                break
        SECONDS["exact SGD"] += time.perf_counter() - t0
        COUNTS["exact SGD members"] += 1


def check_float_sgd(run: Run, rng, members: int) -> None:
    case, s = run.case, run.case.spec
    steps = len(run.boxes)
    if not steps:
        return
    batches = replay_batches(s.n, s.batch_size, s.seed, s.epochs)[:steps]
    y = case.y.tolist()
    dt = case.dt
    for r in range(members):
        # the first two: the nominal parameters on the clean data; the first also with
        # correctly rounded exp, no FMA, sums left to right and lambda_t rounded to nearest
        p_mode = "nominal" if r < 2 else ("vertex", "nominal", "mixed")[int(rng.integers(3))]
        d_mode = "clean" if r < 2 else ("vertex", "random", "mixed", "clean")[int(rng.integers(4))]
        fma, faithful = (False, False) if r == 0 else (rng.random() < 0.5, rng.random() < 0.5)
        order = "natural" if r == 0 else FloatArith.ORDERS[int(rng.integers(3))]
        params = float_params(rng, dt, _init_boxes(case), _init_nominal(case), p_mode)
        data = float_data(rng, case, case.x, s.eps, d_mode)
        rate_mode = RATE_MODES[0] if r == 0 else RATE_MODES[int(rng.integers(len(RATE_MODES)))]
        member = (
            f"float SGD: params={p_mode}, data={d_mode}, sums={order}, fma={fma}, "
            f"faithful exp={faithful}, rate={rate_mode}"
        )
        ar = FloatArith(dt, np.random.default_rng(int(rng.integers(2**32))), fma, faithful, order)
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            frates = float_rates(s, dt, steps, rate_mode)
            for t, p in sgd(case.arch, params, data, y, s.loss, batches, frates, ar):
                check_float_step(run, t, p, member, ar.overflowed)
                COUNTS["float SGD steps"] += 1
        SECONDS["float SGD"] += time.perf_counter() - t0
        COUNTS["float SGD members"] += 1


def float_params(rng, dt, boxes: dict, nominal: dict, mode: str) -> dict:
    """Float members (in ``dt``) of ``boxes``: endpoints, the nominal, rounded random points."""
    big = dt.type(np.finfo(dt).max)
    out = {}
    for name, (lo, hi) in boxes.items():
        nom = np.asarray(nominal[name])
        vals = []
        for a, b, c in zip(lo.ravel(), hi.ravel(), nom.ravel(), strict=True):
            a, b = max(dt.type(a), -big), min(dt.type(b), big)  # finite members of [lo, hi]
            c = dt.type(c) if a <= c <= b else a
            m = mode if mode != "mixed" else ("nominal", "vertex", "random")[int(rng.integers(3))]
            if m == "vertex":
                c = a if rng.random() < 0.5 else b
            elif m == "random":
                c = min(max(round_to(_rand_between(rng, q(a), q(b)), dt), a), b)
            vals.append(c)
        out[name] = _nested(vals, lo.shape)
    return out


def _float_in(v, a, b) -> bool:
    """``a <= v <= b``; a NaN only inside the whole line ``[-inf, inf]`` (no claim is made)."""
    if math.isnan(v):
        return a == -np.inf and b == np.inf
    return a <= v <= b


# ------------------------------------------------------------------ certification


def _exact_logits(case: Case, params: dict, rows: list) -> list:
    return forward(case.arch, params, rows, Exact())[0]


def _correct(z_row, label: int) -> bool:
    """Strictly the certificate's claim: z > 0 (class 1) / z < 0 (class 0); z_y > every other."""
    if len(z_row) == 1:
        return z_row[0] > 0 if label == 1 else z_row[0] < 0
    return all(z_row[label] > v for j, v in enumerate(z_row) if j != label)


def check_float_forward(run: Run, rng, final, nominal, bounds, modes, n_inputs) -> None:
    """Float forward passes (dtype, random sum orders, FMA or not) of float members: in bounds."""
    case = run.case
    xt = case.x_test
    for p_mode in modes:
        fparams = float_params(rng, case.dt, final, nominal, p_mode)
        for i_mode in ["clean"] + ["vertex", "random", "mixed"][: n_inputs - 1]:
            rows = float_data(rng, case, xt, case.threat.inference_epsilon, i_mode)
            fma = bool(rng.random() < 0.5)
            order = FloatArith.ORDERS[int(rng.integers(3))]
            ar = FloatArith(
                case.dt, np.random.default_rng(int(rng.integers(2**32))), fma, False, order
            )
            with np.errstate(all="ignore"):
                z = forward(case.arch, fparams, rows, ar)[0]
            COUNTS["certification float forward passes"] += 1
            if ar.overflowed:  # outside the promise, as in check_float_step
                COUNTS["certification float passes after an overflow (outside the promise)"] += 1
                continue
            kind = "certify float"
            for path, (lo, hi) in bounds.items():
                for r, zr in enumerate(z):
                    for j, v in enumerate(zr):
                        a, b = float(lo[r, j]), float(hi[r, j])
                        if not _float_in(float(v), a, b):
                            _violation(
                                kind,
                                f"{path}: float forward logit [{r}, {j}] = {float(v)!r} outside "
                                f"[{a!r}, {b!r}]",
                                case,
                                run.fused,
                                f"model={p_mode}, input={i_mode}, sums={order}, fma={fma}",
                            )


def _library_certification(case: Case, model, xt, labels):
    """Logit bounds of both certification paths, and the certified flags of certify() and of
    training validation (``Certifier``)."""
    box = case.threat.test_box(xt, case.dt)
    out = model.forward(box)
    bounds = {"layered model.forward": (out.lo, out.hi)}
    fb = forward_bounds(model, box)
    if fb is not None:
        bounds["fused forward_bounds"] = fb
        COUNTS["fused certification calls"] += 1
    cert = certify(model, xt, labels, case.threat)
    certified = {"certify()": cert.certified}
    box_x = case.threat.train_box(case.x, case.dt)
    x = case.x.astype(case.dt)
    trainer = FusedEngine.create(model, case.spec.loss, box_x, x, case.y, 1)
    if trainer is not None:
        valid = Certifier(trainer, xt, labels, case.threat)()
        certified["Certifier (validation)"] = valid.certified
    return bounds, certified, cert


def check_certification(run: Run, rng, n_models: int, n_inputs: int) -> None:
    case, model = run.case, run.model
    k = case.spec.sizes[-1]
    params = model.named_params()
    nominal = model.named_nominal()
    final = {
        name: (np.asarray(v.lo, dtype=np.float64), np.asarray(v.hi, dtype=np.float64))
        for name, v in params.items()
    }
    for name, (lo, hi) in final.items():
        if np.isnan(lo).any() or np.isnan(hi).any():
            if not run.stopped:
                _violation("certify", f"final box {name} has NaN", case, run.fused)
            return  # a stopped run's last box: not a model anyone certifies with
    xt = case.x_test  # as given (float64 data for a float32 model with data64)
    # the final nominal model's predictions decide most labels (so that some certify)
    z_nom = None
    if all(np.isfinite(a).all() for a in nominal.values()):
        nom_q = {n: _nested([q(v) for v in a.ravel()], a.shape) for n, a in nominal.items()}
        z_nom = _exact_logits(case, nom_q, [[q(v) for v in row] for row in xt])
    labels = []
    for r in range(len(xt)):
        if z_nom is not None and rng.random() < 0.7:
            zr = z_nom[r]
            labels.append(int(zr[0] > 0) if k == 1 else max(range(k), key=lambda j, zr=zr: zr[j]))
        else:
            labels.append(int(rng.integers(0, 2 if k == 1 else k)))
    labels = np.array(labels, dtype=np.int64)
    try:
        with np.errstate(all="ignore"):
            bounds, certified, cert = _library_certification(case, model, xt, labels)
    except Exception as err:  # no documented error applies to these valid inputs
        _violation("certify raised", f"{type(err).__name__}: {err}", case, run.fused)
    COUNTS["certification points"] += len(xt)
    COUNTS["certified points"] += int(cert.certified.sum())
    modes = ["nominal"] + [
        ("vertex", "random", "mixed")[int(rng.integers(3))] for _ in range(n_models - 1)
    ]
    for p_mode in modes:
        member_params = exact_params(rng, final, nominal, p_mode)
        for i_mode in ["clean"] + ["vertex", "random", "mixed"][: n_inputs - 1]:
            rows = exact_data(rng, case, xt, case.threat.inference_epsilon, i_mode)
            z = _exact_logits(case, member_params, rows)
            COUNTS["certification members (model x input)"] += 1
            member = f"model={p_mode}, input={i_mode}"
            for path, (lo, hi) in bounds.items():
                for r in range(len(xt)):
                    for j in range(k):
                        a, b = float(lo[r, j]), float(hi[r, j])
                        v = z[r][j]
                        ok = not (math.isnan(a) or math.isnan(b))
                        ok = ok and (a == -np.inf or q(a) <= v) and (b == np.inf or v <= q(b))
                        if not ok:
                            _violation(
                                "certify",
                                f"{path}: logit [{r}, {j}] = {_show(v)} outside [{a!r}, {b!r}]",
                                case,
                                run.fused,
                                member,
                            )
            for path, flags in certified.items():
                for r in np.flatnonzero(flags):
                    if not _correct(z[r], int(labels[r])):
                        _violation(
                            "certify",
                            f"{path}: point {r} certified as class {labels[r]} but a member "
                            f"gives logits {[_show(v) for v in z[r]]}",
                            case,
                            run.fused,
                            member,
                        )
    check_float_forward(run, rng, final, nominal, bounds, modes, n_inputs)


# ------------------------------------------------------------------ the tests

PATHS = pytest.mark.parametrize("fused", [True, False], ids=["fused", "layered"])


def _spec(**kw) -> Spec:
    """A one-Linear-or-more spec with moderate defaults (for the explicit examples below)."""
    nlin = kw["layers"].count("L")
    base = dict(
        dtype="float64",
        loss="bce",
        w_scales=("unit",) * nlin,
        b_scales=("unit",) * nlin,
        boxes=("point",) * nlin,
        x_scale="unit",
        n=2,
        eps=0.0,
        test_eps=None,
        domain="none",
        lr=0.1,
        schedule="constant",
        batch_size=1,
        epochs=1,
        seed=0,
        n_test=1,
    )
    base.update(kw)
    return Spec(**base)


# Regressions: each fails on the code before commit 9b88f90 (checked with that tree first on
# PYTHONPATH).  (1) the fused step ignored a ReLU after the last Linear: the nominal member's
# exact SGD leaves the box at step 1; (2) the fused overflow guard read the nominal weights, so
# weights near -1e287 reached the kernel and its NaN/inf logit bounds missed the exact logits;
# (3) float32 fused boxes missed float32 SGD by an ulp or a few.
RELU_LAST = _spec(layers="LR", sizes=(1, 1), seed=16)
GUARD_READS_NOMINALS = _spec(
    loss="ce", layers="L", sizes=(2, 2), w_scales=("huge",), x_scale="huge", epochs=0, n_test=3
)
FLOAT32_ULP = _spec(
    dtype="float32", layers="L", sizes=(3, 1), n=3, lr=Fraction(1, 3), batch_size=3, epochs=2
)
# Found by this harness on the code of commit 27ae179, fixed since: (A) and (A') now stop
# training with "the nominal model overflowed"; (B) and (C): the fused float32 guard declines
# below 2^120, and the layered float32 path gives infinite bounds:
# (A) float SGD overflows to NaN in the dtype while real SGD and the box stay finite; the
#     library's own nominal does too, and train() raises ValueError from _check_inside (both
#     paths: fused=True hands the step to the layered path once the guard declines);
# (A') the nominal ReLU ``z * (z > 0)`` turns a logit that overflowed to -inf into NaN
#     (-inf * 0), where float SGD with ReLU = max(z, 0) stays finite: the same ValueError;
# (B) fused float32 training works in float64: activations beyond float32's range (3.4e38) stay
#     finite there, so the box misses float32 SGD, which overflows to inf/NaN;
# (C) the same in certification: forward_bounds gives finite float64 logit bounds for a float32
#     model whose float32 forward pass overflows (certify() then certifies the point).
NOMINAL_OVERFLOWS = _spec(
    loss="ce", layers="LL", sizes=(1, 1, 3), w_scales=("unit", "huge"), n=1, epochs=2
)
NOMINAL_RELU_OF_MINUS_INF = _spec(
    loss="ce", layers="LR", sizes=(1, 2), x_scale="huge", n=1, epochs=2, batch_size=1
)
FLOAT32_OVERFLOW_TRAINING = _spec(
    dtype="float32",
    layers="LLLR",
    sizes=(2, 2, 4, 1),
    w_scales=("tiny", "huge", "subnormal"),
    b_scales=("unit", "huge", "subnormal"),
    boxes=("ulps", "ulps", "ulps"),
    x_scale="huge",
    n=3,
    eps=5e-324,
    domain="tight",
    lr=1.0,
    seed=826,
)
FLOAT32_OVERFLOW_CERTIFY = _spec(
    dtype="float32",
    loss="ce",
    layers="LLL",
    sizes=(1, 2, 2, 6),
    w_scales=("zero", "subnormal", "huge"),
    b_scales=("unit", "huge", "huge"),
    boxes=("point", "ulps", "relative"),
    x_scale="small",
    n=5,
    eps=0.1,
    test_eps=5e-324,
    domain="loose",
    lr=1 / 3,
    batch_size=2,
    epochs=0,
    seed=20976,
    n_test=4,
)


def _count_case(spec: Spec) -> None:
    COUNTS["examples"] += 1


@PATHS
@SETTINGS
@given(spec=specs())
@example(spec=RELU_LAST)
@example(spec=NOMINAL_OVERFLOWS)
def test_exact_sgd_from_box_members_stays_in_the_box(fused, spec):
    """Real numbers: exact SGD from members of the initial box on poisoned data."""

    def check():
        run = run_training(make_case(spec), fused)
        check_real_sgd(run, np.random.default_rng(spec.seed ^ 0x5EED), members=6)

    _count_case(spec)
    _example(check)


@PATHS
@SETTINGS
@given(spec=specs())
@example(spec=FLOAT32_ULP)
@example(spec=RELU_LAST)
@example(spec=FLOAT32_OVERFLOW_TRAINING)
@example(spec=NOMINAL_RELU_OF_MINUS_INF)
def test_float_sgd_in_any_summation_order_stays_in_the_box(fused, spec):
    """Floats: SGD in the model's dtype, random sum orders, FMA or not, faithful exp."""

    def check():
        run = run_training(make_case(spec), fused)
        check_float_sgd(run, np.random.default_rng(spec.seed ^ 0xF10A7), members=6)

    _count_case(spec)
    _example(check)


@SETTINGS
@given(spec=specs(max_epochs=2, min_epochs=0), fused=st.booleans())
@example(spec=GUARD_READS_NOMINALS, fused=True)
@example(spec=FLOAT32_OVERFLOW_CERTIFY, fused=True)
def test_certified_points_hold_for_sampled_members(spec, fused):
    """Both certification paths (and training validation) on the trained (or initial) box."""

    def check():
        run = run_training(make_case(spec), fused)
        t0 = time.perf_counter()
        rng = np.random.default_rng(spec.seed ^ 0xCE27)
        check_certification(run, rng, n_models=6, n_inputs=4)
        SECONDS["certification checks"] += time.perf_counter() - t0

    _count_case(spec)
    _example(check)


def test_zz_report():
    """Prints what the harness checked (run pytest with -s to see it); fails on recorded ones."""
    lines = [f"harness ({EXAMPLES} examples per test):"]
    lines.append(f"  distinct architectures (dtype, loss, layers, sizes): {len(ARCHITECTURES)}")
    COUNTS["violations"] += 0
    for key in sorted(COUNTS):
        lines.append(f"  {key}: {COUNTS[key]}")
    for key in sorted(SECONDS):
        lines.append(f"  seconds in {key}: {SECONDS[key]:.1f}")
    print("\n".join(lines))
    for v in FOUND:
        print("\n" + v)
    assert not FOUND, f"{len(FOUND)} violations recorded (KEEP_GOING mode), listed above"
