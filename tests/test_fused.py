"""The fused training and certification kernels (kernels/fused.py, intervalnn/engine/fused.py).

Soundness oracles: exact rational SGD (``fractions.Fraction``, sigmoid and
softmax through MPFR at 300 bits) and float64 SGD on poisoned data sampled
from the threat model's box must stay inside the fused parameter boxes at
every step; the nominal model must be inside at every step; the one-flop
widening must pass the floating-point neighbours; interval dot products must
enclose their exact values (checked with Fractions); the fast exp / log1p
bounds must enclose MPFR's values.  The fused boxes are compared with the
layered path's.  Training runs with ``Sequential.forward`` disabled, which
proves that the fused kernel (not the layered fallback) did the steps.
"""

from fractions import Fraction

import gmpy2
import numpy as np
import pytest
from numba import njit
from oracle import (
    arch_of,
    box_member,
    count_excursions,
    dot_hull,
    float64_sgd,
    fraction_sgd,
    mpfr_fraction,
    mpfr_sigmoid,
    mpfr_softmax,
    mpfr_softplus,
    poisoned,
    tightest,
)

import intervalnn.kernels.fused as K
from intervalnn.certify import Certifier, certify
from intervalnn.datasets import two_moons_splits
from intervalnn.engine.fused import FusedEngine, forward_bounds
from intervalnn.interval import Interval
from intervalnn.kernels import elementary as el
from intervalnn.kernels import rounding as R
from intervalnn.layers import Linear, ReLU, Sequential, mlp
from intervalnn.optim import SGD
from intervalnn.threat import ThreatModel
from intervalnn.train import SoundnessError, TrainConfig, batch_indices, train

DTYPES = (np.float64, np.float32)
LOSSES = ("bce", "ce")


# ---------------------------------------------------------------- helpers


@pytest.fixture
def fused_only(monkeypatch):
    """Make any layered forward pass fail: the steps must come from the fused kernel."""

    def refuse(self, x):
        raise AssertionError("the layered training path ran")

    monkeypatch.setattr(Sequential, "forward", refuse)


# ---------------------------------------------------------------- one-flop widening


@njit
def _widen_all(xs, lo, hi):
    for i in range(xs.size):
        lo[i] = R.widen_dn(xs[i], R.UNIT64)
        hi[i] = R.widen_up(xs[i], R.UNIT64)


def _interesting_floats(rng):
    e = np.arange(-1074, 1024, dtype=np.float64)
    powers = np.ldexp(1.0, e.astype(int))
    near = np.concatenate([powers, np.nextafter(powers, 0), np.nextafter(powers, np.inf)])
    rand = rng.standard_normal(20000) * 10.0 ** rng.uniform(-320, 300, 20000)
    sub = rng.integers(1, 2**52, 2000).astype(np.float64) * 5e-324
    vals = np.concatenate([near, rand, sub, [5e-324, 2.2250738585072014e-308, 1.0, 3.0]])
    vals = vals[np.isfinite(vals) & (np.abs(vals) < np.finfo(np.float64).max) & (vals != 0)]
    return np.concatenate([vals, -vals])


def test_one_flop_widening_passes_both_neighbours():
    """Rump et al. (BIT 2009): fl(c -+ fl(fl(phi |c|) + eta)) is beyond pred(c) / succ(c)."""
    xs = _interesting_floats(np.random.default_rng(0))
    lo, hi = np.empty_like(xs), np.empty_like(xs)
    _widen_all(xs, lo, hi)
    assert np.all(lo <= np.nextafter(xs, -np.inf))
    assert np.all(hi >= np.nextafter(xs, np.inf))
    # at most two steps away (the theorem's near-underflow range allows the second neighbour)
    assert np.all(lo >= np.nextafter(np.nextafter(xs, -np.inf), -np.inf))
    assert np.all(hi <= np.nextafter(np.nextafter(xs, np.inf), np.inf))
    zero = np.array([0.0, -0.0])
    _widen_all(zero, lo[:2], hi[:2])
    assert np.all(lo[:2] == 0) and np.all(hi[:2] == 0)  # exact zeros are kept


@njit
def _widen_with(xs, lo, hi, unit):
    for i in range(xs.size):
        lo[i] = R.widen_dn(xs[i], unit)
        hi[i] = R.widen_up(xs[i], unit)


