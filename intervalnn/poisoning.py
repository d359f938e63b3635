"""The batch gradient's box when only some training points are poisoned (AGT's bound, made sound).

FullCert bounds the batch gradient with every point moved anywhere in its
box.  When at most ``k`` points are poisoned (features moved, labels
flipped, or both; :class:`~intervalnn.threat.ThreatModel`), a batch of
``b`` rows holds at most ``k' = min(k, b)`` of them, so per parameter
coordinate the batch gradient sum lies in (Sosnin et al., "Certified
robustness to data poisoning in gradient-based training", TMLR 2025,
Abstract Gradient Training, eq. 9)::

    [ sum_i base_i.lo + (sum of the k' smallest  min(RD(extra_i.lo - base_i.lo), 0)),
      sum_i base_i.hi + (sum of the k' largest   max(RU(extra_i.hi - base_i.hi), 0)) ]

where ``base_i`` bounds row i's per-sample gradient over the parameter box
as it may be without the attack and ``extra_i`` as it may be under it.
Proof: a batch's gradient is ``sum_{i not in P} g_i + sum_{i in P} g'_i``
for a poisoned set ``P`` of at most ``k'`` rows, ``g_i in base_i`` and
``g'_i in extra_i``; so its value is at least ``sum base.lo + sum_{i in P}
(extra_i.lo - base_i.lo)``, each term of the last sum is at least its
rounded-down, clamped-to-0 value, and a sum of at most ``k'`` of those
values is at least the sum of the ``k'`` smallest.  The selection is exact
(on the rounded values); the sums are :meth:`Interval.sum`, outward and
valid for float sums in any order.  Trusted rows never deviate.

Which boxes are ``base`` and ``extra`` (:meth:`Poisoning.plan`), with
``kf`` feature-poisoned and ``kl`` label-flipped points:

* features only: ``base`` = clean, ``extra`` = features in their box;
* labels only: ``base`` = clean, ``extra`` = the label's hull over the
  classes it may become;
* both, ``paired`` (same points): ``extra`` = both moved, ``k' = max(kf, kl)``;
* both, independent: if every attackable row of the batch may have its
  features moved, ``base`` = features moved and ``extra`` = both, ``k' =
  kl``; else ``base`` = clean, ``extra`` = both, ``k' = kf + kl`` (a point
  in either set lies in the joint box).

Per-sample gradients are clipped (``clamp``: each entry to ``[-gamma,
gamma]``; ``norm``: the l2 norm over all parameters to at most ``gamma``,
DP-SGD's rule) before the sum; the sum is then divided by ``b``.  With
``epsilon = inf`` and no data domain the moved rows' gradients are bounded
by the clipping alone.  Rows are processed in fragments with a running
selection, so memory is ``fragment x parameters``, not ``b x parameters``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from . import functions as F
from .backend import backend_of
from .interval import Interval
from .kernels import bounds
from .layers import Sequential
from .threat import ThreatModel

CLIP_METHODS = ("clamp", "norm")
FRAGMENT_FLOATS = 2**22  # per-sample gradient entries per fragment (rows x parameters)


@dataclass(frozen=True)
class Clipping:
    """Per-sample gradient clipping: ``clamp`` each entry to ``[-gamma, gamma]``, or ``norm``."""

    gamma: float
    method: str = "clamp"

    def __post_init__(self):
        if not (self.gamma > 0 and math.isfinite(self.gamma)):
            raise ValueError(f"the clipping threshold must be finite and > 0, got {self.gamma}")
        if self.method not in CLIP_METHODS:
            raise ValueError(f"clip method must be one of {CLIP_METHODS}, got {self.method!r}")

    def entry_bound(self, parameters: int, dtype) -> float:
        """A float ``>=`` every entry of a clipped per-sample gradient, in reals and in floats.

        ``clamp``: ``gamma`` itself.  ``norm``: the float factor ``RN(gamma /
        fl(||g||))`` exceeds the real one by at most a relative ``(1 + e)``
        with ``e = 2 c + 3 u``, ``c`` the sum error factor of the ``parameters``
        squares (:func:`~intervalnn.kernels.bounds.sum_error_factor`): the
        squares, the sum, the square root, the quotient and the product each
        err by at most ``u`` relative, and the sum by ``c``.  We take ``gamma
        (1 + 4 c + 8 u)``, rounded up; ``ValueError`` where that is not small.
        """
        gamma_up = bounds.enclose_real(self.gamma, dtype)[1]
        if self.method == "clamp":
            return float(gamma_up)
        u = Fraction(1, 2 ** np.finfo(dtype).nmant) / 2
        c = Fraction(float(bounds.sum_error_factor(max(parameters - 1, 1), dtype)))
        slack = 4 * c + 8 * u
        if slack > Fraction(1, 64):
            raise ValueError(
                f"norm clipping of {parameters} parameters in {np.dtype(dtype).name} cannot be "
                "bounded tightly: use float64"
            )
        return float(bounds.enclose_real(Fraction(float(gamma_up)) * (1 + slack), dtype)[1])

    def clip(self, grads: dict[str, Interval]) -> dict[str, Interval]:
        """Per-sample gradient boxes (leading axis: rows), clipped; exact for ``clamp``."""
        if self.method == "clamp":
            return {k: _clamp(g, self.gamma) for k, g in grads.items()}
        factor = self._norm_factor(grads)
        out = {}
        for k, g in grads.items():
            f = factor.reshape(-1, *([1] * (g.ndim - 1)))
            out[k] = g * f
        return out

    def clip_nominal(self, grads: dict) -> dict:
        """The nominal model's per-sample gradients clipped in float arithmetic (the same rule)."""
        if self.method == "clamp":
            return {k: g.clip(-self.gamma, self.gamma) for k, g in grads.items()}
        any_grad = next(iter(grads.values()))
        xp, dt, m = backend_of(any_grad).xp, any_grad.dtype.type, any_grad.shape[0]
        square_sum = sum((g.reshape(m, -1) ** 2).sum(axis=1) for g in grads.values())
        with np.errstate(divide="ignore"):
            factor = xp.minimum(dt(1), dt(self.gamma) / xp.sqrt(square_sum))
        return {k: g * factor.reshape(-1, *([1] * (g.ndim - 1))) for k, g in grads.items()}

    def _norm_factor(self, grads: dict[str, Interval]) -> Interval:
        """``min(1, gamma / ||g_i||)`` per row, outward; ``||g||``: the l2 norm over all entries."""
        m = next(iter(grads.values())).shape[0]
        square_sum = None
        for g in grads.values():
            s = F.sqr(g.reshape(m, -1)).sum(axis=1)
            square_sum = s if square_sum is None else square_sum + s
        norm = F.sqrt(square_sum)
        xp = norm.backend.xp
        gamma = Interval._exact(Fraction(self.gamma), norm)
        # min(1, gamma / n) falls as n grows: its lower end comes from n.hi, its upper from n.lo
        # (1 wherever n.lo <= gamma; the quotient is then >= 1)
        big = xp.isinf(norm.hi)
        n_hi = Interval(xp.where(big, 1, xp.maximum(norm.hi, gamma.lo)).astype(norm.dtype))
        lo = xp.where(big, 0, (gamma / n_hi).lo)
        n_lo = Interval(xp.maximum(norm.lo, gamma.hi))
        hi = (gamma / n_lo).hi
        one = xp.ones_like(lo)
        return Interval._new(xp.minimum(lo, one).astype(norm.dtype), xp.minimum(hi, one))


