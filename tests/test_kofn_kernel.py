"""kernels/kofn.py's outer_kofn against exact rational oracles.

* soundness: on tiny cases (b <= 6, in/out <= 3) the exact infimum and
  supremum of ``sum_s clamp(f_s a_s g_s) / m`` over every box vertex and every
  poisoned set of at most ``k`` attackable rows (brute force, ``Fraction``)
  lies in ``[out_lo, out_hi]``; magnitudes from the smallest subnormal to near
  the overflow threshold, infinities, zeros, point and wide boxes, both dtypes,
  both selection methods;
* the nominal: ``out_nom`` is the specified float sum (row order) and lies in
  the box;
* no NaN for any valid box, also ``[inf, inf]`` and ``[-inf, -inf]``;
* the selection methods, the transposed (narrow output) path and threads
  agree; medium cases against the exact greedy bound and a NumPy
  implementation from Interval ops (the kernel is sound and not wider).
"""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numpy as np
import pytest

from intervalnn.interval import Interval
from intervalnn.kernels import bounds
from intervalnn.kernels.kofn import outer_kofn

INF = math.inf
MAGS = {
    np.float64: [0.0, 5e-324, 3e-320, 2.0**-1022, 1e-300, 1e-150, 1e-8, 0.1, 1.0, 3.0, 1e8,
                 1e150, 1e300, 1.7e308, INF],
    np.float32: [0.0, 1e-45, 3e-42, 2.0**-126, 1e-30, 1e-8, 0.1, 1.0, 3.0, 1e8, 1e30, 3.4e38,
                 INF],
}  # fmt: skip


# ------------------------------------------------------------------ cases


def _value(rng, dt, infinite=True):
    mags = MAGS[dt] if infinite else MAGS[dt][:-1]
    x = mags[rng.integers(len(mags))] * (1 + rng.random() * (rng.random() < 0.5))
    x = dt(x) if math.isfinite(x) else dt(INF)
    return -x if rng.random() < 0.5 else x


def _box(rng, dt, shape, empty=False):
    """Random boxes: points, wide, half-infinite; ``empty``: also [inf, inf] and [-inf, -inf]."""
    lo, hi = np.empty(shape, dt), np.empty(shape, dt)
    for idx in np.ndindex(shape):
        kind = rng.integers(4)
        x, y = _value(rng, dt), _value(rng, dt)
        if kind == 0:  # point
            x = y = _value(rng, dt, infinite=False)
        elif kind == 1:  # near point: a few ulps wide
            x = _value(rng, dt, infinite=False)
            y = x
            for _ in range(rng.integers(1, 4)):
                y = np.nextafter(y, dt(INF))
        lo[idx], hi[idx] = min(x, y), max(x, y)
        if not empty and (lo[idx] == INF or hi[idx] == -INF):  # keep a real inside
            lo[idx], hi[idx] = (-INF, hi[idx]) if lo[idx] == INF else (lo[idx], INF)
            lo[idx], hi[idx] = min(lo[idx], dt(0)), max(hi[idx], dt(0))
    return lo, hi


def _factor(rng, dt, b):
    choices = [(1, 1), (0.5, 1), (0, 0.3), (0, 0), (0.25, 0.25), (0, 1), (1e-30, 1e-20)]
    pick = [choices[rng.integers(len(choices))] for _ in range(b)]
    return np.array([p[0] for p in pick], dt), np.array([p[1] for p in pick], dt)


def _inside(rng, lo, hi):
    """A point of each box: an endpoint or a value between (finite where the box allows)."""
    dt = lo.dtype.type
    out = np.empty_like(lo)
    for idx in np.ndindex(lo.shape):
        a, b = lo[idx], hi[idx]
        if not np.isfinite(a) or not np.isfinite(b):
            cands = [v for v in (a, b, dt(0), dt(1), dt(-1)) if a <= v <= b]
        else:
            cands = [a, b, min(max(dt(a / 2 + b / 2), a), b)]  # halving may round out
        out[idx] = cands[rng.integers(len(cands))]
    return out


