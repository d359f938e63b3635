"""Elementwise interval arithmetic against exact rational oracles, and the Interval API.

Oracle: every endpoint is converted to ``fractions.Fraction`` (exact), the
operation's extreme values are computed exactly over the endpoints (extended
reals for infinite endpoints, with IEEE 1788's ``0 * inf = 0`` for bounds),
and rounded down/up in the interval's dtype by ``rd``/``ru`` below.  The
library must return exactly ``[rd(min), ru(max)]``: the IEEE 1788 tightest
enclosure.  float32 and float64 both run.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import intervalnn as inn
from intervalnn import Interval
from intervalnn.kernels import cpu

DTYPES = [np.float32, np.float64]
INF = math.inf
# INTERVALNN_EXAMPLES=5000 pytest tests/test_arithmetic.py for a deeper search.
SETTINGS = settings(max_examples=int(os.environ.get("INTERVALNN_EXAMPLES", 120)), deadline=None)


# ------------------------------------------------------------------ exact oracle


def _max(dt) -> float:
    return float(np.finfo(dt).max)


def _step(x: float, dt, up: bool) -> float:
    d = np.dtype(dt).type
    with np.errstate(over="ignore"):
        return float(np.nextafter(d(x), d(INF if up else -INF)))


def rd(q, dt) -> float:
    """The largest ``dt`` value <= the exact extended real ``q`` (Fraction or float)."""
    if isinstance(q, float):
        if math.isinf(q):
            return q
        q = Fraction(q)
    big = _max(dt)
    if q > big:
        return big
    if q < -big:
        return -INF
    f = float(np.dtype(dt).type(float(q)))  # one of the two neighbours of q
    while Fraction(f) > q:
        f = _step(f, dt, up=False)
    while math.isfinite(_step(f, dt, up=True)) and Fraction(_step(f, dt, up=True)) <= q:
        f = _step(f, dt, up=True)
    return f


def ru(q, dt) -> float:
    return -rd(-q if isinstance(q, Fraction) else -float(q), dt)


def X(v):
    """An endpoint as an exact extended real: Fraction, or +-inf as a float."""
    v = float(v)
    return v if math.isinf(v) else Fraction(v)


def eadd(a, b):
    """a + b in the extended reals (never -inf + inf here)."""
    if isinstance(a, float) or isinstance(b, float):
        return a if isinstance(a, float) else b
    return a + b


def emul(a, b):
    if a == 0 or b == 0:
        return Fraction(0)  # IEEE 1788: 0 * inf = 0 for bounds
    return a * b  # Fraction * inf is +-inf with the right sign


def ediv(a, b):
    """a / b for b != 0; ``None`` for inf / inf (covered by the other corners)."""
    if isinstance(b, float):  # infinite divisor
        return None if isinstance(a, float) else Fraction(0)
    if isinstance(a, float):
        return a if b > 0 else -a
    return a / b


def sqrt_rd(x: float, dt) -> float:
    x = float(x)
    if x == 0 or math.isinf(x):
        return abs(x)
    q = Fraction(x)
    s = float(np.dtype(dt).type(math.sqrt(x)))
    while Fraction(s) ** 2 > q:
        s = _step(s, dt, up=False)
    while math.isfinite(_step(s, dt, up=True)) and Fraction(_step(s, dt, up=True)) ** 2 <= q:
        s = _step(s, dt, up=True)
    return s


def sqrt_ru(x: float, dt) -> float:
    x = float(x)
    s = sqrt_rd(x, dt)
    return s if math.isinf(s) or Fraction(s) ** 2 == Fraction(x) else _step(s, dt, up=True)


def oracle(op: str, a, b, dt) -> tuple[float, float]:
    """Tightest ``[lo, hi]`` of ``a op b`` for endpoint pairs ``a = (lo, hi)``, ``b``."""
    a0, a1 = X(a[0]), X(a[1])
    if op == "sqr":
        if a0 >= 0:
            return rd(emul(a0, a0), dt), ru(emul(a1, a1), dt)
        if a1 <= 0:
            return rd(emul(a1, a1), dt), ru(emul(a0, a0), dt)
        return 0.0, ru(max(emul(a0, a0), emul(a1, a1)), dt)
    if op == "sqrt":
        return sqrt_rd(a[0], dt), sqrt_ru(a[1], dt)
    b0, b1 = X(b[0]), X(b[1])
    if op == "add":
        return rd(eadd(a0, b0), dt), ru(eadd(a1, b1), dt)
    if op == "sub":
        return rd(eadd(a0, -b1), dt), ru(eadd(a1, -b0), dt)
    f = emul if op == "mul" else ediv
    corners = [c for c in (f(x, y) for x in (a0, a1) for y in (b0, b1)) if c is not None]
    return rd(min(corners), dt), ru(max(corners), dt)


def assert_tightest(got: Interval, op: str, a_lo, a_hi, b_lo=None, b_hi=None):
    dt = got.dtype.type
    lo, hi = got.lo.reshape(-1), got.hi.reshape(-1)
    for i in range(lo.size):
        b = None if b_lo is None else (b_lo[i], b_hi[i])
        want = oracle(op, (a_lo[i], a_hi[i]), b, dt)
        assert (float(lo[i]), float(hi[i])) == want, (
            f"{op} {np.dtype(dt).name} [{a_lo[i]!r}, {a_hi[i]!r}] {b}: got "
            f"[{float(lo[i])!r}, {float(hi[i])!r}], tightest {want}"
        )


# ------------------------------------------------------------------ strategies


def specials(dt) -> list[float]:
    fi = np.finfo(dt)
    vals = [
        0.0, 1.0, 2.0, 3.0, 0.1, 1 / 3, float(fi.max), float(fi.smallest_normal),
        float(fi.smallest_subnormal), 2 * float(fi.smallest_subnormal),
        float(fi.smallest_normal) - float(fi.smallest_subnormal),
        1 + float(fi.eps), 1 - float(fi.eps) / 2, math.sqrt(float(fi.max)),
        float(fi.max) / 2, 2.0**-500, 2.0**-537, 2.0**-969, 2.0**-1000, 1e300, 1e-300,
    ]  # fmt: skip
    out = {float(np.dtype(dt).type(v)) for v in vals if abs(v) <= float(fi.max)}
    return sorted(out | {-v for v in out} | {-0.0})


def floats(dt, allow_infinity=True):
    return st.floats(
        width=np.finfo(dt).bits, allow_nan=False, allow_infinity=allow_infinity
    ) | st.sampled_from(specials(dt))


@st.composite
def intervals(draw, dt, n=None, finite=False):
    """Endpoint arrays ``(lo, hi)`` of a valid interval array of length ``n`` (1..6)."""
    n = draw(st.integers(1, 6)) if n is None else n
    f = floats(dt, allow_infinity=not finite)
    lo, hi = [], []
    for _ in range(n):
        a = draw(f)
        b = draw(st.one_of(f, st.just(a), st.just(_step(a, dt, True)) if math.isfinite(a) else f))
        a, b = min(a, b), max(a, b)
        lo.append(a if a != INF else _max(dt))
        hi.append(b if b != -INF else -_max(dt))
    return np.array(lo, dtype=dt), np.array(hi, dtype=dt)


def excludes_zero(ends) -> bool:
    lo, hi = ends
    return bool(np.all((lo > 0) | (hi < 0)))


def _apply(op, a, b):
    return {"add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b,
            "div": lambda: a / b}[op]()  # fmt: skip


# ------------------------------------------------------------------ elementwise ops


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@SETTINGS
@given(data=st.data())
def test_binary_tightest(op, dt, data):
    n = data.draw(st.integers(1, 6))
    a = data.draw(intervals(dt, n))
    b = data.draw(intervals(dt, n).filter(excludes_zero) if op == "div" else intervals(dt, n))
    got = _apply(op, Interval(*a), Interval(*b))
    assert got.dtype == np.dtype(dt) and got.shape == (n,)
    assert_tightest(got, op, *a, *b)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@SETTINGS
@given(data=st.data())
def test_binary_with_point_array_either_side(op, dt, data):
    n = data.draw(st.integers(1, 5))
    a = data.draw(intervals(dt, n, finite=data.draw(st.booleans())))
    p = np.array(data.draw(st.lists(floats(dt, False), min_size=n, max_size=n)), dtype=dt)
    iv = Interval(*a)
    if op != "div" or np.all(p != 0):
        assert_tightest(_apply(op, iv, p), op, *a, p, p)
    if op != "div" or excludes_zero(a):
        assert_tightest(_apply(op, p, iv), op, p, p, *a)
    # broadcasting a 0-d array
    if op != "div" or p[0] != 0:
        assert_tightest(_apply(op, iv, p[:1].reshape(())), op, *a, np.repeat(p[0], n), [p[0]] * n)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
@SETTINGS
@given(data=st.data())
def test_binary_with_python_scalar_either_side(op, dt, data):
    """Python scalars are exact reals, enclosed outward in the interval's dtype."""
    a = data.draw(intervals(dt))
    n = a[0].size
    x = data.draw(
        st.floats(allow_nan=False, allow_infinity=False)
        | st.integers(-(2**70), 2**70)
        | st.fractions(max_denominator=10**6)
        | st.sampled_from(specials(np.float64))
    )
    q = Fraction(x)
    xlo, xhi = [rd(q, dt)] * n, [ru(q, dt)] * n
    iv = Interval(*a)
    if op != "div" or xlo[0] > 0 or xhi[0] < 0:
        got = _apply(op, iv, x)
        assert_tightest(got, op, *a, xlo, xhi)
    if op != "div" or excludes_zero(a):
        got = _apply(op, x, iv)
        assert_tightest(got, op, xlo, xhi, *a)
        # soundness w.r.t. the exact real scalar, at a finite member of the interval
        m = X(a[1][0]) if math.isfinite(a[1][0]) else X(a[0][0])
        if not isinstance(m, float):
            if op == "div":
                exact = q / m
            else:
                exact = {"add": q + m, "sub": q - m, "mul": q * m}[op]
            assert X(got.lo[0]) <= exact <= X(got.hi[0])


