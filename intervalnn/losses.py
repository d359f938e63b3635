"""Losses with tight interval bounds and their gradients (FullCert, eq. 11, 13; app. A.3, A.4).

Both losses are means over the batch, and their gradients are divided by the
batch size ``m`` **once** (standard semantics).  BoundFlow divides twice (in
the loss and again in each layer), so a BoundFlow learning rate ``lambda_BF``
equals ``lambda_BF / m`` here; the paper's hyper-parameters are in BoundFlow's
convention.

The nominal gradient is the *lower endpoint* of the same interval formula
evaluated at the nominal logits: every step of the formula is monotone with
directed rounding, so that value lies inside the box gradient whenever the
nominal logits lie inside the box logits, which keeps the nominal model
provably inside the parameter box.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from . import functions as F
from .interval import Interval


def _batch_factor(m: int, like: Interval) -> Interval:
    return Interval._exact(Fraction(1, m), like)


def _labels(y, z: Interval):
    return z.backend.xp.asarray(y)


class Loss:
    """What both losses share: per-sample and label-flip gradients, the nominal gradient.

    A loss gives ``probabilities(z)`` (sigmoid or softmax, an interval) and
    ``targets(y, z)`` (the label as that output's target); the per-sample
    gradient ``d loss_i / dz_i`` is their difference.  ``diffs`` (softmax
    only, shape ``(m, K, K)``, ``[b, i, j]`` bounding ``z_j - z_i``) are
    logit-difference bounds computed directly (``Linear.differences``),
    tighter than the differences of the logits' bounds; None: from ``z``.
    """

    def sample_grad(self, z: Interval, y, diffs: Interval | None = None) -> Interval:
        """Bounds on each row's own ``d loss_i / dz_i`` (no ``1/m``)."""
        return self.probabilities(z, diffs) - self.targets(y, z)

    def grad(self, z: Interval, y) -> Interval:
        """Bounds on ``d mean-loss / dz``, same shape as ``z``."""
        return self.sample_grad(z, y) * _batch_factor(z.shape[0], z)

    def flipped_grad(self, z: Interval, y, target: int | None = None, diffs=None) -> Interval:
        """Bounds on ``d loss_i / dz_i`` over row i's label ``y_i`` and every label it may become.

        Untargeted, a label may become any class, so each target entry is
        ``[0, 1]``; with ``target`` it is the hull of ``y_i``'s and ``target``'s.
        """
        t = self.targets(y, z)
        if target is None:
            xp = z.backend.xp
            t = Interval._new(xp.zeros_like(t.lo), xp.ones_like(t.hi))
        else:
            alt = self.targets(z.backend.xp.full(z.shape[0], target), z)
            t = t.hull(alt)
        return self.probabilities(z, diffs) - t

    def nominal_grad(self, z, y, per_sample: bool = False, diffs=None):
        """The nominal model's ``d mean-loss / dz`` at its logits ``z`` (an array).

        The lower endpoint of the interval formula at the point ``z``: inside
        the box gradient whenever ``z`` lies in the box logits (module
        docstring).  ``per_sample``: each row's ``d loss_i / dz_i`` (no ``1/m``),
        with the nominal logit differences ``diffs`` (an array) if given.
        """
        point = Interval._new(z, z)
        if not per_sample:
            return self.grad(point, y).lo
        return self.sample_grad(point, y, None if diffs is None else Interval._new(diffs, diffs)).lo


class BCEWithLogits(Loss):
    """Binary cross-entropy on one logit ``z`` per sample, labels in {0, 1}.

    ``loss(z, y) = softplus(z) - y z = softplus((1 - 2y) z)``: monotone in ``z``
    for fixed ``y``, so its bounds come from the endpoints; the gradient
    ``(sigmoid(z) - y) / m`` is monotone too (paper eq. 11, app. A.3).
    """

    name = "bce"
    num_outputs = 1

    def _flip(self, z: Interval, y) -> Interval:
        xp = z.backend.xp
        one = _labels(y, z).reshape(z.shape) == 1
        return Interval._new(xp.where(one, -z.hi, z.lo), xp.where(one, -z.lo, z.hi))

    def value(self, z: Interval, y) -> Interval:
        """Bounds on the mean loss over the batch."""
        return F.softplus(self._flip(z, y)).mean()

    def probabilities(self, z: Interval, diffs=None) -> Interval:
        return F.sigmoid(z)

    def targets(self, y, z: Interval) -> Interval:
        return Interval(_labels(y, z).reshape(z.shape).astype(z.dtype))


class CrossEntropy(Loss):
    """Cross-entropy through a tight log-softmax for ``K >= 2`` logits (paper eq. 13, 25).

    With ``S_i = sum_{j != i} exp(z_j - z_i)`` (interval differences pair the
    lower ``z_i`` with the upper ``z_j`` and vice versa), ``softmax_i = 1/(1 + S_i)``
    and ``-log softmax_y = log1p(S_y)``, both monotone in ``S``.
    """

    name = "ce"
    num_outputs = None  # any K >= 2

    @staticmethod
    def _others_sum(z: Interval, diff: Interval | None = None) -> Interval:
        m, k = z.shape
        xp = z.backend.xp
        if diff is None:
            diff = z.reshape(m, 1, k) - z.reshape(m, k, 1)  # [b, i, j] = z_j - z_i
        off_diagonal = xp.asarray(1 - np.eye(k), dtype=z.dtype)
        s = (F.exp(diff) * off_diagonal).sum(axis=2)
        # A sum of exponentials is >= 0; an overflowing sum has lower bound -inf, not a bound
        # worth keeping (1 + S would then contain 0).
        return Interval._new(xp.maximum(s.lo, 0).astype(z.dtype), s.hi)

    def value(self, z: Interval, y) -> Interval:
        s = self._others_sum(z)
        rows = z.backend.xp.arange(z.shape[0])
        return F.log1p(s[rows, _labels(y, z)]).mean()

    def probabilities(self, z: Interval, diffs=None) -> Interval:
        return 1.0 / (1.0 + self._others_sum(z, diffs))

    def targets(self, y, z: Interval) -> Interval:
        xp = z.backend.xp
        return Interval((xp.arange(z.shape[1])[None, :] == _labels(y, z)[:, None]).astype(z.dtype))


LOSSES = {"bce": BCEWithLogits, "ce": CrossEntropy}


def get_loss(name: str):
    """``"bce"`` (one logit, two classes) or ``"ce"`` (K logits)."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(LOSSES)}") from None
