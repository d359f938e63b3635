"""Named elementwise functions on ``Interval``: ``intervalnn.sqrt(x)`` and friends.

Monotone functions are evaluated at the endpoints with the lower endpoint
rounded down and the upper rounded up (IEEE 1788-2015, 10.5.3); the
rounding itself lives in :mod:`intervalnn.kernels`.
"""

from __future__ import annotations

from .interval import Interval, _coerce, _first_bad_index

__all__ = ["abs", "maximum", "minimum", "relu", "sqr", "sqrt"]


def _require(x) -> Interval:
    if not isinstance(x, Interval):
        raise TypeError(f"expected an Interval, got {type(x).__name__}")
    return x


def _check_domain(x: Interval, lower: float, name: str, strict: bool = False):
    """``ValueError`` naming the first element that reaches below the domain."""
    xp = x.backend.xp
    bad = (x.lo <= lower) if strict else (x.lo < lower)
    if bool(bad.any()):
        idx = _first_bad_index(xp, bad)
        bound = f"> {lower}" if strict else f">= {lower}"
        raise ValueError(
            f"{name} needs x {bound}, but the interval at index {idx} reaches "
            f"{float(x.lo[idx])}"
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
    """``{|t| : t in x}`` (exact: no rounding needed)."""
    x = _require(x)
    xp = x.backend.xp
    lo, hi = x.lo, x.hi
    straddles = (lo < 0) & (hi > 0)
    new_lo = xp.where(lo >= 0, lo, xp.where(hi <= 0, -hi, 0))
    new_hi = xp.where(lo >= 0, hi, xp.where(straddles, xp.maximum(-lo, hi), -lo))
    return Interval._new(new_lo.astype(x.dtype), new_hi.astype(x.dtype))


def minimum(a, b) -> Interval:
    """Elementwise ``min`` over all members (exact)."""
    a = a if isinstance(a, Interval) else _coerce(_require(b), a)
    b = _coerce(a, b)
    xp = a.backend.xp
    return Interval._new(xp.minimum(a.lo, b.lo), xp.minimum(a.hi, b.hi))


def maximum(a, b) -> Interval:
    """Elementwise ``max`` over all members (exact)."""
    a = a if isinstance(a, Interval) else _coerce(_require(b), a)
    b = _coerce(a, b)
    xp = a.backend.xp
    return Interval._new(xp.maximum(a.lo, b.lo), xp.maximum(a.hi, b.hi))


def relu(x: Interval) -> Interval:
    """``max(x, 0)`` (exact, monotone)."""
    x = _require(x)
    xp = x.backend.xp
    return Interval._new(xp.maximum(x.lo, 0).astype(x.dtype), xp.maximum(x.hi, 0).astype(x.dtype))
