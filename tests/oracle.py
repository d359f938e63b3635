"""The tests' exact oracles (one module; tests/ is not a package: ``from oracle import ...``).

Nothing here imports ``intervalnn``.  Two parts:

* the independent reference SGD of ``tests/test_harness.py`` (exact rationals and
  float SGD, below);
* after it, exact helpers shared by the other test files: exact Fractions of floats
  (:func:`fraction`, :func:`fraction_array`), MPFR at 300 bits (:func:`mpfr_fraction`,
  :func:`tightest` directed bounds), exact interval dot products and matrix products
  (:func:`dot_hull`, :func:`hull_matmul`, the scaled-integer :func:`exact_matmul` /
  :func:`exact_hull` with :func:`enclosure_failures`), exact IBP (:func:`exact_ibp`),
  forward-mode AD (:func:`dual_forward`), and reference SGDs on NumPy data: exact
  full-batch (:func:`fraction_sgd`) and plain float64 (:func:`float64_sgd`) on poisoned
  data (:func:`poisoned`) with :func:`count_excursions` from the library's boxes, and
  members of parameter boxes (:func:`box_member`).

The harness's reference SGD: a network is a list of layers
``("linear", "0")`` / ``("relu", None)`` whose parameters live in a dict
``"0.weight" -> n x p nested list``, ``"0.bias" -> p list`` (``y = x W + b``,
rows are samples).  :func:`forward` and :func:`backward` are one generic
chain rule over that list, driven by the table :data:`RULES` of per-layer
forward and backward rules; the arithmetic they use is a parameter:

* :class:`Exact`: ``gmpy2.mpq`` rationals, exact.  The loss gradients
  (``sigmoid(z) - y`` for one logit, ``softmax(z) - onehot`` for K) are
  irrational; they are evaluated with MPFR at :data:`MPFR_BITS` bits (an
  enclosure-accurate stand-in: the error is ~2^-300 relative, far below any
  rounding a float box can make) and are exact where the value is rational
  (``z = 0``, or all logits equal).
* :class:`FloatArith`: plain round-to-nearest SGD in float32 or float64, the
  formulas of ``intervalnn/losses.py`` (``sigmoid(a) = E / (1 + E)`` for
  ``a < 0`` else ``1 / (1 + E)``, ``E = exp(-|a|)``; ``p_i = 1 / (1 + S_i)``,
  ``S_i = sum_{j != i} exp(z_j - z_i)``; gradient divided by the batch size
  ``m``), with ``exp`` correctly rounded in the dtype (or, with ``faithful``,
  either neighbour of the exact value, chosen at random: an error below one
  ulp), every sum (the inner products of the matrix products, the batch sums of
  the weight and bias gradients, the softmax sums) added left to right as
  written, left to right in a random order, or in a random binary tree (any
  order and parenthesisation), optionally with fused multiply-adds, and the
  update ``theta - lr_t * g`` with ``lr_t`` a float of the dtype.

All float rounding of rationals goes through MPFR's IEEE contexts
(``gmpy2.ieee``), which round correctly, subnormals and overflow included.
"""

from __future__ import annotations

from fractions import Fraction

import gmpy2
import numpy as np
from gmpy2 import mpfr, mpq

MPFR_BITS = 300
_IEEE = {np.dtype(np.float64): gmpy2.ieee(64), np.dtype(np.float32): gmpy2.ieee(32)}
# Exponents of +-2^15: an exp beyond 2^+-32768 saturates to inf / 0, which only moves the
# oracle's gradient towards the library's float bounds (those saturate far earlier), and keeps
# the exact rationals small (a 2^-(10^9) would need a billion-bit denominator).
_WIDE = gmpy2.context(precision=MPFR_BITS, emax=2**15, emin=-(2**15))


def q(x) -> mpq:
    """An exact rational for a float (NumPy or Python), int, Fraction or mpq."""
    if isinstance(x, Fraction):
        return mpq(x.numerator, x.denominator)
    if isinstance(x, (np.floating, float)):
        return mpq(float(x))
    return mpq(x)


def round_to(v, dtype, rnd=gmpy2.RoundToNearest):
    """The rational (or mpfr) ``v`` rounded to ``dtype`` in direction ``rnd`` (IEEE, subnormals)."""
    dt = np.dtype(dtype)
    ctx = _IEEE[dt].copy()
    ctx.round = rnd
    with gmpy2.context(ctx):
        return dt.type(float(mpfr(v)))


# ------------------------------------------------------------------ layer rules
# Each rule: forward(ar, params, name, a) -> output rows; backward(ar, params,
# name, a, g, grads) -> gradient w.r.t. ``a`` (and fills grads[param name]).


def _linear_forward(ar, params, name, a):
    w, b = params[name + ".weight"], params[name + ".bias"]
    n, p = len(w), len(b)
    return [[ar.dot([(row[i], w[i][j]) for i in range(n)], b[j]) for j in range(p)] for row in a]


def _linear_backward(ar, params, name, a, g, grads):
    w = params[name + ".weight"]
    n, p, m = len(w), len(w[0]), len(a)
    grads[name + ".weight"] = [
        [ar.dot([(a[r][i], g[r][j]) for r in range(m)]) for j in range(p)] for i in range(n)
    ]
    grads[name + ".bias"] = [ar.sum([g[r][j] for r in range(m)]) for j in range(p)]
    return [[ar.dot([(g[r][j], w[i][j]) for j in range(p)]) for i in range(n)] for r in range(m)]


def _relu_forward(ar, params, name, z):
    return [[v if v > 0 else ar.zero for v in row] for row in z]