def test_one_flop_widening_is_the_tightest_for_normal_values():
    """The "tightest" strategy (kernels/rounding.py): exactly pred(c) / succ(c) for |c| >= 2^-969.

    UNIT64_REAL (exact real results) and UNIT64 (float64 SGD) share phi and eta;
    UNIT32 widens further, past the float32 neighbours of c's float32 rounding.
    """
    xs = _interesting_floats(np.random.default_rng(1))
    xs = xs[np.abs(xs) >= 2.0**-969]
    lo, hi = np.empty_like(xs), np.empty_like(xs)
    for unit in (R.UNIT64_REAL, R.UNIT64):
        _widen_with(xs, lo, hi, unit)
        assert np.array_equal(lo, np.nextafter(xs, -np.inf))
        assert np.array_equal(hi, np.nextafter(xs, np.inf))
    x32 = xs[np.abs(xs) < 1e38].astype(np.float32)
    x32 = x32[np.isfinite(x32) & (x32 != 0)].astype(np.float64)
    lo, hi = np.empty_like(x32), np.empty_like(x32)
    _widen_with(x32, lo, hi, R.UNIT32)
    f32 = x32.astype(np.float32)
    assert np.all(lo <= np.nextafter(f32, np.float32(-np.inf)))
    assert np.all(hi >= np.nextafter(f32, np.float32(np.inf)))


@njit
def _mul_bounds(a, b):
    return R.widen_dn_mul(a, b, R.UNIT64), R.widen_up_mul(a, b, R.UNIT64)


def test_underflowing_product_is_widened_and_zero_factor_is_exact():
    assert _mul_bounds(1e-200, 1e-200) == (-5e-324, 5e-324)  # 1e-400 rounds to 0: widen
    assert _mul_bounds(-1e-200, 1e-200) == (-5e-324, 5e-324)
    assert _mul_bounds(0.0, 1e300) == (0.0, 0.0)
    lo, hi = _mul_bounds(3.0, 1.0 / 3.0)
    assert Fraction(lo) < Fraction(3) * Fraction(1.0 / 3.0) < Fraction(hi)


# ---------------------------------------------------------------- exp / log1p bounds


@njit
def _exp_all(xs, lo, hi):
    for i in range(xs.size):
        lo[i], hi[i] = K._exp_bounds(xs[i])


@njit
def _log1p_all(xs, lo, hi):
    for i in range(xs.size):
        lo[i], hi[i] = K._log1p_bounds(xs[i])


@njit
def _tight(xs, lo, hi, which):
    for i in range(xs.size):
        if which == 0:
            lo[i], hi[i] = el.exp_rd64(xs[i]), el.exp_ru64(xs[i])
        else:
            lo[i], hi[i] = el.log1p_rd64(xs[i]), el.log1p_ru64(xs[i])


def _exp_points(rng):
    edges = [-745.5, -707.0, -706.999, -700.0, -1.0, -(2.0**-60), -(2.0**-61), 0.0, -0.0]
    edges += [2.0**-60, 2.0**-61, 1e-300, 0.5, 1.0, 700.0, 708.99, 709.0, 709.5, 800.0]
    rand = np.concatenate(
        [rng.uniform(-745, 710, 40000), rng.uniform(-1, 1, 20000), rng.uniform(-40, 0, 20000)]
    )
    small = rng.choice([-1, 1], 5000) * 10.0 ** rng.uniform(-20, -1, 5000)
    return np.concatenate([edges, rand, small])