def make_case(rng, dt, b=None, n_in=None, n_out=None, empty=False):
    b = int(rng.integers(1, 7)) if b is None else b
    n_in = int(rng.integers(1, 4)) if n_in is None else n_in
    n_out = int(rng.integers(1, 4)) if n_out is None else n_out
    a, g = _box(rng, dt, (b, n_in), empty), _box(rng, dt, (b, n_out), empty)
    ea, eg = _box(rng, dt, (b, n_in), empty), _box(rng, dt, (b, n_out), empty)
    if rng.random() < 0.5:  # extra box around the base one, as poisoning makes it
        ea = (np.minimum(ea[0], a[0]), np.maximum(ea[1], a[1]))
        eg = (np.minimum(eg[0], g[0]), np.maximum(eg[1], g[1]))
    f, ef = _factor(rng, dt, b), _factor(rng, dt, b)
    gamma = [0.0, 0.0, 0.3, 1e-300 if dt is np.float64 else 1e-30, 2.5][rng.integers(5)]
    gamma = float(dt(gamma))
    bound = [gamma, 2 * gamma + 1, INF][rng.integers(3)]
    free = rng.random(b) < (0.2 if rng.random() < 0.5 else 0.0)
    efree = rng.random(b) < (0.3 if rng.random() < 0.5 else 0.0)
    na, ng, nf = _inside(rng, *a), _inside(rng, *g), _inside(rng, *f)
    attack = rng.random(b) < (0.7 if rng.random() < 0.7 else 1.1)
    k = int(rng.integers(0, b + 2))
    inv = bounds.enclose_real(Fraction(1, b), dt)
    return dict(
        a=a, g=g, ea=ea, eg=eg, f=f, ef=ef, free=free, efree=efree, bound=bound,
        na=na, ng=ng, nf=nf, attack=attack, k=k, gamma=gamma, inv=inv,
        inv_nom=dt(float(Fraction(1, b))), dt=dt,
    )  # fmt: skip


def run(c, selection=None, transpose=False):
    dt = c["dt"]
    n_in, n_out = c["a"][0].shape[1], c["g"][0].shape[1]
    outs = [np.full((n_in, n_out), np.nan, dt) for _ in range(3)]
    outer_kofn(
        *c["a"], *c["g"], *c["ea"], *c["eg"], *c["f"], *c["ef"], c["free"], c["efree"],
        c["bound"], c["na"], c["ng"], c["nf"], c["attack"], c["k"], c["gamma"],
        *c["inv"], c["inv_nom"], *outs, selection=selection,
    )  # fmt: skip
    return outs


# ------------------------------------------------------------------ exact oracle


def _q(x):
    """A float as an exact value: Fraction, or +-inf as a float."""
    return Fraction(float(x)) if math.isfinite(x) else float(x)


def _xmul(x, y):
    """Extended-real product with IEEE 1788's 0 * inf = 0."""
    if x == 0 or y == 0:
        return Fraction(0)
    if math.isinf(x) or math.isinf(y):
        return INF if (x > 0) == (y > 0) else -INF
    return x * y


def _row_range(c, s, i, j, extra):
    """Exact (inf, sup) of clamp(f a g) over row s's real box (base or extra)."""
    pre = "e" if extra else ""
    bound = _q(c["dt"](c["bound"])) if math.isfinite(c["bound"]) else INF
    if c["efree" if extra else "free"][s]:
        return -bound, bound
    a, g, f = c[pre + "a"], c[pre + "g"], c["ef" if extra else "f"]
    vals = [
        _xmul(_xmul(_q(fv), _q(av)), _q(gv))
        for fv in (f[0][s], f[1][s])
        for av in (a[0][s, i], a[1][s, i])
        for gv in (g[0][s, j], g[1][s, j])
    ]
    lo, hi = min(vals), max(vals)
    if c["gamma"] > 0:
        gm = _q(c["gamma"])
        lo, hi = max(-gm, min(gm, lo)), max(-gm, min(gm, hi))
    return lo, hi


def _xsum(terms):
    return -INF if -INF in terms else (INF if INF in terms else sum(terms, Fraction(0)))


def _xdiff(x, y):
    """x - y for an infinite or exact x and an exact y."""
    return x if isinstance(x, float) else x - y


def exact_range(c, i, j, brute=True):
    """Exact inf and sup over all poisoned sets of at most k attackable rows, divided by m."""
    b = len(c["attack"])
    base = [_row_range(c, s, i, j, False) for s in range(b)]
    extra = [_row_range(c, s, i, j, True) for s in range(b)]
    rows = [s for s in range(b) if c["attack"][s]]
    kk = min(c["k"], len(rows))
    if brute:
        lows, highs = [], []
        for size in range(kk + 1):
            for p in itertools.combinations(rows, size):
                lows.append(_xsum([extra[s][0] if s in p else base[s][0] for s in range(b)]))
                highs.append(_xsum([extra[s][1] if s in p else base[s][1] for s in range(b)]))
        lo, hi = min(lows), max(highs)
    else:  # greedy: the k most negative deviations (exact for this separable problem)
        lo = _xsum([x[0] for x in base])
        if lo != -INF:
            dev = sorted(min(_xdiff(extra[s][0], base[s][0]), 0) for s in rows)[:kk]
            lo = _xsum([lo, *dev])
        hi = _xsum([x[1] for x in base])
        if hi != INF:
            dev = sorted((max(_xdiff(extra[s][1], base[s][1]), 0) for s in rows), reverse=True)
            dev = dev[:kk]
            hi = _xsum([hi, *dev])
    scale = lambda x: x / b if isinstance(x, Fraction) else x  # noqa: E731
    return scale(lo), scale(hi)