@pytest.mark.parametrize("dt", DTYPES)
@SETTINGS
@given(data=st.data())
def test_sqr_sqrt_tightest(dt, data):
    a = data.draw(intervals(dt))
    assert_tightest(inn.sqr(Interval(*a)), "sqr", *a)
    nonneg = (np.abs(a[0]), np.abs(a[1]))
    nonneg = (np.minimum(np.minimum(*nonneg), np.finfo(dt).max), np.maximum(*nonneg))
    got = inn.sqrt(Interval(*nonneg))
    assert_tightest(got, "sqrt", *nonneg)


@pytest.mark.parametrize("dt", DTYPES)
def test_sqrt_domain_error_names_index(dt):
    x = Interval(np.array([1, -0.0, -1e-30, 4], dtype=dt), np.array([2, 1, 1, 5], dtype=dt))
    with pytest.raises(ValueError, match=r"index \(2,\)"):
        inn.sqrt(x)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("op", ["add_rd", "add_ru", "mul_rd", "mul_ru", "div_rd", "div_ru"])
@SETTINGS
@given(data=st.data())
def test_point_kernels_directed(op, dt, data):
    n = data.draw(st.integers(1, 8))
    a = np.array(data.draw(st.lists(floats(dt), min_size=n, max_size=n)), dtype=dt)
    b = np.array(data.draw(st.lists(floats(dt), min_size=n, max_size=n)), dtype=dt)
    if op.startswith("div"):
        b[b == 0] = 1.0  # x / 0 is undefined (the interval layer never divides by 0)
    got = getattr(cpu, op)(a, b)
    assert got.dtype == np.dtype(dt) and got.shape == (n,)
    kind, direction = op.split("_")
    for x, y, g in zip(a, b, got, strict=True):
        x, y = X(x), X(y)
        if kind == "add":
            if isinstance(x, float) and isinstance(y, float) and x != y:
                continue  # inf + -inf is undefined
            exact = eadd(x, y)
        elif kind == "mul":
            exact = emul(x, y)
        else:
            if isinstance(x, float) and isinstance(y, float):
                continue  # inf / inf is undefined
            exact = ediv(x, y)
        want = rd(exact, dt) if direction == "rd" else ru(exact, dt)
        assert float(g) == want, f"{op}({x}, {y}) = {float(g)!r}, want {want!r}"


