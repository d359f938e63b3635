"""The training audit: certified training against concrete poisoned SGD runs, step by step.

An independent reference SGD (:class:`_Reference`, a chain rule over the
layer list, float64 or exact rationals) replays training on poisoned
datasets inside the training box; after every step each concrete parameter
must lie inside the interval parameters.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from ..conv import AvgPool2d, Conv2d, Flatten, MaxPool2d, Unflatten
from ..layers import Linear, ReLU, Sequential
from ..threat import ThreatModel
from ..train import batch_indices, pretrain_nominal, train
from .network import Window
from .oracle import require_gmpy2

EXACT_BITS = 300  # bits of sigmoid / softmax in the exact rational SGD


@dataclass(frozen=True)
class Rules:
    """The training rules the reference SGD follows (those of ``TrainConfig``)."""

    clip: float | None = None
    clip_method: str = "clamp"
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False

    @classmethod
    def of(cls, config) -> Rules:
        return cls(
            getattr(config, "clip", None),
            getattr(config, "clip_method", "clamp"),
            getattr(config, "weight_decay", 0.0),
            getattr(config, "momentum", 0.0),
            getattr(config, "nesterov", False),
        )


def learning_rate(config, t: int) -> Fraction:
    """Step ``t``'s exact rate: ``rate`` (or ``rate / t``), then ``max(. / (1 + d (t-1)), min)``."""
    lr = Fraction(config.learning_rate)
    base = lr if config.schedule == "constant" else lr / t
    d = Fraction(getattr(config, "lr_decay", 0.0))
    if d:
        base = max(base / (1 + d * (t - 1)), Fraction(getattr(config, "lr_min", 0.0)))
    return base


PARAMETRIC = ("linear", "conv")  # the kinds with parameters (W, b)


def _kind(entry) -> str:
    """An entry of a kinds list: a name, or ``(name, Window)`` for a layer with a window."""
    return entry if isinstance(entry, str) else entry[0]


def _layer_kinds(model: Sequential) -> list:
    """``model``'s layer list as kinds of the reference's table.

    ``"linear"``, ``"relu"``, ``"flatten"``, ``"unflatten"`` (both the
    identity: the reference keeps rows flat, C order), and ``("conv",
    window)``, ``("avgpool", window)``, ``("maxpool", window)`` with the
    layer's :class:`~intervalnn.audit.network.Window` (its geometry on flat
    rows, from the layers' sizes, kernel, stride and padding only).
    """
    kinds: list = []
    shape: tuple[int, ...] = (model.in_features,)
    for layer in model.layers:
        kind = type(layer)
        if kind is Linear:
            kinds.append("linear")
            shape = (layer.weight.shape[1],)
        elif kind is ReLU:
            kinds.append("relu")
        elif kind is Flatten:
            kinds.append("flatten")
            shape = (int(np.prod(shape)),)
        elif kind is Unflatten:
            kinds.append("unflatten")
            shape = tuple(layer.shape)
        elif kind in (Conv2d, AvgPool2d, MaxPool2d):
            if len(shape) != 3:
                raise ValueError(f"{kind.__name__} needs (C, H, W) inputs, not {shape}")
            conv = kind is Conv2d
            padding = layer.padding if conv else (0, 0)
            win = Window(shape, layer.kernel_size, layer.stride, padding, channels=conv)
            name = "conv" if conv else "avgpool" if kind is AvgPool2d else "maxpool"
            kinds.append((name, win))
            shape = ((layer.out_channels if conv else shape[0]), *win.out_hw)
        else:
            raise ValueError(
                "the training audit supports Linear, Conv2d, AvgPool2d, MaxPool2d, Flatten, "
                f"Unflatten and ReLU layers, not {kind.__name__}"
            )
    return kinds


