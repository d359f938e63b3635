"""Interval matrix products against exact rational arithmetic.

Exact oracle: every float is ``n * 2**-s`` for integers ``n``, ``s``; a whole
array is scaled to one ``s`` and multiplied as Python integers in an object
array, so products of any size and magnitude (1e-300 .. 1e300, subnormals)
are exact.  The result must contain the exact product of sampled members
(vertices, random interior points, midpoints) and, for 2-D operands, the
exact interval hull ``sum_k A_ik * B_kj`` (each entry's terms are
independent, so the sum of the exact interval products is the hull).  The
scaled-integer arithmetic lives in ``tests/oracle.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import zlib
from fractions import Fraction

import numpy as np
import pytest
from oracle import enclosure_failures, exact_hull, exact_matmul, scaled

import intervalnn as inn
from intervalnn import Interval

DTYPES = [np.float32, np.float64]


# ------------------------------------------------------------------ members and the check


def members(rng, lo, hi, how):
    """A member of the box ``[lo, hi]`` (finite endpoints): a vertex, a random point, the mid."""
    if how == "vertex":
        return np.where(rng.random(lo.shape) < 0.5, lo, hi)
    if how == "mid":
        return (lo / 2 + hi / 2).clip(lo, hi)
    t = rng.random(lo.shape)
    lo64, hi64 = lo.astype(np.float64), hi.astype(np.float64)
    x = (lo64 + t * (hi64 - lo64)).astype(lo.dtype)
    return np.clip(x, lo, hi)


def check_product(a_lo, a_hi, b_lo, b_hi, res: Interval, rng, hull=True, samples=3):
    """Assert ``res`` encloses sampled member products (and the hull, for 2-D)."""
    assert res.shape == np.matmul(a_lo, b_lo).shape
    assert res.dtype == a_lo.dtype
    assert not np.isnan(res.lo).any() and not np.isnan(res.hi).any()
    assert not (res.lo == np.inf).any() and not (res.hi == -np.inf).any()
    for how in ["vertex", "random", "mid"][:samples] + ["vertex"] * max(0, samples - 3):
        x, y = members(rng, a_lo, a_hi, how), members(rng, b_lo, b_hi, how)
        e, s = exact_matmul(x, y)
        bad = enclosure_failures(res, e, e, s)
        assert not bad, f"{how} member product escapes: {bad[:3]}"
    if hull and a_lo.ndim == 2 and b_lo.ndim == 2:
        lo_e, hi_e, s = exact_hull(a_lo, a_hi, b_lo, b_hi)
        bad = enclosure_failures(res, lo_e, hi_e, s)
        assert not bad, f"exact hull escapes: {bad[:3]}"
        return lo_e, hi_e, s
    return None


# ------------------------------------------------------------------ data


def random_box(rng, shape, dt, kind):
    """Endpoint arrays of an interval array of one of several difficult kinds."""
    fi = np.finfo(dt)
    if kind == "normal":
        c = rng.standard_normal(shape)
        r = np.abs(rng.standard_normal(shape)) * 10.0 ** rng.integers(-8, 0, shape)
    elif kind == "points":
        c = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, shape)
        r = np.zeros(shape)
    elif kind == "mixed":  # 1e-300 .. 1e300 in float64, 1e-37 .. 1e37 in float32
        e = 300 if dt == np.float64 else 37
        c = rng.standard_normal(shape) * 10.0 ** rng.integers(-e, e // 2, shape)
        r = np.abs(c) * rng.random(shape) * (rng.random(shape) < 0.5)
    elif kind == "subnormal":
        tiny = float(fi.smallest_subnormal)
        c = rng.integers(-1000, 1000, shape) * tiny
        r = rng.integers(0, 50, shape) * tiny
    else:  # "cancel": rows/columns with big +-pairs around small entries
        big = 1e16 if dt == np.float64 else 1e8
        c = rng.choice([big, -big, 1.0, -1.0, 0.5, 3.0], size=shape)
        r = np.where(rng.random(shape) < 0.3, np.abs(c) * 1e-3, 0.0)
    lo = (c - r).astype(dt)
    hi = (c + r).astype(dt)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    return lo, hi


KINDS = ["normal", "points", "mixed", "subnormal", "cancel"]


def _shapes(rng, case):
    m, k, n = (int(v) for v in rng.integers(1, 13, 3))
    return {
        "2d": ((m, k), (k, n)),
        "vec_mat": ((k,), (k, n)),
        "mat_vec": ((m, k), (k,)),
        "vec_vec": ((k,), (k,)),
        "batched": ((2, m, k), (2, k, n)),
        "broadcast": ((3, m, k), (k, n)),
        "batch_bcast": ((1, m, k), (3, k, n)),
    }[case]


def _product(how, a: Interval, b: Interval):
    if how == "interval@interval":
        return a @ b
    if how == "matmul()":
        return inn.matmul(a, b)
    if how == "array@interval":
        return a.lo @ b
    if how == "interval@array":
        return a @ b.lo
    if how == "matmul(array, array)":
        return inn.matmul(a.lo, b.lo)
    raise AssertionError(how)


HOWS = ["interval@interval", "matmul()", "array@interval", "interval@array", "matmul(array, array)"]


# ------------------------------------------------------------------ tests


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("how", HOWS)
def test_small_products_enclose_exact(dt, kind, how):
    rng = np.random.default_rng(zlib.crc32(f"{np.dtype(dt).name} {kind} {how}".encode()))
    for case in ["2d", "2d", "2d", "vec_mat", "mat_vec", "vec_vec", "batched", "broadcast"]:
        sa, sb = _shapes(rng, case)
        a_lo, a_hi = random_box(rng, sa, dt, kind)
        b_lo, b_hi = random_box(rng, sb, dt, kind)
        if how in ("array@interval", "matmul(array, array)"):
            a_hi = a_lo
        if how in ("interval@array", "matmul(array, array)"):
            b_hi = b_lo
        res = _product(how, Interval(a_lo, a_hi), Interval(b_lo, b_hi))
        check_product(a_lo, a_hi, b_lo, b_hi, res, rng)


@pytest.mark.parametrize("dt", DTYPES)
def test_batch_broadcasting_shapes(dt):
    rng = np.random.default_rng(7)
    sa, sb = _shapes(rng, "batch_bcast")
    a_lo, a_hi = random_box(rng, sa, dt, "normal")
    b_lo, b_hi = random_box(rng, sb, dt, "normal")
    res = Interval(a_lo, a_hi) @ Interval(b_lo, b_hi)
    assert res.shape == np.matmul(a_lo, b_lo).shape
    check_product(a_lo, a_hi, b_lo, b_hi, res, rng)
    for i in range(res.shape[0]):  # each batch entry agrees with its own 2-D product
        one = Interval(a_lo[0], a_hi[0]) @ Interval(b_lo[i], b_hi[i])
        check_product(a_lo[0], a_hi[0], b_lo[i], b_hi[i], one, rng, samples=1)


@pytest.mark.parametrize("dt", DTYPES)
def test_products_are_reasonably_tight(dt):
    """Midpoint-radius overestimates the hull radius by at most 1.5x (Rump 1999) plus
    the BLAS error bound: a test that the result is not just trivially wide."""
    rng = np.random.default_rng(3)
    u = Fraction(1, 2 ** (np.finfo(dt).nmant + 1))
    for _ in range(6):
        m, k, n = (int(v) for v in rng.integers(2, 13, 3))
        a_lo, a_hi = random_box(rng, (m, k), dt, "normal")
        b_lo, b_hi = random_box(rng, (k, n), dt, "normal")
        res = Interval(a_lo, a_hi) @ Interval(b_lo, b_hi)
        lo_e, hi_e, s = check_product(a_lo, a_hi, b_lo, b_hi, res, rng)
        (ma,), sa = scaled(np.maximum(np.abs(a_lo), np.abs(a_hi)))
        (mb,), sb = scaled(np.maximum(np.abs(b_lo), np.abs(b_hi)))
        mag = ma @ mb
        for i, j in np.ndindex(m, n):
            width = Fraction(float(res.hi[i, j])) - Fraction(float(res.lo[i, j]))
            hull_w = Fraction(int(hi_e[i, j] - lo_e[i, j]), 2**s)
            slack = 8 * (k + 2) * u * Fraction(int(mag[i, j]), 2 ** (sa + sb))
            assert width <= Fraction(3, 2) * hull_w + slack, (i, j, float(width), float(hull_w))


@pytest.mark.parametrize("dt", DTYPES)
def test_cancellation_rows(dt):
    big = 1e16 if dt == np.float64 else 1e8
    a = np.array([[big, 1.0, -big], [1.0, big, -big], [-big, big, 1.0]], dtype=dt)
    b = np.ones((3, 2), dtype=dt)
    for res in (Interval(a) @ b, a @ Interval(b), inn.matmul(a, b), Interval(a) @ Interval(b)):
        assert np.all(res.lo <= 1) and np.all(res.hi >= 1)  # exact product: all ones
        check_product(a, a, b, b, res, np.random.default_rng(0))
    # with widths: [1e16, 1e16 + ulp] style intervals
    a_hi = np.nextafter(a, dt(np.inf))
    res = Interval(a, a_hi) @ Interval(b)
    check_product(a, a_hi, b, b, res, np.random.default_rng(1))


@pytest.mark.parametrize("dt", DTYPES)
def test_subnormal_entries_not_lost(dt):
    tiny = np.finfo(dt).smallest_subnormal
    a = np.full((2, 3), tiny, dtype=dt)
    b = np.full((3, 2), 0.5, dtype=dt)  # exact product 1.5 * tiny per entry: not a float
    res = Interval(a) @ b
    assert np.all(res.hi > 0) and np.all(res.lo <= 1.5 * float(tiny))
    check_product(a, a, b, b, res, np.random.default_rng(0))
    res = Interval(a) @ Interval(a.T)  # products underflow to 0 but the exact value is > 0
    assert np.all(res.hi > 0)
    check_product(a, a, a.T, a.T, res, np.random.default_rng(0))


@pytest.mark.parametrize("dt", DTYPES)
def test_regression_overflowed_gemm_gave_inf_inf(dt):
    """Bug: an entry whose BLAS product P overflowed to +inf came back as
    ``[inf, inf]`` (an invalid interval; exact value e.g. 0) because the
    overflow check accepted ``|P| <= inf``.  Now such entries are ``[-inf, inf]``."""
    big = np.finfo(dt).max / 4
    a = np.array([[big, big], [1.0, 2.0]], dtype=dt)
    b = np.array([[10.0, 10.0], [-10.0, 10.0]], dtype=dt)  # entry (0, 0) is exactly 0
    for res in (Interval(a) @ b, inn.matmul(a, b), Interval(a) @ Interval(b, b + np.abs(b))):
        assert not np.isnan(res.lo).any() and not np.isnan(res.hi).any()
        assert not (res.lo == np.inf).any() and not (res.hi == -np.inf).any()
        assert res.lo[0, 0] <= 0 <= res.hi[0, 0]
        assert res.lo[0, 1] == -np.inf and res.hi[0, 1] == np.inf  # 5 * max overflows
        assert np.isfinite(res.lo[1]).all() and np.isfinite(res.hi[1]).all()
    check_product(a, a, b, b, Interval(a) @ b, np.random.default_rng(0))


@pytest.mark.parametrize("dt", DTYPES)
def test_infinite_endpoints_give_no_nan(dt):
    rng = np.random.default_rng(5)
    a_lo = np.array([[-np.inf, 1.0], [0.0, -2.0]], dtype=dt)
    a_hi = np.array([[1.0, 2.0], [np.inf, 3.0]], dtype=dt)
    b = np.array([[0.0, 1.0], [2.0, 0.0]], dtype=dt)
    for res in (Interval(a_lo, a_hi) @ b, Interval(a_lo, a_hi) @ Interval(b, b + 1)):
        assert not np.isnan(res.lo).any() and not np.isnan(res.hi).any()
        assert not (res.lo == np.inf).any() and not (res.hi == -np.inf).any()
        for _ in range(5):  # finite members of the boxes
            x = np.where(np.isinf(a_lo), a_hi - rng.random(a_lo.shape) * 1e6, a_lo)
            x = np.where(np.isinf(a_hi), x + rng.random(a_lo.shape) * 1e6, x).astype(dt)
            e, s = exact_matmul(x, b)
            assert not enclosure_failures(res, e, e, s)
    entire = Interval(np.full((2, 2), -np.inf, dtype=dt), np.full((2, 2), np.inf, dtype=dt))
    r = entire @ np.ones((2, 2), dtype=dt)
    assert np.all(r.lo == -np.inf) and np.all(r.hi == np.inf)


@pytest.mark.parametrize("dt", DTYPES)
def test_larger_products_exact_integer_check(dt):
    """30..60-sized products, checked exactly with integer-scaled arithmetic."""
    rng = np.random.default_rng(11)
    for kind, (m, k, n) in [("normal", (40, 60, 30)), ("cancel", (30, 50, 35)),
                            ("mixed", (32, 45, 30))]:  # fmt: skip
        a_lo, a_hi = random_box(rng, (m, k), dt, kind)
        b_lo, b_hi = random_box(rng, (k, n), dt, kind)
        res = Interval(a_lo, a_hi) @ Interval(b_lo, b_hi)
        check_product(a_lo, a_hi, b_lo, b_hi, res, rng, hull=(kind == "normal"))
        res = a_lo @ Interval(b_lo, b_hi)
        check_product(a_lo, a_lo, b_lo, b_hi, res, rng, hull=False, samples=1)


def test_matmul_errors():
    a = Interval(np.ones((2, 3)))
    with pytest.raises(ValueError):
        a @ Interval(np.ones((2, 3)))  # inner dimensions differ
    with pytest.raises(TypeError):
        a @ Interval(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(TypeError):
        a @ np.ones((3, 2), dtype=np.float32)


# ------------------------------------------------------------------ BLAS threads

_THREAD_CHECK = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from test_matmul import check_product, random_box
    from intervalnn import Interval

    rng = np.random.default_rng(int(sys.argv[2]))
    failures = 0
    for dt in (np.float32, np.float64):
        for kind, (m, k, n) in [("normal", (96, 128, 80)), ("cancel", (80, 96, 64)),
                                ("mixed", (64, 72, 64))]:
            a_lo, a_hi = random_box(rng, (m, k), dt, kind)
            b_lo, b_hi = random_box(rng, (k, n), dt, kind)
            for res, ah, bh in [(Interval(a_lo, a_hi) @ Interval(b_lo, b_hi), a_hi, b_hi),
                                (a_lo @ Interval(b_lo, b_hi), a_lo, b_hi),
                                (Interval(a_lo, a_hi) @ b_lo, a_hi, b_lo)]:
                try:
                    check_product(a_lo, ah, b_lo, bh, res, rng, hull=False, samples=2)
                except AssertionError as exc:
                    failures += 1
                    print("FAIL", np.dtype(dt).name, kind, exc)
    print("enclosure failures:", failures)
    sys.exit(1 if failures else 0)
    """
)


