"""Image layers (``Conv2d``, ``AvgPool2d``, ``MaxPool2d``, ``Flatten``, ``Unflatten``) against
exact rational arithmetic.

The oracle (``tests/oracle.py``, section "image layers") is independent of the library: the
layers written from their definitions as nested loops over a small reverse-mode AD on exact
rationals (``Tape``), so every gradient is the generic chain rule's vector-Jacobian product.
For sampled members of the boxes (vertices and interior points; parameters, inputs and output
gradients) the exact forward value and the exact gradients must lie in the library's interval
results, and so must the nominal model's float results for the same members.  Boxes range from
subnormal to 1e300 (float64) / 1e36 (float32), points, narrow and wide, with infinite
endpoints; maximum pooling gets ties (lattice values, vertices of overlapping boxes) and every
tie-breaking choice.  Whole small CNNs take exact SGD steps with cross-entropy (softmax in MPFR
as in ``oracle.Exact``) on poisoned datasets inside the data box and must stay in the
``LayeredEngine``'s parameter box.
"""

from __future__ import annotations

from fractions import Fraction
from itertools import product

import numpy as np
import pytest
from oracle import (
    Exact,
    Tape,
    adjoints,
    q,
    tape_avgpool2d,
    tape_conv2d,
    tape_linear,
    tape_maxpool2d,
    tape_relu,
)

from intervalnn import Interval
from intervalnn.engine import LayeredEngine, make_engine
from intervalnn.layers import (
    AvgPool2d,
    Conv2d,
    Flatten,
    Linear,
    MaxPool2d,
    ReLU,
    Sequential,
    Unflatten,
)

DTYPES = (np.float64, np.float32)
SCALES = {
    np.float64: (1e-310, 1e-200, 1e-9, 1.0, 1e20, 1e150, 1e300),
    np.float32: (1e-43, 1e-30, 1e-5, 1.0, 1e8, 1e18, 1e36),
}


# ------------------------------------------------------------------ boxes and members


def rand_box(rng, shape, dtype, scale, *, lattice=False, inf=0.0):
    """Random intervals of ``dtype``: points, narrow and wide boxes mixed entrywise around
    ``scale``, some signed zeros; ``lattice``: endpoints on ``scale * {-2..2}`` (scale a power
    of 2: ties); ``inf``: the probability of each endpoint being infinite."""
    if lattice:
        s = 2.0 ** np.round(np.log2(scale))
        a = rng.integers(-2, 3, shape) * s
        b = a + rng.integers(0, 3, shape) * s * (rng.random(shape) < 0.6)
        lo, hi = a.astype(dtype), b.astype(dtype)
    else:
        c = rng.uniform(-1, 1, shape) * scale
        kind = rng.integers(0, 3, shape)
        r = np.where(kind == 0, 0.0, np.where(kind == 1, 1e-3, 1.0)) * scale * rng.random(shape)
        lo, hi = (c - r).astype(dtype), (c + r).astype(dtype)
    lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    # signed zeros: points -0.0, and [-0.0, 0.0] / [0.0, -0.0] (equal reals)
    zero = rng.random(shape)
    lo = np.where(zero < 0.04, -0.0, np.where(zero < 0.06, 0.0, lo)).astype(dtype)
    hi = np.where(zero < 0.02, -0.0, np.where(zero < 0.06, np.where(zero < 0.05, 0.0, -0.0), hi))
    hi = hi.astype(dtype)
    if inf:
        lo = np.where(rng.random(shape) < inf, -np.inf, lo).astype(dtype)
        hi = np.where(rng.random(shape) < inf, np.inf, hi).astype(dtype)
    return Interval(lo, hi)


def member(rng, box: Interval, scale, vertex: bool):
    """A finite member of ``box`` in its dtype: a random vertex or interior point (infinite
    endpoints replaced by finite values ``4 scale`` beyond the other end)."""
    dt = box.dtype
    lo, hi = box.lo.astype(np.float64), box.hi.astype(np.float64)
    far = 4 * scale
    lo_f = np.where(np.isinf(lo), np.minimum(np.where(np.isinf(hi), 0, hi), 0) - far, lo)
    hi_f = np.where(np.isinf(hi), np.maximum(lo_f, 0) + far, hi)
    if vertex:
        v = np.where(rng.random(lo.shape) < 0.5, lo_f, hi_f)
    else:
        v = lo_f + (hi_f - lo_f) * rng.random(lo.shape)
    v = v.astype(dt)
    # float32 rounding or an infinite surrogate may step out: pull back into the box
    v = np.clip(v, box.lo, box.hi)
    v = np.where(np.isfinite(v), v, np.where(np.isfinite(box.lo), box.lo, box.hi)).astype(dt)
    assert np.isfinite(v).all() and bool(box.contains(v).all())
    return v


def _inside(lo, hi, v) -> bool:
    """Exact ``lo <= v <= hi`` for float endpoints (NaN never contains) and an mpq ``v``."""
    lo, hi = float(lo), float(hi)
    ok_lo = lo == -np.inf or (lo == lo and lo != np.inf and q(lo) <= v)
    ok_hi = hi == np.inf or (hi == hi and hi != -np.inf and v <= q(hi))
    return ok_lo and ok_hi


def exact_escapes(box: Interval, exact, what: str) -> list[str]:
    """Entries of the exact object array ``exact`` outside ``box`` (same shape)."""
    assert box.shape == exact.shape, (what, box.shape, exact.shape)
    return [
        f"{what}{idx}: exact {float(exact[idx])!r} not in [{box.lo[idx]!r}, {box.hi[idx]!r}]"
        for idx in np.ndindex(*exact.shape)
        if not _inside(box.lo[idx], box.hi[idx], exact[idx])
    ]