@pytest.mark.parametrize("dt", DTYPES)
@SETTINGS
@given(data=st.data())
def test_point_intervals_match_numpy_where_exact(dt, data):
    """Zero-width operands: exact NumPy results come back as points, inexact ones
    are bracketed by the two neighbours around NumPy's (round-to-nearest) result."""
    small = st.integers(-(2**20), 2**20).map(float)
    f = data.draw(st.sampled_from([small, floats(dt, False)]))
    n = data.draw(st.integers(1, 6))
    a = np.array(data.draw(st.lists(f, min_size=n, max_size=n)), dtype=dt)
    b = np.array(data.draw(st.lists(f, min_size=n, max_size=n)), dtype=dt)
    ops = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
    with np.errstate(over="ignore", under="ignore"):
        for name, ufunc in ops.items():
            if name == "div" and np.any(b == 0):
                continue
            got = _apply(name, Interval(a), Interval(b))
            ref = ufunc(a, b)
            for lo, hi, r, x, y in zip(got.lo, got.hi, ref, a, b, strict=True):
                exact = {"add": X(x) + X(y), "sub": X(x) - X(y), "mul": X(x) * X(y)}.get(
                    name, X(x) / X(y) if name == "div" else None
                )
                if math.isfinite(r) and Fraction(float(r)) == exact:
                    assert lo == hi == r, f"{name}({x}, {y}): [{lo}, {hi}] != {r}"
                else:
                    assert r in (lo, hi) and hi == np.nextafter(lo, dt(INF)), (name, x, y)
        sq = inn.sqrt(Interval(np.abs(a)))
        ref = np.sqrt(np.abs(a))
        exact_sq = np.array(
            [Fraction(float(r)) ** 2 == X(x) for r, x in zip(ref, np.abs(a), strict=True)]
        )
        assert np.all(sq.lo[exact_sq] == ref[exact_sq]) and np.all(sq.hi[exact_sq] == ref[exact_sq])
        assert np.all((sq.lo <= ref) & (ref <= sq.hi))


