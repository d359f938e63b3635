"""What the adversary may change: the training-time and test-time boxes.

FullCert's threat model: every feature of every training point may be moved
by up to ``epsilon`` (l-infinity, data poisoning), and a test input by up to
``test_epsilon`` (adversarial example).  ``test_epsilon`` defaults to
``epsilon`` as in the paper; ``test_epsilon = 0`` certifies against training
poisoning only.  ``domain`` clips both boxes to the valid data range (e.g.
``(0, 1)`` for pixels): a smaller, still complete, threat model.
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

    def __post_init__(self):
        for name in ("epsilon", "test_epsilon"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.domain is not None:
            lo, hi = self.domain
            if not lo <= hi:
                raise ValueError(f"domain must satisfy lower <= upper, got {self.domain}")
            object.__setattr__(self, "domain", (float(lo), float(hi)))

    @property
    def inference_epsilon(self) -> float:
        return self.epsilon if self.test_epsilon is None else self.test_epsilon

    def train_box(self, x, dtype=None) -> Interval:
        """Every training point ``x`` may become anything in this box (in ``dtype``, else x's)."""
        return self._box(x, self.epsilon, dtype)

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
        return cls(d["epsilon"], d.get("test_epsilon"), tuple(dom) if dom is not None else None)