def float_escapes(box: Interval, value, what: str) -> list[str]:
    """Entries of the float array ``value`` outside ``box``.

    A finite value must lie in it; an infinite one (an overflowing float evaluation) needs
    the bound on its side to be infinite; NaN (inf - inf after an overflow) needs both."""
    value = np.asarray(value)
    assert box.shape == value.shape and value.dtype == box.dtype, (what, value.dtype)
    bad = []
    for idx in np.ndindex(*value.shape):
        v, lo, hi = value[idx], box.lo[idx], box.hi[idx]
        if np.isnan(v):
            ok = lo == -np.inf and hi == np.inf
        elif np.isinf(v):
            ok = (hi == np.inf) if v > 0 else (lo == -np.inf)
        else:
            ok = bool(lo <= v <= hi)
        if not ok:
            bad.append(f"{what}{idx}: float {v!r} not in [{lo!r}, {hi!r}]")
    return bad


def well_formed(box: Interval, what: str) -> list[str]:
    bad = np.isnan(box.lo) | np.isnan(box.hi) | (box.lo > box.hi)
    return [
        f"{what}{tuple(i)}: [{box.lo[tuple(i)]!r}, {box.hi[tuple(i)]!r}]" for i in np.argwhere(bad)
    ]


# ------------------------------------------------------------------ random layer cases


def _size(rng, k, p):
    least = max(1, k - 2 * p)
    return int(rng.integers(least, least + 4))


def random_case(seed: int, kind: str, dtype):
    """A layer of ``kind`` with random geometry and boxes, the input box, and the scales."""
    rng = np.random.default_rng(seed)
    kernel = tuple(int(k) for k in rng.integers(1, 5, 2))
    stride = tuple(int(s) for s in rng.integers(1, 4, 2))
    padding = tuple(int(p) for p in rng.integers(0, 3, 2)) if kind == "conv" else (0, 0)
    n, c = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    shape = (n, c, _size(rng, kernel[0], padding[0]), _size(rng, kernel[1], padding[1]))
    scales = SCALES[dtype]
    sx, sw = float(rng.choice(scales)), float(rng.choice(scales))
    lattice = kind == "max" and rng.random() < 0.6
    inf = float(rng.choice([0.0, 0.0, 0.1, 0.3]))
    x = rand_box(rng, shape, dtype, sx, lattice=lattice, inf=inf)
    if kind == "conv":
        out_c = int(rng.integers(1, 4))
        layer = Conv2d(c, out_c, kernel, stride, padding, rng=rng, dtype=dtype)
        winf = float(rng.choice([0.0, 0.0, 0.1]))
        w = rand_box(rng, (out_c, c, *kernel), dtype, sw, inf=winf)
        b = rand_box(rng, (out_c,), dtype, float(rng.choice(scales)), inf=winf)
        layer.set_params({"weight": w, "bias": b})
    elif kind == "avg":
        layer = AvgPool2d(kernel, stride)
    else:
        layer = MaxPool2d(kernel, None if rng.random() < 0.3 else stride)
    return rng, layer, x, sx, sw


def exact_layer(t: Tape, layer, x_nodes, params, choose=None):
    """The exact layer on the tape; ``params``: name -> node array."""
    if isinstance(layer, Conv2d):
        w, b = params["weight"], params["bias"]
        return tape_conv2d(t, x_nodes, w, b, layer.stride, layer.padding)
    if isinstance(layer, AvgPool2d):
        return tape_avgpool2d(t, x_nodes, layer.kernel_size, layer.stride)
    return tape_maxpool2d(t, x_nodes, layer.kernel_size, layer.stride, choose or (lambda k: k[0]))


def members(rng, params: dict, x: Interval, sx, sw, count):
    """``count`` members ``(x, params)`` of the boxes: the first two vertices, the rest
    alternately interior points and vertices."""
    out = []
    for k in range(count):
        vertex = k < 2 or k % 2 == 0
        xm = member(rng, x, sx, vertex)
        pm = {name: member(rng, box, sw, vertex) for name, box in params.items()}
        out.append((xm, pm))
    return out


class OnHost:
    """Where the layers run: NumPy (identity conversions; ``OnCupy`` moves to the GPU)."""

    def box(self, b):
        return b

    def arr(self, a):
        return a

    def host_box(self, b):
        return b

    def host_arr(self, a):
        return a


ON_HOST = OnHost()
CASES = [(kind, dt, s) for kind in ("conv", "avg", "max") for dt in DTYPES for s in range(14)]


def check_forward(kind, dtype, seed, on=None):
    """Exact and nominal forward values of members inside the interval forward."""
    on = on or ON_HOST
    rng, layer, x, sx, sw = random_case(1000 * seed + 7, kind, dtype)
    params = dict(layer.params)
    if params:
        layer.set_params({name: on.box(b) for name, b in params.items()})
    out = on.host_box(layer.forward(on.box(x)))
    assert out.dtype == x.dtype
    assert out.shape == (x.shape[0], *layer.output_shape(x.shape[1:]))
    bad = well_formed(out, "out")
    for xm, pm in members(rng, params, x, sx, sw, 4):
        t = Tape()
        nodes = {name: t.leaves(v) for name, v in pm.items()}
        exact = t.values(exact_layer(t, layer, t.leaves(xm), nodes))
        bad += exact_escapes(out, exact, "exact")
        if pm:
            layer.nominal = {name: on.arr(v) for name, v in pm.items()}
        with np.errstate(all="ignore"):
            bad += float_escapes(out, on.host_arr(layer.forward_nominal(on.arr(xm))), "nominal")
    assert not bad, (repr(layer), x.shape, bad[:5])