def _clamp(g: Interval, gamma: float) -> Interval:
    """``clip(t, -gamma, gamma)`` for every ``t`` in ``g``: monotone, so clip both ends.

    ``gamma`` is compared as the float it is (the nominal model clips at the
    same float), so nothing is rounded.
    """
    xp = g.backend.xp
    dt = g.dtype.type
    return Interval._new(xp.clip(g.lo, -dt(gamma), dt(gamma)), xp.clip(g.hi, -dt(gamma), dt(gamma)))


class Plan(NamedTuple):
    """How one batch's gradient is bounded: the boxes ``base`` and ``extra``, and ``k'``.

    A box is ``(features_move, labels_flip)``; ``extra`` is None (or
    ``k' = 0``) where only ``base`` counts.
    """

    base: tuple[bool, bool]
    extra: tuple[bool, bool] | None
    k: int


@dataclass(frozen=True)
class Poisoning:
    """A run's threat model over its ``n`` training rows, with trusted rows and clipping.

    ``trusted`` is a boolean mask of the rows the attacker cannot touch (or
    None); ``clipping`` the per-sample clipping (or None).
    """

    threat: ThreatModel
    n: int
    trusted: np.ndarray | None = None
    clipping: Clipping | None = None

    def __post_init__(self):
        if math.isinf(self.threat.epsilon) and self.threat.domain is None and self.clipping is None:
            raise ValueError("epsilon = inf needs gradient clipping (clip) or a data domain")
        if self.trusted is not None:
            t = np.asarray(self.trusted)
            if t.dtype != bool or t.shape != (self.n,):
                raise ValueError(f"trusted must be a boolean mask of the {self.n} training rows")
            object.__setattr__(self, "trusted", t)

    @property
    def per_sample(self) -> bool:
        """Whether the batch gradient needs per-sample gradients (else FullCert's bound applies)."""
        return (
            self.threat.label_flips > 0
            or 0 < self.threat.feature_budget(self.n) < self.n
            or self.clipping is not None
            or (self.trusted is not None and bool(self.trusted.any()))
        )

    def attackable(self, idx) -> np.ndarray:
        """Which of the rows ``idx`` the attacker may touch."""
        idx = np.asarray(idx)
        if self.trusted is None:
            return np.ones(idx.shape[0], dtype=bool)
        return ~self.trusted[idx]

    def plan(self, attackable: int) -> Plan:
        """The boxes and ``k'`` for a batch with ``attackable`` rows the attacker may touch."""
        kf = self.threat.feature_budget(self.n)
        kl = self.threat.label_flips
        clean = (False, False)
        if kl == 0:
            if kf >= attackable:  # every row the attacker may touch moves: FullCert's box
                return Plan((True, False), None, 0)
            return Plan(clean, (True, False), kf)
        if kf == 0:
            return Plan(clean, (False, True), min(kl, attackable))
        if self.threat.paired:
            return Plan(clean, (True, True), min(max(kf, kl), attackable))
        if kf >= attackable:
            return Plan((True, False), (True, True), min(kl, attackable))
        return Plan(clean, (True, True), min(kf + kl, attackable))

    def batch_gradient(self, model: Sequential, loss, box: Interval, clean: Interval, x, y, idx):
        """Bounds on the batch's mean-loss gradient over the threat model, and the nominal one.

        ``box`` is the training rows' poisoned feature box, ``clean`` the box
        of their clean features and ``x`` the nominal model's features (all
        in the model's dtype and backend; ``clean`` is the point ``x`` unless
        the data were narrowed to the dtype), ``y`` the labels, ``idx`` the
        batch's rows.  Returns ``(grads, nominal_grads, loss)``: the
        gradient boxes and the nominal model's float gradients by parameter
        name, and bounds on the batch's mean loss on its base box.
        """
        idx = np.asarray(idx)
        attack = self.attackable(idx)
        plan = self.plan(int(attack.sum()))
        m = idx.shape[0]
        size = sum(int(np.prod(p.shape)) for p in model.named_params().values())
        rows = max(1, FRAGMENT_FLOATS // size)
        total = nominal = loss_sum = None
        low = high = None
        for start in range(0, m, rows):
            sel, att = idx[start : start + rows], attack[start : start + rows]
            base, z = self._per_sample(model, loss, plan.base, box, clean, y, sel, att)
            part = loss.value(z, y[sel]) * Interval._exact(sel.shape[0], z)
            loss_sum = part if loss_sum is None else loss_sum + part
            if plan.extra is not None and plan.k:
                extra, _ = self._per_sample(model, loss, plan.extra, box, clean, y, sel, att)
                low, high = _select(low, high, base, extra, att, plan.k)
            sums = {k: g.sum(axis=0) for k, g in base.items()}
            total = sums if total is None else {k: total[k] + sums[k] for k in total}
            g_nominal = self._nominal_per_sample(model, loss, x[sel], y[sel])
            part = {k: g.sum(axis=0) for k, g in g_nominal.items()}
            nominal = part if nominal is None else {k: nominal[k] + part[k] for k in nominal}
        scale = Interval._exact(Fraction(1, m), next(iter(total.values())))
        grads = {}
        for k, t in total.items():
            if low is not None:
                t = t + Interval._new(
                    Interval._new(low[k], low[k]).sum(axis=0).lo,
                    Interval._new(high[k], high[k]).sum(axis=0).hi,
                )
            grads[k] = t * scale
        dt = next(iter(nominal.values())).dtype.type
        nominal = {k: g * dt(float(Fraction(1, m))) for k, g in nominal.items()}
        return grads, nominal, loss_sum * Interval._exact(Fraction(1, m), loss_sum)

    def _per_sample(self, model, loss, kind, box, clean, y, sel, att):
        """Per-sample gradient boxes of rows ``sel`` (clipped), and their logit box.

        ``kind = (features_move, labels_flip)`` applies to the attackable rows
        ``att`` only; the others stay clean.
        """
        features_move, labels_flip = kind
        xp = box.backend.xp
        att_dev = xp.asarray(att)
        inp = clean[sel]
        free = features_move and math.isinf(self.threat.epsilon) and self.threat.domain is None
        if features_move and not free:
            a = att_dev[:, None]
            inp = Interval._new(xp.where(a, box.lo[sel], inp.lo), xp.where(a, box.hi[sel], inp.hi))
        z = model.forward(inp)
        dz = loss.sample_grad(z, y[sel])
        if labels_flip:
            flipped = loss.flipped_grad(z, y[sel], self.threat.label_target)
            a = att_dev.reshape(-1, *([1] * (z.ndim - 1)))
            dz = Interval._new(xp.where(a, flipped.lo, dz.lo), xp.where(a, flipped.hi, dz.hi))
        model.backward(dz, per_sample=True)
        grads = _named_grads(model)
        if self.clipping is not None:
            grads = self.clipping.clip(grads)
        if free:  # moved anywhere: a clipped gradient is all that is known
            size = sum(int(np.prod(g.shape[1:])) for g in grads.values())
            bound = self.clipping.entry_bound(size, box.dtype)
            out = {}
            for k, g in grads.items():
                a = att_dev.reshape(-1, *([1] * (g.ndim - 1)))
                out[k] = Interval._new(
                    xp.where(a, -bound, g.lo).astype(g.dtype),
                    xp.where(a, bound, g.hi).astype(g.dtype),
                )
            grads = out
        return grads, z

    def _nominal_per_sample(self, model, loss, x, y) -> dict:
        """The nominal model's per-sample gradients on clean rows ``x``, clipped (floats)."""
        z = model.forward_nominal(x)
        model.backward_nominal(loss.nominal_grad(z, y, per_sample=True), per_sample=True)
        grads = {
            f"{i}.{k}": layer.nominal_grads[k]
            for i, layer in enumerate(model.layers)
            for k in layer.params
        }
        return self.clipping.clip_nominal(grads) if self.clipping is not None else grads


def _named_grads(model: Sequential) -> dict[str, Interval]:
    layers = enumerate(model.layers)
    return {f"{i}.{k}": layer.grads[k] for i, layer in layers for k in layer.params}


def _select(low, high, base, extra, att, k: int):
    """The running ``k`` smallest lower and ``k`` largest upper deviations, by parameter name.

    A row's deviation is ``min(RD(extra.lo - base.lo), 0)`` (and the upper
    mirror), 0 for rows the attacker cannot touch and where ``base`` is
    already unbounded on that side.
    """
    new_low, new_high = {}, {}
    for name, b in base.items():
        e = extra[name]
        xp, kern = b.backend.xp, b.backend.kernels
        keep = xp.asarray(att).reshape(-1, *([1] * (b.ndim - 1)))
        with np.errstate(invalid="ignore"):
            d_lo = xp.minimum(kern.add_rd(e.lo, -b.lo), 0)
            d_hi = xp.maximum(kern.add_ru(e.hi, -b.hi), 0)
        d_lo = xp.where(keep & ~xp.isneginf(b.lo), d_lo, 0).astype(b.dtype)
        d_hi = xp.where(keep & ~xp.isposinf(b.hi), d_hi, 0).astype(b.dtype)
        if low is not None:
            d_lo = xp.concatenate([low[name], d_lo])
            d_hi = xp.concatenate([high[name], d_hi])
        r = d_lo.shape[0]
        if r > k:
            d_lo = xp.partition(d_lo, k - 1, axis=0)[:k]
            d_hi = xp.partition(d_hi, r - k, axis=0)[r - k :]
        new_low[name], new_high[name] = d_lo, d_hi
    return new_low, new_high
