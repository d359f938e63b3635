"""GPU backend (kernels/gpu.py, CuPy): bit-for-bit against the CPU kernels, plus soundness.

The CPU kernels are tested exactly elsewhere, so every GPU kernel result must
equal the CPU result bit for bit, except that the sign of a zero bound is not
compared (the GPU returns +0.0 for every zero bound; -0.0 and +0.0 are the
same real number).  Interval-level operations on CuPy arrays are checked
against the CPU backend and, where summation order may differ (sum, mean,
matmul), against exact rational results.

Skips (with the reason) when CuPy is not installed or no CUDA GPU is visible.
"""

import os
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from oracle import fraction_array, hull_matmul

cupy = pytest.importorskip("cupy", reason="the GPU backend needs CuPy (pip install cupy-cuda12x)")


def _device_count() -> int:
    try:
        return cupy.cuda.runtime.getDeviceCount()
    except Exception:  # no driver, no device, broken CUDA install
        return 0


if _device_count() == 0:
    pytest.skip("CuPy is installed but no CUDA GPU is visible", allow_module_level=True)

from intervalnn import Interval, backend_of, matmul  # noqa: E402
from intervalnn import sqr as interval_sqr  # noqa: E402
from intervalnn import sqrt as interval_sqrt  # noqa: E402
from intervalnn.kernels import cpu, gpu, gpu_elementary, gpu_elementwise, gpu_guards  # noqa: E402
from intervalnn.kernels import elementary as el  # noqa: E402

pytestmark = pytest.mark.gpu

DTYPES = [np.float32, np.float64]
# Interval-level tests: float32 intervals are refused on the GPU while CuPy flushes.
IV_DTYPES = [np.float64] if gpu.CUPY_FLUSHES_FLOAT32_SUBNORMALS else DTYPES
ITYPE = {np.dtype(np.float32): np.uint32, np.dtype(np.float64): np.uint64}
N = 20_000
F32 = np.float32
ETA32 = F32(np.finfo(F32).smallest_subnormal)


# ---------------------------------------------------------------- data


def special_values(dt) -> np.ndarray:
    fi = np.finfo(dt)
    sub, tiny, big, eps = fi.smallest_subnormal, fi.smallest_normal, fi.max, fi.eps
    vals = [
        0.0, 1.0, 0.5, 3.0, 0.1, eps, 1 + eps, 1 - eps / 2, 2 - eps,
        sub, 2 * sub, 3 * sub, tiny, tiny - sub, tiny / 3, 2 * tiny,
        big, big / 2, big * (1 - eps), np.sqrt(big), np.sqrt(big) * 1.5, 1 / big,
        np.inf,
    ]  # fmt: skip
    v = np.array(vals, dtype=dt)
    return np.concatenate([v, -v])


def random_values(rng, dt, n) -> np.ndarray:
    """Finite and infinite values over the whole range, subnormals included."""
    with np.errstate(all="ignore"):
        return _random_values(rng, np.dtype(dt), n)


def _random_values(rng, dt, n) -> np.ndarray:
    fi = np.finfo(dt)
    itype = ITYPE[dt]
    k = n // 4
    # uniform random bit patterns (NaN replaced)
    bits = rng.integers(0, np.iinfo(itype).max, size=k, dtype=itype, endpoint=True).view(dt)
    bits = np.where(np.isnan(bits), dt.type(1.5), bits)
    # log-uniform magnitudes from the smallest subnormal to overflow
    e = rng.integers(fi.minexp - fi.nmant - 1, fi.maxexp + 1, size=k)
    logu = np.ldexp(rng.uniform(1, 2, size=k), e).astype(dt)
    # short mantissas near 1 (exact and tie-prone results)
    short = (
        rng.integers(-(2**12), 2**12, size=k) * np.ldexp(1.0, rng.integers(-14, 14, k))
    ).astype(dt)
    # subnormals only
    subn = (rng.integers(1, 2**20, size=k) * fi.smallest_subnormal).astype(dt)
    spec = special_values(dt)
    x = np.concatenate([bits, logu, short, subn, spec])
    x = x * np.where(rng.random(x.size) < 0.5, dt.type(-1), dt.type(1))
    x = np.concatenate([x, spec])  # specials with their own signs, -0.0 included
    x = np.concatenate([x, np.array([-0.0], dtype=dt)])
    return rng.permutation(x)[:n] if x.size >= n else rng.permutation(x)


def pairs(rng, dt, n):
    """Independent pairs plus related ones: cancellation, near-equal, overflow-prone."""
    with np.errstate(all="ignore"):
        return _pairs(rng, dt, n)


def _pairs(rng, dt, n):
    a, b = random_values(rng, dt, n), random_values(rng, dt, n)
    m = a.size // 8
    dt = np.dtype(dt)
    b[:m] = -a[:m]  # exact cancellation
    b[m : 2 * m] = -np.nextafter(a[m : 2 * m], dt.type(np.inf))  # one ulp apart
    big = np.sqrt(np.finfo(dt).max)
    a[2 * m : 3 * m] = big * rng.uniform(0.5, 2, m).astype(dt)  # products near overflow
    b[2 * m : 3 * m] = (
        big * rng.uniform(0.5, 2, m).astype(dt) * np.where(rng.random(m) < 0.5, -1, 1)
    )
    return a, b


def _fix(lo, hi, dt):
    big = np.finfo(dt).max
    lo = np.where(lo == np.inf, big, lo).astype(dt)
    hi = np.where(hi == -np.inf, -big, hi).astype(dt)
    return lo, hi


def random_intervals(rng, dt, n):
    x, y = random_values(rng, dt, n), random_values(rng, dt, n)
    n = min(x.size, y.size)
    x, y = x[:n], y[:n]
    lo, hi = np.minimum(x, y), np.maximum(x, y)
    u = rng.random(n)
    lo = np.where(u < 0.1, hi, lo)  # points
    lo = np.where((u >= 0.1) & (u < 0.15) & (hi >= 0), 0, lo)  # [0, hi]
    hi = np.where((u >= 0.15) & (u < 0.2) & (lo <= 0), 0, hi)  # [lo, 0]
    return _fix(lo.astype(dt), hi.astype(dt), dt)


def nonneg_intervals(rng, dt, n):
    x, y = np.abs(random_values(rng, dt, n)), np.abs(random_values(rng, dt, n))
    n = min(x.size, y.size)
    lo, hi = np.minimum(x[:n], y[:n]), np.maximum(x[:n], y[:n])
    return _fix(lo, hi, dt)