def _choices(rng):
    """Tie-breaking rules: the first maximum, the last, random ones."""
    return [lambda k: k[0], lambda k: k[-1]] + [lambda k: k[int(rng.integers(len(k)))]] * 2


def check_backward(kind, dtype, seed, on=None):
    """Exact gradients (every tie-breaking for a max pool) and the nominal backward of
    members inside the interval backward."""
    on = on or ON_HOST
    rng, layer, x, sx, sw = random_case(1000 * seed + 11, kind, dtype)
    params = dict(layer.params)
    if params:
        layer.set_params({name: on.box(b) for name, b in params.items()})
    out_shape = (x.shape[0], *layer.output_shape(x.shape[1:]))
    sg = float(rng.choice(SCALES[dtype]))
    lattice = kind == "max" and rng.random() < 0.5
    g = rand_box(rng, out_shape, dtype, sg, lattice=lattice, inf=float(rng.choice([0, 0, 0.1])))
    layer.forward(on.box(x))
    dx = on.host_box(layer.backward(on.box(g), True, False, None))
    assert dx.shape == x.shape and dx.dtype == x.dtype
    grads = {name: on.host_box(b) for name, b in layer.grads.items()} if params else {}
    assert set(grads) == set(params)
    bad = well_formed(dx, "dx") + [e for n, v in grads.items() for e in well_formed(v, n)]
    choices = _choices(rng) if kind == "max" else [None]
    for xm, pm in members(rng, params, x, sx, sw, 3):
        gm = member(rng, g, sg, bool(rng.random() < 0.5))
        for choose in choices:
            t = Tape()
            xn = t.leaves(xm)
            pn = {name: t.leaves(v) for name, v in pm.items()}
            y = exact_layer(t, layer, xn, pn, choose)
            adj = t.gradient(y, gm)
            bad += exact_escapes(dx, adjoints(adj, xn), "exact dx")
            for name, nodes in pn.items():
                bad += exact_escapes(grads[name], adjoints(adj, nodes), f"exact d{name}")
        if pm:
            layer.nominal = {name: on.arr(v) for name, v in pm.items()}
        with np.errstate(all="ignore"):
            layer.forward_nominal(on.arr(xm))
            dxn = on.host_arr(layer.backward_nominal(on.arr(gm), True, False, None))
        bad += float_escapes(dx, dxn, "nominal dx")
        for name in pm:
            nominal = on.host_arr(layer.nominal_grads[name])
            bad += float_escapes(grads[name], nominal, f"nominal d{name}")
    assert not bad, (repr(layer), x.shape, bad[:5])


@pytest.mark.parametrize("kind,dtype,seed", CASES)
def test_forward_contains_exact_and_nominal(kind, dtype, seed):
    check_forward(kind, dtype, seed)


@pytest.mark.parametrize("kind,dtype,seed", CASES)
def test_backward_contains_exact_and_nominal(kind, dtype, seed):
    check_backward(kind, dtype, seed)


class OnCupy(OnHost):
    """The layers on CuPy: boxes and arrays moved to the GPU, results brought back."""

    def __init__(self, cupy):
        self.cp = cupy

    def box(self, b):
        return Interval(self.cp.asarray(b.lo), self.cp.asarray(b.hi))

    def arr(self, a):
        return self.cp.asarray(a)

    def host_box(self, b):
        return b.to_numpy()

    def host_arr(self, a):
        return self.cp.asnumpy(a)


@pytest.mark.gpu
@pytest.mark.parametrize("kind,dtype,seed", [c for c in CASES if c[2] < 6])
def test_gpu_layers_contain_exact_and_nominal(kind, dtype, seed):
    """The same checks with the layers on CuPy (im2col through cuBLAS, the GPU's scatter);
    skipped without CuPy and a CUDA GPU."""
    cupy = pytest.importorskip("cupy", reason="the GPU backend needs CuPy")
    try:
        devices = cupy.cuda.runtime.getDeviceCount()
    except Exception:  # a missing driver raises CUDA's own errors
        devices = 0
    if devices < 1:
        pytest.skip("CuPy is installed but no CUDA GPU is visible")
    check_forward(kind, dtype, seed, OnCupy(cupy))
    check_backward(kind, dtype, seed, OnCupy(cupy))


# ------------------------------------------------------------------ point boxes: tight results


def _point_layer(seed, kind, dtype):
    """Point boxes everywhere (the interval results are then at most a few ulps wide, so an
    inexact step rounded to nearest instead of outward shows)."""
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 5))
    stride, padding = int(rng.integers(1, 3)), int(rng.integers(0, 3))
    side = max(k, 3)
    shape = (2, 2, side + int(rng.integers(0, 4)), side + int(rng.integers(0, 4)))
    scale = float(rng.choice(SCALES[dtype]))
    x = Interval((rng.standard_normal(shape) * scale).astype(dtype))
    if kind == "conv":
        layer = Conv2d(2, 2, k, stride, padding, rng=rng, dtype=dtype)
        w = rng.standard_normal(layer.weight.shape) * float(rng.choice(SCALES[dtype]))
        b = rng.standard_normal(2) * float(rng.choice(SCALES[dtype]))
        layer.set_params({"weight": Interval(w.astype(dtype)), "bias": Interval(b.astype(dtype))})
        layer.nominal = {"weight": w.astype(dtype), "bias": b.astype(dtype)}
    elif kind == "avg":
        layer = AvgPool2d(3 if rng.random() < 0.6 else k, stride)
    else:
        layer = MaxPool2d(k, stride)
    out_shape = (2, *layer.output_shape(shape[1:]))
    g = Interval((rng.standard_normal(out_shape) * float(rng.choice(SCALES[dtype]))).astype(dtype))
    return layer, x, g