def test_integer_valued_floats_are_exact_points():
    a = np.arange(-50.0, 50.0)
    b = np.arange(1.0, 101.0)
    for dt in DTYPES:
        ia, ib = Interval(a.astype(dt)), Interval(b.astype(dt))
        for got, ref in [(ia + ib, a + b), (ia - ib, a - b), (ia * ib, a * b)]:
            assert np.array_equal(got.lo, ref) and np.array_equal(got.hi, ref)
        q = Interval((a * b).astype(dt)) / ib  # exact quotients
        assert np.array_equal(q.lo, a) and np.array_equal(q.hi, a)
        r = inn.sqrt(Interval((b * b).astype(dt)))
        assert np.array_equal(r.lo, b) and np.array_equal(r.hi, b)


# ------------------------------------------------------------------ edge cases by name


@pytest.mark.parametrize("dt", DTYPES)
def test_exact_zeros_not_widened(dt):
    z = Interval(np.zeros(3, dtype=dt))
    x = Interval(np.array([1e-30, -3, 7], dtype=dt), np.array([1e30, 5, 8], dtype=dt))
    pos = Interval(np.array([1e-30, 3, 7], dtype=dt), np.array([1e30, 5, np.inf], dtype=dt))
    for got in (z * x, x * z, z / pos, z + z, z - z, inn.sqr(z), inn.sqrt(z)):
        assert np.all(got.lo == 0) and np.all(got.hi == 0)
    pt = Interval(np.array([3.5, -2.0], dtype=dt))
    d = pt - pt
    assert np.all(d.lo == 0) and np.all(d.hi == 0)
    # a nonzero product that underflows to 0 must still be widened
    tiny = np.finfo(dt).smallest_subnormal
    u = Interval(np.array([tiny], dtype=dt)) * Interval(np.array([0.5], dtype=dt))
    assert u.lo[0] == 0 and u.hi[0] == tiny


@pytest.mark.parametrize("dt", DTYPES)
def test_overflow_to_infinity_and_max(dt):
    big = np.finfo(dt).max
    x = Interval(np.array([big], dtype=dt))
    s = x + x
    assert s.lo[0] == big and s.hi[0] == np.inf
    m = x * Interval(np.array([-2.0], dtype=dt))
    assert m.lo[0] == -np.inf and m.hi[0] == -big
    d = x / Interval(np.array([0.5], dtype=dt))
    assert d.lo[0] == big and d.hi[0] == np.inf


