"""Certificates: every model in the parameter box classifies every input in the test box correctly.

Binary (one logit): ``upper < 0`` certifies class 0 and ``lower > 0`` class 1.
Multi-class: ``lower(z_y) > upper(z_j)`` for every ``j != y``.  The margin is
the certified slack (positive exactly when certified): ``lower(z)`` for class
1, ``-upper(z)`` for class 0, and ``lower(z_y) - max_{j != y} upper(z_j)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .fused import forward_bounds
from .layers import Sequential
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

    @property
    def certified_accuracy(self) -> float:
        return float(self.certified.mean()) if self.n else 0.0

    @property
    def nominal_accuracy(self) -> float:
        return float(self.nominal_correct.mean()) if self.n else 0.0

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


def certify(
    model: Sequential, x, y, threat: ThreatModel, batch_size: int = 1024
) -> CertificationResult:
    """Certify ``model`` on points ``x`` with labels ``y`` under the threat model's test box."""
    bk = model.backend
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim != 2 or x.shape[1] != model.in_features:
        raise ValueError(
            f"the model expects inputs with {model.in_features} features, got shape {x.shape}"
        )
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"need one label per input: x has {x.shape[0]} rows, y has shape {y.shape}"
        )
    check_labels(y, model.out_features)
    y = y.astype(np.int64)
    marg, nominal_pred = [], []
    for start in range(0, x.shape[0], batch_size):
        given = bk.xp.asarray(x[start : start + batch_size])
        xb = given.astype(model.dtype)  # the nominal model's input
        box = threat.test_box(given, model.dtype)  # encloses the data as given, not xb
        bounds = forward_bounds(model, box)  # one fused kernel call where it applies
        if bounds is None:
            out = model.forward(box)
            bounds = bk.to_host(out.lo), bk.to_host(out.hi)
        marg.append(margins(*bounds, y[start : start + batch_size]))
        z = bk.to_host(model.forward_nominal(xb))
        nominal_pred.append((z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1))
    _clear_caches(model)
    margin = np.concatenate(marg) if marg else np.zeros(0)
    pred = np.concatenate(nominal_pred) if nominal_pred else np.zeros(0, np.int64)
    return CertificationResult(margin > 0, margin, pred == y, threat.inference_epsilon)


def _clear_caches(model: Sequential) -> None:
    """Forward-only use keeps no caches alive."""
    for layer in model.layers:
        for attr in ("_x", "_x_nominal", "_z", "_z_nominal"):
            if hasattr(layer, attr):
                setattr(layer, attr, None)
