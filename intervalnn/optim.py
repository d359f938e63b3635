"""Interval SGD: ``Theta <- Theta - lambda_t * grad``, rounded outward (FullCert eq. 16).

The learning rate is an exact real (a Python float or Fraction); ``lambda_t``
is enclosed outward in the parameters' dtype, and the interval arithmetic
rounds every update outward, so the new box contains every parameter value
SGD could reach from any member of the old box with any member gradient.
The nominal model takes the same step in plain round-to-nearest arithmetic.
"""

from __future__ import annotations

import math
from fractions import Fraction

from .interval import Interval

SCHEDULES = ("constant", "1/t")


class SGD:
    """Plain SGD with a constant or ``lambda / t`` learning rate (t = 1, 2, ...)."""

    def __init__(self, learning_rate: float, schedule: str = "constant"):
        if not (learning_rate > 0 and math.isfinite(learning_rate)):
            raise ValueError(f"the learning rate must be finite and > 0, got {learning_rate}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.t = 0
        self._exact = Fraction(learning_rate)

    def rate(self, t: int) -> Fraction:
        """The exact learning rate of step ``t`` (1-based); a constant one is the same object."""
        return self._exact if self.schedule == "constant" else self._exact / t

    def step(
        self,
        params: dict[str, Interval],
        grads: dict[str, Interval],
        nominal: dict,
        nominal_grads: dict,
    ) -> tuple[dict[str, Interval], dict]:
        """One update of the box and of the nominal model at the next rate; returns both."""
        self.t += 1
        return sgd_update(params, grads, nominal, nominal_grads, self.rate(self.t))


def nominal_update(value, grad, rate: Fraction):
    """The nominal model's step ``theta - RN(lambda) g`` in round-to-nearest, in theta's dtype."""
    return value - value.dtype.type(float(rate)) * grad


def sgd_update(
    params: dict[str, Interval],
    grads: dict[str, Interval],
    nominal: dict,
    nominal_grads: dict,
    rate: Fraction,
) -> tuple[dict[str, Interval], dict]:
    """One SGD step of the box (outward) and of the nominal model, at the exact ``rate``."""
    new_params, new_nominal = {}, {}
    for name, theta in params.items():
        lam = Interval._exact(rate, theta)
        new_params[name] = theta - lam * grads[name]
        new_nominal[name] = nominal_update(nominal[name], nominal_grads[name], rate)
    return new_params, new_nominal