def assert_sound(c, outs, brute=True):
    lo, hi, _ = outs
    assert not np.isnan(lo).any() and not np.isnan(hi).any()
    for i, j in np.ndindex(lo.shape):
        x_lo, x_hi = exact_range(c, i, j, brute)
        assert _q(lo[i, j]) <= x_lo, (i, j, lo[i, j], x_lo)
        assert _q(hi[i, j]) >= x_hi, (i, j, hi[i, j], x_hi)


def nominal_spec(c):
    """out_nom as specified: clamp(RN(nf RN(na ng))) summed in row order, times inv_nom."""
    dt = c["dt"]
    na, ng, nf, gm = c["na"], c["ng"], c["nf"], dt(c["gamma"])
    t = np.zeros((na.shape[1], ng.shape[1]), dt)
    with np.errstate(all="ignore"):
        for s in range(na.shape[0]):
            q = nf[s] * np.multiply.outer(na[s], ng[s])
            t = t + (np.clip(q, -gm, gm) if c["gamma"] > 0 else q)
        return t * c["inv_nom"]


def _nominal_precondition(c):
    """A free row's nominal must lie in [-bound, bound] (the caller's promise)."""
    spec = c["nf"][:, None, None] * (c["na"][:, :, None] * c["ng"][:, None, :])
    if c["gamma"] > 0:
        spec = np.clip(spec, -c["gamma"], c["gamma"])
    with np.errstate(invalid="ignore"):
        return bool((np.abs(spec[c["free"]]) <= c["bound"]).all())


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("dt", [np.float64, np.float32])
@pytest.mark.parametrize("selection", ["list", "select"])
def test_sound_against_brute_force_over_vertices_and_poisoned_sets(dt, selection):
    rng = np.random.default_rng(1 if dt is np.float64 else 2)
    for _ in range(160):
        c = make_case(rng, dt)
        assert_sound(c, run(c, selection))


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_nominal_is_the_row_order_float_sum_and_lies_in_the_box(dt):
    rng = np.random.default_rng(3)
    checked = 0
    for _ in range(400):
        c = make_case(rng, dt)
        lo, hi, nom = run(c)
        spec = nominal_spec(c)
        np.testing.assert_array_equal(nom, spec)  # bit for bit, NaN where the floats give NaN
        if np.isnan(nom).any() or not _nominal_precondition(c):
            continue
        checked += 1
        assert (lo <= nom).all() and (nom <= hi).all(), (lo, nom, hi)
    assert checked > 200


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_no_nan_for_any_valid_box(dt):
    rng = np.random.default_rng(4)
    for _ in range(300):
        c = make_case(rng, dt, empty=True)
        for selection in ("list", "select"):
            lo, hi, _ = run(c, selection)
            assert not np.isnan(lo).any() and not np.isnan(hi).any()
            assert (lo <= hi).all()


def test_infinite_cancellations_give_infinite_bounds_not_nan():
    # -inf - (-inf) in a deviation is no deviation; +inf + -inf in a sum is the infinite bound
    dt = np.float64
    one = np.ones((2, 1))
    c = make_case(np.random.default_rng(0), dt, b=2, n_in=1, n_out=1)
    c.update(
        a=(np.array([[-INF], [1.0]]), np.array([[INF], [1.0]])),
        g=(one.copy(), one.copy()),
        ea=(np.array([[-INF], [INF]]), np.array([[INF], [INF]])),
        eg=(one.copy(), one.copy()),
        f=(np.ones(2), np.ones(2)), ef=(np.ones(2), np.ones(2)),
        free=np.zeros(2, bool), efree=np.zeros(2, bool), attack=np.ones(2, bool),
        k=1, gamma=0.0, na=np.ones((2, 1)), ng=np.ones((2, 1)), nf=np.ones(2),
    )  # fmt: skip
    lo, hi, _ = run(c)
    assert lo[0, 0] == -INF and hi[0, 0] == INF
    # a row whose base box holds no real ([inf, inf]) meeting an extra box below it
    c.update(a=(np.array([[INF], [1.0]]), np.array([[INF], [1.0]])))
    c["ea"] = (np.array([[0.0], [1.0]]), np.array([[INF], [1.0]]))
    lo, hi, _ = run(c)
    assert lo[0, 0] == -INF and hi[0, 0] == INF


