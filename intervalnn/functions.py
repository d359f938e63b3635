"""Named elementwise functions on ``Interval``: ``intervalnn.sqrt(x)`` and friends.

Monotone functions are evaluated at the endpoints with the lower endpoint
rounded down and the upper rounded up (IEEE 1788-2015, 10.5.3); the
rounding itself lives in :mod:`intervalnn.kernels`.
"""

from __future__ import annotations

from .interval import Interval, coerce, first_index

__all__ = [
    "abs",
    "exp",
    "expm1",
    "log",
    "log1p",
    "maximum",
    "minimum",
    "relu",
    "sigmoid",
    "softplus",
    "sqr",
    "sqrt",
    "tanh",
]


def _require(x) -> Interval:
    if not isinstance(x, Interval):
        raise TypeError(f"expected an Interval, got {type(x).__name__}")
    return x


def _check_domain(x: Interval, lower: float, name: str, strict: bool = False):
    """``ValueError`` naming the first element that reaches below the domain."""
    xp = x.backend.xp
    bad = (x.lo <= lower) if strict else (x.lo < lower)
    if bool(bad.any()):
        idx = first_index(xp, bad)
        bound = f"> {lower}" if strict else f">= {lower}"
        raise ValueError(
            f"{name} needs x {bound}, but the interval at index {idx} reaches {float(x.lo[idx])}"
        )


def sqr(x: Interval) -> Interval:
    """``{t**2 : t in x}``, tightest."""
    x = _require(x)
    return Interval._new(*x.backend.kernels.sqr(x.lo, x.hi))


def sqrt(x: Interval) -> Interval:
    """Square root, tightest; ``ValueError`` if any interval reaches below 0."""
    x = _require(x)
    _check_domain(x, 0.0, "sqrt")
    return Interval._new(*x.backend.kernels.sqrt(x.lo, x.hi))


def abs(x: Interval) -> Interval:  # noqa: A001 - the public name mirrors numpy.abs
    """``{|t| : t in x}`` (exact: no rounding needed); the operator ``Interval.__abs__``."""
    return _require(x).__abs__()


def minimum(a, b) -> Interval:
    """Elementwise ``min`` over all members (exact)."""
    a = a if isinstance(a, Interval) else coerce(_require(b), a)
    b = coerce(a, b)
    xp = a.backend.xp
    return Interval._new(xp.minimum(a.lo, b.lo), xp.minimum(a.hi, b.hi))


def maximum(a, b) -> Interval:
    """Elementwise ``max`` over all members (exact)."""
    a = a if isinstance(a, Interval) else coerce(_require(b), a)
    b = coerce(a, b)
    xp = a.backend.xp
    return Interval._new(xp.maximum(a.lo, b.lo), xp.maximum(a.hi, b.hi))


def relu(x: Interval) -> Interval:
    """``max(x, 0)`` (exact, monotone)."""
    x = _require(x)
    xp = x.backend.xp
    return Interval._new(xp.maximum(x.lo, 0).astype(x.dtype), xp.maximum(x.hi, 0).astype(x.dtype))


# ------------------------------------------------------------ transcendentals
# Kernels ``exp_rd``/``exp_ru``, ``log_rd``, ... bound the real function value
# at a float from below/above without trusting libm (kernels/elementary.py:
# double-double evaluation with a proven error bound; the float64 results are
# the tightest ones except within 2^-92 relative of a float, then 1 ulp wider).


def _check_reaches_above(x: Interval, lower: float, name: str):
    """``ValueError`` where an interval has no point above ``lower`` (empty result)."""
    bad = x.hi <= lower
    if bool(bad.any()):
        idx = first_index(x.backend.xp, bad)
        raise ValueError(
            f"{name} needs x > {lower} somewhere, but the interval at index {idx} is "
            f"[{float(x.lo[idx])}, {float(x.hi[idx])}]"
        )


def exp(x: Interval) -> Interval:
    """``e^x`` (monotone): ``[RD exp(lo), RU exp(hi)]``; overflow gives ``[MAX, inf]``."""
    x = _require(x)
    k = x.backend.kernels
    return Interval._new(k.exp_rd(x.lo), k.exp_ru(x.hi))


def expm1(x: Interval) -> Interval:
    """``e^x - 1`` (monotone), accurate near 0."""
    x = _require(x)
    k = x.backend.kernels
    return Interval._new(k.expm1_rd(x.lo), k.expm1_ru(x.hi))


