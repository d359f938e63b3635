"""Interval SGD: ``Theta <- Theta - lambda_t * grad``, rounded outward (FullCert eq. 16).

The learning rate is an exact real (a Python float or Fraction); ``lambda_t``
is enclosed outward in the parameters' dtype, and the interval arithmetic
rounds every update outward, so the new box contains every parameter value
SGD could reach from any member of the old box with any member gradient.
The nominal model takes the same step in plain round-to-nearest arithmetic.

The update rule (:class:`UpdateRule`) may add, with ``c = 1 - lambda_t wd``
and velocity ``v`` (0 before the first step):

* momentum ``mu``: ``v <- mu v + g``, ``theta <- theta - lambda_t v``
  (PyTorch's convention; Nesterov: ``theta <- theta - lambda_t (g + mu v)``
  with the new ``v``), the velocity kept as a box of its own;
* weight decay as a contraction, ``theta <- c theta - lambda_t v``: the
  box's width shrinks by ``c``.  The equal real update ``theta -
  lambda_t (v + wd theta)`` would widen it (``theta`` occurs twice: the
  dependency problem), so it is never used.

Every exact real (``c``, ``mu``, ``lambda_t``) is enclosed outward for the
box; the nominal model uses its nearest float.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import NamedTuple

from .interval import Interval

SCHEDULES = ("constant", "1/t")


class UpdateRule(NamedTuple):
    """What an SGD step adds to ``theta - lambda g``: weight decay, momentum, Nesterov."""

    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False


PLAIN = UpdateRule()  # plain SGD: no weight decay, no momentum


class SGD:
    """SGD's learning rate: constant or ``lambda / t`` (t = 1, 2, ...), optionally decayed.

    With ``decay = d``: ``max(base_t / (1 + d (t - 1)), lr_min)``.
    """

    def __init__(
        self,
        learning_rate: float,
        schedule: str = "constant",
        decay: float = 0.0,
        lr_min: float = 0.0,
    ):
        if not (learning_rate > 0 and math.isfinite(learning_rate)):
            raise ValueError(f"the learning rate must be finite and > 0, got {learning_rate}")
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose from {SCHEDULES}")
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.t = 0
        self._exact = Fraction(learning_rate)
        self._decay, self._min = Fraction(decay), Fraction(lr_min)

    def rate(self, t: int) -> Fraction:
        """The exact learning rate of step ``t`` (1-based); a constant one is the same object."""
        base = self._exact if self.schedule == "constant" else self._exact / t
        if self._decay:
            base = max(base / (1 + self._decay * (t - 1)), self._min)
        return base

    def step(
        self,
        params: dict[str, Interval],
        grads: dict[str, Interval],
        nominal: dict,
        nominal_grads: dict,
    ) -> tuple[dict[str, Interval], dict]:
        """One update of the box and of the nominal model at the next rate; returns both."""
        self.t += 1
        return sgd_update(params, grads, nominal, nominal_grads, self.rate(self.t))[:2]


def nominal_update(value, grad, rate: Fraction):
    """The nominal model's step ``theta - RN(lambda) g`` in round-to-nearest, in theta's dtype."""
    return value - value.dtype.type(float(rate)) * grad


def sgd_update(
    params: dict[str, Interval],
    grads: dict[str, Interval],
    nominal: dict,
    nominal_grads: dict,
    rate: Fraction,
    rule: UpdateRule = PLAIN,
    velocity: tuple[dict, dict] | None = None,
) -> tuple[dict[str, Interval], dict, tuple[dict, dict] | None]:
    """One SGD step of the box (outward) and of the nominal model, at the exact ``rate``.

    Returns ``(params, nominal, velocity)``.  With momentum, ``velocity`` is
    the ``(box, nominal)`` velocities by name (``None`` before the first
    step) and the new ones are returned; without, it is ``None``.
    """
    new_params, new_nominal = {}, {}
    new_velocity: tuple[dict, dict] = ({}, {})
    mu = Fraction(rule.momentum)
    decay = 1 - rate * Fraction(rule.weight_decay)
    for name, theta in params.items():
        g, g_nominal = grads[name], nominal_grads[name]
        if mu:
            dt = nominal[name].dtype.type
            v, v_nominal = g, g_nominal  # the first step: v = 0 * mu + g
            if velocity is not None:
                v = Interval._exact(mu, theta) * velocity[0][name] + g
                v_nominal = dt(float(mu)) * velocity[1][name] + g_nominal
            new_velocity[0][name], new_velocity[1][name] = v, v_nominal
            g, g_nominal = v, v_nominal
            if rule.nesterov:
                g = grads[name] + Interval._exact(mu, theta) * v
                g_nominal = nominal_grads[name] + dt(float(mu)) * v_nominal
        value = nominal[name]
        if decay != 1:
            theta = Interval._exact(decay, theta) * theta
            value = value.dtype.type(float(decay)) * value
        lam = Interval._exact(rate, theta)
        new_params[name] = theta - lam * g
        new_nominal[name] = nominal_update(value, g_nominal, rate)
    return new_params, new_nominal, (new_velocity if mu else None)