@pytest.mark.parametrize("kind", ["conv", "avg", "max"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(6))
def test_point_boxes_forward_backward(kind, dtype, seed):
    """Points: exact and nominal forward and backward inside the (tight) interval results; the
    nominal input gradient's scatter of overlapping windows included (stride < kernel)."""
    layer, x, g = _point_layer(100 + seed, kind, dtype)
    out = layer.forward(x)
    dx = layer.backward(g, True, False, None)
    t = Tape()
    xn = t.leaves(x.lo)
    pn = {name: t.leaves(box.lo) for name, box in layer.params.items()}
    y = exact_layer(t, layer, xn, pn)
    adj = t.gradient(y, g.lo)
    bad = exact_escapes(out, t.values(y), "exact") + exact_escapes(dx, adjoints(adj, xn), "dx")
    for name, nodes in pn.items():
        bad += exact_escapes(layer.grads[name], adjoints(adj, nodes), f"d{name}")
    with np.errstate(all="ignore"):
        bad += float_escapes(out, layer.forward_nominal(x.lo), "nominal")
        bad += float_escapes(dx, layer.backward_nominal(g.lo, True, False, None), "nominal dx")
    for name in pn:
        bad += float_escapes(layer.grads[name], layer.nominal_grads[name], f"nominal d{name}")
    assert not bad, (repr(layer), bad[:5])


@pytest.mark.parametrize("dtype", DTYPES)
def test_avgpool_kernel3_division_is_outward(dtype):
    """1/9 is inexact: the mean of a point window is enclosed, not rounded to nearest."""
    rng = np.random.default_rng(3)
    x = Interval(rng.uniform(-1, 1, (1, 1, 3, 3 * 40)).astype(dtype))
    layer = AvgPool2d(3)
    out = layer.forward(x)
    t = Tape()
    exact = t.values(tape_avgpool2d(t, t.leaves(x.lo), (3, 3), (3, 3)))
    assert not exact_escapes(out, exact, "mean")
    assert bool((out.lo < out.hi).any())  # some means are inexact: the bound is not a point
    assert not float_escapes(out, layer.forward_nominal(x.lo), "nominal")


# ------------------------------------------------------------------ maximum pooling: ties


def _all_choice_gradients(x_values, g_values, kernel, stride):
    """Every tie-breaking's exact input gradient of a max pool (exhaustive)."""
    t = Tape()
    xn = t.leaves(x_values)
    windows = []
    tape_maxpool2d(t, xn, kernel, stride, lambda k: windows.append(k) or k[0])
    for picks in product(*windows):
        it = iter(picks)
        t = Tape()
        xn = t.leaves(x_values)
        y = tape_maxpool2d(t, xn, kernel, stride, lambda k, it=it: next(it))
        yield adjoints(t.gradient(y, g_values), xn)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_maxpool_every_tie_breaking_is_covered(dtype, stride):
    """A constant image (every entry ties) and overlapping windows (stride 1 < kernel 2): the
    input-gradient box contains the exact gradient of every tie-breaking, and the nominal's
    (PyTorch's first maximum)."""
    x = Interval(np.full((1, 1, 3, 3), 0.5, dtype=dtype))
    g = Interval(np.array([[[[1.0, -2.0], [0.25, 3.0]]]], dtype=dtype)[..., : 3 - stride, :])
    g = g[..., : 3 - stride] if stride == 2 else g
    layer = MaxPool2d(2, stride)
    layer.forward(x)
    dx = layer.backward(g, True, False, None)
    count = 0
    for exact in _all_choice_gradients(x.lo, g.lo, (2, 2), (stride, stride)):
        assert not exact_escapes(dx, exact, "dx")
        count += 1
    assert count == 4**g.size
    layer.forward_nominal(x.lo)
    assert not float_escapes(dx, layer.backward_nominal(g.lo, True, False, None), "nominal")


@pytest.mark.parametrize("dtype", DTYPES)
def test_maxpool_overlapping_boxes_signed_zero_and_infinite_endpoints(dtype):
    """Windows whose boxes overlap (several may be the maximum), -0.0 against 0.0 (equal
    reals: a tie) and infinite endpoints; every vertex choice and tie-breaking is covered."""
    inf = np.inf
    lo = np.array([[[[-0.0, 0.0, 1.0, -inf], [2.0, 1.0, -inf, 3.0], [-1.0, -0.0, 5.0, 4.0]]]])
    hi = np.array([[[[-0.0, 0.0, 3.0, inf], [2.0, 2.5, 2.0, inf], [-1.0, 0.0, 5.0, 4.0]]]])
    x = Interval(lo.astype(dtype), hi.astype(dtype))
    layer = MaxPool2d((1, 2), (1, 1))  # windows of two neighbours in a row, overlapping
    out = layer.forward(x)
    g = Interval(np.full(out.shape, -1.5, dtype=dtype), np.full(out.shape, 2.0, dtype=dtype))
    dx = layer.backward(g, True, False, None)
    assert not well_formed(out, "out") and not well_formed(dx, "dx")
    rng = np.random.default_rng(0)
    for _ in range(6):
        xm = member(rng, x, 10.0, bool(rng.random() < 0.7))
        for gm in (g.lo, g.hi, member(rng, g, 1.0, False)):
            t = Tape()
            assert not exact_escapes(
                out, t.values(tape_maxpool2d(t, t.leaves(xm), (1, 2), (1, 1), min)), "out"
            )
            for exact in _all_choice_gradients(xm, gm, (1, 2), (1, 1)):
                assert not exact_escapes(dx, exact, "dx")
            layer.forward_nominal(xm)
            assert not float_escapes(dx, layer.backward_nominal(gm, True, False, None), "nom")


def test_maxpool_single_candidate_takes_the_whole_gradient():
    """Where one position is the maximum for every member, it takes g itself (no hull with 0)."""
    x = Interval(np.array([[[[0.0, 1.0], [5.0, 2.0]]]]), np.array([[[[1.0, 4.0], [6.0, 4.5]]]]))
    layer = MaxPool2d(2)
    layer.forward(x)
    dx = layer.backward(Interval(np.array([[[[2.0]]]]), np.array([[[[3.0]]]])), True, False, None)
    assert dx.lo.tolist() == [[[[0.0, 0.0], [2.0, 0.0]]]]
    assert dx.hi.tolist() == [[[[0.0, 0.0], [3.0, 0.0]]]]


# ------------------------------------------------------------------ infinite boxes: no NaN


@pytest.mark.parametrize("dtype", DTYPES)
def test_infinite_boxes_times_zero_give_no_nan(dtype):
    """inf * 0 in the GEMM (a whole-line input box against zero weights, zero gradients against
    infinite inputs) must not become NaN, and the exact value (0) stays inside."""
    inf = np.inf
    x = Interval(np.full((1, 1, 3, 3), -inf, dtype), np.full((1, 1, 3, 3), inf, dtype))
    layer = Conv2d(1, 2, 2, 1, 1, rng=np.random.default_rng(0), dtype=dtype)
    zero_w = Interval(np.zeros((2, 1, 2, 2), dtype))
    layer.set_params({"weight": zero_w, "bias": Interval(np.zeros(2, dtype))})
    out = layer.forward(x)
    g = Interval(np.zeros(out.shape, dtype))
    dx = layer.backward(g, True, False, None)
    boxes = {"out": out, "dx": dx, **layer.grads}
    for name, box in boxes.items():
        assert not well_formed(box, name)
        assert bool(box.contains(0).all()), name
    for pool in (AvgPool2d(2, 1), MaxPool2d(2, 1)):
        out = pool.forward(x)
        dx = pool.backward(Interval(np.zeros(out.shape, dtype)), True, False, None)
        assert not well_formed(out, "out") and not well_formed(dx, "dx")
        assert bool(dx.contains(0).all())
        gi = Interval(np.full(out.shape, -inf, dtype), np.full(out.shape, inf, dtype))
        pool.forward(x)
        assert not well_formed(pool.backward(gi, True, False, None), "dx")


# ------------------------------------------------------------------ Flatten, Unflatten


@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_unflatten_are_exact_c_order(dtype):
    rng = np.random.default_rng(5)
    lo = rng.standard_normal((2, 3, 2, 4)).astype(dtype)
    x = Interval(lo, lo + np.abs(rng.standard_normal(lo.shape)).astype(dtype))
    flat, unflat = Flatten(), Unflatten((3, 2, 4))
    y = flat.forward(x)
    assert y.shape == (2, 24) and flat.output_shape((3, 2, 4)) == (24,)
    # C order from the definition: feature c*8 + i*4 + j
    for c, i, j in product(range(3), range(2), range(4)):
        assert y.lo[1, c * 8 + i * 4 + j] == x.lo[1, c, i, j]
        assert y.hi[1, c * 8 + i * 4 + j] == x.hi[1, c, i, j]
    z = unflat.forward(y)
    assert np.array_equal(z.lo, x.lo) and np.array_equal(z.hi, x.hi)
    assert unflat.output_shape((24,)) == (3, 2, 4)
    g = Interval(rng.standard_normal((2, 3, 2, 4)).astype(dtype))
    assert unflat.backward(g, True, False, None).shape == (2, 24)
    assert np.array_equal(flat.backward(g.reshape(2, 24), True, False, None).lo, g.lo)
    assert flat.backward(y, False, False, None) is None
    flat.forward_nominal(lo)
    assert np.array_equal(flat.backward_nominal(g.lo.reshape(2, 24), True), g.lo)
    assert np.array_equal(unflat.forward_nominal(lo.reshape(2, 24)), lo)


# ------------------------------------------------------------------ errors


def _one_line_error(fn, *words):
    with pytest.raises(ValueError) as info:
        fn()
    msg = str(info.value)
    assert "\n" not in msg and all(w in msg for w in words), msg
    return msg


def test_errors_are_one_line_value_errors():
    rng = np.random.default_rng(0)
    conv = Conv2d(3, 4, 5, padding=1, rng=rng)
    x = Interval(np.zeros((1, 3, 2, 2)))
    _one_line_error(lambda: conv.output_shape((3, 2, 2)), "kernel", "does not fit")
    _one_line_error(lambda: conv.forward(x), "does not fit")
    _one_line_error(lambda: conv.forward_nominal(x.lo), "does not fit")
    _one_line_error(lambda: conv.output_shape((2, 9, 9)), "3", "channels", "2")
    _one_line_error(lambda: conv.forward(Interval(np.zeros((1, 2, 9, 9)))), "channels")
    _one_line_error(lambda: conv.output_shape((27,)), "(channels, height, width)")
    for pool in (AvgPool2d(3), MaxPool2d((2, 4), 1)):
        _one_line_error(lambda p=pool: p.output_shape((1, 2, 3)), "does not fit")
        _one_line_error(lambda p=pool: p.forward(Interval(np.zeros((1, 1, 2, 3)))), "fit")
    unflat = Unflatten((1, 4, 4))
    _one_line_error(lambda: unflat.output_shape((15,)), "16", "15")
    _one_line_error(lambda: unflat.forward(Interval(np.zeros((2, 15)))), "16", "15")
    _one_line_error(lambda: unflat.forward_nominal(np.zeros((2, 17))), "16", "17")
    _one_line_error(lambda: Unflatten((1, 0, 4)), "positive")
    _one_line_error(lambda: Conv2d(0, 1, 3, rng=rng), "in_channels")
    _one_line_error(lambda: Conv2d(1, 1, 0, rng=rng), "kernel_size")
    _one_line_error(lambda: Conv2d(1, 1, 3, padding=-1, rng=rng), "padding")
    _one_line_error(lambda: Conv2d(1, 1, (3, 3, 3), rng=rng), "kernel_size")
    _one_line_error(lambda: MaxPool2d(2, 0), "stride")
    for bad in (1.5, None, "22", (2.0, 2), (2,)):
        _one_line_error(lambda bad=bad: AvgPool2d(bad), "kernel_size", "int")
    assert MaxPool2d(np.array([2, 3])).kernel_size == (2, 3)  # NumPy pairs stay accepted
    # a model checks its shapes when built, and names what it cannot know
    _one_line_error(lambda: Sequential(Unflatten((3, 2, 2)), conv), "does not fit")
    _one_line_error(lambda: Sequential(conv, Flatten()).in_features, "Unflatten")


def test_per_sample_is_refused_on_conv2d():
    rng = np.random.default_rng(0)
    conv = Conv2d(1, 2, 2, rng=rng)
    x = Interval(np.zeros((2, 1, 3, 3)))
    g = Interval(np.zeros((2, 2, 2, 2)))
    conv.forward(x)
    _one_line_error(lambda: conv.backward(g, True, True, None), "per-sample", "Conv2d", "freeze")
    conv.forward_nominal(x.lo)
    _one_line_error(
        lambda: conv.backward_nominal(g.lo, True, True, None), "per-sample", "Conv2d", "freeze"
    )


# ------------------------------------------------------------------ whole CNNs: exact SGD


def random_cnn(rng, dtype, classes):
    """Unflatten, then 1-3 of conv / avgpool / maxpool / relu in a random order (those that
    fit), Flatten, one or two Linear layers (a ReLU between them or not)."""
    shape = (int(rng.integers(1, 3)), int(rng.integers(3, 7)), int(rng.integers(3, 7)))
    layers = [Unflatten(shape)]
    for _ in range(int(rng.integers(1, 4))):
        kind = str(rng.choice(["conv", "conv", "avg", "max", "relu"]))
        k = tuple(int(v) for v in rng.integers(1, 4, 2))
        s = tuple(int(v) for v in rng.integers(1, 3, 2))
        if kind == "conv":
            p = tuple(int(v) for v in rng.integers(0, 2, 2))
            out = int(rng.integers(1, 3))
            layer = Conv2d(shape[0], out, k, s, p, rng=rng, dtype=dtype)
        elif kind == "relu":
            layer = ReLU()
        else:
            layer = (AvgPool2d if kind == "avg" else MaxPool2d)(k, s)
        try:
            new = layer.output_shape(shape)
        except ValueError:
            continue
        if int(np.prod(new)) <= 40:
            layers.append(layer)
            shape = new
    layers.append(Flatten())
    features = int(np.prod(shape))
    if rng.random() < 0.5:
        layers.append(Linear(features, classes, rng=rng, dtype=dtype))
    else:
        hidden = int(rng.integers(2, 5))
        layers.append(Linear(features, hidden, rng=rng, dtype=dtype))
        if rng.random() < 0.7:
            layers.append(ReLU())
        layers.append(Linear(hidden, classes, rng=rng, dtype=dtype))
    return Sequential(*layers)


def tape_model(t: Tape, model, x, params, choose):
    """The exact forward pass of ``model`` (read through its layers' attributes) on node rows
    ``x`` with parameter nodes ``params`` (names as ``named_params``)."""
    for i, layer in enumerate(model.layers):
        if isinstance(layer, Unflatten):
            x = x.reshape(x.shape[0], *layer.shape)
        elif isinstance(layer, Flatten):
            x = x.reshape(x.shape[0], -1)
        elif isinstance(layer, ReLU):
            x = tape_relu(t, x)
        elif isinstance(layer, Linear):
            x = tape_linear(t, x, params[f"{i}.weight"], params[f"{i}.bias"])
        else:
            mine = {k: params[f"{i}.{k}"] for k in layer.params}
            x = exact_layer(t, layer, x, mine, choose)
    return x


def exact_sgd(model, init, x, y, batches, rate, choose, frozen=0):
    """Exact SGD with cross-entropy (softmax through MPFR, ``oracle.Exact``): the parameters
    (name -> object array of mpq) after each step; the first ``frozen`` layers stay fixed."""
    params = {name: np.vectorize(q, otypes=[object])(v) for name, v in init.items()}
    lam = q(rate)
    out = []
    for idx in batches:
        t = Tape()
        nodes = {name: t.leaves(v) for name, v in params.items()}
        z = tape_model(t, model, t.leaves(x[idx]), nodes, choose)
        g = Exact().loss_grad("ce", t.values(z).tolist(), [int(y[i]) for i in idx])
        adj = t.gradient(z, np.array(g, dtype=object))
        params = {
            name: v if int(name.split(".")[0]) < frozen else v - lam * adjoints(adj, nodes[name])
            for name, v in params.items()
        }
        out.append(params)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(12))