def _relu_backward(ar, params, name, z, g, grads):
    return [
        [gv if zv > 0 else ar.zero for zv, gv in zip(zr, gr, strict=True)]
        for zr, gr in zip(z, g, strict=True)
    ]


RULES = {
    "linear": (_linear_forward, _linear_backward),
    "relu": (_relu_forward, _relu_backward),
}


def forward(arch, params, x, ar):
    """Output rows and the input of every layer (the backward pass needs them)."""
    inputs = []
    for kind, name in arch:
        inputs.append(x)
        x = RULES[kind][0](ar, params, name, x)
    return x, inputs


def backward(arch, params, inputs, g, ar) -> dict:
    """Parameter gradients by the chain rule, layers in reverse order."""
    grads: dict = {}
    for (kind, name), a in zip(reversed(arch), reversed(inputs), strict=True):
        g = RULES[kind][1](ar, params, name, a, g, grads)
    return grads


def _map2(f, a, b):
    if isinstance(a, list):
        return [_map2(f, u, v) for u, v in zip(a, b, strict=True)]
    return f(a, b)


def sgd(arch, params, x, y, loss, batches, rates, ar):
    """Yield ``(t, params)`` after each SGD step (rows ``batches[t-1]``, rate ``rates[t-1]``)."""
    for t, (idx, rate) in enumerate(zip(batches, rates, strict=True), 1):
        xb, yb = [x[i] for i in idx], [y[i] for i in idx]
        z, inputs = forward(arch, params, xb, ar)
        grads = backward(arch, params, inputs, ar.loss_grad(loss, z, yb), ar)
        r = ar.rate(rate)
        params = {
            k: _map2(lambda th, gr, r=r: ar.update(th, r, gr), v, grads[k])
            for k, v in params.items()
        }
        yield t, params


# ------------------------------------------------------------------ exact arithmetic


class Exact:
    """Exact rational arithmetic; loss gradients through MPFR (rational cases exact)."""

    zero = mpq(0)

    def dot(self, pairs, extra=None):
        s = self.zero if extra is None else extra
        for a, b in pairs:
            s = s + a * b
        return s

    def sum(self, values):
        s = self.zero
        for v in values:
            s = s + v
        return s

    def rate(self, rate):
        return q(rate)

    def update(self, theta, rate, g):
        return theta - rate * g

    @staticmethod
    def _to_q(v) -> mpq:
        return mpq(*v.as_integer_ratio())

    def loss_grad(self, loss, z, y):
        m = len(z)
        out = []
        with gmpy2.context(_WIDE):
            for zr, yr in zip(z, y, strict=True):
                if loss == "bce":
                    a = zr[0]
                    if a == 0:
                        s = mpq(1, 2)
                    elif a < 0:
                        e = gmpy2.exp(mpfr(a))
                        s = self._to_q(e / (1 + e))
                    else:
                        s = self._to_q(1 / (1 + gmpy2.exp(mpfr(-a))))
                    out.append([(s - yr) / m])
                else:
                    k = len(zr)
                    row = []
                    for i in range(k):
                        if all(zr[j] == zr[i] for j in range(k)):
                            p = mpq(1, k)
                        else:
                            s = mpfr(0)
                            for j in range(k):
                                if j != i:
                                    s += gmpy2.exp(mpfr(zr[j] - zr[i]))
                            p = self._to_q(1 / (1 + s))
                        row.append((p - (1 if i == yr else 0)) / m)
                    out.append(row)
        return out


# ------------------------------------------------------------------ float arithmetic


