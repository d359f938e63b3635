"""Independent reference SGD for ``tests/test_harness.py``: exact rationals and float SGD.

Nothing here imports ``intervalnn``.  A network is a list of layers
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