def divisor_intervals(rng, dt, n):
    """Intervals that exclude 0: lo > 0 or hi < 0."""
    lo, hi = nonneg_intervals(rng, dt, n)
    sub = np.finfo(dt).smallest_subnormal
    lo = np.where(lo == 0, sub, lo).astype(dt)
    hi = np.maximum(hi, lo)
    neg = rng.random(lo.size) < 0.5
    return np.where(neg, -hi, lo).astype(dt), np.where(neg, -lo, hi).astype(dt)


# ---------------------------------------------------------------- comparison


def _host(a):
    return cupy.asnumpy(a) if isinstance(a, cupy.ndarray) else np.asarray(a)


def assert_same(got, want, *inputs, what="", positive_zeros=True):
    """Bitwise equality up to the sign of zero (NaN equals NaN); GPU zeros must be +0."""
    g, w = _host(got), _host(want)
    assert g.dtype == w.dtype, (what, g.dtype, w.dtype)
    assert g.shape == w.shape, (what, g.shape, w.shape)
    if positive_zeros:
        assert not (np.signbit(g) & (g == 0)).any(), f"{what}: GPU returned -0.0"
    itype = ITYPE[g.dtype]
    gb = np.where(g == 0, 0, g).astype(g.dtype).view(itype)
    wb = np.where(w == 0, 0, w).astype(w.dtype).view(itype)
    bad = (gb != wb) & ~(np.isnan(g) & np.isnan(w))
    if bad.any():
        idx = np.flatnonzero(bad.reshape(-1))[:6]
        rows = []
        for i in idx:
            args = ", ".join(float(_host(x).reshape(-1)[i]).hex() for x in inputs)
            rows.append(
                f"  ({args}) -> gpu {float(g.reshape(-1)[i]).hex()}, "
                f"cpu {float(w.reshape(-1)[i]).hex()}"
            )
        pytest.fail(f"{what}: {int(bad.sum())} of {bad.size} differ\n" + "\n".join(rows))


def to_gpu(*arrays):
    return [cupy.asarray(a) for a in arrays]


# ---------------------------------------------------------------- plumbing


def test_backend_maps_cupy_arrays_to_gpu_kernels():
    bk = backend_of(cupy.zeros(3))
    assert bk.name == "cupy" and bk.xp is cupy and bk.kernels is gpu
    assert backend_of(np.zeros(3)).kernels is cpu


def test_kernels_have_cpu_names_and_are_named_elementwise_kernels():
    for name in ("add", "sub", "mul", "div", "sqr", "sqrt"):
        assert callable(getattr(gpu, name))
        assert gpu_elementwise.get_kernel(name).name == f"intervalnn_{name}"
    for name in ("add_rd", "add_ru", "mul_rd", "mul_ru", "div_rd", "div_ru", "midrad"):
        assert callable(getattr(gpu, name)) and callable(getattr(cpu, name))
        assert gpu_elementwise.get_kernel(name).name == f"intervalnn_{name}"
    assert gpu_elementwise.get_kernel("mul") is gpu_elementwise.get_kernel("mul")  # cached


def test_rejects_non_float_arrays():
    with pytest.raises(TypeError):
        gpu.add_rd(cupy.arange(3), cupy.arange(3))