class FloatArith:
    """Round-to-nearest SGD in ``dtype``: any summation order, optional FMA, faithful exp."""

    ORDERS = ("natural", "shuffled", "tree")

    def __init__(
        self,
        dtype,
        rng: np.random.Generator,
        fma: bool = False,
        faithful: bool = False,
        order: str = "tree",
    ):
        """``order``: every sum left to right as written (bias last), left to right in a random
        order, or as a random binary tree (any parenthesisation)."""
        assert order in self.ORDERS
        self.order = order
        self.dt = np.dtype(dtype)
        self.t = self.dt.type
        self.zero = self.t(0)
        self.one = self.t(1)
        self.rng = rng
        self.fma = fma
        self.faithful = faithful
        self.overflowed = False  # some value computed so far was inf or NaN

    def _seen(self, v):
        if not np.isfinite(v):
            self.overflowed = True
        return v

    # a summand is a float of the dtype, or an exact product (mpq) not yet rounded (FMA)
    def _prod(self, a, b):
        if self.fma and np.isfinite(a) and np.isfinite(b) and self.rng.random() < 0.7:
            return q(a) * q(b)
        return a * b

    def _add(self, u, v):
        if isinstance(u, mpq) and isinstance(v, mpq):
            u = round_to(u, self.dt)
        if isinstance(u, mpq):
            u, v = v, u
        if isinstance(v, mpq):  # fma(., ., u): one rounding of the exact product plus u
            if not np.isfinite(u):
                return u + round_to(v, self.dt)
            return round_to(q(u) + v, self.dt)
        return u + v

    def _tree(self, items):
        items = list(items)
        if not items:
            return self.zero
        if self.order != "tree":
            if self.order == "shuffled":
                items = [items[i] for i in self.rng.permutation(len(items))]
            acc = items[0]
            for v in items[1:]:
                acc = self._add(acc, v)
            return self._seen(round_to(acc, self.dt) if isinstance(acc, mpq) else acc)
        while len(items) > 1:
            n = len(items)
            i = int(self.rng.integers(n))
            j = int(self.rng.integers(n - 1))
            j = j + 1 if j >= i else j
            u, v = items[i], items[j]
            for k in sorted((i, j), reverse=True):
                items.pop(k)
            items.append(self._add(u, v))
        last = items[0]
        return self._seen(round_to(last, self.dt) if isinstance(last, mpq) else last)

    def dot(self, pairs, extra=None):
        items = [self._prod(a, b) for a, b in pairs]
        if extra is not None:
            items.append(extra)
        return self._tree(items)

    def sum(self, values):
        return self._tree(values)

    def rate(self, rate):
        """A rate already in the dtype is used as given; an exact one is rounded to nearest."""
        return rate if isinstance(rate, self.t) else round_to(q(rate), self.dt)

    def update(self, theta, rate, g):
        if self.fma and np.isfinite(theta) and np.isfinite(g) and self.rng.random() < 0.7:
            return self._seen(round_to(q(theta) - q(rate) * q(g), self.dt))
        return self._seen(theta - rate * g)

    def exp(self, x):
        """``exp`` rounded to nearest, or (``faithful``) to either neighbour: error below an ulp.

        Beyond the largest float plus one ulp (2^128 in float32, 2^1024 in float64) only
        ``inf`` is within an ulp, so a faithful exp overflows there as the correctly rounded
        one does.
        """
        if self.faithful:
            rnd = gmpy2.RoundDown if self.rng.random() < 0.5 else gmpy2.RoundUp
        else:
            rnd = gmpy2.RoundToNearest
        ctx = _IEEE[self.dt].copy()
        ctx.round = rnd
        with gmpy2.context(ctx):
            v = self.t(float(gmpy2.exp(mpfr(float(x)))))
        if v == np.finfo(self.dt).max:
            with gmpy2.context(_WIDE):
                if gmpy2.exp(mpfr(float(x))) >= mpfr(2) ** (np.finfo(self.dt).maxexp):
                    return self._seen(self.t(np.inf))
        return self._seen(v)

    def loss_grad(self, loss, z, y):
        t = self.t
        m = t(len(z))
        out = []
        for zr, yr in zip(z, y, strict=True):
            if loss == "bce":
                a = zr[0]
                e = self.exp(-abs(a))
                s = e / (self.one + e) if a < 0 else self.one / (self.one + e)
                out.append([self._seen((s - t(yr)) / m)])
            else:
                row = []
                for i in range(len(zr)):
                    terms = [self.exp(zr[j] - zr[i]) for j in range(len(zr)) if j != i]
                    p = self.one / (self.one + self._tree(terms))
                    row.append(self._seen((p - (self.one if i == yr else self.zero)) / m))
                out.append(row)
        return out


# ================================================================== helpers of the other tests
# Shared by the test files (``from oracle import ...``; tests/ is not a package).  Like the
# rest of this module they import nothing of intervalnn: models, layers and boxes are read
# through their attributes.

# ------------------------------------------------------------------ exact numbers


def fraction(v) -> Fraction:
    """An exact ``Fraction`` for a float (Python or NumPy, any width), int, Fraction or mpq."""
    if isinstance(v, (float, np.floating)):
        return Fraction(float(v))
    return Fraction(int(v.numerator), int(v.denominator))


def fraction_array(a) -> np.ndarray:
    """An array of floats (or mpq) as an object array of exact ``Fraction``, same shape."""
    return np.vectorize(fraction, otypes=[object])(np.asarray(a))


# ------------------------------------------------------------------ MPFR at MPFR_BITS bits


def mpfr_fraction(f, z: Fraction) -> Fraction:
    """``f(z)`` in MPFR at :data:`MPFR_BITS` bits (``z`` rounded to them first), as a Fraction.

    For the irrational values of exp, log1p, ...: off by about 2^-300 relative, far below any
    float gap; rational inputs where ``f`` is exact (``exp(0) = 1``) come out exact.
    """
    with gmpy2.context(precision=MPFR_BITS):
        v = f(mpfr(mpq(z.numerator, z.denominator)))
    return Fraction(*v.as_integer_ratio())


def mpfr_sigmoid(t: Fraction) -> Fraction:
    """``1 / (1 + exp(-t))`` with ``exp`` from :func:`mpfr_fraction`, the rest exact."""
    return 1 / (1 + mpfr_fraction(gmpy2.exp, -t))


def mpfr_softplus(t: Fraction) -> Fraction:
    """``log1p(exp(t))`` in MPFR (:func:`mpfr_fraction`)."""
    return mpfr_fraction(lambda v: gmpy2.log1p(gmpy2.exp(v)), t)


def mpfr_softmax(z_i: Fraction, others: list[Fraction]) -> Fraction:
    """``1 / (1 + sum_j exp(z_j - z_i))`` (softmax of logit i given the other logits)."""
    return 1 / (1 + sum(mpfr_fraction(gmpy2.exp, zj - z_i) for zj in others))


def tightest(f, xs, dtype=np.float64):
    """``(RD f(x), RU f(x))`` arrays in ``dtype`` from MPFR (NaN outside the domain).

    ``f`` is a gmpy2 function (``gmpy2.exp``, ...); ``gmpy2.ieee(64)`` / ``ieee(32)`` are the
    exact float formats (subnormals included) and MPFR rounds correctly in every mode.
    """
    ctx = gmpy2.ieee(64 if dtype == np.float64 else 32)
    out = []
    for rnd in (gmpy2.RoundDown, gmpy2.RoundUp):
        ctx.round = rnd
        with gmpy2.context(ctx):
            # mpfr(x) is exact: x is a value of the context's format.
            out.append(np.array([float(f(mpfr(float(x)))) for x in xs], dtype=dtype))
    return out


# ------------------------------------------------------------------ exact interval products