@pytest.mark.parametrize("dt", DTYPES)
def test_infinite_endpoints(dt):
    e = Interval(np.array([-np.inf], dtype=dt), np.array([np.inf], dtype=dt))
    z = Interval(np.array([0.0], dtype=dt))
    p = e * z
    assert p.lo[0] == 0 and p.hi[0] == 0  # 0 * [entire] = [0, 0]
    h = Interval(np.array([1.0], dtype=dt), np.array([np.inf], dtype=dt))
    q = h / h
    assert q.lo[0] == 0 and q.hi[0] == np.inf
    r = Interval(np.array([2.0], dtype=dt)) / h
    assert r.lo[0] == 0 and r.hi[0] == 2
    assert np.isinf((e + h).lo[0]) and np.isinf((e - h).hi[0])


@pytest.mark.parametrize("dt", DTYPES)
def test_zero_division_error_message(dt):
    a = Interval(np.ones(3, dtype=dt))
    b = Interval(np.array([1, -1, 0], dtype=dt), np.array([2, 1, 3], dtype=dt))
    with pytest.raises(ZeroDivisionError, match=r"containing 0 at index \(1,\).*\[-1\.0, 1\.0\]"):
        a / b
    with pytest.raises(ZeroDivisionError, match=r"index \(0,\)"):
        a / Interval(np.array([-0.0], dtype=dt), np.array([0.0], dtype=dt))
    with pytest.raises(ZeroDivisionError):
        a / 0


def test_signed_zero_endpoints():
    a = Interval(np.array([-0.0]), np.array([-0.0]))
    b = Interval(np.array([-2.0]), np.array([3.0]))
    for got in (a * b, a + a, a - a, inn.sqr(a), inn.sqrt(a)):
        assert got.lo[0] == 0 and got.hi[0] == 0
    assert_tightest(a * b, "mul", [-0.0], [-0.0], [-2.0], [3.0])


# ------------------------------------------------------------------ reductions


@st.composite
def interval_matrices(draw, dt):
    m, n = draw(st.integers(1, 4)), draw(st.integers(1, 6))
    lo, hi = draw(intervals(dt, m * n, finite=draw(st.booleans())))
    return lo.reshape(m, n), hi.reshape(m, n)


def _esum(values):
    total = Fraction(0)
    for v in values:
        total = eadd(total, v)
    return total


@pytest.mark.parametrize("dt", DTYPES)
@SETTINGS
@given(data=st.data())
def test_sum_mean_enclose_exact(dt, data):
    lo, hi = data.draw(interval_matrices(dt))
    iv = Interval(lo, hi)
    axis = data.draw(st.sampled_from([None, 0, 1, -1, (0, 1)]))
    s, m = iv.sum(axis=axis), iv.mean(axis=axis)
    assert s.dtype == np.dtype(dt) and m.dtype == np.dtype(dt)
    ref_shape = np.sum(lo, axis=axis).shape
    assert s.shape == ref_shape and m.shape == ref_shape
    axes = (0, 1) if axis is None else tuple(np.atleast_1d(axis) % 2)
    keep = [ax for ax in (0, 1) if ax not in axes]
    count = int(np.prod([lo.shape[ax] for ax in axes]))
    for idx in np.ndindex(*[lo.shape[ax] for ax in keep]):
        sel = [slice(None), slice(None)]
        for ax, i in zip(keep, idx, strict=True):
            sel[ax] = i
        exact_lo = _esum(X(v) for v in lo[tuple(sel)].reshape(-1))
        exact_hi = _esum(X(v) for v in hi[tuple(sel)].reshape(-1))
        assert X(s.lo[idx]) <= exact_lo and exact_hi <= X(s.hi[idx])
        mean_lo = exact_lo / count if isinstance(exact_lo, Fraction) else exact_lo
        mean_hi = exact_hi / count if isinstance(exact_hi, Fraction) else exact_hi
        assert X(m.lo[idx]) <= mean_lo and mean_hi <= X(m.hi[idx])


@pytest.mark.parametrize("dt", DTYPES)
def test_sum_cancellation_and_tightness(dt):
    x = np.array([1e7, 1, -1e7, 1e-3] * 25, dtype=dt)
    s = Interval(x).sum()
    exact = sum(Fraction(float(v)) for v in x)
    assert X(s.lo) <= exact <= X(s.hi)
    # the bound is a few gamma_n * sum|x| wide, not more
    width = Fraction(float(s.hi)) - Fraction(float(s.lo))
    u = Fraction(1, 2 ** (np.finfo(dt).nmant + 1))
    assert width <= 4 * 100 * u * sum(abs(Fraction(float(v))) for v in x)