def test_fast_exp_encloses_the_tight_bounds_and_mpfr():
    xs = _exp_points(np.random.default_rng(1))
    lo, hi, rd, ru = (np.empty_like(xs) for _ in range(4))
    _exp_all(xs, lo, hi)
    _tight(xs, rd, ru, 0)
    assert np.all(lo <= rd) and np.all(hi >= ru)  # rd/ru are the tightest floats: soundness
    fast = (xs >= -707) & (xs <= 709) & (np.abs(xs) >= 2.0**-60)
    assert np.all(hi[fast] - lo[fast] <= 2.0**-45 * hi[fast])  # about 2^-47 wide
    sub = xs[:: len(xs) // 3000]
    m_lo, m_hi = tightest(gmpy2.exp, sub)
    lo_s, hi_s = np.empty_like(sub), np.empty_like(sub)
    _exp_all(sub, lo_s, hi_s)
    assert np.all(lo_s <= m_lo) and np.all(hi_s >= m_hi)


def test_fast_log1p_encloses_the_tight_bounds_and_mpfr():
    rng = np.random.default_rng(2)
    xs = np.concatenate(
        [
            [0.0, 2.0**-60, 2.0**-61, 1e-300, 2.0**-53, 0.0078125, 1.0, 2.0, 2.0**1000, 2.0**1001],
            [np.inf, 1.4142135623730951 - 1, 0.4142135623730951, 0.41421356237309515],
            rng.uniform(0, 1, 40000),
            10.0 ** rng.uniform(-18, 300, 20000),
            np.exp(-rng.uniform(0, 40, 20000)),
        ]
    )
    lo, hi, rd, ru = (np.empty_like(xs) for _ in range(4))
    _log1p_all(xs, lo, hi)
    _tight(xs, rd, ru, 1)
    assert np.all(lo <= rd) and np.all(hi >= ru)
    fast = (xs >= 2.0**-60) & (xs <= 2.0**1000)
    assert np.all(hi[fast] - lo[fast] <= 2.0**-42 * hi[fast])
    sub = xs[np.isfinite(xs)][:: len(xs) // 3000]
    m_lo, m_hi = tightest(gmpy2.log1p, sub)
    lo_s, hi_s = np.empty_like(sub), np.empty_like(sub)
    _log1p_all(sub, lo_s, hi_s)
    assert np.all(lo_s <= m_lo) and np.all(hi_s >= m_hi)


# ---------------------------------------------------------------- loss stage


def _logit_boxes(rng, k, m):
    centre = rng.standard_normal((k, m)) * rng.choice([0.1, 1.0, 5.0, 40.0], (k, m))
    centre[:, :4] = np.array([800.0, -800.0, 0.0, 1e-300])  # exp overflow/underflow, 0, tiny
    rad = np.abs(rng.standard_normal((k, m))) * rng.choice([0.0, 1e-12, 1e-3, 0.5], (k, m))
    lo, hi = centre - rad, centre + rad
    return _tensor(lo, hi, np.clip(centre + rad * rng.uniform(-1, 1, (k, m)), lo, hi))


@pytest.mark.parametrize("k", [1, 2, 4])
def test_loss_gradient_and_value_bounds_against_mpfr(k):
    """The loss stage alone: gradient bounds at the box extremes, loss bounds, nominal inside.

    BCE: ``(sigmoid(z) - y)/m`` and ``softplus`` are monotone, so the exact
    extremes are at the endpoints; CE: ``softmax_i`` rises with ``z_i`` and
    falls with every other logit, so its exact minimum is ``1/(1 + sum_{j !=
    i} exp(hi_j - lo_i))``.  Exact values from MPFR at 300 bits.
    """
    rng = np.random.default_rng(k)
    m = 40
    z = _logit_boxes(rng, k, m)
    y = rng.integers(0, max(k, 2), m)
    idx = np.arange(m)
    g = np.empty_like(z)
    inv = Fraction(1, m)
    inv_lo, inv_hi = float(np.nextafter(1 / m, 0)), float(np.nextafter(1 / m, 1))
    grad = K._bce_grad if k == 1 else K._ce_grad
    loss_lo, loss_hi, _ = grad(z, y, idx, g, inv_lo, inv_hi, R.UNIT64)
    zf = [[[Fraction(float(z[q, i, b])) for i in range(k)] for b in range(m)] for q in range(3)]
    total_lo = total_hi = Fraction(0)
    for b in range(m):
        lo, hi, nom = zf[0][b], zf[1][b], zf[2][b]
        for i in range(k):
            if k == 1:
                t = int(y[b])
                exact = [(mpfr_sigmoid(v[0]) - t) * inv for v in (lo, hi, nom)]
            else:
                t = 1 if i == y[b] else 0
                rest = [j for j in range(k) if j != i]
                exact = [
                    (mpfr_softmax(a[i], [c[j] for j in rest]) - t) * inv
                    for a, c in ((lo, hi), (hi, lo), (nom, nom))
                ]
            g_lo, g_hi, g_n = (Fraction(float(g[q, i, b])) for q in range(3))
            assert g_lo <= exact[0] and exact[1] <= g_hi, (b, i)
            assert g_lo <= g_n <= g_hi and abs(g_n - exact[2]) <= inv / 2**40, (b, i)
        if k == 1:
            f_lo, f_hi = (-hi[0], -lo[0]) if y[b] == 1 else (lo[0], hi[0])
            total_lo += mpfr_softplus(f_lo)
            total_hi += mpfr_softplus(f_hi)
        else:
            c = int(y[b])
            rest = [j for j in range(k) if j != c]
            total_lo += mpfr_fraction(
                gmpy2.log1p, sum(mpfr_fraction(gmpy2.exp, lo[j] - hi[c]) for j in rest)
            )
            total_hi += mpfr_fraction(
                gmpy2.log1p, sum(mpfr_fraction(gmpy2.exp, hi[j] - lo[c]) for j in rest)
            )
    assert Fraction(loss_lo) <= total_lo * inv and total_hi * inv <= Fraction(loss_hi)
    assert loss_hi - loss_lo <= 1e-9 * abs(loss_hi) + float(np.sum(z[1] - z[0]))


# ---------------------------------------------------------------- interval dot products


def _tensor(lo, hi, nom):
    t = np.empty((4, *lo.shape))
    t[0], t[1], t[2] = lo, hi, nom
    t[3] = np.maximum(np.abs(lo), np.abs(hi))
    return t


def _random_box(rng, shape, scale, kind):
    c = rng.standard_normal(shape) * scale
    if kind == "cancel":  # huge terms of both signs that cancel, next to small ones
        c = np.where(rng.random(shape) < 0.3, np.sign(c) * 1e16 * scale, c)
    if kind == "zeros":
        c = np.where(rng.random(shape) < 0.5, 0.0, c)
    r = np.abs(rng.standard_normal(shape)) * scale * (0.0 if kind == "points" else 1e-3)
    if kind == "zeros":
        r = np.where(c == 0.0, 0.0, r)
    lo, hi = c - r, c + r
    nom = np.clip(c + r * rng.uniform(-1, 1, shape), lo, hi)
    return _tensor(lo, hi, nom)


def _tiny(*tensors):
    return any(bool(np.any((t[:2] != 0) & (np.abs(t[:2]) < K.TINY))) for t in tensors)


@pytest.mark.parametrize("kind", ["random", "cancel", "zeros", "points", "tiny"])
def test_interval_dot_products_enclose_their_exact_values(kind):
    """Forward-type sums (_mm_weights + bias + _finish) against Fraction arithmetic."""
    rng = np.random.default_rng(hash(kind) % 2**32)
    scale = 1e-170 if kind == "tiny" else 1.0
    nk, nr, m = 7, 5, 9
    w = _random_box(rng, (nk, nr), scale, kind)
    v = _random_box(rng, (nk, m), scale, kind)
    b = _random_box(rng, (nr,), scale * scale if kind == "tiny" else 1.0, kind)
    acc = np.empty((4, nr, m))
    K._fill_rows(acc, b)
    K._mm_weights(acc, w, True, v)
    tiny = _tiny(w, v)
    assert tiny == (kind == "tiny")
    K._finish(acc, nk + 1, tiny, R.UNIT64)
    for r in range(nr):
        for c in range(m):
            lo, hi = dot_hull(w[0, :, r], w[1, :, r], v[0, :, c], v[1, :, c], b[0, r], b[1, r])
            assert Fraction(acc[0, r, c]) <= lo and hi <= Fraction(acc[1, r, c]), (r, c)
            assert acc[0, r, c] <= acc[2, r, c] <= acc[1, r, c]  # the nominal sum inside


@pytest.mark.parametrize("nonneg", [False, True])
@pytest.mark.parametrize("kind", ["random", "cancel", "zeros", "tiny"])
def test_batch_sums_enclose_their_exact_values(kind, nonneg):
    """Weight-gradient sums over the batch (_outer_sums + _finish) against Fractions."""
    rng = np.random.default_rng(7 + nonneg)
    scale = 1e-170 if kind == "tiny" else 1.0
    n, p, m = 3, 4, 13
    a = _random_box(rng, (n, m), scale, kind)
    if nonneg:
        a[:3] = np.abs(a[:3])
        a[0], a[1] = np.minimum(a[0], a[1]), np.maximum(a[0], a[1])
        a[2] = np.clip(a[2], a[0], a[1])
        a[3] = a[1]
    g = _random_box(rng, (p, m), scale, kind)
    out, tmp = np.empty((4, n, p)), np.empty((4, m))
    K._outer_sums(out, a, nonneg, g, tmp)
    K._finish(out, m, _tiny(a, g), R.UNIT64)
    for i in range(n):
        for j in range(p):
            lo, hi = dot_hull(a[0, i], a[1, i], g[0, j], g[1, j], 0.0, 0.0)
            assert Fraction(out[0, i, j]) <= lo and hi <= Fraction(out[1, i, j]), (i, j)
            assert out[0, i, j] <= out[2, i, j] <= out[1, i, j]


@pytest.mark.parametrize("kind", ["random", "cancel", "zeros", "tiny"])
def test_input_layer_weight_sums_enclose_their_exact_values(kind):
    """The many-inputs weight gradient (_input_weight_grad: axpys over the inputs) vs Fractions."""
    rng = np.random.default_rng(11)
    scale = 1e-170 if kind == "tiny" else 1.0
    n, p, m = 37, 3, 9
    a = _random_box(rng, (n, m), scale, kind)
    rows = np.ascontiguousarray(a.transpose(0, 2, 1))
    g = _random_box(rng, (p, m), scale, kind)
    dw, dwt = np.empty((4, n, p)), np.empty((4, p, n))
    K._input_weight_grad(dw, dwt, g, rows, _tiny(a, g), R.UNIT64)
    for i in range(n):
        for j in range(p):
            lo, hi = dot_hull(a[0, i], a[1, i], g[0, j], g[1, j], 0.0, 0.0)
            assert Fraction(dw[0, i, j]) <= lo and hi <= Fraction(dw[1, i, j]), (i, j)
            assert dw[0, i, j] <= dw[2, i, j] <= dw[1, i, j]


def test_underflow_needs_the_tiny_flag():
    """Products that underflow to 0: without the tiny flag the bound fails (the flag matters)."""
    w = _tensor(np.full((1, 1), -1e-200), np.full((1, 1), -1e-200), np.full((1, 1), -1e-200))
    v = _tensor(np.full((1, 1), 1e-200), np.full((1, 1), 1e-200), np.full((1, 1), 1e-200))
    for tiny, sound in ((False, False), (True, True)):
        acc = np.zeros((4, 1, 1))
        K._mm_weights(acc, w, True, v)
        K._finish(acc, 1, tiny, R.UNIT64)
        exact = Fraction(-1e-200) * Fraction(1e-200)
        assert (Fraction(acc[0, 0, 0]) <= exact <= Fraction(acc[1, 0, 0])) == sound


# ---------------------------------------------------------------- exact rational SGD


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_exact_rational_sgd_stays_in_the_fused_box(loss, dtype, fused_only, record_steps):
    """A 2-3-K network, 6 points, 4 full-batch steps: exact SGD on poisoned data inside the box."""
    rng = np.random.default_rng(3)
    x = rng.uniform(-1, 1, size=(6, 2)).astype(dtype)
    k = 1 if loss == "bce" else 2
    y = np.array([0, 1, 0, 1, 1, 0])
    eps, lr = 0.05, 0.5
    model = mlp(2, k, hidden=3, layers=2, seed=1, dtype=dtype)
    init = {n: v.lo.copy() for n, v in model.named_params().items()}
    stack = arch_of(model)
    steps = {}
    cfg = TrainConfig(epochs=4, learning_rate=lr, batch_size=6, seed=0, loss=loss)
    train(model, x, y, ThreatModel(eps), cfg, on_step=record_steps(steps))
    assert sorted(steps) == [1, 2, 3, 4]
    for trial in range(4):
        xp = poisoned(x, eps, rng, "vertex" if trial % 2 == 0 else "random")
        for step, exact in enumerate(fraction_sgd(init, stack, xp, y, 4, lr, loss, k), start=1):
            for name, rows in exact.items():
                lo, hi = (np.atleast_2d(a) for a in steps[step][name])
                for r, row in enumerate(rows):
                    for c, v in enumerate(row):
                        assert Fraction(lo[r, c]) <= v <= Fraction(hi[r, c]), (trial, step, name)


# ---------------------------------------------------------------- float SGD on poisoned data


def _custom_stack(k, dtype):
    rng = np.random.default_rng(5)
    return Sequential(
        Linear(2, 8, rng=rng, dtype=dtype),
        ReLU(),
        ReLU(),
        Linear(8, 6, rng=rng, dtype=dtype),
        Linear(6, 5, rng=rng, dtype=dtype),
        ReLU(),
        Linear(5, k, rng=rng, dtype=dtype),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("arch", ["2x20", "stack", "wide"])
def test_float_sgd_on_poisoned_moons_stays_in_the_fused_box(
    arch, loss, dtype, fused_only, record_steps
):
    """Float64 SGD on sampled poisoned data (vertices and random points) inside at every step.

    ``stack``: a repeated ReLU, two Linears without a ReLU between them and
    three classes for cross-entropy; ``wide``: 40 inputs in [0, 1] (the
    input layer's weight gradient takes the many-inputs path, as for MNIST).
    """
    sp = two_moons_splits(seed=0, n_train=300)
    eps, lr, epochs, bs = 1e-3, 0.5, 2, 100
    k = 1 if loss == "bce" else (2 if arch == "2x20" else 3)
    y = sp.train.y if k < 3 else (sp.train.y + (sp.train.x[:, 0] > 1.0)).astype(np.int64)
    if arch == "wide":  # moons embedded in 40 pixel-like features
        mix = np.random.default_rng(9).uniform(-1, 1, (2, 40))
        wide = np.clip(0.5 + 0.25 * sp.train.x @ mix, 0.0, 1.0)
    if arch == "2x20":
        model = mlp(2, k, hidden=20, layers=2, seed=0, dtype=dtype)
    elif arch == "wide":
        model = mlp(40, k, hidden=6, layers=3, seed=0, dtype=dtype)
    else:
        model = _custom_stack(k, dtype)
    init = {name: box.lo.copy() for name, box in model.named_params().items()}
    stack = arch_of(model)
    x = (wide if arch == "wide" else sp.train.x).astype(dtype)
    steps = {}
    cfg = TrainConfig(epochs=epochs, learning_rate=lr, batch_size=bs, seed=5, loss=loss)
    train(model, x, y, ThreatModel(eps), cfg, on_step=record_steps(steps))
    rng = np.random.default_rng(5)
    batches = [b for _ in range(epochs) for b in batch_indices(len(y), bs, rng)]
    assert sorted(steps) == list(range(1, len(batches) + 1))
    sample = np.random.default_rng(11)
    excursions = 0
    for trial in range(6):
        xp = poisoned(x, eps, sample, "vertex" if trial % 2 else "random")
        excursions += count_excursions(float64_sgd(init, stack, xp, y, batches, lr, loss), steps)
    assert excursions == 0


# ---------------------------------------------------------------- nominal model, checks


def test_a_nominal_outside_its_box_is_reported():
    """The kernel's own check: a nominal parameter put outside the box raises SoundnessError."""
    sp = two_moons_splits(seed=0, n_train=100)
    model = mlp(2, 1, hidden=5, layers=2, seed=0)
    params, nominal = model.named_params(), model.named_nominal()
    nominal = dict(nominal, **{"2.bias": nominal["2.bias"] + 1.0})
    model.load(params, nominal)
    with pytest.raises(SoundnessError, match="2.bias"):
        train(model, sp.train.x, sp.train.y, ThreatModel(1e-3), TrainConfig(epochs=1))


def test_the_guard_declines_huge_parameters_and_train_falls_back(monkeypatch):
    """Parameters near 1e150 could overflow in the kernel: it declines, the layers take over."""
    sp = two_moons_splits(seed=0, n_train=100)
    model = mlp(2, 1, hidden=5, layers=2, seed=0)
    big = {k: Interval(v.lo * 1e150) for k, v in model.named_params().items()}
    model.load(big, {k: v.lo * 1e150 for k, v in model.named_params().items()})
    tr = FusedEngine.create(
        model, "bce", ThreatModel(1e-3).train_box(sp.train.x), sp.train.x, sp.train.y, 100
    )
    before = tr.net.th.copy()
    opt = SGD(0.1)
    assert tr.fused_step(np.arange(100), opt.rate(1)) is None
    assert np.array_equal(tr.net.th, before) and opt.t == 0
    calls = []
    layered_forward = Sequential.forward
    monkeypatch.setattr(
        Sequential, "forward", lambda s, x: calls.append(1) or layered_forward(s, x)
    )
    result = train(model, sp.train.x, sp.train.y, ThreatModel(1e-3), TrainConfig(epochs=1))
    assert len(calls) == 1 and len(result.history) == 2


def test_models_the_kernel_does_not_cover_take_the_layered_path():
    sp = two_moons_splits(seed=0, n_train=100)
    box = ThreatModel(1e-3).train_box(sp.train.x)
    model = mlp(2, 1, hidden=5, layers=2, seed=0)
    assert FusedEngine.create(model, "bce", box, sp.train.x, sp.train.y, 100) is not None
    assert FusedEngine.create(mlp(2, 2, hidden=5), "bce", box, sp.train.x, sp.train.y, 100) is None
    bad_labels = sp.train.y + 5
    assert FusedEngine.create(mlp(2, 2, hidden=5), "ce", box, sp.train.x, bad_labels, 100) is None

    class Scaled(ReLU):
        pass

    odd = Sequential(
        Linear(2, 3, rng=np.random.default_rng(0)),
        Scaled(),
        Linear(3, 1, rng=np.random.default_rng(1)),
    )
    assert FusedEngine.create(odd, "bce", box, sp.train.x, sp.train.y, 100) is None
    result = train(odd, sp.train.x, sp.train.y, ThreatModel(1e-3), TrainConfig(epochs=1))
    assert result.stopped is None and len(result.history) == 2


# ---------------------------------------------------------------- fused versus layered


def _widths_per_step(record_steps, loss, dtype, fused, steps=10):
    sp = two_moons_splits(seed=0, n_train=500)
    k = 1 if loss == "bce" else 2
    model = mlp(2, k, hidden=20, layers=2, seed=0, dtype=dtype)
    rec = {}
    cfg = TrainConfig(epochs=2, learning_rate=0.5, batch_size=100, seed=1, loss=loss, fused=fused)
    train(model, sp.train.x, sp.train.y, ThreatModel(1e-2), cfg, on_step=record_steps(rec))
    return [
        {n: float(np.sum(hi - lo)) for n, (lo, hi) in rec[s].items()} for s in range(1, steps + 1)
    ]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("loss", LOSSES)
def test_fused_boxes_are_no_wider_than_layered(loss, dtype, record_steps):
    """Summed widths per parameter after each of 10 steps: fused <= layered (+0.1 %).

    Measured (2x20 Two-Moons, eps 0.01, lr 0.5, batch 100): the fused boxes
    are never wider and become *narrower* as training goes on -- fused /
    layered = 0.99-1.00 after step 1, 0.68-0.80 (BCE) and 0.47-0.89 (CE)
    after step 10.  The kernel takes the IEEE 1788 endpoint products of two
    intervals where the layered GEMM uses midpoint-radius (up to 1.5x wider
    per product), and that compounds; the rounding terms of either path are
    ~1e-16 relative and do not show.
    """
    fused = _widths_per_step(record_steps, loss, dtype, True)
    layered = _widths_per_step(record_steps, loss, dtype, False)
    for f, lay in zip(fused, layered, strict=True):
        for name in f:
            assert f[name] <= lay[name] * 1.001, (name, f[name] / lay[name])
            assert f[name] >= lay[name] * 0.3, (name, f[name] / lay[name])


def test_fused_step_matches_the_layered_step_closely(record_steps):
    """One step from the same model: every fused bound within 1e-9 of the layered one (relative)."""
    sp = two_moons_splits(seed=0, n_train=100)
    for loss, k in (("bce", 1), ("ce", 3)):
        y = sp.train.y if k < 3 else (sp.train.y + (sp.train.x[:, 0] > 1.0)).astype(np.int64)
        out = []
        for fused in (True, False):
            model = mlp(2, k, hidden=10, layers=3, seed=2)
            rec = {}
            cfg = TrainConfig(epochs=1, learning_rate=0.3, batch_size=100, loss=loss, fused=fused)
            train(model, sp.train.x, y, ThreatModel(1e-2), cfg, on_step=record_steps(rec))
            out.append(rec[1])
        for name, (lo, hi) in out[0].items():
            lo_l, hi_l = out[1][name]
            scale = np.maximum(np.abs(lo_l) + np.abs(hi_l), 1e-300)
            assert np.all(lo >= lo_l - 1e-3 * (hi_l - lo_l) - 1e-12 * scale), name
            assert np.all(hi <= hi_l + 1e-3 * (hi_l - lo_l) + 1e-12 * scale), name


# ---------------------------------------------------------------- certification


@pytest.mark.parametrize("k", [1, 3])
def test_fused_forward_bounds_enclose_sampled_models_and_inputs(k):
    sp = two_moons_splits(seed=1, n_train=300)
    y = sp.train.y if k == 1 else (sp.train.y + (sp.train.x[:, 0] > 1.0)).astype(np.int64)
    model = mlp(2, k, hidden=20, layers=3, seed=3)
    cfg = TrainConfig(epochs=2, learning_rate=0.3, loss="bce" if k == 1 else "ce")
    train(model, sp.train.x, y, ThreatModel(1e-2), cfg)
    threat = ThreatModel(1e-2)
    box = threat.test_box(sp.test.x)
    lo, hi = forward_bounds(model, box)
    layered = model.forward(box)
    width_ratio = (hi - lo).sum() / (layered.hi - layered.lo).sum()
    assert 0.5 < width_ratio <= 1.001
    boxes = model.named_params()
    rng = np.random.default_rng(0)
    names = [f"{i}" for i, la in enumerate(model.layers) if isinstance(la, Linear)]
    for trial in range(20):
        pick = box_member(rng, boxes, vertex=trial % 2 == 1)
        h = sp.test.x + 1e-2 * rng.choice([-1.0, 1.0], size=sp.test.x.shape)
        for i, name in enumerate(names):
            h = h @ pick[f"{name}.weight"] + pick[f"{name}.bias"]
            if i < len(names) - 1:
                h = np.maximum(h, 0)
        assert np.all((lo <= h) & (h <= hi))


def test_training_validation_matches_certify():
    """The trainer's cached-box certification gives certify()'s result for the same model."""
    sp = two_moons_splits(seed=1)
    threat = ThreatModel(1e-2)
    model = mlp(2, 1, hidden=20, layers=2, seed=1)
    cfg = TrainConfig(epochs=3, learning_rate=0.5, validate_every="step")
    result = train(model, sp.train.x, sp.train.y, threat, cfg, sp.val.x, sp.val.y)
    tr = FusedEngine.create(model, "bce", threat.train_box(sp.train.x), sp.train.x, sp.train.y, 100)
    a = Certifier(tr, sp.val.x, sp.val.y, threat)()
    b = certify(model, sp.val.x, sp.val.y, threat)
    assert np.array_equal(a.margin, b.margin) and np.array_equal(
        a.nominal_correct, b.nominal_correct
    )
    assert result.best["val_certified_accuracy"] == max(
        r["val_certified_accuracy"] for r in result.history
    )


def test_certification_in_chunks_of_rows_gives_the_same_bounds(monkeypatch):
    """The fused forward runs in cache-sized chunks of rows sharing the whole box's data
    flags and max |x|: every row's bounds are those of one call on all rows (here chunks of
    16 rows, and one tiny endpoint in the last chunk only)."""
    import intervalnn.engine.fused as fused_module

    sp = two_moons_splits(seed=2)
    model = mlp(2, 1, hidden=20, layers=2, seed=2)
    x = sp.val.x.copy()
    x[-1, 0] = 2.0**-500  # below TINY: the whole box is flagged tiny
    box = ThreatModel(1e-3).test_box(x)
    whole = [b.copy() for b in forward_bounds(model, box)]
    monkeypatch.setattr(fused_module, "CHUNK_FLOATS", 16)
    engine = FusedEngine.create(model)
    prepared = engine.prepare(box)
    assert len(prepared.chunks) == -(-x.shape[0] // 16)
    lo, hi = engine.logit_bounds(prepared)
    assert np.array_equal(lo, whole[0]) and np.array_equal(hi, whole[1])