def test_cnn_exact_sgd_stays_in_the_box(dtype, seed):
    """Two SGD steps of a random small CNN: the exact SGD of sampled poisoned datasets inside
    the data box (vertices and interior points) stays inside the engine's parameter boxes,
    and so does the nominal model (the engine's own check).  Odd seeds freeze a random
    prefix (``make_engine``'s cached-prefix engine; the exact SGD keeps the prefix fixed)."""
    rng = np.random.default_rng(500 + seed + 100 * (dtype == np.float32))
    classes = int(rng.integers(2, 4))
    model = random_cnn(rng, dtype, classes)
    frozen = 0
    if seed % 2:
        last = max(i for i, la in enumerate(model.layers) if isinstance(la, Linear))
        frozen = int(rng.integers(1, last + 1))
        model = Sequential(*model.layers, frozen=frozen)
    n = 4
    x = rng.uniform(0, 1, (n, model.in_features)).astype(dtype)
    y = rng.integers(0, classes, n)
    eps = float(rng.choice([0.0, 1e-3, 0.05]))
    box = Interval.from_center_radius(x, eps)
    init = {name: np.array(v) for name, v in model.named_nominal().items()}
    if frozen:
        engine = make_engine(model, "ce", box, x, y, batch_size=3)
    else:
        engine = LayeredEngine(model, "ce", box, x, y)
    batches = [rng.permutation(n)[: int(rng.integers(1, 4))].tolist() for _ in range(2)]
    rate = Fraction(1, 2) if rng.random() < 0.5 else Fraction(0.1)
    boxes = []
    for idx in batches:
        result = engine.step(np.array(idx), rate)
        assert result.finite and result.nominal_finite
        assert result.outside is None, (repr(model), result.outside)
        boxes.append(engine.parameters()[0])
    choose = lambda k: k[int(rng.integers(len(k)))]  # noqa: E731
    for d in range(3):
        data = member(rng, box, 1.0, vertex=d < 2) if eps else x
        trajectory = exact_sgd(model, init, data, y, batches, rate, choose, frozen)
        for step, params in enumerate(trajectory):
            bad = [
                e
                for name, v in params.items()
                for e in exact_escapes(boxes[step][name], v, f"step {step + 1} {name}")
            ]
            assert not bad, (repr(model), frozen, eps, bad[:5])


