"""The engine interface, and the layered engine: the general path and the reference.

An *engine* is one way of computing FullCert's two models -- the parameter
box and the nominal model -- for one ``Sequential``.  Training and
certification use nothing else:

* ``features(box)``: the box the trainable layers see (a frozen prefix's
  output, :mod:`intervalnn.engine.prefix`; the box itself otherwise);
* ``prepare(box)``: an input box in the form ``logit_bounds`` takes (built
  once per data set: training validation reuses it at every step);
* ``logit_bounds(prepared)``: sound NumPy ``(lo, hi)`` logit bounds of every
  model in the parameter box on every input in the box;
* ``nominal_logits(x)``: the nominal model's logits (NumPy);
* ``step(idx, rate)``: one SGD step of both models on the training rows
  ``idx`` with the exact learning rate ``rate`` (a ``StepResult``);
* ``parameters()``: the current ``(box, nominal)`` parameters by name, as
  arrays no later step changes;
* ``widths()``: mean and max parameter width.

:class:`LayeredEngine` runs the model's own layers (``forward`` /
``backward``), one interval operation at a time, on the model's backend
(NumPy or CuPy), and keeps the parameters in the model.  The fused CPU
engine (:mod:`intervalnn.engine.fused`) is a faster engine with the same
interface that falls back to this one where its kernel declines.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple, Protocol

import numpy as np

from ..interval import Interval
from ..layers import Sequential
from ..losses import get_loss
from ..optim import PLAIN, UpdateRule, sgd_update
from ..poisoning import Poisoning


class StepResult(NamedTuple):
    loss: tuple[float, float]  # bounds on the batch's mean loss
    finite: bool  # every new parameter bound is finite
    nominal_finite: bool  # every new nominal parameter is finite (no inf or NaN)
    outside: str | None  # name of a parameter whose nominal left its box (a bug), else None


class Engine(Protocol):
    name: str  # "layered" or "fused"
    model: Sequential

    def features(self, box: Interval) -> Interval: ...
    def prepare(self, box: Interval): ...
    def logit_bounds(self, prepared) -> tuple[np.ndarray, np.ndarray]: ...
    def nominal_logits(self, x) -> np.ndarray: ...
    def step(self, idx, rate: Fraction) -> StepResult: ...
    def parameters(self) -> tuple[dict[str, Interval], dict]: ...
    def widths(self) -> tuple[float, float]: ...


def clear_caches(model: Sequential) -> None:
    """Forward-only use keeps no layer caches alive."""
    for layer in model.layers:
        for attr in ("_x", "_x_nominal", "_z", "_z_nominal"):
            if hasattr(layer, attr):
                setattr(layer, attr, None)


def first_outside(params: dict[str, Interval], nominal: dict) -> str | None:
    """The name of the first parameter whose nominal value lies outside its box, else None."""
    for name, box in params.items():
        if not bool(box.contains(nominal[name]).all()):
            return name
    return None


def parameter_widths(params: dict[str, Interval]) -> tuple[float, float]:
    """Mean and max width ``RU(hi - lo)`` over every entry of a parameter box."""
    w = [p.backend.to_host(p.width).astype(np.float64).ravel() for p in params.values()]
    w = np.concatenate(w)
    return float(w.mean()), float(w.max())


class LayeredEngine:
    """The model's layers on its backend; the parameters live in ``model``.

    ``loss``, ``box`` (the training data box), ``x`` (the nominal model's
    training inputs, in the model's dtype) and ``y`` are needed for ``step``
    only; a forward-only engine (certification) leaves them out.
    """

    name = "layered"

    def __init__(
        self,
        model: Sequential,
        loss: str | None = None,
        box=None,
        x=None,
        y=None,
        poisoning: Poisoning | None = None,
        rule: UpdateRule = PLAIN,
        clean: Interval | None = None,
    ):
        self.model = model
        self.loss = get_loss(loss) if loss is not None else None
        self.box, self.x, self.y = box, x, y
        self.poisoning, self.rule = poisoning, rule
        self.clean = clean if clean is not None or x is None else Interval._new(x, x)
        self.velocity: tuple[dict, dict] | None = None  # momentum's (box, nominal), by name

    def features(self, box: Interval) -> Interval:
        return box

    def prepare(self, box: Interval):
        return box

    def logit_bounds(self, prepared) -> tuple[np.ndarray, np.ndarray]:
        bk = self.model.backend
        out = self.model.forward(prepared)
        clear_caches(self.model)
        return bk.to_host(out.lo), bk.to_host(out.hi)

    def nominal_logits(self, x) -> np.ndarray:
        z = self.model.backend.to_host(self.model.forward_nominal(x))
        clear_caches(self.model)
        return z

    def step(self, idx, rate: Fraction) -> StepResult:
        model, loss = self.model, self.loss
        if self.poisoning is not None and self.poisoning.per_sample:
            grads, nominal_grads, value = self.poisoning.batch_gradient(
                model, loss, self.box, self.clean, self.x, self.y, idx
            )
        else:
            y = self.y[idx]
            z = model.forward(self.box[idx])
            model.backward(loss.grad(z, y))
            value = loss.value(z, y)
            model.backward_nominal(loss.nominal_grad(model.forward_nominal(self.x[idx]), y))
            grads, nominal_grads = model.named_grads()
        params, nominal, self.velocity = sgd_update(
            model.named_params(trainable=True), grads, model.named_nominal(), nominal_grads, rate,
            self.rule, self.velocity,
        )  # fmt: skip
        model.load(params, nominal)
        xp = model.backend.xp
        finite = all(
            bool(xp.isfinite(p.lo).all() & xp.isfinite(p.hi).all()) for p in params.values()
        )
        nominal_finite = all(bool(xp.isfinite(a).all()) for a in nominal.values())
        outside = first_outside(params, nominal) if finite and nominal_finite else None
        return StepResult((float(value.lo), float(value.hi)), finite, nominal_finite, outside)

    def parameters(self) -> tuple[dict[str, Interval], dict]:
        # every step replaces the model's arrays (it never writes into them)
        return self.model.named_params(), self.model.named_nominal()

    def widths(self) -> tuple[float, float]:
        return parameter_widths(self.model.named_params(trainable=True))