def test_exact_cases_pin_the_rounding_of_deviations_and_sums():
    """Point boxes where every exact value is known: the bound must contain it, tightly."""
    dt = np.float64
    c = make_case(np.random.default_rng(0), dt, b=1, n_in=1, n_out=1)
    pt = lambda x: (np.array([[x]]), np.array([[x]]))  # noqa: E731
    c.update(
        a=pt(1.0), g=pt(1.0), ea=pt(-(2.0**-60)), eg=pt(1.0),
        f=(np.ones(1), np.ones(1)), ef=(np.ones(1), np.ones(1)),
        free=np.zeros(1, bool), efree=np.zeros(1, bool), attack=np.ones(1, bool), k=1,
        gamma=0.0, na=np.ones((1, 1)), ng=np.ones((1, 1)), nf=np.ones(1),
        inv=(1.0, 1.0), inv_nom=1.0,
    )  # fmt: skip
    lo, hi, nom = run(c)
    # the poisoned row's exact value -2^-60: RD(-2^-60 - 1) = -1 - 2^-52, then RD(1 + that)
    assert lo[0, 0] == -(2.0**-52) and hi[0, 0] == 1.0 and nom[0, 0] == 1.0
    assert_sound(c, (lo, hi, nom))


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_k_extreme_deviations_are_selected_exactly(dt):
    """Distinct point deviations: the bound is the exact sum of the k smallest, to a few ulps."""
    rng = np.random.default_rng(5)
    b = 12
    for k in (0, 1, 2, 3, 5, 8, 11, 12, 13):
        c = make_case(rng, dt, b=b, n_in=2, n_out=9)
        pts = rng.permutation(b).astype(dt)
        c.update(
            a=(np.ones((b, 2), dt), np.ones((b, 2), dt)), g=(np.zeros((b, 9), dt),) * 2,
            ea=(-pts[:, None].repeat(2, 1), pts[:, None].repeat(2, 1)),
            eg=(np.ones((b, 9), dt),) * 2,
            f=(np.ones(b, dt),) * 2, ef=(np.ones(b, dt),) * 2, free=np.zeros(b, bool),
            efree=np.zeros(b, bool), attack=np.ones(b, bool), k=k, gamma=0.0,
        )  # fmt: skip
        c["na"], c["ng"] = np.ones((b, 2), dt), np.zeros((b, 9), dt)
        want = sum(sorted(pts.tolist(), reverse=True)[: min(k, b)])
        for selection in ("list", "select"):
            lo, hi, _ = run(c, selection)
            np.testing.assert_allclose(lo, -want / b, rtol=1e-6)
            np.testing.assert_allclose(hi, want / b, rtol=1e-6)
            assert_sound(c, (lo, hi, None), brute=False)


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_methods_transpose_and_threads_agree(dt):
    rng = np.random.default_rng(6)
    for _ in range(8):
        c = make_case(rng, dt, b=int(rng.integers(3, 16)), n_in=int(rng.integers(1, 10)),
                      n_out=int(rng.integers(1, 10)))  # fmt: skip
        c["k"] = int(rng.integers(1, len(c["attack"])))
        lo1, hi1, nom1 = run(c, "list")
        lo2, hi2, nom2 = run(c, "select")
        # the same k values summed in another order: equal up to the outward sum's ulps
        np.testing.assert_allclose(lo1, lo2, rtol=1e-5 if dt is np.float32 else 1e-12)
        np.testing.assert_allclose(hi1, hi2, rtol=1e-5 if dt is np.float32 else 1e-12)
        np.testing.assert_array_equal(nom1, nom2)
        assert_sound(c, (lo1, hi1, nom1), brute=False)
        assert_sound(c, (lo2, hi2, nom2), brute=False)
        # the transposed problem (other loop orientation) gives the same bits
        t = dict(c, a=c["g"], g=c["a"], ea=c["eg"], eg=c["ea"], na=c["ng"], ng=c["na"])
        lo3, hi3, nom3 = run(t, "list")
        np.testing.assert_array_equal(lo3.T, lo1)
        np.testing.assert_array_equal(hi3.T, hi1)
        np.testing.assert_array_equal(nom3.T, nom1)


def test_threads_give_the_same_bits():
    rng = np.random.default_rng(7)
    c = make_case(rng, np.float64, b=40, n_in=64, n_out=40)
    c["k"] = 5
    one = run(c)
    from intervalnn.kernels import cpu

    saved = cpu.THREADS
    try:
        cpu.THREADS = 3
        many = run(c)
    finally:
        cpu.THREADS = saved
    for x, y in zip(one, many, strict=True):
        np.testing.assert_array_equal(x, y)