# ------------------------------------------------------------------ the scatter's order


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pool", [AvgPool2d, MaxPool2d])
def test_scatter_order_is_the_nominals(dtype, pool):
    """Overlapping windows (1 x 4, stride 1) with point gradients: input position 3 takes
    1, -1, tiny, 0 (offsets v = 0..3, row-major) and the interval sums them exactly in that
    order, a point.  The nominal model must add the same terms in the same order (another
    order, e.g. tiny + (-1) + 1 = 0, escapes the point)."""
    tiny = 2.0 ** (-30 if dtype == np.float32 else -60)
    share = np.array([0.0, tiny, -1.0, 1.0])  # the shares of windows 0..3 (v = 3..0 at x[3])
    x = np.array([[[[0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0]]]], dtype=dtype)  # x[3]: every max
    layer = pool((1, 4), (1, 1))
    g = (share * (4 if pool is AvgPool2d else 1)).astype(dtype).reshape(1, 1, 1, 4)
    layer.forward(Interval(x))
    dx = layer.backward(Interval(g), True, False, None)
    assert dx.lo[0, 0, 0, 3] == dx.hi[0, 0, 0, 3] == dtype(tiny)  # exact: 1 - 1 + tiny + 0
    layer.forward_nominal(x)
    assert not float_escapes(dx, layer.backward_nominal(g, True, False, None), "nominal dx")


