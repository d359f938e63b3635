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
from .kernels import bounds, kofn
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

    def clip(self, grads: dict[str, Interval], factor: Interval | None = None) -> dict:
        """Per-sample gradient boxes (leading axis: rows), clipped; exact for ``clamp``.

        ``norm`` scales by ``factor`` (:meth:`norm_factor`; computed from
        ``grads`` when None).
        """
        if self.method == "clamp":
            return {k: _clamp(g, self.gamma) for k, g in grads.items()}
        if factor is None:
            m = next(iter(grads.values())).shape[0]
            factor = self.norm_factor(
                _interval_sum(F.sqr(g.reshape(m, -1)).sum(axis=1) for g in grads.values())
            )
        return {k: g * factor.reshape(-1, *([1] * (g.ndim - 1))) for k, g in grads.items()}

    def clip_nominal(self, grads: dict, factor=None) -> dict:
        """The nominal model's per-sample gradients clipped in float arithmetic (the same rule).

        ``norm`` scales by ``factor`` (:meth:`nominal_norm_factor`; computed
        from ``grads`` when None).
        """
        if self.method == "clamp":
            return {k: g.clip(-self.gamma, self.gamma) for k, g in grads.items()}
        if factor is None:
            m = next(iter(grads.values())).shape[0]
            factor = self.nominal_norm_factor(
                sum((g.reshape(m, -1) ** 2).sum(axis=1) for g in grads.values())
            )
        return {k: g * factor.reshape(-1, *([1] * (g.ndim - 1))) for k, g in grads.items()}

    def nominal_norm_factor(self, square_norm):
        """The nominal model's ``min(1, gamma / sqrt(square_norm))`` per row, in floats."""
        xp, dt = backend_of(square_norm).xp, square_norm.dtype.type
        with np.errstate(divide="ignore"):
            return xp.minimum(dt(1), dt(self.gamma) / xp.sqrt(square_norm))

    def norm_factor(self, square_norm: Interval) -> Interval:
        """``min(1, gamma / sqrt(s))`` per row for every ``s`` in ``square_norm``, outward.

        A sum of squares is ``>= 0``; an overflowing one has lower bound
        ``-inf`` from :meth:`Interval.sum`, so it is raised to 0 first.
        """
        xp = square_norm.backend.xp
        square_norm = Interval._new(xp.maximum(square_norm.lo, 0), square_norm.hi)
        norm = F.sqrt(square_norm)
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


def _interval_sum(terms) -> Interval:
    """``t1 + t2 + ...`` left to right (the nominal model adds in the same order)."""
    total = None
    for t in terms:
        total = t if total is None else total + t
    return total