def dot_hull(a_lo, a_hi, b_lo, b_hi, c_lo=0, c_hi=0) -> tuple[Fraction, Fraction]:
    """Exact ``[min, max]`` of ``c + sum_k a_k b_k`` over the boxes, as Fractions.

    The terms involve distinct variables, so each takes its own extremes: the least and
    the greatest of its four corner products.
    """
    lo, hi = fraction(c_lo), fraction(c_hi)
    for a0, a1, b0, b1 in zip(a_lo, a_hi, b_lo, b_hi, strict=True):
        ps = [fraction(a) * fraction(b) for a in (a0, a1) for b in (b0, b1)]
        lo += min(ps)
        hi += max(ps)
    return lo, hi


def hull_matmul(alo, ahi, blo, bhi) -> tuple[list, list]:
    """Exact interval hull of ``A @ B`` (1-D operands as rows) as nested lists of Fractions."""
    alo, ahi, blo, bhi = (np.atleast_2d(np.asarray(x)) for x in (alo, ahi, blo, bhi))
    out_lo, out_hi = [], []
    for i in range(alo.shape[0]):
        row = [dot_hull(alo[i], ahi[i], blo[:, j], bhi[:, j]) for j in range(blo.shape[1])]
        out_lo.append([lo for lo, _ in row])
        out_hi.append([hi for _, hi in row])
    return out_lo, out_hi


# Whole arrays at once (products of any size and magnitude, 1e-300 .. 1e300, subnormals): every
# float is ``n * 2**-s`` for integers ``n``, ``s``; an array is scaled to one ``s`` and
# multiplied as Python integers in an object array.


def scaled(*arrays):
    """Object arrays of ints ``N`` and one shift ``s`` with ``array == N * 2**-s`` exactly."""
    ratios = [[float(v).as_integer_ratio() for v in np.asarray(a).reshape(-1)] for a in arrays]
    s = max((d.bit_length() - 1 for r in ratios for _, d in r), default=0)
    out = []
    for a, r in zip(arrays, ratios, strict=True):
        ints = [n << (s - (d.bit_length() - 1)) for n, d in r]
        out.append(np.array(ints + [0], dtype=object)[:-1].reshape(np.shape(a)))
    return out, s


def exact_matmul(x, y):
    """Exact ``x @ y`` as ``(E, S)``: integer object array ``E`` and shift ``S``."""
    (nx,), sx = scaled(x)
    (ny,), sy = scaled(y)
    return np.asarray(np.matmul(nx, ny), dtype=object), sx + sy


def exact_hull(alo, ahi, blo, bhi):
    """The exact interval hull of ``A @ B`` (2-D, finite) as ``(L, H, S)``."""
    (al, ah), sa = scaled(alo, ahi)
    (bl, bh), sb = scaled(blo, bhi)
    corners = [p[:, :, None] * q[None, :, :] for p in (al, ah) for q in (bl, bh)]
    lo = np.minimum.reduce(corners).sum(axis=1)
    hi = np.maximum.reduce(corners).sum(axis=1)
    return lo, hi, sa + sb


def _le(f: float, e: int, s: int) -> bool:
    """``f <= e * 2**-s`` exactly, for a float ``f`` (possibly infinite)."""
    f = float(f)
    if f != f:
        return False
    if f in (np.inf, -np.inf):
        return f < 0
    n, d = f.as_integer_ratio()
    return n << s <= e * d


def _ge(f: float, e: int, s: int) -> bool:
    f = float(f)
    if f != f:
        return False
    if f in (np.inf, -np.inf):
        return f > 0
    n, d = f.as_integer_ratio()
    return n << s >= e * d


def enclosure_failures(res, lo_e, hi_e, s) -> list[str]:
    """Entries where ``[res.lo, res.hi]`` does not contain ``[lo_e, hi_e] * 2**-s``."""
    bad = []
    for idx in np.ndindex(*res.shape):
        lo, hi = res.lo[idx], res.hi[idx]
        if not (_le(lo, lo_e[idx], s) and _ge(hi, hi_e[idx], s)):
            bad.append(
                f"{idx}: [{float(lo)!r}, {float(hi)!r}] misses "
                f"[{float(Fraction(lo_e[idx], 2**s))!r}, {float(Fraction(hi_e[idx], 2**s))!r}]"
            )
    return bad


# ------------------------------------------------------------------ exact forward passes


def exact_ibp(layers, x, eps):
    """Tightest IBP in exact rationals of the inputs ``x +- eps``.

    ``layers``: objects with ``w_lo``, ``w_hi`` (n x p), ``b_lo``, ``b_hi`` (p) and ``relu``
    (``intervalnn.audit.Dense``).  Each output is the :func:`dot_hull` of its input box and
    weight column plus the bias box, then ReLU.
    """
    lo = [[Fraction(v) - Fraction(eps) for v in row] for row in x]
    hi = [[Fraction(v) + Fraction(eps) for v in row] for row in x]
    for la in layers:
        p = la.w_lo.shape[1]
        new_lo, new_hi = [], []
        for a_row, b_row in zip(lo, hi, strict=True):
            rl, rh = [], []
            for j in range(p):
                sl, sh = dot_hull(
                    a_row, b_row, la.w_lo[:, j], la.w_hi[:, j], la.b_lo[j], la.b_hi[j]
                )
                rl.append(max(sl, Fraction(0)) if la.relu else sl)
                rh.append(max(sh, Fraction(0)) if la.relu else sh)
            new_lo.append(rl)
            new_hi.append(rh)
        lo, hi = new_lo, new_hi
    return lo, hi


def zero_tangents(params, x):
    """Zero tangents for ``params`` (pairs of arrays) and ``x``, as Fraction arrays."""
    zero = lambda a: np.full(a.shape, Fraction(0), object)  # noqa: E731
    return [(zero(w), zero(b)) for w, b in params], zero(x)


