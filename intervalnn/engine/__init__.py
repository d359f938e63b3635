"""Engines: every way of computing bounds and SGD steps, behind one interface.

:mod:`intervalnn.engine.layered` states the interface and holds the general
engine (the model's layers, NumPy or CuPy); :mod:`intervalnn.engine.fused`
the fused CPU kernel engine.  :func:`make_engine` picks the fastest engine
that applies; ``train`` and ``certify`` use nothing else.
"""

from __future__ import annotations

import math

from ..interval import Interval
from ..layers import Sequential
from ..optim import PLAIN, UpdateRule
from ..poisoning import Poisoning
from .fused import FusedEngine, forward_bounds
from .layered import Engine, LayeredEngine, StepResult, clear_caches, parameter_widths
from .prefix import PrefixEngine, features, nominal_features, unbounded_features

__all__ = [
    "Engine",
    "FusedEngine",
    "LayeredEngine",
    "PrefixEngine",
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

    A model with a frozen prefix (``model.frozen``) gets a
    :class:`PrefixEngine`: the prefix's output boxes (of ``box`` and of the
    clean rows) and nominal outputs are computed once, and the engine this
    function picks for the head trains on them.
    """
    if model.frozen:
        return _prefix_engine(
            model, loss, box, x, y, batch_size, fused, poisoning, rule, clean
        )  # fmt: skip
    plain = (poisoning is None or not poisoning.per_sample) and rule == PLAIN
    if fused and (box is None or plain):
        engine = FusedEngine.create(model, loss or "bce", box, x, y, batch_size)
        if engine is not None:
            return engine
    return LayeredEngine(model, loss, box, x, y, poisoning, rule, clean)


def _prefix_engine(model, loss, box, x, y, batch_size, fused, poisoning, rule, clean):
    prefix, head = model.split()
    if box is None:
        return PrefixEngine(model, prefix, make_engine(head, fused=fused))
    threat = poisoning.threat if poisoning is not None else None
    unbounded = threat is not None and math.isinf(threat.epsilon) and threat.domain is None
    # with nothing bounding a moved row, no step reads the moved box
    moved = unbounded_features(model, box.shape[0], box) if unbounded else features(prefix, box)
    clean_features = None
    if poisoning is not None and poisoning.per_sample:
        # the clean rows' feature box: the prefix's real output is not its float output
        clean_features = features(prefix, clean if clean is not None else Interval(x))
    inner = make_engine(
        head, loss, moved, nominal_features(prefix, x), y, batch_size, fused,
        poisoning, rule, clean_features,
    )  # fmt: skip
    return PrefixEngine(model, prefix, inner)