def _clamp(g: Interval, gamma: float) -> Interval:
    """``clip(t, -gamma, gamma)`` for every ``t`` in ``g`` and for the nominal's ``RN(gamma)``.

    Clipping is monotone in ``t``, so both ends are clipped: the lower end at
    ``[-RU(gamma), RD(gamma)]`` and the upper end at ``[-RD(gamma), RU(gamma)]``
    (``gamma`` exactly as given, and its nearest float in ``g``'s dtype, which
    the nominal model clips at, both lie in ``[RD(gamma), RU(gamma)]``).
    """
    xp = g.backend.xp
    down, up = bounds.enclose_real(gamma, g.dtype)
    return Interval._new(xp.clip(g.lo, -up, down), xp.clip(g.hi, -down, up))


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
            or (self.threat.epsilon > 0 and self.threat.feature_budget(self.n) < self.n)
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
        base = self._rows(model, loss, plan.base, box, clean, y, idx, attack)
        extra = None
        if plan.extra is not None and plan.k:
            extra = self._rows(model, loss, plan.extra, box, clean, y, idx, attack)
        nominal = self._nominal_rows(model, loss, x[idx], y[idx])
        any_box = base.factors[next(iter(base.factors))][0]
        bound = None
        if self.clipping is not None:
            trainable = model.named_params(trainable=True).values()
            size = sum(int(np.prod(p.shape)) for p in trainable)
            bound = self.clipping.entry_bound(size, any_box.dtype)
        # the kernel clamps at gamma as a float of the dtype: it must be exact there
        fast = any_box.backend.name == "numpy" and (
            self.clipping is None
            or self.clipping.method == "norm"
            or float(any_box.dtype.type(self.clipping.gamma)) == self.clipping.gamma
        )
        accumulate = _accumulate_kernel if fast else _accumulate_python
        grads, nominal_grads = {}, {}
        for layer in base.factors:
            found = accumulate(self.clipping, bound, base, extra, nominal, layer, attack, plan.k)
            for name, (mean, nominal_mean) in found.items():
                grads[f"{layer}.{name}"] = mean
                nominal_grads[f"{layer}.{name}"] = nominal_mean
        value = loss.value(base.z, y[idx])
        return grads, nominal_grads, value

    def _rows(self, model, loss, kind, box, clean, y, idx, att) -> Rows:
        """One pass over the batch rows ``idx``: per-sample gradient factors (a :class:`Rows`).

        ``kind = (features_move, labels_flip)`` applies to the attackable rows
        ``att`` only; the others stay clean.
        """
        features_move, labels_flip = kind
        xp = box.backend.xp
        att_dev = xp.asarray(att)
        inp = clean[idx]
        free = features_move and math.isinf(self.threat.epsilon) and self.threat.domain is None
        if features_move and not free:
            a = att_dev.reshape(-1, *([1] * (inp.ndim - 1)))  # features of any rank
            inp = Interval._new(xp.where(a, box.lo[idx], inp.lo), xp.where(a, box.hi[idx], inp.hi))
        z = model.forward(inp)
        diffs = model.logit_differences() if loss.name == "ce" else None
        dz = loss.sample_grad(z, y[idx], diffs)
        if labels_flip:
            flipped = loss.flipped_grad(z, y[idx], self.threat.label_target, diffs)
            a = att_dev.reshape(-1, *([1] * (z.ndim - 1)))
            dz = Interval._new(xp.where(a, flipped.lo, dz.lo), xp.where(a, flipped.hi, dz.hi))
        model.backward(dz, per_sample=True, zero_sum_ref=_zero_sum_ref(loss, y[idx]))
        factors = _factors(model)
        scale = None
        if self.clipping is not None and self.clipping.method == "norm":
            scale = self.clipping.norm_factor(_square_norm(factors, F.sqr, lambda a: a + 1))
        return Rows(factors, scale, att_dev if free else None, z)

    def _nominal_rows(self, model, loss, x, y) -> Rows:
        """The nominal model's per-sample gradient factors on clean rows ``x`` (floats)."""
        z = model.forward_nominal(x)
        diffs = model.logit_differences(nominal=True) if loss.name == "ce" else None
        g = loss.nominal_grad(z, y, per_sample=True, diffs=diffs)
        model.backward_nominal(g, per_sample=True, zero_sum_ref=_zero_sum_ref(loss, y))
        factors = _factors(model, nominal=True)
        scale = None
        if self.clipping is not None and self.clipping.method == "norm":
            square = _square_norm(factors, lambda a: a * a, lambda a: a + a.dtype.type(1))
            scale = self.clipping.nominal_norm_factor(square)
        return Rows(factors, scale, None, z)


class Rows(NamedTuple):
    """One pass's per-sample gradients in factored form, for every Linear layer.

    Row i's gradient of layer ``l``'s weight is ``x_i^T g_i`` and of its bias
    ``g_i``, with ``(x, g) = factors[l]``; ``scale`` is the norm-clipping
    factor per row (None: no norm clipping); ``free`` marks the rows whose
    clipped gradient is only known to lie in ``[-bound, bound]`` (epsilon =
    inf); ``z`` the logits.
    """

    factors: dict
    scale: object
    free: object
    z: object


def _zero_sum_ref(loss, y):
    """Each row's reference class where ``d loss / dz`` sums to 0 (cross-entropy), else None."""
    return y if loss.name == "ce" else None


def _factors(model: Sequential, nominal: bool = False) -> dict:
    attr = "nominal_factors" if nominal else "sample_factors"
    return {
        i: getattr(layer, attr)
        for i, layer in enumerate(model.layers)
        if layer.params and i >= model.frozen
    }


def _square_norm(factors: dict, square, plus_one):
    """Each row's squared gradient norm ``sum_l (||x_l||^2 + 1) ||g_l||^2`` (weight and bias).

    The squared Frobenius norm of ``x^T g`` is ``||x||^2 ||g||^2``: one formula
    for the box (interval ``square``) and the nominal model (floats), summed
    over the layers in the same order.
    """
    total = None
    for x, g in factors.values():
        term = plus_one(square(x).sum(axis=1)) * square(g).sum(axis=1)
        total = term if total is None else total + term
    return total