@pytest.mark.parametrize("threads", [1, 2])
def test_enclosure_with_blas_threads(threads):
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    here = os.path.dirname(os.path.abspath(__file__))
    proc = subprocess.run(
        [sys.executable, "-c", _THREAD_CHECK, here, str(threads)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "enclosure failures: 0" in proc.stdout


def test_regression_float32_nan_radius_read_as_zero():
    """Bug: float32 ``mul_rd``/``mul_ru`` mapped every NaN product to 0 (meant for
    ``0 * inf``), so a NaN radius from ``inf * 0`` in a BLAS product became a
    finite one: ``[[-inf, 1], [1, 2]] @ [[0], [2]]`` came back as ``[3, 3]``
    although it contains ``2``."""
    dt = np.float32
    a = Interval(np.array([[-np.inf, 1]], dtype=dt), np.array([[1, 2]], dtype=dt))
    res = a @ np.array([[0], [2]], dtype=dt)
    assert res.lo[0, 0] <= 2 and res.hi[0, 0] >= 4
    nan, one = np.array([np.nan], dtype=dt), np.array([1.0], dtype=dt)
    from intervalnn.kernels import cpu

    for f in (cpu.mul_rd, cpu.mul_ru):
        assert np.isnan(f(nan, one)).all() and np.isnan(f(one, nan)).all()
    zero, inf = np.array([0.0], dtype=dt), np.array([np.inf], dtype=dt)
    assert cpu.mul_rd(zero, inf)[0] == 0 and cpu.mul_ru(inf, zero)[0] == 0  # IEEE 1788 bounds


@pytest.mark.parametrize("dt", DTYPES)
def test_a_member_float_product_that_may_overflow_gets_infinite_bounds(dt):
    """Regression (an escape found in review, fixed by ``gemm._may_overflow``): the bound on
    float products of members assumed no overflow.  ``A = [[0, M], 1]``,
    ``b = [2, -M]`` (``M`` near the dtype's max) has midpoint product ``P = 0`` and a finite
    radius about ``M``, so the bound is finite, about ``[-M, M]``; the exact product of the
    member ``a = [M, 1]`` is ``M`` (inside), but its float evaluation overflows in the product
    ``M * 2`` and gives ``+inf`` in every summation order (NumPy's ``a @ b`` too).  An entry
    where a member's product or partial sum can overflow needs ``+-inf`` bounds."""
    big = dt(3e38 if dt == np.float32 else 1e308)
    box = Interval(np.array([[0, 1]], dtype=dt), np.array([[big, 1]], dtype=dt))
    b = np.array([[2], [-big]], dtype=dt)
    a = np.array([[big, 1]], dtype=dt)
    with np.errstate(over="ignore"):
        floats = [a @ b, a[0, 0] * b[0, 0] + a[0, 1] * b[1, 0]]
    mid, rad = box.midrad()
    for res in (box @ b, inn.matmul(box, b), inn.matmul(inn.linalg.MidRad(mid, rad), b)):
        assert res.lo[0, 0] <= big <= res.hi[0, 0]  # the exact product of the member a
        for v in floats:
            assert np.float64(v).item() == np.inf
            assert res.hi[0, 0] == np.inf, (res.lo, res.hi, "member's float product is +inf")
