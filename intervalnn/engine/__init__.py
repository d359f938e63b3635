"""Engines: every way of computing bounds and SGD steps, behind one interface.

:mod:`intervalnn.engine.layered` states the interface and holds the general
engine (the model's layers, NumPy or CuPy); :mod:`intervalnn.engine.fused`
the fused CPU kernel engine.  :func:`make_engine` picks the fastest engine
that applies; ``train`` and ``certify`` use nothing else.
"""

from __future__ import annotations

from ..interval import Interval
from ..layers import Sequential
from ..optim import PLAIN, UpdateRule
from ..poisoning import Poisoning
from .fused import FusedEngine, forward_bounds
from .layered import Engine, LayeredEngine, StepResult, clear_caches, parameter_widths

__all__ = [
    "Engine",
    "FusedEngine",
    "LayeredEngine",
    "StepResult",
    "clear_caches",
    "forward_bounds",
    "make_engine",
    "parameter_widths",
]


def make_engine(
    model: Sequential,
    loss: str | None = None,
    box=None,
    x=None,
    y=None,
    batch_size: int = 1,
    fused: bool = True,
    poisoning: Poisoning | None = None,
    rule: UpdateRule = PLAIN,
    clean: Interval | None = None,
) -> Engine:
    """The engine for ``model``: fused where the kernel applies (and ``fused``), else layered.

    For training give the loss name, the training data box ``box``, the
    nominal model's inputs ``x`` (in the model's dtype), the labels ``y`` and
    the largest batch size; for certification only the model.  ``poisoning``
    (a threat model beyond FullCert's, trusted rows, clipping) and ``rule``
    (weight decay, momentum) need the layered engine for training; ``clean``
    is the clean rows' box where ``x`` was narrowed from wider data.
    """
    plain = (poisoning is None or not poisoning.per_sample) and rule == PLAIN
    if fused and (box is None or plain):
        engine = FusedEngine.create(model, loss or "bce", box, x, y, batch_size)
        if engine is not None:
            return engine
    return LayeredEngine(model, loss, box, x, y, poisoning, rule, clean)