# ------------------------------------------------------------------ Interval API


@pytest.mark.parametrize(
    ("lo", "hi", "what", "index"),
    [
        ([0.0, np.nan, 1.0], [1.0, 1.0, 1.0], "NaN", r"\(1,\)"),
        ([0.0, 1.0, 1.0], [1.0, 1.0, np.nan], "NaN", r"\(2,\)"),
        ([[0.0, 0.0], [2.0, 0.0]], [[1.0, 1.0], [1.0, 1.0]], "lo > hi", r"\(1, 0\)"),
        ([0.0, np.inf], [1.0, np.inf], r"lo = \+inf", r"\(1,\)"),
        ([-np.inf, -np.inf], [1.0, -np.inf], "hi = -inf", r"\(1,\)"),
    ],
)
def test_validation_names_first_offending_index(lo, hi, what, index):
    for dt in DTYPES:
        with pytest.raises(ValueError, match=rf"index {index}: {what}"):
            Interval(np.array(lo, dtype=dt), np.array(hi, dtype=dt))


def test_constructors_and_conversions():
    p = Interval.point(np.array([1.5, -2.0], dtype=np.float32))
    assert p.dtype == np.float32 and np.array_equal(p.lo, p.hi) and bool(np.all(p.is_point()))
    i = Interval([1, 2], [3, 4])  # Python ints: exact float64
    assert i.dtype == np.float64 and i.shape == (2,) and i.ndim == 1 and len(i) == 2
    with pytest.raises(ValueError, match="2\\*\\*53"):
        Interval(np.array([2**60 + 1]))
    with pytest.raises(TypeError):
        Interval(np.array([1], dtype=np.float16))
    with pytest.raises(TypeError, match="different dtypes"):
        Interval(np.array([0.0], dtype=np.float32), np.array([1.0]))
    with pytest.raises(ValueError, match="shape"):
        Interval(np.zeros(2), np.zeros(3))


@pytest.mark.parametrize("dt", DTYPES)
@SETTINGS
@given(data=st.data())
def test_from_center_radius_tightest(dt, data):
    c = np.array(data.draw(st.lists(floats(dt, False), min_size=1, max_size=5)), dtype=dt)
    r = data.draw(st.floats(0, 1e30) | st.sampled_from([0.0, 1e-4, 0.1, 1e-45, 5e-324]))
    iv = Interval.from_center_radius(c, r)
    rr = ru(Fraction(r), dt)  # the radius is rounded up, never to nearest
    for ci, lo, hi in zip(c, iv.lo, iv.hi, strict=True):
        assert float(lo) == rd(X(ci) - X(rr), dt) and float(hi) == ru(X(ci) + X(rr), dt)
        assert X(lo) <= X(ci) - Fraction(r) and X(ci) + Fraction(r) <= X(hi)


def test_regression_float32_radius_rounded_to_nearest():
    """Bug: ``from_center_radius``/``ball`` cast eps to float32 by rounding to nearest;
    float32(1e-4) < 1e-4, so the box missed points the adversary may reach."""
    x = np.zeros(2, dtype=np.float32)
    for radius in (1e-4, np.float64(1e-4), np.array([1e-4, 1e-4]), Fraction(1, 10**4)):
        for box in (Interval.from_center_radius(x, radius), Interval.ball(x, 1e-4)):
            assert box.dtype == np.float32
            assert np.all([Fraction(float(h)) >= Fraction(1e-4) for h in box.hi])
            assert np.all([Fraction(float(lo)) <= -Fraction(1e-4) for lo in box.lo])


def test_from_center_radius_and_ball_errors():
    with pytest.raises(ValueError, match="radius"):
        Interval.from_center_radius(np.zeros(2), -1.0)
    with pytest.raises(ValueError, match="radius"):
        Interval.from_center_radius(np.zeros(2), np.array([0.1, np.nan]))
    with pytest.raises(ValueError, match="eps"):
        Interval.ball(np.zeros(2), -0.1)
    with pytest.raises(ValueError, match="eps"):
        Interval.ball(np.zeros(2), np.inf)
    with pytest.raises(ValueError, match="outside"):
        Interval.ball(np.array([0.5, 1.5]), 0.1, domain=(0, 1))
    with pytest.raises(ValueError, match="lower <= upper"):
        Interval.ball(np.array([0.5]), 0.1, domain=(1, 0))