def dual_forward(kinds, params, x, dparams, dx):
    """Forward-mode AD over exact Fractions: the output and its derivative along (dparams, dx).

    ``kinds``: ``"linear"`` / ``"relu"`` per layer; ``params``: a ``(W, b)`` pair of object
    arrays per Linear.  A route independent of any backward chain rule: the tangent rides
    along the forward pass (``d(aW + b) = da W + a dW + db``, ``d relu(a) = [a > 0] da``),
    nothing runs in reverse.
    """
    a, da = x, dx
    pairs = iter(zip(params, dparams, strict=True))
    for kind in kinds:
        if kind == "linear":
            (w, b), (dw, db) = next(pairs)
            a, da = a @ w + b, da @ w + a @ dw + db
        else:
            on = a > 0
            a, da = np.where(on, a, Fraction(0)), np.where(on, da, Fraction(0))
    return a, da


# ------------------------------------------------------------------ reference SGD with NumPy data
# For models of Linear and ReLU layers, with the arch of :func:`forward` (a list of
# ("linear", "0") / ("relu", None)) and parameters "0.weight" (n x p), "0.bias" (p) as
# arrays.  Batches are lists of row indices.


def arch_of(model) -> list:
    """The arch of an intervalnn ``Sequential``: ``("linear", str(i))`` for its Linear layers,
    ``("relu", None)`` for the others (read from ``model.layers``, nothing imported)."""
    return [
        ("linear", str(i)) if type(layer).__name__ == "Linear" else ("relu", None)
        for i, layer in enumerate(model.layers)
    ]


def poisoned(x, eps, rng, kind):
    """A poisoned dataset in the box ``x +- eps`` (float64): a random vertex (``kind ==
    "vertex"``) or a uniformly random point."""
    s = rng.choice([-1.0, 1.0], size=x.shape) if kind == "vertex" else rng.uniform(-1, 1, x.shape)
    return x.astype(np.float64) + eps * s


def box_member(rng, boxes: dict, vertex: bool) -> dict:
    """A member of each box (``name -> box`` with ``lo``, ``hi``, ``shape``): a random vertex
    (``vertex``) or a uniformly random point."""
    return {
        n: np.where(rng.random(b.shape) < 0.5, b.lo, b.hi) if vertex else rng.uniform(b.lo, b.hi)
        for n, b in boxes.items()
    }


def fraction_sgd(init, arch, xs, y, steps, lr, loss, k, sigmoid=mpfr_sigmoid):
    """Full-batch SGD in exact rationals: the parameters (nested Fraction lists, biases as one
    row) after each of ``steps`` steps.

    The loss gradient: ``(sigmoid(z) - y) / m`` for ``loss == "bce"`` (``sigmoid`` a parameter:
    by default :func:`mpfr_sigmoid`), softmax ``1 / sum_j exp(z_j - z_i)`` for ``"ce"`` with
    ``k`` logits, exp through :func:`mpfr_fraction`.
    """
    params = {
        name: [[Fraction(float(v)) for v in np.atleast_1d(row)] for row in np.atleast_2d(arr)]
        for name, arr in init.items()
    }
    xs = [[Fraction(float(v)) for v in row] for row in xs]
    m, lam = len(xs), Fraction(lr)
    trajectory = []
    for _ in range(steps):
        acts, pres = [xs], []
        for kind, name in arch:
            h = acts[-1]
            if kind == "relu":
                pres.append(h)
                acts.append([[max(v, Fraction(0)) for v in row] for row in h])
                continue
            w, b = params[f"{name}.weight"], params[f"{name}.bias"][0]
            out = [
                [sum(row[i] * w[i][j] for i in range(len(row))) + b[j] for j in range(len(b))]
                for row in h
            ]
            pres.append(None)
            acts.append(out)
        z = acts[-1]
        if loss == "bce":
            g = [[(sigmoid(zr[0]) - int(t)) / m] for zr, t in zip(z, y, strict=True)]
        else:
            g = []
            for zr, t in zip(z, y, strict=True):
                p = [
                    1 / sum(mpfr_fraction(gmpy2.exp, zr[j] - zr[i]) for j in range(k))
                    for i in range(k)
                ]
                g.append([(p[i] - (1 if i == t else 0)) / m for i in range(k)])
        grads = {}
        for pos in reversed(range(len(arch))):
            kind, name = arch[pos]
            h = acts[pos]
            if kind == "relu":
                g = [
                    [gv if hv > 0 else Fraction(0) for gv, hv in zip(gr, hr, strict=True)]
                    for gr, hr in zip(g, h, strict=True)
                ]
                continue
            w = params[f"{name}.weight"]
            n_in, n_out = len(w), len(w[0])
            grads[f"{name}.weight"] = [
                [sum(h[b][i] * g[b][j] for b in range(m)) for j in range(n_out)]
                for i in range(n_in)
            ]
            grads[f"{name}.bias"] = [[sum(g[b][j] for b in range(m)) for j in range(n_out)]]
            g = [
                [sum(g[b][j] * w[i][j] for j in range(n_out)) for i in range(n_in)]
                for b in range(m)
            ]
        params = {
            name: [
                [v - lam * dv for v, dv in zip(r, dr, strict=True)]
                for r, dr in zip(rows, grads[name], strict=True)
            ]
            for name, rows in params.items()
        }
        trajectory.append(params)
    return trajectory