def _layer_params(model: Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """The nominal ``(W, b)`` of each Linear and Conv2d layer of ``model``, in order (float64
    host copies; Linear's ``W`` is (in, out), Conv2d's (out, in, kh, kw))."""
    bk = model.backend
    host = lambda a: np.array(bk.to_host(a), dtype=np.float64)  # noqa: E731
    return [
        (host(layer.nominal["weight"]), host(layer.nominal["bias"]))
        for layer in model.layers
        if type(layer) in (Linear, Conv2d)
    ]


def _param_names(model: Sequential) -> list[str]:
    """The names (``named_params``) of :func:`_layer_params`' arrays, flat: weight, bias, ..."""
    return [
        f"{i}.{k}"
        for i, layer in enumerate(model.layers)
        if type(layer) in (Linear, Conv2d)
        for k in ("weight", "bias")
    ]


class _Reference:
    """Independent SGD on a stack of layers, in float64 or rationals (``mpq``).

    ``kinds`` is the model's layer list (:func:`_layer_kinds`; any order: a
    ReLU last, Linear after Linear, consecutive ReLUs) and ``params`` the
    ``(W, b)`` of its Linear and Conv2d layers in order.  Rows stay flat
    (C order), so ``flatten`` and ``unflatten`` are the identity.  The
    gradient is the plain chain rule over that list, from a table of one
    forward and one backward rule per layer kind (:attr:`RULES`): forward in
    order, backward in reverse, each layer's backward fed the input it saw in
    the forward pass.  The first ``frozen`` layers are fixed: no gradient, no
    step changes them.  It shares no code with the layers, the fused kernel
    or the model audit's view, save the window geometry (an index map).
    """

    #: per layer kind: (forward(a, p, window) -> output,
    #:                  backward(a, g, p, window, per_sample) -> (input grad, param grads))
    RULES = {
        "linear": ("_linear_forward", "_linear_backward"),
        "relu": ("_relu_forward", "_relu_backward"),
        "conv": ("_conv_forward", "_conv_backward"),
        "avgpool": ("_avgpool_forward", "_avgpool_backward"),
        "maxpool": ("_maxpool_forward", "_maxpool_backward"),
        "flatten": ("_identity_forward", "_identity_backward"),
        "unflatten": ("_identity_forward", "_identity_backward"),
    }

    def __init__(
        self, kinds, params, loss: str, exact: bool, rules: Rules | None = None, frozen: int = 0
    ):
        kinds = list(kinds)
        unknown = sorted({_kind(k) for k in kinds} - set(self.RULES))
        if unknown:
            raise ValueError(f"the reference has no rule for layers of kind {unknown}")
        n_param = sum(_kind(k) in PARAMETRIC for k in kinds)
        if n_param != len(params):
            raise ValueError(f"{n_param} Linear/Conv2d layers but {len(params)} parameter pairs")
        self.kinds, self.loss, self.exact = kinds, loss, exact
        self.frozen = frozen
        # per parameter pair: trainable (its layer is not frozen)
        self.trainable = [
            i >= frozen for i, k in enumerate(kinds) if _kind(k) in PARAMETRIC
        ]  # fmt: skip
        self.rules = rules if rules is not None else Rules()
        self.velocity = None  # momentum's velocity, per trainable pair (None before the first step)
        self.g = require_gmpy2() if exact else None
        if exact:
            self.q = np.frompyfunc(self.g.mpq, 1, 1)
            self.zero = self.g.mpq(0)
            self.params = [(self._q(w), self._q(b)) for w, b in params]
        else:
            self.zero = 0.0
            self.params = [(w.astype(np.float64), b.astype(np.float64)) for w, b in params]

    def _q(self, a):
        return np.asarray(self.q(np.asarray(a, dtype=np.float64)), dtype=object)

    def _over(self, a, n: int):
        """``a / n``: exact (rationals) or rounded once per entry (float64)."""
        return a * self.g.mpq(1, n) if self.exact else a / n

    # the table ------------------------------------------------------------------
    def _linear_forward(self, a, p, win):
        w, b = p
        return a @ w + b

    def _linear_backward(self, a, g, p, win, per_sample):
        """``dx = g W^T``, ``dW = a^T g``, ``db = sum_rows g``; per row ``a_i g_i^T``, ``g_i``."""
        if per_sample:
            return g @ p[0].T, (a[:, :, None] * g[:, None, :], g)
        return g @ p[0].T, (a.T @ g, g.sum(axis=0))

    def _relu_forward(self, a, p, win):
        return np.where(a > 0, a, self.zero) if self.exact else np.maximum(a, 0.0)

    def _relu_backward(self, a, g, p, win, per_sample):
        """``g * relu'(a)`` with ``relu'(a) = [a > 0]``."""
        return (np.where(a > 0, g, self.zero) if self.exact else g * (a > 0)), None

    def _identity_forward(self, a, p, win):
        return a

    def _identity_backward(self, a, g, p, win, per_sample):
        return g, None

    def _conv_forward(self, a, p, win):
        """``z[o, pos] = sum_{c,u,v} W[o, c, u, v] x[c, pos + (u, v)] + b[o]`` at every window."""
        w, b = p
        z = win.patches(a, self.zero) @ w.reshape(w.shape[0], -1).T + b  # (N, P, out)
        return z.transpose(0, 2, 1).reshape(a.shape[0], -1)

    def _conv_backward(self, a, g, p, win, per_sample):
        """``dW[o, k] = sum_{pos} g[o, pos] X[pos, k]``, ``db[o] = sum_pos g[o, pos]``, and the
        input gradient ``g W`` at every window, summed back into the input (the adjoint)."""
        w = p[0]
        out = w.shape[0]
        cols = win.patches(a, self.zero)  # (N, P, K)
        g3 = g.reshape(g.shape[0], out, -1).transpose(0, 2, 1)  # (N, P, out)
        w_mat = w.reshape(out, -1)  # (out, K)
        if per_sample:
            dw = (g3.transpose(0, 2, 1) @ cols).reshape(g.shape[0], *w.shape)
            grads = (dw, g3.sum(axis=1))
        else:
            k = cols.shape[2]
            dw = g3.reshape(-1, out).T @ cols.reshape(-1, k)
            grads = (dw.reshape(w.shape), g3.sum(axis=(0, 1)))
        return win.scatter(g3 @ w_mat, self.zero), grads

    def _avgpool_forward(self, a, p, win):
        return self._over(win.patches(a, self.zero).sum(axis=2), win.index.shape[1])

    def _avgpool_backward(self, a, g, p, win, per_sample):
        """Each window's entries take ``g / (kh kw)``."""
        share = self._over(g, win.index.shape[1])
        return win.scatter(np.repeat(share[..., None], win.index.shape[1], axis=2), self.zero), None

    def _maxpool_forward(self, a, p, win):
        return win.patches(a, self.zero).max(axis=2)

    def _maxpool_backward(self, a, g, p, win, per_sample):
        """The first maximum of each window (row-major) takes the gradient (PyTorch's choice;
        with ties the derivative is not unique, and the box covers any choice)."""
        cols = win.patches(a, self.zero)
        first = cols.argmax(axis=2)[..., None]
        parts = np.where(np.arange(cols.shape[2]) == first, g[..., None], self.zero)
        return win.scatter(parts, self.zero), None

    # the loss ---------------------------------------------------------------------
    def _out_grad(self, z, y):
        """``d loss_i / d z_i`` per row (not yet divided by the batch size)."""
        if not self.exact:
            if self.loss == "bce":
                return (1 / (1 + np.exp(-z[:, 0])) - y)[:, None]
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            return p - np.eye(z.shape[1])[y]
        g = self.g
        out = np.empty(z.shape, dtype=object)
        with g.context(precision=EXACT_BITS):
            for r in range(z.shape[0]):
                if self.loss == "bce":
                    s = 1 / (1 + g.exp(-g.mpfr(z[r, 0])))
                    out[r, 0] = g.mpq(*s.as_integer_ratio()) - int(y[r])
                else:
                    zr = [g.mpfr(v) for v in z[r]]
                    top = max(zr)
                    e = [g.exp(v - top) for v in zr]
                    tot = sum(e)
                    for c in range(z.shape[1]):
                        out[r, c] = g.mpq(*(e[c] / tot).as_integer_ratio()) - int(c == y[r])
        return out

    def _run_forward(self, x):
        """The output on ``x``, and per layer ``(kind, params or None, its input, window)``."""
        if self.exact and np.asarray(x).dtype != object:
            x = self._q(x)
        it = iter(self.params)
        tape, a = [], x
        for entry in self.kinds:
            kind = _kind(entry)
            p = next(it) if kind in PARAMETRIC else None
            win = None if isinstance(entry, str) else entry[1]
            tape.append((kind, p, a, win))
            a = getattr(self, self.RULES[kind][0])(a, p, win)
        return a, tape

    def logits(self, x):
        """The model's output on ``x``."""
        return self._run_forward(x)[0]

    def chunk_rows(self, x) -> int:
        """Rows per chunk for passes over many rows: ~:data:`CHUNK_FLOATS` floats of
        activations and windows at a time."""
        if not x.shape[0]:
            return 1
        _, tape = self._run_forward(x[:1])
        per_row = sum(int(np.size(a)) for _, _, a, _ in tape)
        per_row += max((win.index.size for *_, win in tape if win is not None), default=0)
        return max(1, CHUNK_FLOATS // per_row)

    def by_chunks(self, fn, *arrays):
        """``fn(*arrays)`` on chunks of rows (:meth:`chunk_rows`), joined along the rows."""
        n, rows = arrays[0].shape[0], self.chunk_rows(arrays[0])
        if n <= rows:
            return fn(*arrays)
        return np.concatenate([fn(*(a[s : s + rows] for a in arrays)) for s in range(0, n, rows)])

    def input_signs(self, x, y) -> np.ndarray:
        """The sign of each row's loss gradient with respect to its input, chunk by chunk (a
        chunk's mean loss: the same signs as the whole set's, up to underflow)."""
        return self.by_chunks(lambda a, b: np.sign(self.gradients(a, b)[1]), x, y)

    def _backward(self, x, y, per_sample: bool, need_input: bool = True):
        """Parameter gradients (one ``(dW, db)`` per trainable Linear / Conv2d) and the input
        gradient (None unless ``need_input``: the pass then stops at the frozen prefix).

        ``per_sample``: each row's ``d loss_i / d theta`` (leading axis: rows,
        no ``1/m``); else the mean loss's.
        """
        out, tape = self._run_forward(x)
        m = out.shape[0]
        g = self._out_grad(out, y)
        if not per_sample:
            g = self._over(g, m)
        grads = []
        for i in reversed(range(len(tape))):  # backward, in reverse
            if i < self.frozen and not need_input:
                g = None
                break
            kind, p, a_in, win = tape[i]
            g, pg = getattr(self, self.RULES[kind][1])(a_in, g, p, win, per_sample)
            if pg is not None and i >= self.frozen:
                grads.append(pg)
        grads.reverse()
        return grads, g

    def gradients(self, x, y):
        """Mean-loss parameter gradients (one ``(dW, db)`` per trainable Linear / Conv2d) and
        the input gradient."""
        return self._backward(x, y, per_sample=False)

    def sample_gradients(self, x, y):
        """Per-sample parameter gradients ``d loss_i / d theta`` (leading axis: rows)."""
        return self._backward(x, y, per_sample=True, need_input=False)[0]

    def _clip(self, grads):
        """Each row's gradient clipped by the rules (``clamp`` per entry, or ``norm``)."""
        gamma, method = self.rules.clip, self.rules.clip_method
        flat = [p for pair in grads for p in pair]
        if method == "clamp":
            if self.exact:
                gq = self.g.mpq(float(gamma))
                clamp = lambda a: np.where(a > gq, gq, np.where(a < -gq, -gq, a))  # noqa: E731
            else:
                clamp = lambda a: np.clip(a, -gamma, gamma)  # noqa: E731
            flat = [clamp(p) for p in flat]
        else:  # norm: g_i * min(1, gamma / ||g_i||_2), the norm over all parameters
            m = flat[0].shape[0]
            sq = sum((p.reshape(m, -1) ** 2).sum(axis=1) for p in flat)
            if self.exact:
                g = self.g
                factor = np.empty(m, dtype=object)
                with g.context(precision=EXACT_BITS):
                    for r in range(m):
                        s = g.sqrt(g.mpfr(sq[r]))
                        f = g.mpfr(float(gamma)) / s if s > 0 else g.mpfr(1)
                        factor[r] = g.mpq(1) if f >= 1 else g.mpq(*f.as_integer_ratio())
            else:
                with np.errstate(divide="ignore"):
                    factor = np.minimum(1.0, gamma / np.sqrt(sq))
            flat = [p * factor.reshape(-1, *([1] * (p.ndim - 1))) for p in flat]
        return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]

    def batch_gradient(self, x, y):
        """The batch's gradient under the rules: per-sample gradients clipped, then their mean."""
        if self.rules.clip is None:
            return self._backward(x, y, per_sample=False, need_input=False)[0]
        grads = self._clip(self.sample_gradients(x, y))
        m = np.asarray(y).shape[0]
        return [(self._over(gw.sum(axis=0), m), self._over(gb.sum(axis=0), m)) for gw, gb in grads]

    def _const(self, value: Fraction):
        """An exact constant: itself (rationals) or its nearest float (float64)."""
        return self.g.mpq(value.numerator, value.denominator) if self.exact else float(value)

    def step(self, x, y, rate: Fraction) -> None:
        """One SGD step at the exact ``rate`` under the rules (PyTorch's convention).

        ``v <- mu v + g`` (``v = g`` at the first step); the direction is ``v``,
        or ``g + mu v`` (Nesterov); ``theta <- (1 - rate wd) theta - rate d``.
        Float64 takes the nearest float of each exact constant.
        """
        grads = self.batch_gradient(x, y)
        rules = self.rules
        lam = self._const(rate)
        if rules.momentum:
            mu = self._const(Fraction(rules.momentum))
            if self.velocity is None:
                self.velocity = grads
            else:
                self.velocity = [
                    (mu * vw + gw, mu * vb + gb)
                    for (vw, vb), (gw, gb) in zip(self.velocity, grads, strict=True)
                ]
            if rules.nesterov:
                grads = [
                    (gw + mu * vw, gb + mu * vb)
                    for (vw, vb), (gw, gb) in zip(self.velocity, grads, strict=True)
                ]
            else:
                grads = self.velocity
        decay = 1 - rate * Fraction(rules.weight_decay)
        c = self._const(decay)
        shrink = (lambda a: c * a) if decay != 1 else (lambda a: a)  # noqa: E731
        it = iter(grads)
        new = []
        for (w, b), trainable in zip(self.params, self.trainable, strict=True):
            if trainable:
                gw, gb = next(it)
                w, b = shrink(w) - lam * gw, shrink(b) - lam * gb
            new.append((w, b))
        self.params = new

    def finite(self) -> bool:
        return self.exact or all(
            np.isfinite(w).all() and np.isfinite(b).all() for w, b in self.params
        )


FAR = (1e3, 1e6)  # how far poisoned features move when epsilon = inf (without a data domain)
SCORE_FLOATS = 2**22  # per-sample gradient entries per chunk when ranking the points
CHUNK_FLOATS = 2**23  # activations and windows per chunk of rows (_Reference.chunk_rows)


@dataclass
class _Run:
    kind: str
    ref: _Reference
    values: np.ndarray | None  # the moved rows' features (None: re-poisoned every step)
    labels: np.ndarray  # the training labels, some flipped
    exact: bool
    moved: np.ndarray  # the rows whose features the attack moves
    flipped: int = 0  # how many labels it changed
    far: float = 0.0  # step mode with epsilon = inf: how far the moved rows go
    pos: np.ndarray | None = None  # per training row, its row in values (-1: not moved)
    seen: dict = field(default_factory=dict)  # step -> (predictions, misclassified) on test
    max_excursion: float = -math.inf
    outside: int = 0
    diverged: bool = False
    certified_flipped: int | None = None
    uncertified_flipped: int | None = None


def _move(x, eps, domain, direction, far: float = 0.0):
    """Rows ``x`` moved along ``direction`` (entries in [-1, 1]) within the threat model.

    Finite ``eps``: by ``eps * direction``, clipped to the ball (float64
    rounding never leaves the training box, which is rounded outward).
    ``eps = inf``: to ``x + far * direction``.  Then clipped to the domain.
    """
    if math.isfinite(eps):
        p = np.clip(x + eps * direction, x - eps, x + eps)
    else:
        p = x + far * direction
    return p if domain is None else np.clip(p, domain[0], domain[1])


def _patch(base, idx, moved, values, pos):
    """Rows ``idx`` of ``base`` with the moved ones replaced by their poisoned ``values``."""
    xb = base[idx].copy()
    m = moved[idx]
    if m.any():
        xb[m] = values[pos[idx[m]]]
    return xb


def _excursion(value, lo, hi, exact, tiny) -> tuple[float, int]:
    """``max((lo - p, p - hi) / max(width, tiny))`` and the number of entries outside."""
    width = np.maximum(hi - lo, tiny)
    if exact:  # exact rational differences; only the normalisation is rounded
        g = require_gmpy2()
        q = np.frompyfunc(g.mpq, 1, 1)
        lq, hq = np.asarray(q(lo), dtype=object), np.asarray(q(hi), dtype=object)
        d = np.maximum(lq - value, value - hq)
        outside = int((d > 0).sum())
        ratio = np.array([float(v) for v in d.ravel()]).reshape(d.shape) / width
        ex = float(ratio.max()) if ratio.size else -math.inf
        return (max(ex, 5e-324) if outside else ex), outside
    with np.errstate(invalid="ignore"):
        d = np.maximum(lo - value, value - hi)
        ratio = np.where(np.isfinite(width), d / width, np.where(d > 0, math.inf, -math.inf))
    outside = int((d > 0).sum())
    return float(ratio.max()) if d.size else -math.inf, outside


def _flip(y, rows, classes: int, target, logits):
    """``y`` with the labels of ``rows`` changed: to ``target``, else the most likely other class.

    ``logits``: the initial model's (float64) on every row; binary labels flip to ``1 - y``.
    """
    yp = y.copy()
    if not len(rows):
        return yp
    if target is not None:
        yp[rows] = target
    elif classes == 2:
        yp[rows] = 1 - y[rows]
    else:
        z = np.array(logits[rows], dtype=np.float64)
        z[np.arange(len(rows)), y[rows]] = -np.inf
        yp[rows] = z.argmax(axis=1)
    return yp


def _choose(order, cand, kf: int, kl: int, paired: bool):
    """The feature rows and label rows an attack takes, in the order of preference ``order``.

    ``cand`` marks the rows whose label can change.  ``paired``: the label
    rows and the feature rows are nested (at most ``max(kf, kl)`` rows in all).
    """
    labelable = [int(r) for r in order if cand[r]]
    if paired and kl > kf:
        lab = labelable[:kl]
        return np.array(lab[:kf], dtype=np.int64), np.array(lab, dtype=np.int64)
    feat = np.asarray(order[:kf], dtype=np.int64)
    if paired:
        return feat, np.array([r for r in feat if cand[r]][:kl], dtype=np.int64)
    return feat, np.array(labelable[:kl], dtype=np.int64)


def _scores(ref: _Reference, x, y) -> np.ndarray:
    """Each row's clean per-sample gradient norm (unclipped) at the initial model: its influence."""
    pairs = [pair for pair, t in zip(ref.params, ref.trainable, strict=True) if t]
    size = sum(w.size + b.size for w, b in pairs)
    rows = max(1, SCORE_FLOATS // size)
    out = []
    with np.errstate(all="ignore"):
        for s in range(0, x.shape[0], rows):
            grads = ref.sample_gradients(x[s : s + rows], y[s : s + rows])
            m = min(rows, x.shape[0] - s)
            out.append(sum((p.reshape(m, -1) ** 2).sum(axis=1) for pair in grads for p in pair))
    return np.concatenate(out) if out else np.zeros(0)


class Attack(NamedTuple):
    """One concrete poisoning: the rows whose features move (a mask) and their new features
    (in row order; None: re-poisoned every step, ``far`` away when ``epsilon = inf``), and
    the labels (some flipped)."""

    kind: str
    values: np.ndarray | None
    labels: np.ndarray
    moved: np.ndarray
    far: float = 0.0

    def inputs(self, x) -> np.ndarray:
        """The poisoned training inputs (``x`` with the moved rows replaced)."""
        out = np.array(x, copy=True)
        out[self.moved] = self.values
        return out


def plan_attacks(
    xd, y, threat: ThreatModel, trusted, probe: _Reference, classes: int, sampler,
    vertices: int = 2, randoms: int = 2, adversarial: bool = True,
) -> list[Attack]:  # fmt: skip
    """The concrete poisonings of the training set ``(xd, y)`` (float64) within ``threat``.

    The first is the clean data.  ``trusted`` is a boolean mask of the rows
    never touched; ``probe`` the reference at the initial model (influence
    scores, gradient signs, the most likely other class); ``sampler`` draws
    the random choices.  See :func:`audit_training` for the kinds.
    """
    n = xd.shape[0]
    eps, domain = threat.epsilon, threat.domain
    with np.errstate(all="ignore"):
        sign0 = probe.input_signs(xd, y)
        logits0 = np.asarray(probe.by_chunks(probe.logits, xd), dtype=np.float64)
    none = np.zeros(n, dtype=bool)
    d = xd.shape[1]
    out = [Attack("clean", xd[:0].copy(), y.copy(), none)]

    attackable = np.flatnonzero(~trusted)
    # FullCert with epsilon 0 still runs its attacks (by 0: the clean data, a sanity check)
    k = attackable.size if threat.is_fullcert else threat.feature_budget(n)
    kf = min(k, attackable.size)
    target = threat.label_target
    cand = np.ones(n, dtype=bool) if target is None else (y != target)
    cand &= ~trusted
    kl = min(threat.label_flips, int(cand.sum()))
    if kf == attackable.size and kl == 0:  # every attackable row moves: nothing to choose
        selections = {"all": attackable}
    else:
        score = _scores(probe, xd, y)
        selections = {
            "influential": attackable[np.argsort(-score[attackable], kind="stable")],
            "random": sampler.permutation(attackable),
        }
    for sel, order in selections.items():
        feat, lab = _choose(order, cand, kf, kl, threat.paired)
        moved = np.zeros(n, dtype=bool)
        moved[feat] = True
        xm, k = xd[moved], int(moved.sum())
        labels = _flip(y, lab, classes, target, logits0)
        tag = "" if sel == "all" else f"{sel}/"
        plus = "+flip" if kl else ""
        if kf:
            modes = []  # (name, direction, far)
            if math.isfinite(eps):
                if sel == "all":
                    modes += [("plus", np.ones_like(xm), 0.0), ("minus", -np.ones_like(xm), 0.0)]
                modes += [
                    ("vertex", sampler.choice([-1.0, 1.0], size=(k, d)), 0.0)
                    for _ in range(vertices)
                ]
                modes += [
                    ("random", sampler.uniform(-1.0, 1.0, size=(k, d)), 0.0) for _ in range(randoms)
                ]
                if adversarial:
                    modes.append(("adversarial-init", sign0[moved], 0.0))
            else:
                away = np.where(sign0[moved] == 0, 1.0, sign0[moved])
                if domain is None:
                    modes += [(f"far-{f:.0e}".replace("+0", ""), away, f) for f in FAR]
                    far = FAR[-1]
                else:  # as far as the domain goes: its corners
                    far = max(FAR[-1], 2 * (domain[1] - domain[0]))
                    modes.append(("corner", away, far))
                modes += [
                    ("far-vertex" if domain is None else "corner-vertex",
                     sampler.choice([-1.0, 1.0], size=(k, d)), far)
                    for _ in range(vertices)
                ]  # fmt: skip
            for name, direction, far in modes:
                values = _move(xm, eps, domain, direction, far)
                out.append(Attack(f"{tag}{name}{plus}", values, labels, moved))
            if not math.isfinite(eps) and domain is not None:
                for _ in range(randoms):  # anywhere in the domain
                    values = sampler.uniform(*domain, size=(k, d))
                    out.append(Attack(f"{tag}random{plus}", values, labels, moved))
            if adversarial:
                far = 0.0 if math.isfinite(eps) else FAR[0] if domain is None else far
                out.append(Attack(f"{tag}adversarial-step{plus}", None, labels, moved, far))
        if kl:
            out.append(Attack(f"{tag}flip", xd[:0].copy(), labels, none))
    return out


def audit_training(
    model: Sequential,
    x,
    y,
    threat: ThreatModel,
    config,
    *,
    pretrain_x=None,
    pretrain_y=None,
    test_x=None,
    test_y=None,
    val_x=None,
    val_y=None,
    trusted=None,
    vertices: int = 2,
    randoms: int = 2,
    adversarial: bool = True,
    exact: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Train ``model`` with ``config`` and attack it with concrete poisoned SGD runs.

    Each attack poisons the training set within ``threat`` and replays
    training in float64 with the independent reference SGD (same initial
    model, batch order, learning rates and rules: per-sample clipping, weight
    decay, momentum, Nesterov, rate decay, a fixed step count); after every
    step each concrete parameter must lie inside the interval parameters.

    Which rows: all attackable rows (FullCert), or k of them (``poison_count``;
    ``label_flips``), chosen ``influential`` (the largest clean per-sample
    gradient norms at the initial model) and ``random``; ``trusted`` rows
    (a boolean mask) are never touched.  How their features move: finite
    ``epsilon``: all ``+eps`` / ``-eps`` (FullCert only), ``vertices`` random
    vertices, ``randoms`` random points of the ball, ``adversarial-init``
    (along the sign of the loss gradient at the initial model) and
    ``adversarial-step`` (re-poisoned at every step at the current model);
    ``epsilon = inf``: ``far-1e3`` / ``far-1e6`` (that far along the gradient
    sign), ``far-vertex`` (random signs), and ``adversarial-step`` 1e3 away,
    all clipped to the domain (its corners) when there is one.  Labels flip
    (to ``label_target``, else ``1 - y`` or the most likely other class) on
    their own rows in every attack, paired or not as the threat model says,
    and alone (``flip``).  ``exact`` adds exact rational SGD of the clean
    run and of the first attack of each kind (tiny configurations only; not
    the attacks that move rows 1e6 away, whose exact sigmoids have millions
    of bits).

    With ``test_x``/``test_y``: the kept model is certified on them, and
    each float64 run's model at the kept step, the nominal model trained on
    that poisoned data, must classify every certified point correctly, also
    when a test radius moves it along that model's loss gradient sign
    (``certified_flipped`` 0); ``uncertified_flipped`` counts the uncertified
    points whose prediction it changed from the clean run's.  The kept step
    is the last one, or with ``val_x``/``val_y`` (and no fixed ``steps``)
    the one ``train`` keeps by validation (``kept_step``).  Returns a
    JSON-ready dict; ``passed`` needs no parameter ever outside,
    ``max_excursion <= 0`` and no certified flip.
    """
    from ..experiment.describe import describe_threat

    t0 = time.perf_counter()
    dtype = np.dtype(model.dtype)
    xd = np.asarray(x, dtype=dtype).astype(np.float64)  # the inputs the model trains on
    y = np.asarray(y).astype(np.int64)
    n = xd.shape[0]
    eps, domain = threat.epsilon, threat.domain
    tiny = float(np.finfo(dtype).tiny)
    rules = Rules.of(config)
    trusted_mask = np.zeros(n, dtype=bool) if trusted is None else np.asarray(trusted, dtype=bool)

    # The initial model, the batch order and the learning rates of train().
    rng = np.random.default_rng(config.seed)
    start = model
    if config.pretrain_epochs and pretrain_x is not None:
        start = copy.deepcopy(model)
        pretrain_nominal(start, pretrain_x, pretrain_y, config, rng)
    init = _layer_params(start)
    kinds = _layer_kinds(model)
    frozen = model.frozen
    names = _param_names(model)
    steps = getattr(config, "steps", None)
    per_epoch = -(-n // config.batch_size)
    epochs = config.epochs if steps is None else -(-steps // per_epoch)
    batches = [b for _ in range(epochs) for b in batch_indices(n, config.batch_size, rng)]
    if steps is not None:
        batches = batches[:steps]
    classes = max(model.out_features, 2)

    probe = _Reference(kinds, init, config.loss, False, rules, frozen)

    sampler = np.random.default_rng(seed)
    attacks = plan_attacks(
        xd, y, threat, trusted_mask, probe, classes, sampler, vertices, randoms, adversarial
    )
    runs = [
        _Run(a.kind, _Reference(kinds, init, config.loss, False, rules, frozen), a.values, a.labels,
             False, a.moved, int((a.labels != y).sum()), a.far)
        for a in attacks
    ]  # fmt: skip
    if exact:  # the clean run and the first dataset of each kind, in rationals
        g = require_gmpy2()
        q = np.frompyfunc(g.mpq, 1, 1)
        seen = set()
        for a in attacks:
            # far-away rows (beyond FAR[0]) make the sigmoid / softmax rationals enormous
            if a.values is None or a.kind in seen or np.abs(a.values).max(initial=0) > 2 * FAR[0]:
                continue
            seen.add(a.kind)
            data = np.asarray(q(a.values), dtype=object).reshape(a.values.shape)
            ref = _Reference(kinds, init, config.loss, True, rules, frozen)
            runs.append(
                _Run(a.kind, ref, data, a.labels, True, a.moved, int((a.labels != y).sum()))
            )
        xq = np.asarray(q(xd), dtype=object).reshape(xd.shape)
    for run in runs:
        run.pos = np.full(n, -1, dtype=np.int64)
        run.pos[run.moved] = np.arange(int(run.moved.sum()))

    state = {"steps": 0, "clean_vs_nominal": 0.0, "frozen_changed": 0}
    init_flat = [p for pair in init for p in pair]
    frozen_names = {k for k in names if int(k.split(".")[0]) < frozen}
    n_steps = len(batches)
    # with model selection the kept step is known at the end only: test every step
    test = None if test_x is None else _TestSet(model, test_x, test_y, threat)
    selects = test is not None and val_x is not None and steps is None
    if selects:
        for run in runs:
            test.look(run, 0)

    def on_step(step, box, nominal):
        idx = batches[step - 1]
        lam = learning_rate(config, step)
        bk = next(iter(box.values())).backend
        los = [np.asarray(bk.to_host(box[k].lo), dtype=np.float64) for k in names]
        his = [np.asarray(bk.to_host(box[k].hi), dtype=np.float64) for k in names]
        for k, lo, hi, start in zip(names, los, his, init_flat, strict=True):
            if k in frozen_names:  # a frozen parameter: the initial point, box and nominal alike
                now = np.asarray(bk.to_host(nominal[k]), dtype=np.float64)
                state["frozen_changed"] += int(
                    ((lo != start) | (hi != start) | (now != start)).sum()
                )
        for run in runs:
            if run.diverged:
                continue
            with np.errstate(all="ignore"):
                if run.values is None:  # re-poison the batch's rows at the current concrete model
                    _, gxb = run.ref.gradients(xd[idx], y[idx])
                    s = np.sign(gxb)
                    if not math.isfinite(eps):
                        s = np.where(s == 0, 1.0, s)
                    xb, m = xd[idx].copy(), run.moved[idx]
                    xb[m] = _move(xb[m], eps, domain, s[m], run.far)
                else:
                    xb = _patch(xq if run.exact else xd, idx, run.moved, run.values, run.pos)
                run.ref.step(xb, run.labels[idx], lam)
            if not run.ref.finite():
                run.diverged = True
                continue
            flat = [p for pair in run.ref.params for p in pair]
            for name, value, lo, hi in zip(names, flat, los, his, strict=True):
                if name in frozen_names:  # fixed points: checked above (frozen_changed)
                    continue
                ex, out = _excursion(value, lo, hi, run.exact, tiny)
                run.max_excursion = max(run.max_excursion, ex)
                run.outside += out
        clean = runs[0].ref.params
        flat_nom = [np.asarray(bk.to_host(nominal[k]), dtype=np.float64) for k in names]
        flat_clean = [p for pair in clean for p in pair]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(flat_clean, flat_nom, strict=True))
        state["clean_vs_nominal"] = max(state["clean_vs_nominal"], diff)
        state["steps"] = step
        if selects:
            for run in runs:
                test.look(run, step)
        if progress is not None:
            progress(step, n_steps)

    result = train(
        model, x, y, threat, config, val_x, val_y, pretrain_x=pretrain_x,
        pretrain_y=pretrain_y, on_step=on_step, trusted=trusted,
    )  # fmt: skip
    kept = result.best.get("step", state["steps"]) if selects else state["steps"]

    flips = None
    if test is not None and not result.stopped:
        if not selects:
            for run in runs:
                test.look(run, kept)
        flips = test.flips(model, runs, kept)

    by_kind: dict[str, dict] = {}
    for run in runs:
        key = run.kind + (" (exact)" if run.exact else "")
        row = by_kind.setdefault(
            key,
            {
                "runs": 0, "features": int(run.moved.sum()), "labels": run.flipped,
                "max_excursion": -math.inf, "outside": 0, "diverged": 0,
                "certified_flipped": None, "uncertified_flipped": None,
            },
        )  # fmt: skip
        row["runs"] += 1
        row["max_excursion"] = max(row["max_excursion"], run.max_excursion)
        row["outside"] += run.outside
        row["diverged"] += int(run.diverged)
        for name in ("certified_flipped", "uncertified_flipped"):
            v = getattr(run, name)
            if v is not None:
                row[name] = v if row[name] is None else max(row[name], v)
    for row in by_kind.values():
        if not math.isfinite(row["max_excursion"]):
            row["max_excursion"] = None
    checked = [r for r in runs if not r.diverged]
    max_ex = max((r.max_excursion for r in checked), default=-math.inf)
    outside = sum(r.outside for r in runs)
    certified_flipped = None if flips is None else max(r.certified_flipped or 0 for r in runs)
    report = {
        "threat": threat.to_dict(),
        "threat_description": describe_threat(threat, n, int(trusted_mask.sum())),
        "steps": state["steps"],
        "planned_steps": n_steps,
        "runs": len(runs),
        "exact_runs": sum(r.exact for r in runs),
        "max_excursion": max_ex if math.isfinite(max_ex) else None,
        "outside": outside,
        "frozen": frozen,
        "frozen_changed": state["frozen_changed"],
        "clean_vs_nominal": state["clean_vs_nominal"],
        "epsilon": eps,
        "train_size": n,
        "trusted": int(trusted_mask.sum()),
        "dtype": str(dtype),
        "fused": result.engine == "fused",
        "by_kind": by_kind,
        "kept_step": kept,
        "test_size": None if flips is None else flips["n"],
        "test_certified": None if flips is None else flips["certified"],
        "certified_flipped": certified_flipped,
        "uncertified_flipped": None
        if flips is None
        else max((r.uncertified_flipped or 0) for r in runs),
        "stopped": result.stopped,
    }
    report["passed"] = (
        outside == 0
        and (max_ex <= 0 or not math.isfinite(max_ex))
        and not certified_flipped
        and not state["frozen_changed"]
    )
    report["seconds"] = time.perf_counter() - t0
    return report


class _TestSet:
    """The certified-flip check on the test points ``x``, ``y`` under the threat model."""

    def __init__(self, model, x, y, threat: ThreatModel):
        self.x, self.y, self.threat = x, np.asarray(y).astype(np.int64), threat
        self.given = np.asarray(x, dtype=np.float64)  # the test box is around these
        self.rounded = np.asarray(x, dtype=np.dtype(model.dtype)).astype(np.float64)

    def look(self, run: _Run, step: int) -> None:
        """Record ``run``'s predictions at ``step`` and which points it misclassifies.

        Misclassified: at the point itself or, with a test radius, at the
        point moved by it along the sign of the run's loss gradient (FGSM).
        """
        from ..certify import predict

        if run.exact or run.diverged:
            return
        with np.errstate(all="ignore"):
            logits = lambda a: np.asarray(run.ref.by_chunks(run.ref.logits, a), np.float64)  # noqa: E731
            pred = predict(logits(self.rounded))
            wrong = pred != self.y
            eps = self.threat.inference_epsilon
            if eps > 0:
                signs = run.ref.input_signs(self.given, self.y)
                moved = _move(self.given, eps, self.threat.domain, signs)
                wrong |= predict(logits(moved)) != self.y
        run.seen[step] = (pred, wrong)

    def flips(self, model, runs: list[_Run], step: int) -> dict:
        """Certify the kept ``model``; each float64 run's flips at ``step``, in place.

        A run's parameters are the nominal model trained on its poisoned data
        (float64).  ``certified_flipped``: certified points it misclassifies
        (the certificate says every model in the box classifies them, and
        every input of their test box, correctly); ``uncertified_flipped``:
        uncertified points whose prediction differs from the clean run's.
        """
        from ..certify import certify

        cert = certify(model, self.x, self.y, self.threat).certified
        clean = runs[0].seen[step][0]
        for run in runs:
            if step in run.seen:
                pred, wrong = run.seen[step]
                run.certified_flipped = int((cert & wrong).sum())
                run.uncertified_flipped = int((~cert & (pred != clean)).sum())
        return {"n": int(self.y.size), "certified": int(cert.sum())}