def _numpy_reference(c):
    """The bound from Interval ops on the materialised (b, in, out) per-sample gradients."""
    dt = c["dt"]

    def per_sample(pre, fkey, freekey):
        a = Interval(c[pre + "a"][0][:, :, None], c[pre + "a"][1][:, :, None])
        g = Interval(c[pre + "g"][0][:, None, :], c[pre + "g"][1][:, None, :])
        f = Interval(c[fkey][0][:, None, None], c[fkey][1][:, None, None])
        p = f * (a * g)
        lo, hi = p.lo, p.hi
        if c["gamma"] > 0:
            gm = dt(c["gamma"])
            lo, hi = np.clip(lo, -gm, gm), np.clip(hi, -gm, gm)
        bd = dt(c["bound"])
        free = c[freekey][:, None, None]
        return np.where(free, -bd, lo).astype(dt), np.where(free, bd, hi).astype(dt)

    blo, bhi = per_sample("", "f", "free")
    elo, ehi = per_sample("e", "ef", "efree")
    total = Interval(blo, bhi).sum(axis=0)
    att = c["attack"]
    kk = min(c["k"], int(att.sum()))
    if kk:
        k = Interval._new(blo, blo).backend.kernels
        with np.errstate(invalid="ignore"):
            dl = np.minimum(k.add_rd(elo, -blo), 0)[att]
            du = np.maximum(k.add_ru(ehi, -bhi), 0)[att]
        dl = np.where(np.isneginf(blo[att]), 0, dl).astype(dt)
        du = np.where(np.isposinf(bhi[att]), 0, du).astype(dt)
        dl = np.sort(dl, axis=0)[:kk]
        du = np.sort(du, axis=0)[du.shape[0] - kk :]
        total = total + Interval._new(
            Interval._new(dl, dl).sum(axis=0).lo, Interval._new(du, du).sum(axis=0).hi
        )
    return total * Interval(*(np.asarray(x, dt) for x in c["inv"]))


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_medium_cases_against_exact_greedy_bound_and_numpy_interval_ops(dt):
    rng = np.random.default_rng(8)
    for _ in range(6):
        b, n_in, n_out = 24, 6, 5
        c = make_case(rng, dt, b=b, n_in=n_in, n_out=n_out)
        for key in ("a", "g", "ea", "eg"):  # ordinary magnitudes: widths are comparable
            lo = rng.standard_normal(c[key][0].shape).astype(dt)
            c[key] = (lo, (lo + rng.random(lo.shape) * 0.1).astype(dt))
        c["ea"] = (np.minimum(c["ea"][0], c["a"][0]), np.maximum(c["ea"][1], c["a"][1]))
        c["k"] = 4
        c["free"][:] = c["efree"][:] = False
        lo, hi, _ = run(c)
        assert_sound(c, (lo, hi, None), brute=False)
        # tight: within the rounding of b + k + 3 sequential steps of the exact bound
        eps = Fraction(float(np.finfo(dt).eps))
        for i, j in np.ndindex(lo.shape):
            x_lo, x_hi = exact_range(c, i, j, brute=False)
            scale = sum(max(map(abs, _row_range(c, s, i, j, e))) for s in range(b) for e in (0, 1))
            slack = (b + c["k"] + 3) * eps * scale / b
            assert x_lo - _q(lo[i, j]) <= slack and _q(hi[i, j]) - x_hi <= slack
        ref = _numpy_reference(c)
        finite = np.isfinite(ref.lo) & np.isfinite(ref.hi)
        # same boxes, same selected values, sequential directed sums instead of an a-priori
        # bound: never wider than the NumPy reference here
        assert ((hi - lo)[finite] <= (ref.hi - ref.lo)[finite]).all()


def test_bad_input_is_a_one_line_value_error():
    c = make_case(np.random.default_rng(9), np.float64, b=3, n_in=2, n_out=2)
    c["a"] = (c["a"][1], c["a"][0] - 1)
    with pytest.raises(ValueError, match="lo > hi"):
        run(c)
    c = make_case(np.random.default_rng(9), np.float32, b=3, n_in=2, n_out=2)
    c["inv"] = (0.1, 0.1)  # not a float32
    with pytest.raises(ValueError, match="exact in float32"):
        run(c)
    c = make_case(np.random.default_rng(9), np.float64, b=3, n_in=2, n_out=2)
    c["f"] = (c["f"][0] - 1, c["f"][1])
    with pytest.raises(ValueError, match=">= 0"):
        run(c)