def test_nominal_maxpool_routes_to_the_first_maximum():
    """PyTorch's choice: the first maximum of the window in row-major order takes g."""
    x = np.array([[[[1.0, 3.0], [3.0, 2.0]]]])
    layer = MaxPool2d(2)
    layer.forward_nominal(x)
    dx = layer.backward_nominal(np.array([[[[5.0]]]]), True, False, None)
    assert dx.tolist() == [[[[0.0, 5.0], [0.0, 0.0]]]]


def test_kofn_poisoning_needs_the_convolutions_frozen():
    """k-of-n poisoning needs per-sample gradients: a trainable Conv2d refuses with the one-line
    error naming --freeze; with the convolution frozen the step runs (the head is per-sample)."""
    from intervalnn.poisoning import Poisoning
    from intervalnn.threat import ThreatModel

    rng = np.random.default_rng(0)
    layers = [Unflatten((1, 4, 4)), Conv2d(1, 2, 3, rng=rng), ReLU(), Flatten()]
    layers.append(Linear(8, 3, rng=rng))
    x, y = rng.uniform(0, 1, (6, 16)), rng.integers(0, 3, 6)
    box = Interval.from_center_radius(x, 0.01)
    poisoning = Poisoning(ThreatModel(0.01, poison_count=1), 6)
    assert poisoning.per_sample
    engine = make_engine(Sequential(*layers), "ce", box, x, y, 2, poisoning=poisoning)
    _one_line_error(lambda: engine.step(np.array([0, 1]), Fraction(1, 10)), "Conv2d", "--freeze")
    engine = make_engine(Sequential(*layers, frozen=2), "ce", box, x, y, 2, poisoning=poisoning)
    result = engine.step(np.array([0, 1]), Fraction(1, 10))
    assert result.finite and result.outside is None


_INF_STAND_IN = Fraction(2) ** 20000  # beyond every float: an infinite endpoint's product


def _ext(v) -> Fraction:
    v = float(v)
    return _INF_STAND_IN if v == np.inf else -_INF_STAND_IN if v == -np.inf else Fraction(v)