# ---------------------------------------------------------------- point kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["add_rd", "add_ru", "mul_rd", "mul_ru", "div_rd", "div_ru"])
def test_point_kernels_match_cpu(dtype, op):
    rng = np.random.default_rng(sum(map(ord, op)) + np.dtype(dtype).itemsize)
    a, b = pairs(rng, dtype, N)
    if op.startswith("div"):  # precondition b != 0
        b = np.where(b == 0, dtype(1), b).astype(dtype)
        m = a.size // 32
        a[:m], a[m : 2 * m] = dtype(0.0), dtype(-0.0)  # zero dividends
    want = getattr(cpu, op)(a, b)
    got = getattr(gpu, op)(*to_gpu(a, b))
    assert_same(got, want, a, b, what=f"{op} {np.dtype(dtype).name}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_point_kernels_broadcast_and_strides(dtype):
    rng = np.random.default_rng(7)
    a = random_values(rng, dtype, 60)[:60].reshape(6, 10)
    b = random_values(rng, dtype, 10)[:10]
    a = np.where(a == 0, dtype(1), a).astype(dtype)  # divisors below must not be 0
    s = np.asarray(dtype(3.0))
    for op in ("add_rd", "mul_ru", "div_rd"):
        bb = np.where(b == 0, dtype(1), b).astype(dtype)
        assert_same(getattr(gpu, op)(*to_gpu(a, bb)), getattr(cpu, op)(a, bb), what=op)
        assert_same(getattr(gpu, op)(*to_gpu(s, a)), getattr(cpu, op)(s, a), what=op)
        at = a.T  # non-contiguous
        ga = cupy.asarray(a).T
        assert_same(getattr(gpu, op)(ga, ga), getattr(cpu, op)(at, at), what=op)


def test_point_kernels_mixed_dtypes_and_scalars_follow_numpy_promotion():
    rng = np.random.default_rng(8)
    a32 = np.concatenate([[ETA32, -ETA32, 3 * ETA32], random_values(rng, F32, 200)[:200]])
    a32 = a32.astype(F32)
    b64 = random_values(rng, np.float64, a32.size)[: a32.size]
    for op in ("add_rd", "add_ru", "mul_rd", "mul_ru"):
        got = getattr(gpu, op)(*to_gpu(a32, b64))  # float32 widened exactly, subnormals kept
        assert got.dtype == np.float64
        assert_same(got, getattr(cpu, op)(a32, b64), a32, b64, what=f"{op} f32+f64")
        got = getattr(gpu, op)(cupy.asarray(a32), 0.1)  # a Python float is weak, as in NumPy
        assert got.dtype == np.float32
        assert_same(got, getattr(cpu, op)(a32, 0.1), a32, what=f"{op} f32 scalar")


# ---------------------------------------------------------------- interval kernels


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul"])
def test_interval_binary_kernels_match_cpu(dtype, op):
    rng = np.random.default_rng(100 + len(op) + np.dtype(dtype).itemsize)
    alo, ahi = random_intervals(rng, dtype, N)
    blo, bhi = random_intervals(rng, dtype, alo.size)
    n = min(alo.size, blo.size)
    args = [x[:n] for x in (alo, ahi, blo, bhi)]
    want = getattr(cpu, op)(*args)
    got = getattr(gpu, op)(*to_gpu(*args))
    assert_same(got[0], want[0], *args, what=f"{op} lo")
    assert_same(got[1], want[1], *args, what=f"{op} hi")


@pytest.mark.parametrize("dtype", DTYPES)
def test_interval_div_matches_cpu(dtype):
    rng = np.random.default_rng(11)
    alo, ahi = random_intervals(rng, dtype, N)
    blo, bhi = divisor_intervals(rng, dtype, alo.size)
    n = min(alo.size, blo.size)
    args = [x[:n] for x in (alo, ahi, blo, bhi)]
    want = cpu.div(*args)
    got = gpu.div(*to_gpu(*args))
    assert_same(got[0], want[0], *args, what="div lo")
    assert_same(got[1], want[1], *args, what="div hi")


@pytest.mark.parametrize("dtype", DTYPES)
def test_interval_sqr_sqrt_match_cpu(dtype):
    rng = np.random.default_rng(12)
    alo, ahi = random_intervals(rng, dtype, N)
    for g, w in zip(gpu.sqr(*to_gpu(alo, ahi)), cpu.sqr(alo, ahi), strict=True):
        assert_same(g, w, alo, ahi, what="sqr")
    alo, ahi = nonneg_intervals(rng, dtype, N)
    for g, w in zip(gpu.sqrt(*to_gpu(alo, ahi)), cpu.sqrt(alo, ahi), strict=True):
        assert_same(g, w, alo, ahi, what="sqrt")


@pytest.mark.parametrize("dtype", DTYPES)
def test_interval_kernels_on_strided_and_broadcast_views(dtype):
    rng = np.random.default_rng(13)
    lo, hi = random_intervals(rng, dtype, 400)
    lo, hi = lo[:400].reshape(20, 20), hi[:400].reshape(20, 20)
    glo, ghi = cupy.asarray(lo), cupy.asarray(hi)
    # transposed and broadcast (stride-0) operands, as Interval._binary passes them
    b = cupy.broadcast_arrays(glo.T, ghi.T, glo[:1], ghi[:1])
    h = np.broadcast_arrays(lo.T, hi.T, lo[:1], hi[:1])
    for op in ("add", "mul"):
        for g, w in zip(getattr(gpu, op)(*b), getattr(cpu, op)(*h), strict=True):
            assert_same(g, w, what=op)


# ---------------------------------------------------------------- fused GEMM steps


@pytest.mark.parametrize("dtype", DTYPES)
def test_midrad_matches_cpu_midpoint_and_is_sound(dtype):
    rng = np.random.default_rng(14)
    lo, hi = random_intervals(rng, dtype, N)
    gm, gr = gpu.midrad(*to_gpu(lo, hi))
    cm, _ = cpu.midrad(lo, hi)
    assert_same(gm, cm, lo, hi, what="mid")
    m, r = _host(gm), _host(gr)
    # the tightest upward radius about that (representable) midpoint
    want = np.maximum(cpu.add_ru(m, -lo), cpu.add_ru(hi, -m))
    assert_same(gr, want, lo, hi, what="rad")
    assert ((lo <= m) & (m <= hi)).all()
    for i in rng.choice(lo.size, 3000, replace=False):
        if np.isfinite(lo[i]) and np.isfinite(hi[i]):
            fm, fr = Fraction(float(m[i])), Fraction(float(r[i]))
            assert fm - fr <= Fraction(float(lo[i])) and Fraction(float(hi[i])) <= fm + fr
        else:
            assert r[i] == np.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_mag_bound_and_gemm_enclose_are_sound_and_no_looser_than_cpu(dtype):
    """GPU: directed rounding per step; CPU: one ulp up per step (kernels/cpu.py).

    Both must be sound upper bounds of the exact expressions, and the GPU's
    can only be tighter.
    """
    from intervalnn.kernels.gemm import gemm_constants

    rng = np.random.default_rng(15)
    m = random_values(rng, dtype, N)
    m = np.where(np.isfinite(m), m, dtype(1)).astype(dtype)
    rad = np.abs(random_values(rng, dtype, m.size))
    rad = np.where(np.isfinite(rad), rad, dtype(1)).astype(dtype)
    g, c, k_eta, two_k_eta = gemm_constants(300, np.dtype(dtype))
    sample = rng.choice(m.size, 500, replace=False)
    for gg in (g, 1.0):
        got = _host(gpu.mag_bound(*to_gpu(m), gg, cupy.asarray(rad)))
        want = cpu.mag_bound(m, gg, rad)
        assert np.all(got <= want)
        for i in sample:
            exact = Fraction(float(gg)) * abs(Fraction(float(m[i]))) + Fraction(float(rad[i]))
            assert got[i] == np.inf or Fraction(float(got[i])) >= exact
    p = random_values(rng, dtype, m.size)
    p[:10] = np.nan
    s1 = np.abs(random_values(rng, dtype, m.size))
    s2 = np.abs(random_values(rng, dtype, m.size))
    for ss2 in (s2, None):
        gs2 = None if ss2 is None else cupy.asarray(ss2)
        glo, ghi = map(_host, gpu.gemm_enclose(*to_gpu(p, s1), gs2, c, k_eta, two_k_eta))
        clo, chi = cpu.gemm_enclose(p, s1, ss2, c, k_eta, two_k_eta)
        assert np.all(clo <= glo) and np.all(ghi <= chi)
        unknown = ~np.isfinite(p)
        assert np.all(glo[unknown] == -np.inf) and np.all(ghi[unknown] == np.inf)
        for i in sample:
            if not (np.isfinite(p[i]) and np.isfinite(ghi[i]) and np.isfinite(glo[i])):
                continue
            s = Fraction(float(s1[i])) + (Fraction(float(ss2[i])) if ss2 is not None else 0)
            r = (s + Fraction(float(two_k_eta))) * Fraction(float(c)) + Fraction(float(k_eta))
            assert Fraction(float(glo[i])) <= Fraction(float(p[i])) - r
            assert Fraction(float(ghi[i])) >= Fraction(float(p[i])) + r


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize("dtype", DTYPES)
def test_subnormals_are_not_flushed(dtype):
    fi = np.finfo(dtype)
    eta, tiny = dtype(fi.smallest_subnormal), dtype(fi.smallest_normal)
    one = cupy.asarray

    def v(x):
        return one(np.asarray(x, dtype=dtype))

    assert float(gpu.add_rd(v(eta), v(eta))) == 2 * eta
    assert float(gpu.add_ru(v(eta), v(-2 * eta))) == -eta
    assert float(gpu.mul_rd(v(tiny), v(0.5))) == tiny / 2
    assert float(gpu.mul_ru(v(eta), v(0.5))) == eta
    assert float(gpu.mul_rd(v(-eta), v(0.5))) == -eta
    assert float(gpu.div_rd(v(3 * eta), v(2))) == eta
    assert float(gpu.div_ru(v(3 * eta), v(2))) == 2 * eta
    lo, hi = gpu.sqrt(v([eta]), v([4 * eta]))
    lo, hi = Fraction(float(lo[0])), Fraction(float(hi[0]))
    assert 0 < lo and lo**2 <= Fraction(float(eta)) and Fraction(float(4 * eta)) <= hi**2
    gpu_guards._check_subnormals()  # the import-time probe passes


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_bounds_are_positive_zero(dtype):
    def v(*x):
        return cupy.asarray(np.array(x, dtype=dtype))

    outs = [
        gpu.add_rd(v(1.0), v(-1.0)),
        gpu.mul_rd(v(-1.0), v(0.0)),
        gpu.mul_ru(v(-0.0), v(5.0)),
        gpu.div_rd(v(0.0), v(-3.0)),
        gpu.div_ru(v(-1.0), v(np.inf)),
        *gpu.sub(v(1.0), v(1.0), v(1.0), v(1.0)),
        *gpu.sqrt(v(-0.0), v(-0.0)),
        *gpu.mul(v(-0.0), v(0.0), v(-2.0), v(-1.0)),
    ]
    for out in outs:
        h = _host(out)
        assert (h == 0).all() and not np.signbit(h).any(), h


@pytest.mark.parametrize("dtype", DTYPES)
def test_ieee1788_zero_times_infinity_and_overflow(dtype):
    big, inf = dtype(np.finfo(dtype).max), dtype(np.inf)

    def v(*x):
        return cupy.asarray(np.array(x, dtype=dtype))

    def f(x):
        return float(_host(x).reshape(-1)[0])

    assert f(gpu.mul_rd(v(0.0), v(inf))) == 0 and f(gpu.mul_ru(v(-0.0), v(-inf))) == 0
    lo, hi = gpu.mul(v(0.0), v(0.0), v(-inf), v(inf))
    assert f(lo) == 0 and f(hi) == 0
    lo, hi = gpu.mul(v(0.0), v(1.0), v(1.0), v(inf))
    assert f(lo) == 0 and f(hi) == np.inf
    assert f(gpu.add_rd(v(big), v(big))) == big and f(gpu.add_ru(v(big), v(big))) == np.inf
    assert f(gpu.mul_rd(v(-big), v(2.0))) == -np.inf
    assert f(gpu.mul_ru(v(-big), v(2.0))) == -big
    assert f(gpu.div_ru(v(big), v(0.5))) == np.inf and f(gpu.div_rd(v(big), v(0.5))) == big
    lo, hi = gpu.add(v(-inf), v(1.0), v(2.0), v(inf))
    assert f(lo) == -np.inf and f(hi) == np.inf


# ---------------------------------------------------------------- Interval on CuPy


def _no_f32_subnormals(x):
    """float32: subnormals moved to +-smallest normal (monotone, keeps signs); see FTZ tests."""
    if x.dtype != np.float32:
        return x
    tiny = np.finfo(np.float32).smallest_normal
    return np.where((x != 0) & (np.abs(x) < tiny), np.copysign(tiny, x), x).astype(x.dtype)


def _interval_pair(rng, dtype, n, divisor=False):
    lo, hi = (divisor_intervals if divisor else random_intervals)(rng, dtype, n)
    return _no_f32_subnormals(lo[:n]), _no_f32_subnormals(hi[:n])


def assert_interval_same(g: Interval, c: Interval, what=""):
    # The Interval layer itself may produce -0.0 (e.g. -[0, 1]); only kernels promise +0.0.
    assert g.backend.name == "cupy" and c.backend.name == "numpy"
    assert_same(g.lo, c.lo, what=f"{what} lo", positive_zeros=False)
    assert_same(g.hi, c.hi, what=f"{what} hi", positive_zeros=False)


@pytest.mark.parametrize("dtype", IV_DTYPES)
def test_interval_arithmetic_on_cupy_matches_numpy(dtype):
    rng = np.random.default_rng(21)
    n = 2000
    alo, ahi = _interval_pair(rng, dtype, n)
    blo, bhi = _interval_pair(rng, dtype, n)
    dlo, dhi = _interval_pair(rng, dtype, n, divisor=True)
    ca, cb, cd = Interval(alo, ahi), Interval(blo, bhi), Interval(dlo, dhi)
    ga, gb, gd = (Interval(cupy.asarray(x.lo), cupy.asarray(x.hi)) for x in (ca, cb, cd))
    assert ga.backend.name == "cupy"
    assert_interval_same(ga + gb, ca + cb, "+")
    assert_interval_same(ga - gb, ca - cb, "-")
    assert_interval_same(ga * gb, ca * cb, "*")
    assert_interval_same(ga / gd, ca / cd, "/")
    assert_interval_same(-ga, -ca, "neg")
    assert_interval_same(ga + 0.1, ca + 0.1, "+ 0.1")
    assert_interval_same(3 * ga, 3 * ca, "3 *")
    assert_interval_same(1 / gd, 1 / cd, "1 /")
    assert_interval_same(interval_sqr(ga), interval_sqr(ca), "sqr")
    assert_interval_same(abs(ga), abs(ca), "abs")
    nlo, nhi = nonneg_intervals(rng, dtype, n)
    cn = Interval(_no_f32_subnormals(nlo[:n]), _no_f32_subnormals(nhi[:n]))
    gn = Interval(cupy.asarray(cn.lo), cupy.asarray(cn.hi))
    assert_interval_same(interval_sqrt(gn), interval_sqrt(cn), "sqrt")
    # broadcasting between shapes
    c2 = Interval(alo[:12].reshape(3, 4), ahi[:12].reshape(3, 4))
    c1 = Interval(blo[:4], bhi[:4])
    g2 = Interval(cupy.asarray(c2.lo), cupy.asarray(c2.hi))
    g1 = Interval(cupy.asarray(c1.lo), cupy.asarray(c1.hi))
    assert_interval_same(g2 * g1, c2 * c1, "broadcast *")
    with pytest.raises(ZeroDivisionError):
        ga / Interval(cupy.asarray(np.array([-1.0], dtype)), cupy.asarray(np.array([1.0], dtype)))


@pytest.mark.parametrize("dtype", IV_DTYPES)
def test_ball_and_center_radius_on_cupy(dtype):
    rng = np.random.default_rng(22)
    x = rng.uniform(0, 1, size=50).astype(dtype)
    c = Interval.ball(x, 1e-3, domain=(0, 1))
    g = Interval.ball(cupy.asarray(x), 1e-3, domain=(0, 1))
    assert_interval_same(g, c, "ball")
    assert_interval_same(
        Interval.from_center_radius(cupy.asarray(x), 0.25),
        Interval.from_center_radius(x, 0.25),
        "center-radius",
    )


@pytest.mark.parametrize("dtype", IV_DTYPES)
def test_sum_and_mean_enclose_the_exact_result(dtype):
    rng = np.random.default_rng(23)
    big = float(np.sqrt(np.finfo(dtype).max)) / 1e3
    mags = np.ldexp(rng.uniform(1, 2, 300), rng.integers(-140, 60, 300))
    vals = (mags * np.where(rng.random(300) < 0.5, -1, 1)).astype(dtype)
    vals[:5] = np.array([big, -big, 1, -1, np.finfo(dtype).smallest_subnormal], dtype=dtype)
    width = np.abs(vals) * rng.uniform(0, 1e-3, 300)
    lo = vals.astype(dtype)
    hi = np.maximum(lo, (vals + width).astype(dtype))
    gi = Interval(cupy.asarray(lo), cupy.asarray(hi))
    s, m = gi.sum(), gi.mean()
    exact_lo, exact_hi = sum(fraction_array(lo).flat), sum(fraction_array(hi).flat)
    assert Fraction(float(s.lo)) <= exact_lo and exact_hi <= Fraction(float(s.hi))
    assert Fraction(float(m.lo)) <= exact_lo / 300 and exact_hi / 300 <= Fraction(float(m.hi))
    # along an axis
    g2 = Interval(cupy.asarray(lo.reshape(30, 10)), cupy.asarray(hi.reshape(30, 10)))
    s0 = g2.sum(axis=0)
    assert s0.shape == (10,)
    for j in range(10):
        el = sum(fraction_array(lo.reshape(30, 10)[:, j]).flat)
        eh = sum(fraction_array(hi.reshape(30, 10)[:, j]).flat)
        assert Fraction(float(s0.lo[j])) <= el and eh <= Fraction(float(s0.hi[j]))
    # an infinite endpoint makes that bound infinite, not NaN
    lo2 = lo.copy()
    lo2[7] = -np.inf
    s2 = Interval(cupy.asarray(lo2), cupy.asarray(hi)).sum()
    assert float(s2.lo) == -np.inf and np.isfinite(float(s2.hi))


def _assert_encloses(c: Interval, exact_lo, exact_hi, what=""):
    lo, hi = np.atleast_2d(_host(c.lo)), np.atleast_2d(_host(c.hi))
    assert lo.shape == (len(exact_lo), len(exact_lo[0])), (what, lo.shape)
    for i in range(lo.shape[0]):
        for j in range(lo.shape[1]):
            el, eh = exact_lo[i][j], exact_hi[i][j]
            assert Fraction(float(lo[i, j])) <= el, (what, i, j, float(lo[i, j]), float(el))
            assert eh <= Fraction(float(hi[i, j])), (what, i, j, float(hi[i, j]), float(eh))


def _rand_matrix_interval(rng, dtype, shape, point=False, spread=(-20, 20)):
    m = np.ldexp(rng.uniform(-2, 2, shape), rng.integers(*spread, shape)).astype(dtype)
    if point:
        return m, m.copy()
    r = (np.abs(m) * rng.uniform(0, 0.01, shape)).astype(dtype)
    return (m - r).astype(dtype), np.maximum(m, (m + r).astype(dtype))


@pytest.mark.parametrize("dtype", IV_DTYPES)
@pytest.mark.parametrize("kind", ["ii", "pi", "ip", "pp"])
@pytest.mark.parametrize("shapes", [((5, 7), (7, 3)), ((1, 6), (6, 1)), ((8, 256), (256, 8))])
def test_matmul_encloses_exact_product_and_matches_cpu_width(dtype, kind, shapes):
    rng = np.random.default_rng(31)
    (sa, sb) = shapes
    alo, ahi = _rand_matrix_interval(rng, dtype, sa, point=kind[0] == "p")
    blo, bhi = _rand_matrix_interval(rng, dtype, sb, point=kind[1] == "p")
    ga = Interval(cupy.asarray(alo), cupy.asarray(ahi))
    gb = Interval(cupy.asarray(blo), cupy.asarray(bhi))
    g = ga @ gb
    c = Interval(alo, ahi) @ Interval(blo, bhi)
    assert g.backend.name == "cupy" and g.dtype == np.dtype(dtype) and g.shape == c.shape
    _assert_encloses(g, *hull_matmul(alo, ahi, blo, bhi), what=f"{kind} {sa}@{sb}")
    # same formula as the CPU, only the GEMMs' rounding differs: widths agree closely
    gw, cw = _host(g.width), _host(c.width)
    assert (gw <= 1.5 * cw + 1e3 * np.finfo(dtype).smallest_subnormal).all()
    # a point operand given as a bare CuPy array
    if kind[1] == "p":
        _assert_encloses(matmul(ga, cupy.asarray(blo)), *hull_matmul(alo, ahi, blo, bhi))


@pytest.mark.parametrize("dtype", IV_DTYPES)
def test_matmul_vector_and_batched(dtype):
    rng = np.random.default_rng(32)
    alo, ahi = _rand_matrix_interval(rng, dtype, (3, 4, 5))
    blo, bhi = _rand_matrix_interval(rng, dtype, (5, 6))
    g = Interval(cupy.asarray(alo), cupy.asarray(ahi)) @ Interval(
        cupy.asarray(blo), cupy.asarray(bhi)
    )
    assert g.shape == (3, 4, 6)
    for k in range(3):
        _assert_encloses(g[k], *hull_matmul(alo[k], ahi[k], blo, bhi), what=f"batch {k}")
    vlo, vhi = _rand_matrix_interval(rng, dtype, (5,))
    gv = Interval(cupy.asarray(vlo), cupy.asarray(vhi)) @ Interval(
        cupy.asarray(blo), cupy.asarray(bhi)
    )
    assert gv.shape == (6,)
    _assert_encloses(gv.reshape(1, 6), *hull_matmul(vlo, vhi, blo, bhi), what="vector")


@pytest.mark.parametrize("dtype", IV_DTYPES)
@pytest.mark.parametrize("n", [2, 64, 200])
def test_cublas_keeps_subnormal_operands(dtype, n):
    """cuBLAS must not read subnormals as zero (the k*eta term assumes it)."""
    fi = np.finfo(dtype)
    e_small = fi.minexp - 10  # subnormal: 2^-136 (float32) or 2^-1032 (float64)
    a = np.full((n, n), np.ldexp(1.0, e_small), dtype=dtype)
    b = np.full((n, n), np.ldexp(1.0, 100), dtype=dtype)
    assert 0 < a[0, 0] < fi.smallest_normal
    p = _host(cupy.matmul(cupy.asarray(a), cupy.asarray(b)))
    assert (p == dtype(n * np.ldexp(1.0, e_small + 100))).all(), p.reshape(-1)[:4]
    pb = _host(cupy.matmul(cupy.asarray(a)[None].repeat(2, 0), cupy.asarray(b)))  # batched path
    assert (pb == dtype(n * np.ldexp(1.0, e_small + 100))).all()
    # and through the interval product, on random subnormal/huge mixtures
    rng = np.random.default_rng(n)
    k = min(n, 32)
    sa = (rng.integers(1, 2**10, (4, k)) * fi.smallest_subnormal).astype(dtype)
    sb = np.ldexp(rng.uniform(-2, 2, (k, 4)), rng.integers(60, 100, (k, 4))).astype(dtype)
    g = matmul(Interval(cupy.asarray(sa)), Interval(cupy.asarray(sb)))
    _assert_encloses(g, *hull_matmul(sa, sa, sb, sb), what="subnormal x huge")


@pytest.mark.parametrize("dtype", IV_DTYPES)
def test_matmul_overflow_gives_infinite_entries(dtype):
    big = np.finfo(dtype).max
    a = np.full((3, 4), big / 2, dtype=dtype)
    g = Interval(cupy.asarray(a)) @ Interval(cupy.asarray(a.T.copy()))
    assert (_host(g.lo) == -np.inf).all() and (_host(g.hi) == np.inf).all()


# ---------------------------------------------------------------- float32 on the GPU
# CuPy compiles its own kernels with -ftz=true (kernels/gpu.py docstring), so
# plain CuPy float32 operations in the Interval layer would flush subnormal
# endpoints: float32 intervals are refused on the GPU (the float32 *kernels*
# above use PTX that keeps subnormals and are tested bit for bit).


def test_f32_flag_reports_cupy_behaviour():
    eta = cupy.asarray(np.array([ETA32], F32))
    assert gpu.CUPY_FLUSHES_FLOAT32_SUBNORMALS == bool(((eta + eta) == 0).any())


@pytest.mark.skipif(not gpu.CUPY_FLUSHES_FLOAT32_SUBNORMALS, reason="CuPy keeps subnormals here")
def test_f32_intervals_are_refused_while_cupy_flushes():
    with pytest.raises(TypeError, match="flush-to-zero"):
        Interval(cupy.asarray(np.array([ETA32], F32)))
    with pytest.raises(TypeError, match="flush-to-zero"):
        Interval(cupy.asarray(np.array([1.0]))).astype(F32)


# ---------------------------------------------------------------- mixing and modes


def test_mixing_numpy_and_cupy_raises_type_error():
    h = np.array([1.0, 2.0])
    d = cupy.asarray(h)
    with pytest.raises(TypeError):
        Interval(h, d)
    with pytest.raises(TypeError):
        Interval(h) + Interval(d)
    with pytest.raises(TypeError):
        Interval(d) * h
    with pytest.raises(TypeError):
        matmul(Interval(d.reshape(1, 2)), h.reshape(2, 1))
    with pytest.raises(TypeError):
        backend_of(h, d)


@pytest.mark.parametrize(
    "var, value",
    [("CUPY_TF32", "1"), ("NVIDIA_TF32_OVERRIDE", "1"), ("CUBLAS_EMULATE_SINGLE_PRECISION", "1")],
)
def test_reduced_precision_environment_is_refused(monkeypatch, var, value):
    gpu.check_gemm_mode()
    monkeypatch.setenv(var, value)
    with pytest.raises(RuntimeError, match="full-precision cuBLAS"):
        gpu.check_gemm_mode()
    monkeypatch.setenv(var, "0")
    gpu.check_gemm_mode()


def test_tf32_compute_type_and_math_mode_are_refused():
    linalg = gpu_guards._linalg_module()
    if linalg is None:
        pytest.skip("this CuPy has no _routines_linalg compute types")
    saved = linalg.get_compute_type(np.float32)
    tf32 = getattr(linalg, "COMPUTE_TYPE_TF32", 7)
    try:
        linalg.set_compute_type(np.float32, tf32)
        if linalg.get_compute_type(np.float32) == tf32:  # needs compute capability >= 8.0
            with pytest.raises(RuntimeError, match="TF32"):
                gpu.check_gemm_mode()
    finally:
        linalg.set_compute_type(np.float32, saved)
    gpu.check_gemm_mode()
    from cupy_backends.cuda.libs import cublas

    if not hasattr(cublas, "getMathMode"):
        pytest.skip("this CuPy cannot read the cuBLAS math mode")
    handle = cupy.cuda.device.get_cublas_handle()
    saved_mode = cublas.getMathMode(handle)
    try:
        cublas.setMathMode(handle, 3)  # CUBLAS_TF32_TENSOR_OP_MATH
        with pytest.raises(RuntimeError, match="math mode"):
            gpu.check_gemm_mode()
    finally:
        cublas.setMathMode(handle, saved_mode)
    gpu.check_gemm_mode()


def test_import_refuses_cupy_tf32():
    env = {**os.environ, "CUPY_TF32": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", "import intervalnn.kernels.gpu"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0
    assert "CUPY_TF32" in proc.stderr and "RuntimeError" in proc.stderr


# ---------------------------------------------------------------- transcendentals


@pytest.mark.parametrize("dtype", IV_DTYPES)
@pytest.mark.parametrize("name", ["exp", "expm1", "log", "log1p", "tanh"])
def test_interval_transcendentals_on_cupy_match_numpy(dtype, name):
    from intervalnn import functions

    f = getattr(functions, name, None)
    rng = np.random.default_rng(42)
    lo = rng.uniform(0.01, 3, 300).astype(dtype)
    hi = np.maximum(lo, (lo * dtype(1.001)).astype(dtype))
    c = f(Interval(lo, hi))
    assert_interval_same(f(Interval(cupy.asarray(lo), cupy.asarray(hi))), c, name)


ELEMENTARY = ["exp", "expm1", "log", "log1p"]
N_ELEMENTARY = 100_000


def cpu_tanh(x):
    """The CPU tanh bounds (kernels/cpu.py, checked against MPFR in test_elementary.py)."""
    return cpu.tanh_rd(x), cpu.tanh_ru(x)


def _neighbours(points, dt, k):
    """Each point and its ``k`` float neighbours on either side."""
    p = np.asarray(points, dtype=dt)
    out, up, down = [p], p.copy(), p.copy()
    for _ in range(k):
        up = np.nextafter(up, dt.type(np.inf))
        down = np.nextafter(down, dt.type(-np.inf))
        out += [up, down]
    return np.concatenate(out)


def elementary_args(rng, dt, name, n):
    """``n`` arguments for ``name``: its thresholds and their neighbours, the
    reduction's cell edges, the working range, near 0 (and near 1 for log),
    log-uniform magnitudes of both signs from subnormals to overflow, random
    bit patterns, and +-0, +-inf, NaN, +-1, +-MAX, +-smallest subnormal."""
    dt = np.dtype(dt)
    with np.errstate(all="ignore"):
        return _elementary_args(rng, dt, name, n)


def _elementary_args(rng, dt, name, n):
    fi = np.finfo(dt)
    big, eps, sub = float(fi.max), float(fi.eps), float(fi.smallest_subnormal)
    if name in ("exp", "expm1"):
        # the CPU kernels' branch points (709.79, -745.2, -40, 2^-60), ln(MAX),
        # float64 subnormal/underflow edges, float32 overflow/subnormal/underflow
        # edges, the |R| bound of the reduction, and the cell edges (k +- 1/2) L
        edges = [
            709.79, -745.2, -40.0, 2.0**-60, -(2.0**-60), 709.782712893384,
            -708.3964185322641, -744.4400719213812, -745.1332191019411,
            88.72283935546875, -87.3365447505531, -103.97207708, -103.2789299,
            0.0054153, -0.0054153, 0.0108306, 1.0, -1.0, np.log(2.0), 64 * np.log(2.0),
        ]  # fmt: skip
        k = rng.integers(-68_800, 65_600, n // 8)
        cells = (k + rng.choice([-0.5, 0.5], k.size)) * (np.log(2.0) / 64)
        lo, hi = (-110.0, 95.0) if dt == np.float32 else (-760.0, 720.0)
        ranged = rng.uniform(lo, hi, n // 4)
        if name == "expm1":
            ranged[: n // 8] = rng.uniform(-45.0, 1.0, n // 8)
    elif name == "tanh":
        # the switches 2^-27 and 19.1, saturation (float64 ~19.06, float32 ~9.01),
        # expm1's reduction cells at 2|x|, and the working range
        edges = [
            2.0**-27, -(2.0**-27), 19.1, -19.1, 19.06, -19.06, 9.01, -9.01,
            0.5, 1.0, 0.0027076, 0.0054153,
        ]  # fmt: skip
        k = rng.integers(0, 3600, n // 8)
        cells = (k + rng.choice([-0.5, 0.5], k.size)) * (np.log(2.0) / 128)
        cells *= rng.choice([-1.0, 1.0], k.size)
        ranged = rng.uniform(-25.0, 25.0, n // 4)
    else:
        one = 1.0 if name == "log" else 0.0  # log(one + t) near 0
        edges = [
            1.0, 1 + eps, 1 - eps / 2, 2.0, 0.5, np.sqrt(0.5), np.sqrt(2.0),
            1 + 27.5 / 64, 1 - 19.5 / 64, sub, float(fi.tiny), big, 1e-300,
        ]  # fmt: skip
        if name == "log1p":
            edges = [e - 1 for e in edges] + [-1.0, -1 + eps / 2, -0.5, 2.0**-60, -(2.0**-60)]
        edges += [sub, big, -1e-300]
        # every table cell of every binade (mantissas in [1/sqrt2, sqrt2))
        m = np.sqrt(0.5) + rng.random(n // 8) * (np.sqrt(2.0) - np.sqrt(0.5))
        cells = m * np.ldexp(1.0, rng.integers(fi.minexp - fi.nmant, fi.maxexp, m.size)) - 1 + one
        ranged = one + rng.uniform(-1, 1, n // 4) * np.ldexp(1.0, rng.integers(-60, 1, n // 4))
    e = rng.integers(fi.minexp - fi.nmant - 1, fi.maxexp, n // 4)
    logu = np.ldexp(rng.uniform(1, 2, e.size), e) * rng.choice([-1.0, 1.0], e.size)
    e = rng.integers(-80, 0, n // 8)
    small = np.ldexp(rng.uniform(1, 2, e.size), e) * rng.choice([-1.0, 1.0], e.size)
    itype = ITYPE[dt]
    bits = rng.integers(0, np.iinfo(itype).max, n // 16, dtype=itype, endpoint=True).view(dt)
    bits = np.where(np.isnan(bits), dt.type(0.75), bits)
    specials = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, big, -big, sub, -sub]
    parts = [np.array(specials), _neighbours(np.array(edges, dtype=dt), dt, 40)]
    parts += [cells, ranged, logu, small, bits]
    x = np.concatenate([np.asarray(p).astype(dt) for p in parts])
    if x.size < n:
        x = np.concatenate([x, rng.uniform(-800, 800, n - x.size).astype(dt)])
    return x[:n]


def test_elementary_kernels_are_gpu_kernels_without_libm():
    import re

    for fn in ELEMENTARY + ["tanh"]:
        for side in ("rd", "ru"):
            name = f"{fn}_{side}"
            assert callable(getattr(gpu, name))
            assert fn == "tanh" or callable(getattr(cpu, name))
            assert gpu_elementwise.get_kernel(name).name == f"intervalnn_{name}"
    src = gpu_elementary._elementary_source()
    # no CUDA libm transcendental (no guaranteed error bound) outside comments
    code = re.sub(r"//[^\n]*", "", src)
    libm = r"(?<![\w.])(exp|expm1|exp2|exp10|log|log1p|log2|log10|pow|tanh|sinh|cosh)f?\s*\("
    assert not re.search(libm, code), re.search(libm, code)
    assert re.search(r"(?<![\w.])fma\s*\(", code)  # TwoProd
    # the tables are elementary.py's, bit for bit
    for table, values in (("th", el._TH), ("tl", el._TL), ("lch", el._LCH), ("lcl", el._LCL)):
        body = re.search(rf"inn_el_{table}\[\d+\] = \{{([^}}]*)\}}", src).group(1)
        bits = np.array([int(b, 16) for b in re.findall(r"0x([0-9a-f]{16})ULL", body)], np.uint64)
        assert bits.size == values.size and (bits.view(np.float64) == values).all(), table


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ELEMENTARY)
def test_elementary_kernels_match_cpu_bit_for_bit(dtype, name):
    """10^5 arguments per function and dtype; both roundings; the CPU kernels are
    checked against MPFR (tests/test_elementary.py), so equality carries that over."""
    rng = np.random.default_rng(sum(map(ord, name)) + np.dtype(dtype).itemsize)
    x = elementary_args(rng, dtype, name, N_ELEMENTARY)
    assert x.size == N_ELEMENTARY and x.dtype == np.dtype(dtype)
    gx = cupy.asarray(x)
    lo, hi = getattr(gpu, f"{name}_rd")(gx), getattr(gpu, f"{name}_ru")(gx)
    assert lo.dtype == hi.dtype == np.dtype(dtype) and lo.shape == x.shape
    w = f"{name} {np.dtype(dtype).name}"
    assert_same(lo, getattr(cpu, f"{name}_rd")(x), x, what=f"{w} rd")
    assert_same(hi, getattr(cpu, f"{name}_ru")(x), x, what=f"{w} ru")
    lo, hi = _host(lo), _host(hi)
    ok = ~np.isnan(lo)
    assert (lo[ok] <= hi[ok]).all()
    # subnormal float32 results are kept (no flush to zero)
    if name == "exp" and dtype == np.float32:
        tiny = np.finfo(F32).smallest_normal
        assert ((lo > 0) & (lo < tiny)).sum() > 100


@pytest.mark.parametrize("dtype", DTYPES)
def test_tanh_kernels_match_cpu_bit_for_bit(dtype):
    """As above for tanh, against the CPU scalar kernels (tests/test_elementary.py
    checks those against MPFR: sound and within 1 ulp of the tightest bounds)."""
    rng = np.random.default_rng(1788 + np.dtype(dtype).itemsize)
    x = elementary_args(rng, dtype, "tanh", N_ELEMENTARY)
    assert x.size == N_ELEMENTARY and x.dtype == np.dtype(dtype)
    gx = cupy.asarray(x)
    lo, hi = gpu.tanh_rd(gx), gpu.tanh_ru(gx)
    assert lo.dtype == hi.dtype == np.dtype(dtype) and lo.shape == x.shape
    want_lo, want_hi = cpu_tanh(x)
    w = f"tanh {np.dtype(dtype).name}"
    assert_same(lo, want_lo, x, what=f"{w} rd")
    assert_same(hi, want_hi, x, what=f"{w} ru")
    lo, hi = _host(lo), _host(hi)
    ok = ~np.isnan(lo)
    assert (lo[ok] <= hi[ok]).all() and (lo[ok] >= -1).all() and (hi[ok] <= 1).all()
    # float32 subnormal arguments: tanh(t) in (prev(t), t), kept (no flush to zero)
    if dtype == np.float32:
        sub = (x > 0) & (x < np.finfo(F32).smallest_normal)
        assert sub.sum() > 100 and (hi[sub] == x[sub]).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementary_kernels_exact_and_edge_cases(dtype):
    fi = np.finfo(dtype)
    inf, big, eta = np.inf, fi.max, fi.smallest_subnormal
    t = 2.0**-70

    def bounds(name, x):
        gx = cupy.asarray(np.array([x], dtype=dtype))
        return (float(getattr(gpu, f"{name}_{s}")(gx)[0]) for s in ("rd", "ru"))

    def nxt(x, d):
        return float(np.nextafter(dtype(x), dtype(d)))

    cases = [
        ("exp", 0.0, 1.0, 1.0), ("exp", -0.0, 1.0, 1.0), ("exp", inf, inf, inf),
        ("exp", -inf, 0.0, 0.0), ("exp", 1000.0, big, inf), ("exp", -1000.0, 0.0, eta),
        ("exp", t, 1.0, nxt(1, 2)), ("exp", -t, nxt(1, 0), 1.0),
        ("log", 1.0, 0.0, 0.0), ("log", 0.0, -inf, -inf), ("log", -0.0, -inf, -inf),
        ("log", inf, inf, inf),
        ("expm1", 0.0, 0.0, 0.0), ("expm1", -0.0, 0.0, 0.0), ("expm1", inf, inf, inf),
        ("expm1", -inf, -1.0, -1.0), ("expm1", -100.0, -1.0, nxt(-1, 0)),
        ("expm1", t, t, nxt(t, 1)), ("expm1", 1000.0, big, inf),
        ("log1p", 0.0, 0.0, 0.0), ("log1p", -0.0, 0.0, 0.0), ("log1p", -1.0, -inf, -inf),
        ("log1p", inf, inf, inf), ("log1p", t, nxt(t, 0), t), ("log1p", -t, nxt(-t, -1), -t),
        ("tanh", 0.0, 0.0, 0.0), ("tanh", -0.0, 0.0, 0.0), ("tanh", inf, 1.0, 1.0),
        ("tanh", -inf, -1.0, -1.0), ("tanh", 100.0, nxt(1, 0), 1.0),
        ("tanh", -100.0, -1.0, nxt(-1, 0)), ("tanh", t, nxt(t, 0), t), ("tanh", -t, -t, nxt(-t, 0)),
    ]  # fmt: skip
    for name, x, want_lo, want_hi in cases:
        lo, hi = bounds(name, x)
        assert (lo, hi) == (want_lo, want_hi), (name, x, lo, hi)
        assert not any(v == 0 and np.signbit(v) for v in (lo, hi)), (name, x)  # +0 bounds
    for name, x in (
        ("log", -1.0),
        ("log", -eta),
        ("log1p", -2.0),
        ("exp", np.nan),
        ("tanh", np.nan),
    ):
        assert all(np.isnan(v) for v in bounds(name, x)), (name, x)
    # float subnormal results, directed: exp(-1000) in (0, eta], exp of float32 -100
    x = cupy.asarray(np.array([-100.0, -104.0], dtype=dtype))
    lo, hi = _host(gpu.exp_rd(x)), _host(gpu.exp_ru(x))
    assert (lo <= hi).all() and (hi > 0).all()
    if dtype == np.float32:
        assert 0 < lo[0] < fi.smallest_normal and lo[1] == 0 and hi[1] == eta


def test_elementary_kernels_take_any_shape_and_strides():
    rng = np.random.default_rng(43)
    x = rng.uniform(-5, 5, (30, 40))
    gx = cupy.asarray(x).T  # non-contiguous
    for name in ("exp_rd", "log1p_ru", "expm1_rd"):
        got = getattr(gpu, name)(gx)
        assert got.shape == (40, 30)
        assert_same(got, getattr(cpu, name)(x.T), what=name)
    assert gpu.exp_rd(cupy.zeros((0,))).shape == (0,)
    with pytest.raises(TypeError):
        gpu.exp_rd(cupy.arange(3))