def float64_sgd(init, arch, x, y, batches, lr, loss):
    """Plain float64 SGD with NumPy (not the library's code): the parameters after each batch.

    Softmax shifted by the row maximum; the gradient divided by the batch size.
    """
    params = {n: v.astype(np.float64).copy() for n, v in init.items()}
    out = []
    for idx in batches:
        acts = [x[idx]]
        for kind, name in arch:
            h = acts[-1]
            acts.append(
                np.maximum(h, 0)
                if kind == "relu"
                else h @ params[f"{name}.weight"] + params[f"{name}.bias"]
            )
        z, yy, m = acts[-1], y[idx], len(idx)
        if loss == "bce":
            g = (1 / (1 + np.exp(-z[:, 0])) - yy)[:, None] / m
        else:
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            g = (p - np.eye(z.shape[1])[yy]) / m
        grads = {}
        for pos in reversed(range(len(arch))):
            kind, name = arch[pos]
            if kind == "relu":
                g = g * (acts[pos] > 0)
                continue
            grads[f"{name}.weight"] = acts[pos].T @ g
            grads[f"{name}.bias"] = g.sum(axis=0)
            g = g @ params[f"{name}.weight"].T
        params = {n: v - lr * grads[n] for n, v in params.items()}
        out.append(params)
    return out


def count_excursions(trajectory, steps: dict) -> int:
    """How many parameter entries of a reference ``trajectory`` (the parameters after each
    step) lie outside the boxes ``steps[step][name] = (lo, hi)`` recorded for that step."""
    count = 0
    for step, params in enumerate(trajectory, 1):
        for name, value in params.items():
            lo, hi = steps[step][name]
            count += int(np.sum((value < lo) | (value > hi)))
    return count


# ------------------------------------------------------------------ per-sample SGD (poisoning)
# The reference for k-of-n poisoning, label flips and the training rules (issue 13): SGD whose
# batch gradient is the mean of per-sample gradients, each optionally clipped, with weight decay
# as a contraction, momentum / Nesterov and a decaying rate.  The per-sample gradients come from
# the generic chain rule above (:func:`forward` / :func:`backward` on one row, where the loss
# gradient's 1/m is 1); the arithmetic is :class:`Exact` (rationals, MPFR for the irrational
# parts) or :class:`FloatArith` (round-to-nearest in a dtype).  Semantics (PyTorch's, exact reals):
#
#     g_i  = d loss(x_i, y_i) / d theta              (per sample, no 1/m)
#     clamp: g_i <- min(max(g_i, -gamma), gamma)      entrywise
#     norm:  g_i <- g_i * min(1, gamma / ||g_i||_2)   (the norm over all parameters)
#     g    = (sum_i g_i) / m
#     v    = g (first step) or mu v + g;  d = v, or g + mu v (Nesterov)
#     theta <- (1 - rate wd) theta - rate d


def _exact_sqrt(s: mpq) -> mpq:
    """``sqrt(s)`` for ``s >= 0``: exact where it is rational, else MPFR at MPFR_BITS bits."""
    num, den = int(s.numerator), int(s.denominator)
    if gmpy2.is_square(num) and gmpy2.is_square(den):
        return mpq(int(gmpy2.isqrt(num)), int(gmpy2.isqrt(den)))
    with gmpy2.context(_WIDE):
        return mpq(*gmpy2.sqrt(mpfr(s)).as_integer_ratio())


def flat(v):
    """The scalars of a nested list, in order."""
    if isinstance(v, list):
        for u in v:
            yield from flat(u)
    else:
        yield v


def _map1(f, a):
    return [_map1(f, u) for u in a] if isinstance(a, list) else f(a)


def per_sample_gradient(arch, params, xi, yi, loss, ar) -> dict:
    """Row ``xi``'s own parameter gradient by the generic chain rule (batch of one: no 1/m)."""
    z, inputs = forward(arch, params, [xi], ar)
    return backward(arch, params, inputs, ar.loss_grad(loss, z, [yi]), ar)


def clip_gradient(grads: dict, gamma, method: str, ar) -> dict:
    """One per-sample gradient clipped: ``clamp`` entrywise or by its l2 ``norm``.

    Exact arithmetic: the norm's square root is exact where rational, else MPFR.  Float
    arithmetic: ``sqrt`` of the float sum of float squares, the factor ``min(1, gamma /
    norm)`` in the dtype, as a float SGD computes it.
    """
    if method == "clamp":
        lo, hi = -gamma, gamma
        return {
            k: _map1(lambda v: lo if v < lo else hi if v > hi else v, g) for k, g in grads.items()
        }
    values = [v for g in grads.values() for v in flat(g)]
    if isinstance(ar, Exact):
        s = ar.sum([v * v for v in values])
        if s <= gamma * gamma:
            return grads
        f = gamma / _exact_sqrt(s)
    else:
        s = ar.sum([v * v for v in values])
        norm = np.sqrt(s)
        f = ar.one if not norm > gamma else ar.t(gamma) / norm
    return {k: _map1(lambda v, f=f: v * f, g) for k, g in grads.items()}