def _conv_hull(x: Interval, w: Interval, b: Interval, stride, padding):
    """The exact hull of a convolution over boxes (direct loops; each output's terms are
    independent, so the sum of exact interval products is the hull; 0 * inf is 0)."""
    n_, c_, h, wd = x.shape
    o_, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    lo, hi = np.empty((n_, o_, oh, ow), object), np.empty((n_, o_, oh, ow), object)
    for n, o, i, j in np.ndindex(n_, o_, oh, ow):
        s_lo, s_hi = _ext(b.lo[o]), _ext(b.hi[o])
        for c, u, v in np.ndindex(c_, kh, kw):
            r, s = i * sh + u - ph, j * sw + v - pw
            if 0 <= r < h and 0 <= s < wd:
                ends = [_ext(p) for p in (w.lo[o, c, u, v], w.hi[o, c, u, v])]
                xs = [_ext(p) for p in (x.lo[n, c, r, s], x.hi[n, c, r, s])]
                prods = [e * f for e in ends for f in xs]
                s_lo, s_hi = s_lo + min(prods), s_hi + max(prods)
        lo[n, o, i, j], hi[n, o, i, j] = s_lo, s_hi
    return lo, hi


def _edge_box(rng, shape, dtype):
    """A box of edge values: signed zeros, subnormals, infinite endpoints, points, one entry
    wide in a point box; magnitudes small enough that no member's float product overflows."""
    vals = np.array([0.0, -0.0, 5e-324, -5e-324, 1e-30, 1.0, -1.0, 3.0, 1e15, -1e15, 0.5])
    vals = np.concatenate([vals, [np.inf, -np.inf]])
    a, b = rng.choice(vals, shape).astype(dtype), rng.choice(vals, shape).astype(dtype)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    kind = rng.integers(0, 3)
    if kind == 1:
        hi = lo.copy()
    if kind == 2:
        hi = lo.copy()
        hi.flat[rng.integers(0, lo.size)] = np.float64(rng.choice(vals[:-2])).astype(dtype)
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
    bad = (lo == np.inf) | (hi == -np.inf)
    lo[bad], hi[bad] = 0, 0
    return Interval(lo, hi)


def _finite_member(rng, box: Interval, dtype):
    lo = np.where(np.isinf(box.lo), np.minimum(box.hi, 0) - 1e15, box.lo)
    hi = np.where(np.isinf(box.hi), np.maximum(lo, 0) + 1e15, box.hi)
    pick = rng.integers(0, 3, box.shape)
    mid = np.clip(lo / 2 + hi / 2, lo, hi)  # halving a subnormal can leave the box
    return np.where(pick == 0, lo, np.where(pick == 1, hi, mid)).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_midrad_conv_encloses_exact_hull_on_edge_boxes(dtype):
    """10223db's im2col of the image's midpoints and radii (point factor read from an all-zero
    radius, zero padding, the bias column): the interval forward contains the exact hull and
    the nominal float forward of members, and is never NaN, on boxes of edge values with
    paddings, strides that skip pixels, inner dimension 1 and all-zero weights."""
    rng = np.random.default_rng(14)
    for _ in range(40):
        c, o, kh, kw, sh, sw, ph, pw = (int(v) for v in rng.integers([1, 1, 1, 1, 1, 1, 0, 0], 3))
        h, wd = kh + int(rng.integers(0, 3)), kw + int(rng.integers(0, 3))
        layer = Conv2d(c, o, (kh, kw), (sh, sw), (ph, pw), rng=rng, dtype=dtype)
        w, b = _edge_box(rng, (o, c, kh, kw), dtype), _edge_box(rng, (o,), dtype)
        if rng.random() < 0.15:
            w = Interval(np.zeros((o, c, kh, kw), dtype))
        x = _edge_box(rng, (1, c, h, wd), dtype)
        layer.set_params({"weight": w, "bias": b})
        out = layer.forward(x)
        assert not (np.isnan(out.lo).any() or np.isnan(out.hi).any())
        lo, hi = _conv_hull(x, w, b, layer.stride, layer.padding)
        for idx in np.ndindex(*out.shape):
            assert out.lo[idx] == -np.inf or Fraction(float(out.lo[idx])) <= lo[idx], idx
            assert out.hi[idx] == np.inf or Fraction(float(out.hi[idx])) >= hi[idx], idx
        for _ in range(3):
            layer.nominal = {"weight": _finite_member(rng, w, dtype)}
            layer.nominal["bias"] = _finite_member(rng, b, dtype)
            y = layer.forward_nominal(_finite_member(rng, x, dtype))
            assert not float_escapes(out, y, "nominal conv forward")


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_nominal_conv_that_may_overflow_gets_infinite_bounds(dtype):
    """Regression (an escape found in review, fixed by ``gemm._may_overflow``: the GEMM
    bound's float-member claim assumed no overflow): a (1, 2) kernel ``[2, -M]`` over the
    pixels ``[0, M]`` and ``1`` (``M`` near the dtype's max) gave the finite bound about
    ``[-M, M]`` (midpoint product 0, radius about ``M``); the exact output of the member
    pixels ``[M, 1]`` is ``M``, but ``forward_nominal`` overflows in the product ``2 M``
    and returns ``+inf``, so the bound must be infinite."""
    big = dtype(3e38 if dtype == np.float32 else 1e308)
    layer = Conv2d(1, 1, (1, 2), rng=np.random.default_rng(0), dtype=dtype)
    w, b = np.array([[[[2, -big]]]], dtype=dtype), np.zeros(1, dtype)
    layer.set_params({"weight": Interval(w), "bias": Interval(b)})
    out = layer.forward(Interval(np.array([[[[0, 1]]]], dtype), np.array([[[[big, 1]]]], dtype)))
    assert out.lo[0, 0, 0, 0] <= big <= out.hi[0, 0, 0, 0]  # the exact output
    layer.nominal = {"weight": w, "bias": b}
    with np.errstate(over="ignore"):
        y = layer.forward_nominal(np.array([[[[big, 1]]]], dtype))
    assert y[0, 0, 0, 0] == np.inf
    assert not float_escapes(out, y, "nominal conv forward")
