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
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..layers import Linear, ReLU, Sequential
from ..threat import ThreatModel
from ..train import batch_indices, pretrain_nominal, train
from .oracle import require_gmpy2

EXACT_BITS = 300  # bits of sigmoid / softmax in the exact rational SGD


def _layer_kinds(model: Sequential) -> list[str]:
    """``model``'s layer list as kinds of the reference's table: ``"linear"`` / ``"relu"``."""
    kinds = []
    for layer in model.layers:
        if type(layer) is Linear:
            kinds.append("linear")
        elif type(layer) is ReLU:
            kinds.append("relu")
        else:
            raise ValueError(f"the audit supports Linear/ReLU stacks, not {type(layer).__name__}")
    return kinds


def _linear_params(model: Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
    """The nominal ``(W, b)`` of each Linear layer of ``model``, in order (float64 host copies)."""
    bk = model.backend
    host = lambda a: np.array(bk.to_host(a), dtype=np.float64)  # noqa: E731
    return [
        (host(layer.nominal["weight"]), host(layer.nominal["bias"]))
        for layer in model.layers
        if type(layer) is Linear
    ]


class _Reference:
    """Independent SGD on a stack of Linear and ReLU layers, in float64 or rationals (``mpq``).

    ``kinds`` is the model's layer list (``"linear"`` / ``"relu"``, any
    order: a ReLU last, Linear after Linear, consecutive ReLUs) and
    ``params`` the ``(W, b)`` of its Linear layers in order.  The gradient
    is the plain chain rule over that list, from a table of one forward and
    one backward rule per layer kind (:attr:`RULES`): forward in order,
    backward in reverse, each layer's backward fed the input it saw in the
    forward pass.  It shares no code with the layers, the fused kernel or
    the MLP view (:class:`Dense`) of the model audit.
    """

    #: per layer kind: (forward(a, p) -> output, backward(a, g, p) -> (input grad, param grads))
    RULES = {
        "linear": ("_linear_forward", "_linear_backward"),
        "relu": ("_relu_forward", "_relu_backward"),
    }

    def __init__(self, kinds, params, loss: str, exact: bool):
        kinds = list(kinds)
        unknown = sorted(set(kinds) - set(self.RULES))
        if unknown:
            raise ValueError(f"the reference has no rule for layers of kind {unknown}")
        if kinds.count("linear") != len(params):
            raise ValueError(
                f"{kinds.count('linear')} Linear layers but {len(params)} parameter pairs"
            )
        self.kinds, self.loss, self.exact = kinds, loss, exact
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

    # the table ------------------------------------------------------------------
    def _linear_forward(self, a, p):
        w, b = p
        return a @ w + b

    def _linear_backward(self, a, g, p):
        """``dx = g W^T``, ``dW = a^T g``, ``db = sum_rows g``."""
        return g @ p[0].T, (a.T @ g, g.sum(axis=0))

    def _relu_forward(self, a, p):
        return np.where(a > 0, a, self.zero) if self.exact else np.maximum(a, 0.0)

    def _relu_backward(self, a, g, p):
        """``g * relu'(a)`` with ``relu'(a) = [a > 0]``."""
        return (np.where(a > 0, g, self.zero) if self.exact else g * (a > 0)), None

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
        """The output on ``x``, and per layer ``(kind, params or None, its input)``."""
        if self.exact and np.asarray(x).dtype != object:
            x = self._q(x)
        it = iter(self.params)
        tape, a = [], x
        for kind in self.kinds:
            p = next(it) if kind == "linear" else None
            tape.append((kind, p, a))
            a = getattr(self, self.RULES[kind][0])(a, p)
        return a, tape

    def logits(self, x):
        """The model's output on ``x``."""
        return self._run_forward(x)[0]

    def gradients(self, x, y):
        """Mean-loss parameter gradients (one ``(dW, db)`` per Linear) and the input gradient."""
        out, tape = self._run_forward(x)
        m = out.shape[0]
        g = self._out_grad(out, y)
        g = g / m if not self.exact else g * self.g.mpq(1, m)
        grads = []
        for kind, p, a_in in reversed(tape):  # backward, in reverse
            g, pg = getattr(self, self.RULES[kind][1])(a_in, g, p)
            if pg is not None:
                grads.append(pg)
        grads.reverse()
        return grads, g

    def step(self, x, y, rate: Fraction) -> None:
        grads, _ = self.gradients(x, y)
        lam = self.g.mpq(rate.numerator, rate.denominator) if self.exact else float(rate)
        self.params = [
            (w - lam * gw, b - lam * gb)
            for (w, b), (gw, gb) in zip(self.params, grads, strict=True)
        ]

    def finite(self) -> bool:
        return self.exact or all(
            np.isfinite(w).all() and np.isfinite(b).all() for w, b in self.params
        )


@dataclass
class _Run:
    kind: str
    ref: _Reference
    data: np.ndarray | None  # the poisoned training inputs (None: re-poisoned every step)
    exact: bool
    max_excursion: float = -math.inf
    outside: int = 0
    diverged: bool = False


def _poison(x, eps, domain, kind, rng, grad_sign=None):
    if kind == "clean":
        p = x.copy()
    elif kind == "plus":
        p = x + eps
    elif kind == "minus":
        p = x - eps
    elif kind == "vertex":
        p = x + eps * rng.choice([-1.0, 1.0], size=x.shape)
    elif kind == "random":
        p = x + eps * rng.uniform(-1.0, 1.0, size=x.shape)
    elif kind == "adversarial":
        p = x + eps * grad_sign
    else:
        raise ValueError(kind)
    p = np.clip(p, x - eps, x + eps)  # float64 rounding never leaves the box
    return p if domain is None else np.clip(p, domain[0], domain[1])


def _exact_poison(x, eps, domain, signs):
    """``x + eps * signs`` (signs in {-1, 0, 1}) as exact rationals, clipped to the domain."""
    g = require_gmpy2()
    q = np.frompyfunc(g.mpq, 1, 1)
    e = g.mpq(float(eps))
    p = np.asarray(q(x), dtype=object) + np.asarray(signs, dtype=np.int64).astype(object) * e
    if domain is not None:
        a, b = g.mpq(float(domain[0])), g.mpq(float(domain[1]))
        p = np.where(p < a, a, np.where(p > b, b, p))
    return p


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
    d = np.maximum(lo - value, value - hi)
    outside = int((d > 0).sum())
    return float((d / width).max()) if d.size else -math.inf, outside


def audit_training(
    model: Sequential,
    x,
    y,
    threat: ThreatModel,
    config,
    *,
    pretrain_x=None,
    pretrain_y=None,
    vertices: int = 2,
    randoms: int = 2,
    adversarial: bool = True,
    exact: bool = False,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Train ``model`` with ``config`` and check concrete poisoned SGD runs against the box.

    Runs, in float64: the clean data, all features ``+eps``, all ``-eps``,
    ``vertices`` random vertices, ``randoms`` random points of the training
    box, ``adversarial-init`` (each point moved by ``eps`` along the sign of
    its loss gradient at the initial model) and ``adversarial-step`` (every
    batch re-poisoned that way at the current concrete model).  With
    ``exact``, the clean, +eps, -eps, one vertex, one random and the
    adversarial-init datasets also in exact rational SGD (tiny
    configurations only).
    Returns a JSON-ready dict; it passes when ``max_excursion <= 0`` and no
    parameter was ever outside (``passed``).
    """
    t0 = time.perf_counter()
    dtype = np.dtype(model.dtype)
    xd = np.asarray(x, dtype=dtype).astype(np.float64)  # the inputs the model trains on
    y = np.asarray(y)
    eps, domain = threat.epsilon, threat.domain
    tiny = float(np.finfo(dtype).tiny)

    # The initial model, the batch order and the learning rates of train().
    rng = np.random.default_rng(config.seed)
    start = model
    if config.pretrain_epochs and pretrain_x is not None:
        start = copy.deepcopy(model)
        pretrain_nominal(start, pretrain_x, pretrain_y, config, rng)
    init = _linear_params(start)
    kinds = _layer_kinds(model)
    batches = [
        b for _ in range(config.epochs) for b in batch_indices(xd.shape[0], config.batch_size, rng)
    ]

    def rate(step: int) -> Fraction:
        lr = Fraction(config.learning_rate)
        return lr if config.schedule == "constant" else lr / step

    sampler = np.random.default_rng(seed)
    runs: list[_Run] = []
    add = lambda kind, data, ex=False: runs.append(  # noqa: E731
        _Run(kind, _Reference(kinds, init, config.loss, ex), data, ex)
    )
    add("clean", _poison(xd, eps, domain, "clean", sampler))
    add("plus", _poison(xd, eps, domain, "plus", sampler))
    add("minus", _poison(xd, eps, domain, "minus", sampler))
    signs = {}
    for _ in range(vertices):
        s = sampler.choice([-1.0, 1.0], size=xd.shape)
        signs.setdefault("vertex", s)
        add("vertex", _poison(xd, eps, domain, "adversarial", sampler, s))
    for _ in range(randoms):
        add("random", _poison(xd, eps, domain, "random", sampler))
    if adversarial:
        _, gx = _Reference(kinds, init, config.loss, False).gradients(xd, y)
        signs["adversarial-init"] = np.sign(gx)
        add("adversarial-init", _poison(xd, eps, domain, "adversarial", sampler, np.sign(gx)))
        add("adversarial-step", None)
    if exact:
        add("clean", _exact_poison(xd, 0.0, domain, np.zeros_like(xd)), True)
        add("plus", _exact_poison(xd, eps, domain, np.ones_like(xd)), True)
        add("minus", _exact_poison(xd, eps, domain, -np.ones_like(xd)), True)
        if "vertex" in signs:
            add("vertex", _exact_poison(xd, eps, domain, signs["vertex"]), True)
        g = require_gmpy2()
        q = np.frompyfunc(g.mpq, 1, 1)
        add("random", np.asarray(q(_poison(xd, eps, domain, "random", sampler)), object), True)
        if "adversarial-init" in signs:
            add("adversarial-init", _exact_poison(xd, eps, domain, signs["adversarial-init"]), True)

    state = {"steps": 0, "clean_vs_nominal": 0.0}
    n_steps = len(batches)

    def on_step(step, box, nominal):
        idx = batches[step - 1]
        lam = rate(step)
        bk = next(iter(box.values())).backend
        names = list(box)
        los = [np.asarray(bk.to_host(box[k].lo), dtype=np.float64) for k in names]
        his = [np.asarray(bk.to_host(box[k].hi), dtype=np.float64) for k in names]
        for run in runs:
            if run.diverged:
                continue
            if run.data is None:  # re-poison this batch at the current concrete model
                _, gx = run.ref.gradients(xd[idx], y[idx])
                xb = _poison(xd[idx], eps, domain, "adversarial", sampler, np.sign(gx))
            else:
                xb = run.data[idx]
            run.ref.step(xb, y[idx], lam)
            if not run.ref.finite():
                run.diverged = True
                continue
            flat = [p for pair in run.ref.params for p in pair]
            for value, lo, hi in zip(flat, los, his, strict=True):
                ex, out = _excursion(value, lo, hi, run.exact, tiny)
                run.max_excursion = max(run.max_excursion, ex)
                run.outside += out
        clean = runs[0].ref.params
        flat_nom = [np.asarray(bk.to_host(nominal[k]), dtype=np.float64) for k in names]
        flat_clean = [p for pair in clean for p in pair]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(flat_clean, flat_nom, strict=True))
        state["clean_vs_nominal"] = max(state["clean_vs_nominal"], diff)
        state["steps"] = step
        if progress is not None:
            progress(step, n_steps)

    result = train(
        model, x, y, threat, config, pretrain_x=pretrain_x, pretrain_y=pretrain_y, on_step=on_step
    )

    by_kind: dict[str, dict] = {}
    for run in runs:
        key = run.kind + (" (exact)" if run.exact else "")
        row = by_kind.setdefault(
            key, {"runs": 0, "max_excursion": -math.inf, "outside": 0, "diverged": 0}
        )
        row["runs"] += 1
        row["max_excursion"] = max(row["max_excursion"], run.max_excursion)
        row["outside"] += run.outside
        row["diverged"] += int(run.diverged)
    checked = [r for r in runs if not r.diverged]
    max_ex = max((r.max_excursion for r in checked), default=-math.inf)
    outside = sum(r.outside for r in runs)
    report = {
        "steps": state["steps"],
        "planned_steps": n_steps,
        "runs": len(runs),
        "exact_runs": sum(r.exact for r in runs),
        "max_excursion": max_ex if math.isfinite(max_ex) else None,
        "outside": outside,
        "clean_vs_nominal": state["clean_vs_nominal"],
        "epsilon": eps,
        "train_size": int(xd.shape[0]),
        "dtype": str(dtype),
        "fused": result.engine == "fused",
        "by_kind": by_kind,
        "stopped": result.stopped,
    }
    report["passed"] = outside == 0 and (max_ex <= 0 or not math.isfinite(max_ex))
    report["seconds"] = time.perf_counter() - t0
    return report