def per_sample_sgd(
    arch,
    init,
    x,
    y,
    loss,
    batches,
    rates,
    ar,
    *,
    clip=None,
    clip_method="clamp",
    weight_decay=0.0,
    momentum=0.0,
    nesterov=False,
):
    """SGD with per-sample gradients (module text above); the parameters after each step.

    ``init``: ``name -> array`` (``"0.weight"`` in x out, ``"0.bias"``); ``x``: rows (floats,
    Fractions or mpq: exact arithmetic takes them exactly, float arithmetic rounds them to its
    dtype); ``y``: integer labels; ``batches``: lists of row indices; ``rates``: the exact
    rate of each step (Fractions).  Returns a list of ``name -> nested list`` (mpq for
    :class:`Exact`, floats of the dtype for :class:`FloatArith`); stops early (shorter
    list) where a float run overflows.
    """
    exact = isinstance(ar, Exact)
    conv = q if exact else (lambda v: round_to(q(v), ar.dt))
    params = {k: _map1(conv, np.asarray(v).tolist()) for k, v in init.items()}
    xs = [[conv(v) for v in row] for row in x]
    if exact:
        mu, wd, gamma = q(momentum), q(weight_decay), None if clip is None else q(float(clip))
    else:
        mu, wd = round_to(q(momentum), ar.dt), q(weight_decay)
        gamma = None if clip is None else ar.t(clip)
    velocity = None
    out = []
    for idx, rate in zip(batches, rates, strict=True):
        per = [per_sample_gradient(arch, params, xs[i], int(y[i]), loss, ar) for i in idx]
        if gamma is not None:
            per = [clip_gradient(g, gamma, clip_method, ar) for g in per]
        m = len(idx)
        grads = {}
        for name in params:
            total = per[0][name]
            for g in per[1:]:
                total = _map2(lambda a, b: ar.sum([a, b]), total, g[name])
            div = m if exact else ar.t(m)
            grads[name] = _map1(lambda v, div=div: v / div, total)
        if exact:
            r, c = q(rate), 1 - q(rate) * wd
        else:
            r, c = round_to(q(rate), ar.dt), round_to(1 - q(rate) * wd, ar.dt)
        new_v, new_params = {}, {}
        for name, theta in params.items():
            g = grads[name]
            d = g
            if momentum:
                v = g if velocity is None else _map2(lambda a, b: mu * a + b, velocity[name], g)
                new_v[name] = v
                d = _map2(lambda a, b: a + mu * b, g, v) if nesterov else v
            new_params[name] = _map2(lambda th, dd, c=c, r=r: c * th - r * dd, theta, d)
        params, velocity = new_params, (new_v if momentum else None)
        if not exact and not all(np.isfinite(v) for p in params.values() for v in flat(p)):
            break
        out.append(params)
    return out


def rates_of(learning_rate, steps, decay=0.0, lr_min=0.0):
    """The exact constant-schedule rates ``max(rate / (1 + d (t - 1)), lr_min)``, t = 1..steps."""
    lam, d, low = Fraction(learning_rate), Fraction(decay), Fraction(lr_min)
    return [max(lam / (1 + d * (t - 1)), low) for t in range(1, steps + 1)]