@pytest.mark.parametrize("dt", DTYPES)
def test_ball_with_domain_clipping(dt):
    x = np.array([0.0, 0.05, 0.5, 0.97, 1.0], dtype=dt)
    b = Interval.ball(x, 0.1, domain=(0, 1))
    assert b.dtype == np.dtype(dt)
    assert np.all(b.lo >= 0) and np.all(b.hi <= 1)
    assert b.lo[0] == 0 and b.lo[1] == 0 and b.hi[3] == 1 and b.hi[4] == 1
    for xi, lo, hi in zip(x, b.lo, b.hi, strict=True):
        assert X(lo) <= max(Fraction(0), X(xi) - Fraction(0.1))
        assert min(Fraction(1), X(xi) + Fraction(0.1)) <= X(hi)
    # a domain bound that is not a float of dt is rounded outward
    c = Interval.ball(np.array([0.5], dtype=dt), 10.0, domain=(0.1, 0.9))
    assert X(c.lo[0]) <= Fraction(0.1) and Fraction(0.9) <= X(c.hi[0])


@pytest.mark.parametrize("dt", DTYPES)
@SETTINGS
@given(data=st.data())
def test_mid_rad_width(dt, data):
    lo, hi = data.draw(intervals(dt))
    iv = Interval(lo, hi)
    mid, rad, width = iv.mid, iv.rad, iv.width
    assert mid.dtype == rad.dtype == width.dtype == np.dtype(dt)
    for lo_i, hi_i, m, r, w in zip(lo, hi, mid, rad, width, strict=True):
        assert np.isfinite(m) and lo_i <= m <= hi_i
        assert r >= 0 and w >= 0
        if np.isinf(lo_i) or np.isinf(hi_i):
            assert r == np.inf and w == np.inf
            continue
        assert X(m) - X(r) <= X(lo_i) and X(hi_i) <= X(m) + X(r)
        assert float(w) == ru(X(hi_i) - X(lo_i), dt)
        if lo_i == hi_i:
            assert m == lo_i and r == 0 and w == 0


@pytest.mark.parametrize("dt", DTYPES)
def test_set_operations(dt):
    def iv(lo, hi):
        return Interval(np.array(lo, dtype=dt), np.array(hi, dtype=dt))

    a, b = iv([0, -2, 1], [1, 2, 3]), iv([0.5, -1, 4], [0.75, 3, 5])
    assert list(b.subset(a)) == [True, False, False]
    assert list(a.contains(np.array([1, 2, 0.5], dtype=dt))) == [True, True, False]
    assert list(a.contains(b)) == [True, False, False]
    h = a.hull(b)
    assert list(h.lo) == [0, -2, 1] and list(h.hi) == [1, 3, 5]
    with pytest.raises(ValueError, match=r"empty at index \(2,\)"):
        a.intersect(b)
    c = a[:2].intersect(b[:2])
    assert list(c.lo) == [0.5, -1] and list(c.hi) == [0.75, 2]
    assert list(iv([-np.inf], [np.inf]).contains(np.array([1e30], dtype=dt))) == [True]
    with pytest.raises(TypeError):
        a == b  # noqa: B015
    with pytest.raises(TypeError):
        bool(a[0])


def test_indexing_reshape_transpose_concatenate():
    lo = np.arange(24.0).reshape(2, 3, 4)
    iv = Interval(lo, lo + 1)
    assert iv[1, 2].shape == (4,) and np.array_equal(iv[1, 2].lo, lo[1, 2])
    assert iv[:, 1:, ::2].shape == (2, 2, 2) and np.array_equal(iv[..., 0].hi, lo[..., 0] + 1)
    assert iv[np.array([1, 0])].shape == (2, 3, 4)
    r = iv.reshape(6, 4)
    assert r.shape == (6, 4) and np.array_equal(r.lo, lo.reshape(6, 4))
    t = iv.transpose(2, 0, 1)
    assert t.shape == (4, 2, 3) and np.array_equal(t.hi, (lo + 1).transpose(2, 0, 1))
    assert np.array_equal(r.T.lo, lo.reshape(6, 4).T)
    c = inn.concatenate([iv, iv[:1]], axis=0)
    assert c.shape == (3, 3, 4) and np.array_equal(c.lo[2], lo[0])
    with pytest.raises(TypeError):
        inn.concatenate([iv, iv.astype(np.float32)])
    with pytest.raises(ValueError):
        inn.concatenate([])


