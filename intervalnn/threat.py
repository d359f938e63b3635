"""What the adversary may change: the training-time and test-time boxes.

FullCert's threat model: every feature of every training point may be moved
by up to ``epsilon`` (l-infinity, data poisoning), and a test input by up to
``test_epsilon`` (adversarial example).  ``test_epsilon`` defaults to
``epsilon`` as in the paper; ``test_epsilon = 0`` certifies against training
poisoning only.  ``domain`` clips both boxes to the valid data range (e.g.
``(0, 1)`` for pixels): a smaller, still complete, threat model.

Beyond FullCert (AGT's threat models, Sosnin et al., TMLR 2025):

* ``poison_count = k``: at most ``k`` training points have their features
  moved (``None``: all of them, FullCert's model); ``epsilon = inf`` lets
  them move anywhere (in ``domain``), which is certifiable only with
  gradient clipping (``TrainConfig.clip``);
* ``label_flips = k_l``: at most ``k_l`` labels are changed to any other
  class, or only to ``label_target``;
* ``paired``: the feature and label budgets touch the same points (at most
  ``max(k, k_l)`` of them), else they are independent;
* trusted points (``train(..., trusted=mask)``) are never poisoned.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .backend import backend_of
from .interval import Interval


@dataclass(frozen=True)
class ThreatModel:
    epsilon: float
    test_epsilon: float | None = None
    domain: tuple[float, float] | None = None
    poison_count: int | None = None  # None: every training point (FullCert)
    label_flips: int = 0
    label_target: int | None = None  # None: a flipped label may become any other class
    paired: bool = False

    def __post_init__(self):
        if not (self.epsilon >= 0):  # NaN too
            raise ValueError(f"epsilon must be a number >= 0 (or inf), got {self.epsilon}")
        v = self.test_epsilon
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"test_epsilon must be a finite number >= 0, got {v}")
        if math.isinf(self.epsilon) and v is None:
            raise ValueError(
                "epsilon = inf needs a finite test_epsilon (0: certify against poisoning only)"
            )
        for name in ("poison_count", "label_flips"):
            k = getattr(self, name)
            if k is not None and (isinstance(k, bool) or int(k) != k or k < 0):
                raise ValueError(f"{name} must be an integer >= 0, got {k!r}")
        if self.label_target is not None and (
            isinstance(self.label_target, bool)
            or int(self.label_target) != self.label_target
            or self.label_target < 0
        ):
            raise ValueError(f"label_target must be a class index >= 0, got {self.label_target!r}")
        if self.label_target is not None and not self.label_flips:
            raise ValueError("label_target needs label_flips >= 1")
        if self.paired and not self.label_flips:
            raise ValueError("paired needs label_flips >= 1 (the points whose labels also change)")
        if self.paired and self.poison_count is None:
            raise ValueError("paired needs a poison_count (the points whose features move)")
        if self.domain is not None:
            lo, hi = self.domain
            if not lo <= hi:
                raise ValueError(f"domain must satisfy lower <= upper, got {self.domain}")
            object.__setattr__(self, "domain", (float(lo), float(hi)))

    @property
    def inference_epsilon(self) -> float:
        return self.epsilon if self.test_epsilon is None else self.test_epsilon

    @property
    def is_fullcert(self) -> bool:
        """Every feature of every point may move by ``epsilon`` and no label changes."""
        return self.poison_count is None and not self.label_flips

    def feature_budget(self, n: int) -> int:
        """How many of ``n`` training points may have their features moved."""
        if self.epsilon == 0:
            return 0
        return n if self.poison_count is None else min(self.poison_count, n)

    def check_data(self, n: int, num_classes: int) -> None:
        """``ValueError`` unless the budgets fit ``n`` training points and ``num_classes``."""
        for name in ("poison_count", "label_flips"):
            k = getattr(self, name)
            if k is not None and k > n:
                raise ValueError(f"{name} = {k} exceeds the {n} training points")
        if self.label_target is not None and self.label_target >= num_classes:
            raise ValueError(
                f"label_target {self.label_target} is not a class (the model has "
                f"{num_classes} classes: 0..{num_classes - 1})"
            )

    def train_box(self, x, dtype=None) -> Interval:
        """Every poisoned training point ``x`` may become anything in this box (in ``dtype``).

        With ``epsilon = inf`` that is the ``domain`` box, or every float
        (``[-MAX, MAX]``; only clipped gradients stay bounded then).
        """
        # an infinite radius is the largest finite one: the box then reaches -inf and inf
        # (or the domain), and the ball's checks still apply
        eps = self.epsilon if math.isfinite(self.epsilon) else float(np.finfo(np.float64).max)
        return self._box(x, eps, dtype)

    def test_box(self, x, dtype=None) -> Interval:
        """Every test input ``x`` may become anything in this box (in ``dtype``, else x's)."""
        return self._box(x, self.inference_epsilon, dtype)

    def _box(self, x, eps: float, dtype) -> Interval:
        """The ball around the data *as given*, narrowed outward to ``dtype``.

        Rounding float64 data to a float32 model's dtype first would centre
        the box on other points; here the box encloses every given point.
        """
        x = backend_of(x).xp.asarray(x)
        if dtype is None:
            return Interval.ball(x, eps, domain=self.domain)
        wide = np.promote_types(np.result_type(x.dtype, np.float32), dtype)
        return Interval.ball(x.astype(wide), eps, domain=self.domain).astype(dtype)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ThreatModel:
        dom = d.get("domain")
        return cls(
            d["epsilon"],
            d.get("test_epsilon"),
            tuple(dom) if dom is not None else None,
            d.get("poison_count"),
            d.get("label_flips", 0),
            d.get("label_target"),
            d.get("paired", False),
        )
