"""Certificates: every model in the parameter box classifies every input in the test box correctly.

Binary (one logit): ``upper < 0`` certifies class 0 and ``lower > 0`` class 1.
Multi-class: ``z_y - z_j > 0`` for every ``j != y``.  The margin is the
certified slack (positive exactly when certified): ``lower(z)`` for class 1,
``-upper(z)`` for class 0, and ``min_{j != y} lower(z_y - z_j)``.

The logit differences are bounded directly: the last Linear layer ``(W, b)``
is replaced by one with a column ``W_c - W_j`` (bias ``b_c - b_j``) per
pair ``c < j``, so the penultimate box enters each difference once.  That
is never looser than ``lower(z_c) - upper(z_j)`` in exact interval
arithmetic (subdistributivity) and much tighter for wide boxes.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from .engine import Engine, make_engine
from .layers import Linear, Sequential, class_pairs
from .threat import ThreatModel


@dataclass(frozen=True)
class CertificationResult:
    certified: np.ndarray  # bool per sample: certified *and* correct
    margin: np.ndarray  # certified slack per sample (> 0 iff certified)
    nominal_correct: np.ndarray  # bool per sample: the nominal model is right
    epsilon: float

    @property
    def n(self) -> int:
        return int(self.certified.size)

    # count / n: exactly the mean of the flags, rounded once (as ndarray.mean rounds it)
    @cached_property
    def certified_accuracy(self) -> float:
        return np.count_nonzero(self.certified) / self.n if self.n else 0.0

    @cached_property
    def nominal_accuracy(self) -> float:
        return np.count_nonzero(self.nominal_correct) / self.n if self.n else 0.0

    def summary(self) -> dict:
        return {
            "certified_accuracy": self.certified_accuracy,
            "accuracy": self.nominal_accuracy,
            "n": self.n,
            "epsilon": self.epsilon,
        }


def check_labels(y, num_outputs: int) -> None:
    """``ValueError`` unless every label is a class of a model with ``num_outputs`` logits.

    One logit means two classes (0 and 1); ``K >= 2`` logits mean classes ``0..K-1``.
    """
    y = np.asarray(y)
    classes = max(num_outputs, 2)
    if y.size == 0:
        return
    if y.dtype.kind not in "iub" and not (
        y.dtype.kind == "f" and bool(np.all(np.isfinite(y) & (y == np.round(y))))
    ):
        raise ValueError(f"labels must be integers (class indices), got dtype {y.dtype}")
    bad = (y < 0) | (y >= classes)
    if bool(bad.any()):
        i = int(np.argmax(bad))
        raise ValueError(
            f"label {y[i]} at index {i} is not a class of this model: "
            f"labels must lie in 0..{classes - 1}"
        )


def margins(lo, hi, y) -> np.ndarray:
    """Certified slack of output bounds ``[lo, hi]`` (shape (n, K)) for labels ``y``."""
    lo, hi, y = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), np.asarray(y)
    if lo.shape[1] == 1:
        return np.where(y == 1, lo[:, 0], -hi[:, 0])
    rows = np.arange(lo.shape[0])
    others = hi.copy()
    others[rows, y] = -np.inf
    return lo[rows, y] - others.max(axis=1)


def difference_margins(lo, hi, y, k: int) -> np.ndarray:
    """Certified slack from bounds ``[lo, hi]`` on ``z_c - z_j`` (columns: :func:`class_pairs`).

    ``lower(z_y - z_j)`` is ``lo`` of column ``(y, j)`` for ``y < j`` and
    ``-hi`` of column ``(j, y)`` for ``j < y``.
    """
    lo, hi, y = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64), np.asarray(y)
    column = np.full((k, k), -1)
    c, j = class_pairs(k)
    column[c, j] = column[j, c] = np.arange(c.size)
    cols = column[y]  # (n, k): the column of each (y, j); -1 on the diagonal
    rows = np.arange(y.size)[:, None]
    lower = np.where(y[:, None] < np.arange(k), lo[rows, cols], -hi[rows, cols])
    lower[np.arange(y.size), y] = np.inf
    return lower.min(axis=1)


def _uses_differences(model: Sequential) -> bool:
    return model.out_features >= 2 and isinstance(model.layers[-1], Linear)


def difference_model(model: Sequential, params: dict, start: int = 0) -> Sequential | None:
    """``model`` with parameters ``params`` and logit differences as outputs (module docstring).

    Only the layers from ``start`` on (a frozen prefix's output is their
    input).  None where there is nothing to gain: one output, or a last layer
    that is not Linear.
    """
    if not _uses_differences(model):
        return None
    last = len(model.layers) - 1
    layers = []
    for i, layer in enumerate(model.layers[start:last], start):
        clone = copy.copy(layer)
        if layer.params:
            clone.set_params({k: params[f"{i}.{k}"] for k in layer.params})
        layers.append(clone)
    weight, bias = params[f"{last}.weight"], params[f"{last}.bias"]
    layers.append(Linear.from_params(weight, bias).differences())
    return Sequential(*layers)


def predict(z) -> np.ndarray:
    """The class of each row of logits ``z``: ``z > 0`` for one logit, else the argmax."""
    return (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)


def _check_data(model: Sequential, x, y) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2 or x.shape[1] != model.in_features:
        raise ValueError(
            f"the model expects inputs with {model.in_features} features, got shape {x.shape}"
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"need one label per input: x has {x.shape[0]} rows, y has shape {y.shape}"
        )
    check_labels(y, model.out_features)
    return x, y.astype(np.int64)


def _batch(engine: Engine, x, start: int, stop: int, threat: ThreatModel, differences: bool):
    """The test box (prepared for ``engine`` unless ``differences``) and nominal inputs of rows
    ``start:stop`` of ``x``."""
    model = engine.model
    given = model.backend.xp.asarray(x[start:stop])
    box = threat.test_box(given, model.dtype)  # encloses the data as given, not its rounding
    return (engine.features(box) if differences else engine.prepare(box)), given.astype(model.dtype)


def _result(engine: Engine, batches, y, threat: ThreatModel) -> CertificationResult:
    margin, pred = [], []
    k = engine.model.out_features
    diff = difference_model(engine.model, engine.parameters()[0], engine.model.frozen)
    bounds = make_engine(diff) if diff is not None else None
    for start, prepared, xb in batches:
        yb = y[start : start + xb.shape[0]]
        if bounds is None:
            margin.append(margins(*engine.logit_bounds(prepared), yb))
        else:
            lo, hi = bounds.logit_bounds(bounds.prepare(prepared))
            margin.append(difference_margins(lo, hi, yb, k))
        pred.append(predict(engine.nominal_logits(xb)))
    if len(margin) != 1:  # one batch (validation sets): no copies
        margin = [np.concatenate(margin) if margin else np.zeros(0)]
        pred = [np.concatenate(pred) if pred else np.zeros(0, np.int64)]
    return CertificationResult(margin[0] > 0, margin[0], pred[0] == y, threat.inference_epsilon)


def certify(
    model: Sequential, x, y, threat: ThreatModel, batch_size: int = 1024
) -> CertificationResult:
    """Certify ``model`` on points ``x`` with labels ``y`` under the threat model's test box."""
    x, y = _check_data(model, x, y)
    engine = make_engine(model)
    differences = _uses_differences(model)
    batches = (
        (start, *_batch(engine, x, start, start + batch_size, threat, differences))
        for start in range(0, x.shape[0], batch_size)
    )
    return _result(engine, batches, y, threat)


class Certifier:
    """Certification of one data set under one threat model, again and again (validation).

    The test boxes are built and checked once; each call certifies the
    engine's current parameters, as ``certify`` would the same model.
    """

    def __init__(self, engine: Engine, x, y, threat: ThreatModel, batch_size: int = 1024):
        x, self.y = _check_data(engine.model, x, y)
        self.engine, self.threat = engine, threat
        differences = _uses_differences(engine.model)
        self.batches = [
            (start, *_batch(engine, x, start, start + batch_size, threat, differences))
            for start in range(0, x.shape[0], batch_size)
        ]

    def __call__(self) -> CertificationResult:
        return _result(self.engine, self.batches, self.y, self.threat)