def epoch_batches(n, batch_size, seed, steps):
    """The first ``steps`` batches of SGD shuffling ``range(n)`` anew each epoch with
    ``np.random.default_rng(seed).permutation`` and cutting it into ``batch_size`` rows."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < steps:
        order = rng.permutation(n)
        out.extend(order[i : i + batch_size].tolist() for i in range(0, n, batch_size))
    return out[:steps]


def min_subset_sum(values, k):
    """Exact ``min`` of ``sum_{i in P} values[i]`` over every set ``P`` of at most ``k`` rows,
    by brute force over the subsets (the empty set's 0 included)."""
    from itertools import combinations

    vals = [fraction(v) for v in values]
    best = Fraction(0)
    for size in range(1, min(k, len(vals)) + 1):
        for combo in combinations(range(len(vals)), size):
            best = min(best, sum((vals[i] for i in combo), Fraction(0)))
    return best


def outside_box(trajectory, boxes) -> list[str]:
    """Entries of a reference ``trajectory`` (``name -> nested list`` per step, exact or float)
    outside the recorded boxes ``boxes[t][name] = (lo, hi)`` (arrays) of step ``t + 1``,
    compared exactly; the comparison stops at the shorter of the two."""
    bad = []
    for t, (params, box) in enumerate(zip(trajectory, boxes, strict=False), 1):
        for name, value in params.items():
            lo, hi = box[name]
            val = np.asarray(value, dtype=object)
            for idx in np.ndindex(val.shape):
                v, a, b = q(val[idx]), lo[idx], hi[idx]
                ok_lo = q(a) <= v if np.isfinite(a) else a < 0
                ok_hi = v <= q(b) if np.isfinite(b) else b > 0
                if not (ok_lo and ok_hi):
                    bad.append(f"step {t} {name}{idx}: {float(v)!r} not in [{a!r}, {b!r}]")
    return bad


# ================================================================== image layers (issue 14)
# Exact reference for the convolution / pooling tests (tests/test_conv_layers.py): a tiny
# reverse-mode automatic differentiation over exact rationals (:class:`Tape`) and the image
# layers written from their definitions as nested loops over it (NCHW, zero padding, windows
# row-major).  Gradients come from the generic chain rule of the tape: each operation records
# its own partial derivatives (the product rule, 1 / count for a mean, 1 for the element a max
# picks), and :meth:`Tape.gradient` accumulates adjoints in reverse creation order.  Nothing
# here mirrors im2col or a scatter.


class Tape:
    """Reverse-mode AD over ``mpq`` values; nodes are ints (creation order is topological)."""

    def __init__(self):
        self.value: list = []
        self.parents: list = []

    def leaf(self, v) -> int:
        self.value.append(q(v))
        self.parents.append(())
        return len(self.value) - 1

    def leaves(self, a) -> np.ndarray:
        """An object array of leaf nodes, one per entry of ``a`` (floats, mpq, Fractions)."""
        a = np.asarray(a, dtype=object) if not isinstance(a, np.ndarray) else a
        out = np.empty(a.shape, dtype=object)
        for idx in np.ndindex(*a.shape):
            out[idx] = self.leaf(a[idx])
        return out

    def _node(self, v, parents) -> int:
        self.value.append(v)
        self.parents.append(tuple(parents))
        return len(self.value) - 1

    def affine(self, pairs, extra=None) -> int:
        """``sum_k a_k b_k (+ extra)`` for node pairs ``(a_k, b_k)`` (product rule)."""
        val, parents = self.value, []
        s = mpq(0) if extra is None else val[extra]
        for a, b in pairs:
            s += val[a] * val[b]
            parents.append((a, val[b]))
            parents.append((b, val[a]))
        if extra is not None:
            parents.append((extra, mpq(1)))
        return self._node(s, parents)

    def mean(self, nodes) -> int:
        w = mpq(1, len(nodes))
        return self._node(sum((self.value[a] for a in nodes), mpq(0)) * w, [(a, w) for a in nodes])

    def pick(self, nodes, i: int) -> int:
        """The value of ``nodes[i]`` (derivative 1 to it, 0 to the others)."""
        return self._node(self.value[nodes[i]], [(nodes[i], mpq(1))])

    def relu(self, a) -> int:
        """``max(a, 0)``, derivative ``[a > 0]`` (PyTorch's choice at 0)."""
        v = self.value[a]
        return self._node(v, [(a, mpq(1))]) if v > 0 else self._node(mpq(0), [])

    def values(self, nodes) -> np.ndarray:
        out = np.empty(nodes.shape, dtype=object)
        for idx in np.ndindex(*nodes.shape):
            out[idx] = self.value[nodes[idx]]
        return out

    def gradient(self, outputs, seeds) -> list:
        """Adjoints of every node for ``sum_k seeds[k] * outputs[k]`` (0 where untouched)."""
        adj = [mpq(0)] * len(self.value)
        for o, s in zip(
            np.asarray(outputs).reshape(-1), np.asarray(seeds).reshape(-1), strict=True
        ):
            adj[o] = adj[o] + q(s)
        for i in range(len(self.value) - 1, -1, -1):
            a = adj[i]
            if a:
                for p, d in self.parents[i]:
                    adj[p] = adj[p] + a * d
        return adj


def adjoints(adj, nodes) -> np.ndarray:
    """The adjoints of an object array of nodes, same shape."""
    out = np.empty(nodes.shape, dtype=object)
    for idx in np.ndindex(*nodes.shape):
        out[idx] = adj[nodes[idx]]
    return out


def tape_conv2d(t: Tape, x, w, b, stride, padding) -> np.ndarray:
    """``y[n,o,i,j] = b[o] + sum_{c,u,v} w[o,c,u,v] x[n,c,i sh + u - ph, j sw + v - pw]``.

    Node arrays ``x`` (N, C, H, W), ``w`` (O, C, kh, kw), ``b`` (O,); positions outside the
    image are the zero padding (they add nothing)."""
    n_, c_, h, wd = x.shape
    o_, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    oh, ow = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.empty((n_, o_, oh, ow), dtype=object)
    for n in range(n_):
        for o in range(o_):
            for i in range(oh):
                for j in range(ow):
                    pairs = []
                    for c in range(c_):
                        for u in range(kh):
                            for v in range(kw):
                                r, s = i * sh + u - ph, j * sw + v - pw
                                if 0 <= r < h and 0 <= s < wd:
                                    pairs.append((w[o, c, u, v], x[n, c, r, s]))
                    out[n, o, i, j] = t.affine(pairs, b[o])
    return out


def _windows(x, kernel, stride):
    """``(n, c, i, j, nodes)`` for every pooling window, nodes row-major in the window."""
    n_, c_, h, wd = x.shape
    (kh, kw), (sh, sw) = kernel, stride
    oh, ow = (h - kh) // sh + 1, (wd - kw) // sw + 1
    for n in range(n_):
        for c in range(c_):
            for i in range(oh):
                for j in range(ow):
                    nodes = [x[n, c, i * sh + u, j * sw + v] for u in range(kh) for v in range(kw)]
                    yield n, c, i, j, nodes


def _pool_out(x, kernel, stride):
    n_, c_, h, wd = x.shape
    oh, ow = (h - kernel[0]) // stride[0] + 1, (wd - kernel[1]) // stride[1] + 1
    return np.empty((n_, c_, oh, ow), dtype=object)


def tape_avgpool2d(t: Tape, x, kernel, stride) -> np.ndarray:
    """The mean of each window (no padding)."""
    out = _pool_out(x, kernel, stride)
    for n, c, i, j, nodes in _windows(x, kernel, stride):
        out[n, c, i, j] = t.mean(nodes)
    return out


def tape_maxpool2d(t: Tape, x, kernel, stride, choose) -> np.ndarray:
    """The maximum of each window; ``choose(tied_positions) -> position`` breaks ties (the
    derivative goes to the chosen maximum: every choice is a valid gradient)."""
    out = _pool_out(x, kernel, stride)
    for n, c, i, j, nodes in _windows(x, kernel, stride):
        vals = [t.value[a] for a in nodes]
        top = max(vals)
        out[n, c, i, j] = t.pick(nodes, choose([k for k, v in enumerate(vals) if v == top]))
    return out


def tape_linear(t: Tape, x, w, b) -> np.ndarray:
    """``y = x W + b`` for node arrays ``x`` (N, in), ``w`` (in, out), ``b`` (out,)."""
    n_, k_ = x.shape
    out = np.empty((n_, w.shape[1]), dtype=object)
    for n in range(n_):
        for j in range(w.shape[1]):
            out[n, j] = t.affine([(x[n, i], w[i, j]) for i in range(k_)], b[j])
    return out


def tape_relu(t: Tape, x) -> np.ndarray:
    out = np.empty(x.shape, dtype=object)
    for idx in np.ndindex(*x.shape):
        out[idx] = t.relu(x[idx])
    return out