def log(x: Interval) -> Interval:
    """Natural logarithm; ``lo = 0`` gives ``-inf``.

    ``ValueError`` if an interval reaches below 0, or is ``[0, 0]``.
    """
    x = _require(x)
    _check_domain(x, 0.0, "log")
    _check_reaches_above(x, 0.0, "log")
    k = x.backend.kernels
    return Interval._new(k.log_rd(x.lo), k.log_ru(x.hi))


def log1p(x: Interval) -> Interval:
    """``log(1 + x)``, accurate near 0; ``lo = -1`` gives ``-inf``.

    ``ValueError`` if an interval reaches below -1, or is ``[-1, -1]``.
    """
    x = _require(x)
    _check_domain(x, -1.0, "log1p")
    _check_reaches_above(x, -1.0, "log1p")
    k = x.backend.kernels
    return Interval._new(k.log1p_rd(x.lo), k.log1p_ru(x.hi))


def _by_mask(xp, mask, a, f_true, f_false):
    """``f_true(a)`` where ``mask``, ``f_false(a)`` elsewhere, each evaluated only where used."""
    out = xp.empty_like(a)
    out[mask] = f_true(a[mask])
    out[~mask] = f_false(a[~mask])
    return out


def _sigmoid_bound(x: Interval, a, up: bool):
    """A lower (``up=False``) or upper bound of ``1 / (1 + e^-a)`` at each point of ``a``.

    With ``t = -|a|`` and ``E = e^t`` in ``[0, 1]``: for ``a < 0``,
    ``sigmoid(a) = E / (1 + E)``, increasing in ``E``; for ``a >= 0``,
    ``sigmoid(a) = 1 / (1 + E)``, decreasing in ``E``.  So a lower bound
    takes ``E`` rounded down where ``a < 0`` and up elsewhere (an upper bound
    the reverse), and each division and sum is rounded to keep its side.  No
    overflow: ``E <= 1``, so even ``a = -1000`` keeps a positive lower bound.
    """
    xp, k = x.backend.xp, x.backend.kernels
    neg = a < 0
    t = -xp.abs(a)
    one = xp.ones_like(a)
    if up:
        e = _by_mask(xp, neg, t, k.exp_ru, k.exp_rd)
        d = k.add_rd(one, e)
        v = xp.where(neg, k.div_ru(e, d), k.div_ru(one, d))
    else:
        e = _by_mask(xp, neg, t, k.exp_rd, k.exp_ru)
        d = k.add_ru(one, e)
        v = xp.where(neg, k.div_rd(e, d), k.div_rd(one, d))
    return xp.clip(v, 0, 1).astype(x.dtype)


def sigmoid(x: Interval) -> Interval:
    """Logistic ``1 / (1 + e^-x)`` (monotone), clamped to ``[0, 1]``; within a few ulps."""
    x = _require(x)
    return Interval._new(_sigmoid_bound(x, x.lo, False), _sigmoid_bound(x, x.hi, True))


def _softplus_bound(x: Interval, a, up: bool):
    """``max(a, 0) + log1p(e^-|a|)`` rounded down or up: exact identity, no overflow."""
    xp, k = x.backend.xp, x.backend.kernels
    t = -xp.abs(a)
    m = xp.maximum(a, 0).astype(x.dtype)
    if up:
        return k.add_ru(m, k.log1p_ru(k.exp_ru(t)))
    return k.add_rd(m, k.log1p_rd(k.exp_rd(t)))


def softplus(x: Interval) -> Interval:
    """``log(1 + e^x)`` (monotone), within a few ulps; ``softplus(x) >= max(x, 0)``."""
    x = _require(x)
    return Interval._new(_softplus_bound(x, x.lo, False), _softplus_bound(x, x.hi, True))


def tanh(x: Interval) -> Interval:
    """Hyperbolic tangent (monotone): ``[RD tanh(lo), RU tanh(hi)]``, within 1 ulp of the tightest.

    The kernels evaluate ``tanh`` in double-double with a proven error bound
    (kernels/elementary.py), not by composing rounded exp/division steps.
    """
    x = _require(x)
    k = x.backend.kernels
    return Interval._new(k.tanh_rd(x.lo), k.tanh_ru(x.hi))