@SETTINGS
@given(data=st.data())
def test_astype_narrowing_is_outward_and_tight(data):
    lo, hi = data.draw(intervals(np.float64))
    iv = Interval(lo, hi)
    n = iv.astype(np.float32)
    assert n.dtype == np.float32
    for a, b, lo32, hi32 in zip(lo, hi, n.lo, n.hi, strict=True):
        assert float(lo32) == rd(X(a), np.float32) and float(hi32) == ru(X(b), np.float32)
    w = n.astype(np.float64)  # widening is exact
    assert np.array_equal(w.lo, n.lo.astype(np.float64)) and w.dtype == np.float64
    assert iv.astype(np.float64) is iv
    with pytest.raises(TypeError):
        iv.astype(np.int32)


def test_mixed_dtypes_raise_type_error():
    a32 = Interval(np.ones(2, dtype=np.float32))
    a64 = Interval(np.ones(2))
    for bad in (
        lambda: a32 + a64,
        lambda: a64 * a32,
        lambda: a32 + np.ones(2),
        lambda: np.ones(2) - a32,
        lambda: a32 * np.float64(2),
        lambda: a64 / np.ones(2, dtype=np.float32),
        lambda: inn.minimum(a32, a64),
        lambda: a32 @ np.ones(2),
        lambda: a32.hull(a64),
        lambda: a32 + "x",
    ):
        with pytest.raises(TypeError):
            bad()
    # Python scalars are fine with either dtype; an inexact one is enclosed
    assert (a32 * 2).dtype == np.float32 and (2 * a64).dtype == np.float64
    t = a32 * 0.1
    assert X(t.lo[0]) < Fraction(1, 10) < X(t.hi[0])
    with pytest.raises(TypeError, match="not exactly representable"):
        a32.contains(0.1)


def test_immutability():
    iv = Interval(np.zeros(3), np.ones(3))
    with pytest.raises(ValueError):
        iv.lo[0] = 5.0
    with pytest.raises(ValueError):
        (iv + iv).hi[1] = -1.0
    with pytest.raises(AttributeError):
        iv.lo = np.ones(3)
    with pytest.raises(ValueError):
        iv.reshape(3, 1).lo[0, 0] = 1.0
    # the constructor copies: changing the input later does not change the interval
    src = np.zeros(2)
    j = Interval(src, src + 1)
    src[0] = 7.0
    assert j.lo[0] == 0.0


def test_regression_operand_array_frozen_by_arithmetic():
    """Bug: ``interval <op> array`` wrapped the caller's array without copying and
    marked it read-only, so user code could no longer write to its own array."""
    iv = Interval(np.zeros(3), np.ones(3))
    arr = np.array([1.0, 2.0, 3.0])
    for f in (lambda: iv + arr, lambda: arr * iv, lambda: iv @ arr, lambda: inn.maximum(iv, arr)):
        f()
        assert arr.flags.writeable
        arr[0] = 1.0
    # and results stay immutable
    r = iv - arr
    with pytest.raises(ValueError):
        r.lo[0] = 0.0


def test_regression_float32_rad_taken_about_unrounded_mid():
    """Bug: the fused mid/rad kernel computed ``mid`` in float64 for float32 input,
    took ``rad`` about that value, then stored ``mid`` rounded to float32; for
    ``[1, 1 + 2**-23]`` it gave mid 1, rad 2**-24: ``[mid - rad, mid + rad]``
    missed ``hi``."""
    hi = np.nextafter(np.float32(1), np.float32(2))
    iv = Interval(np.array([1, -hi, 3], dtype=np.float32), np.array([hi, -1, 5], dtype=np.float32))
    mid, rad = iv.midrad() if hasattr(iv, "midrad") else (iv.mid, iv.rad)
    for m, r, lo_i, hi_i in zip(mid, rad, iv.lo, iv.hi, strict=True):
        assert X(m) - X(r) <= X(lo_i) and X(hi_i) <= X(m) + X(r)
    for m, r, lo_i, hi_i in zip(iv.mid, iv.rad, iv.lo, iv.hi, strict=True):
        assert X(m) - X(r) <= X(lo_i) and X(hi_i) <= X(m) + X(r)