def _products(rows: Rows, layer: int, sel, clipping, bound, interval: bool) -> dict:
    """Rows ``sel`` of layer ``layer``'s per-sample weight and bias gradients, clipped."""
    x, g = rows.factors[layer]
    x, g = x[sel], g[sel]
    r = g.shape[0]
    grads = {"weight": x.reshape(r, -1, 1) * g.reshape(r, 1, -1), "bias": g}
    if clipping is None:
        return grads
    scale = None if rows.scale is None else rows.scale[sel]
    if not interval:
        return clipping.clip_nominal(grads, scale)
    grads = clipping.clip(grads, scale)
    if clipping.method == "norm":  # a clipped entry is at most bound in magnitude, real or float
        grads = {k: _clamp(t, bound) for k, t in grads.items()}
    if rows.free is not None:
        free = rows.free[sel]
        out = {}
        for k, t in grads.items():
            xp = t.backend.xp
            f = free.reshape(-1, *([1] * (t.ndim - 1)))
            lo = xp.where(f, -bound, t.lo).astype(t.dtype)
            out[k] = Interval._new(lo, xp.where(f, bound, t.hi).astype(t.dtype))
        grads = out
    return grads


def _accumulate_kernel(clipping, bound, base, extra, nominal, layer, attack, k) -> dict:
    """:func:`_accumulate_python`'s bound from the fused CPU kernel (:mod:`kernels.kofn`).

    The kernel takes the factors as they are (no per-sample gradients in
    memory) and sums the rows in the nominal model's order.
    """
    x, g = base.factors[layer]
    m, dt = g.shape[0], g.dtype
    ones = np.ones(m, dtype=dt)
    no = np.zeros(m, dtype=bool)
    e = extra if extra is not None else base

    def scale(rows):
        return (ones, ones) if rows.scale is None else (rows.scale.lo, rows.scale.hi)

    def free(rows):
        return no if rows.free is None else np.asarray(rows.free)

    inv_lo, inv_hi = bounds.enclose_real(Fraction(1, m), dt)
    inv_nom = dt.type(float(Fraction(1, m)))
    # norm clipping: every clipped entry, real or float, lies in [-bound, bound] (entry_bound)
    gamma = 0.0 if clipping is None else clipping.gamma if clipping.method == "clamp" else bound
    ex, eg = e.factors[layer]
    nx, ng = nominal.factors[layer]
    nf = ones if nominal.scale is None else nominal.scale
    out = {}
    column = Interval._new(np.ones((m, 1), dtype=dt), np.ones((m, 1), dtype=dt))
    inputs = {"weight": (x, ex, nx), "bias": (column, column, column.lo)}
    for name, (a, ea, na) in inputs.items():
        shape = (a.shape[1], g.shape[1])
        lo, hi, nom = np.empty(shape, dt), np.empty(shape, dt), np.empty(shape, dt)
        kofn.outer_kofn(
            a.lo, a.hi, g.lo, g.hi, ea.lo, ea.hi, eg.lo, eg.hi,
            *scale(base), *scale(e), free(base), free(e), bound or 0.0,
            na, ng, nf, np.asarray(attack), k if extra is not None else 0, gamma,
            inv_lo, inv_hi, inv_nom, lo, hi, nom,
        )  # fmt: skip
        if name == "bias":
            lo, hi, nom = lo[0], hi[0], nom[0]
        out[name] = (Interval._new(lo, hi), nom)
    return out


def _accumulate_python(clipping, bound, base, extra, nominal, layer, attack, k) -> dict:
    """Layer ``layer``'s mean gradient boxes and nominal means, by ``"weight"`` / ``"bias"``.

    Rows are taken in fragments of at most :data:`FRAGMENT_FLOATS` entries;
    the box sums and the nominal sums add the fragments in the same order.
    """
    x, g = base.factors[layer]
    m = g.shape[0]
    rows = max(1, FRAGMENT_FLOATS // ((x.shape[1] + 1) * g.shape[1]))
    total = nominal_total = None
    low = high = None
    for start in range(0, m, rows):
        sel = slice(start, start + rows)
        b = _products(base, layer, sel, clipping, bound, True)
        sums = {n: t.sum(axis=0) for n, t in b.items()}
        total = sums if total is None else {n: total[n] + sums[n] for n in total}
        if extra is not None:
            e = _products(extra, layer, sel, clipping, bound, True)
            low, high = _select(low, high, b, e, attack[sel], k)
        nb = _products(nominal, layer, sel, clipping, bound, False)
        sums = {n: t.sum(axis=0) for n, t in nb.items()}
        nominal_total = (
            sums
            if nominal_total is None
            else {n: nominal_total[n] + sums[n] for n in nominal_total}
        )
    inv = Interval._exact(Fraction(1, m), x)
    inv_nominal = x.dtype.type(float(Fraction(1, m)))
    out = {}
    for n, t in total.items():
        if low is not None:
            t = t + Interval._new(
                Interval._new(low[n], low[n]).sum(axis=0).lo,
                Interval._new(high[n], high[n]).sum(axis=0).hi,
            )
        out[n] = (t * inv, nominal_total[n] * inv_nominal)
    return out


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
