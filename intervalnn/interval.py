"""``Interval``: an immutable array of closed real intervals ``[lo, hi]``.

The class is a thin layer over plain ``(lo, hi)`` kernels: it validates,
broadcasts, converts operands and picks the backend; all rounding happens in
:mod:`intervalnn.kernels`.  Every result encloses the exact real result of
the operation on every choice of points from the operands (soundness); the
elementwise arithmetic ``+ - * /`` is also the tightest such enclosure (IEEE
1788-2015, "tightest" accuracy).

Conventions: endpoints are float32 or float64; ``lo = -inf`` and
``hi = +inf`` are allowed, NaN, ``lo > hi``, ``lo = +inf`` and ``hi = -inf``
are not (IEEE 1788 has no empty interval here).  Python scalars are exact real
numbers and are enclosed outward in the interval's dtype; arrays must have the
interval's dtype (convert explicitly with ``astype``).
"""

from __future__ import annotations

import math
from fractions import Fraction
from numbers import Real

import numpy as np

from .backend import Backend, backend_of, check_float_dtype, is_cupy_array
from .kernels import bounds
from .kernels.gemm import matmul_bounds


def first_index(xp, mask) -> tuple:
    """The index of the first true entry of the boolean array ``mask`` (C order), for messages."""
    flat = int(xp.argmax(mask.reshape(-1)))
    return tuple(int(i) for i in np.unravel_index(flat, mask.shape)) if mask.ndim else ()


def _freeze(a):
    if isinstance(a, np.ndarray):
        a.flags.writeable = False
    return a


class Interval:
    """An array of intervals ``[lo, hi]`` on NumPy (CPU) or CuPy (GPU).

    ``Interval(lo, hi)`` copies and validates its endpoints; ``Interval(x)``
    is the point interval ``[x, x]``.  Instances are immutable.
    """

    __slots__ = ("_lo", "_hi")
    # Make NumPy defer ``ndarray <op> Interval`` to our reflected operators.
    __array_ufunc__ = None

    def __init__(self, lo, hi=None):
        bk = backend_of(lo, hi)
        xp = bk.xp
        lo_arr = xp.array(lo, copy=True)
        hi_arr = lo_arr.copy() if hi is None else xp.array(hi, copy=True)
        if lo_arr.dtype != hi_arr.dtype:
            raise TypeError(
                f"lo and hi have different dtypes ({lo_arr.dtype}, {hi_arr.dtype}); "
                "convert one explicitly"
            )
        lo_arr, hi_arr = _as_float(xp, lo_arr), _as_float(xp, hi_arr)
        if lo_arr.shape != hi_arr.shape:
            raise ValueError(f"lo has shape {lo_arr.shape} but hi has shape {hi_arr.shape}")
        bk.require_dtype(lo_arr.dtype)
        _validate(xp, lo_arr, hi_arr)
        self._lo, self._hi = _freeze(lo_arr), _freeze(hi_arr)

    @classmethod
    def _new(cls, lo, hi) -> Interval:
        """Wrap kernel results without copying or validating them."""
        self = object.__new__(cls)
        self._lo, self._hi = _freeze(lo), _freeze(hi)
        return self

    # ------------------------------------------------------ constructors

    @classmethod
    def point(cls, x) -> Interval:
        """The degenerate interval ``[x, x]``."""
        return cls(x)

    @classmethod
    def from_center_radius(cls, center, radius) -> Interval:
        """``[center - radius, center + radius]``, rounded outward."""
        c = Interval(center)
        bk = c.backend
        r = _radius_up(bk.xp, radius, c.dtype)
        if bool((r < 0).any()) or bool(bk.xp.isnan(r).any()):
            raise ValueError("radius must be >= 0 and not NaN")
        r = bk.xp.broadcast_to(r, c.shape)
        return cls._new(bk.kernels.add_rd(c.lo, -r), bk.kernels.add_ru(c.hi, r))

    @classmethod
    def ball(cls, x, eps, domain: tuple[float, float] | None = None) -> Interval:
        """The l-infinity ball ``[x - eps, x + eps]``, optionally clipped to ``domain``.

        With ``domain=(a, b)`` every interval is intersected with ``[a, b]``
        (e.g. ``(0, 1)`` for pixels); ``x`` itself must lie in the domain.
        """
        if not np.isfinite(eps) or eps < 0:
            raise ValueError(f"eps must be a finite number >= 0, got {eps}")
        center = Interval(x)
        box = cls.from_center_radius(center.lo, eps)
        if domain is None:
            return box
        a, b = domain
        if not a <= b:
            raise ValueError(f"domain must satisfy lower <= upper, got {domain}")
        xp = box.backend.xp
        lo_d, _ = bounds.enclose_real(a, box.dtype)
        _, hi_d = bounds.enclose_real(b, box.dtype)
        if bool(((center.lo < lo_d) | (center.lo > hi_d)).any()):
            raise ValueError(f"x lies outside the data domain {domain}")
        return cls._new(xp.maximum(box.lo, lo_d), xp.minimum(box.hi, hi_d))

    # ------------------------------------------------------ properties

    @property
    def lo(self):
        return self._lo

    @property
    def hi(self):
        return self._hi

    @property
    def backend(self) -> Backend:
        return backend_of(self._lo)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self._lo.shape)

    @property
    def ndim(self) -> int:
        return self._lo.ndim

    @property
    def size(self) -> int:
        return int(self._lo.size)

    @property
    def dtype(self) -> np.dtype:
        return self._lo.dtype

    def __len__(self) -> int:
        return len(self._lo)

    @property
    def mid(self):
        """A midpoint in ``[lo, hi]``: finite unless both endpoints are infinite (then 0).

        Computed as ``lo/2 + hi/2`` so that it cannot overflow; it need not be
        the exact midpoint, but ``rad`` is taken about this very value.
        """
        return self.backend.kernels.midrad(self._lo, self._hi)[0]

    @property
    def rad(self):
        """Radius about ``mid``, rounded up: ``[mid - rad, mid + rad]`` contains ``self``."""
        return self.backend.kernels.midrad(self._lo, self._hi)[1]

    def midrad(self):
        """``(mid, rad)`` in one pass (see ``mid`` and ``rad``)."""
        return self.backend.kernels.midrad(self._lo, self._hi)

    @property
    def width(self):
        """``hi - lo`` rounded up."""
        return self.backend.kernels.add_ru(self._hi, -self._lo)

    def is_point(self):
        """Elementwise: ``lo == hi``."""
        return self._lo == self._hi

    # ------------------------------------------------------ set predicates

    def contains(self, x):
        """Elementwise: does ``[lo, hi]`` contain the point (or interval) ``x``?"""
        if isinstance(x, Interval):
            return x.subset(self)
        x = _coerce_points(self, x)  # integers stay exact float64: compared, never rounded
        return (self._lo <= x) & (x <= self._hi)

    def subset(self, other: Interval):
        """Elementwise: is ``self`` a subset of ``other``?"""
        other = coerce(self, other)
        return (other._lo <= self._lo) & (self._hi <= other._hi)

    def hull(self, other: Interval) -> Interval:
        """The smallest intervals containing both ``self`` and ``other``."""
        other = coerce(self, other)
        xp = self.backend.xp
        return Interval._new(xp.minimum(self._lo, other._lo), xp.maximum(self._hi, other._hi))

    def intersect(self, other: Interval) -> Interval:
        """The intersection; ``ValueError`` where it is empty (no empty interval here)."""
        other = coerce(self, other)
        xp = self.backend.xp
        lo, hi = xp.maximum(self._lo, other._lo), xp.minimum(self._hi, other._hi)
        empty = lo > hi
        if bool(empty.any()):
            raise ValueError(f"intersection is empty at index {first_index(xp, empty)}")
        return Interval._new(lo, hi)

    # ------------------------------------------------------ array manipulation

    def __getitem__(self, key) -> Interval:
        lo, hi = self._lo[key], self._hi[key]
        return Interval._new(lo.copy(), hi.copy())

    def reshape(self, *shape) -> Interval:
        return Interval._new(self._lo.reshape(*shape), self._hi.reshape(*shape))

    def transpose(self, *axes) -> Interval:
        return Interval._new(self._lo.transpose(*axes), self._hi.transpose(*axes))

    @property
    def T(self) -> Interval:
        return self.transpose()

    def astype(self, dtype) -> Interval:
        """Convert to ``dtype``: exact when widening, outward-rounded when narrowing."""
        dt = self.backend.require_dtype(dtype)
        if dt == self.dtype:
            return self
        xp = self.backend.xp
        return Interval._new(
            bounds.narrow_down(xp, self._lo, dt), bounds.narrow_up(xp, self._hi, dt)
        )

    def to_numpy(self) -> Interval:
        """The same intervals on the CPU (a copy if they live on the GPU)."""
        bk = self.backend
        return (
            self
            if bk.name == "numpy"
            else Interval._new(bk.to_host(self._lo), bk.to_host(self._hi))
        )

    # ------------------------------------------------------ reductions

    def sum(self, axis=None) -> Interval:
        """Sum along ``axis`` (all axes if None), rounded outward.

        Uses the backend's own summation and bounds its rounding error for any
        order by ``RU(gamma / (1 - gamma)) * A``, rounded up, with ``A =
        fl(sum |x|)`` and ``gamma = gamma_{n-1}`` (the factor and its proof:
        :func:`intervalnn.kernels.bounds.sum_error_factor`).  That error is
        taken twice, so that the bound also contains the float sum
        of members in any other order (``x' >= lo`` gives ``fl(sum x') >=
        sum lo - gamma sum |lo|``, and symmetrically for ``hi``).
        """
        xp, k = self.backend.xp, self.backend.kernels
        n = (
            self.size
            if axis is None
            else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        )
        if n <= 1:
            return Interval._new(xp.sum(self._lo, axis=axis), xp.sum(self._hi, axis=axis))
        g = 2 * bounds.sum_error_factor(n - 1, self.dtype)  # this sum's error and another order's

        def bound(x, up):
            s, a = xp.sum(x, axis=axis), xp.sum(xp.abs(x), axis=axis)
            err = k.mul_ru(xp.asarray(g, dtype=self.dtype), a)
            out = k.add_ru(s, err) if up else k.add_rd(s, -err)
            # a = inf: an infinite term or overflow; the bound is then infinite.
            return xp.where(xp.isinf(a), xp.inf if up else -xp.inf, out).astype(self.dtype)

        return Interval._new(bound(self._lo, False), bound(self._hi, True))

    def mean(self, axis=None) -> Interval:
        """Mean along ``axis``: the outward sum times the enclosure of ``1/n``."""
        n = (
            self.size
            if axis is None
            else int(np.prod([self.shape[a] for a in np.atleast_1d(axis)]))
        )
        if n == 0:
            raise ValueError("mean of an empty array")
        return self.sum(axis) * Interval._exact(Fraction(1, n), self)

    @staticmethod
    def _exact(x, like: Interval) -> Interval:
        lo, hi = bounds.enclose_real(x, like.dtype)
        xp = like.backend.xp
        return Interval._new(xp.asarray(lo, dtype=like.dtype), xp.asarray(hi, dtype=like.dtype))

    # ------------------------------------------------------ arithmetic

    def _binary(self, other, kernel_name, reflected=False):
        other = coerce(self, other)
        a, b = (other, self) if reflected else (self, other)
        bk = self.backend
        alo, ahi, blo, bhi = bk.xp.broadcast_arrays(a._lo, a._hi, b._lo, b._hi)
        if kernel_name == "div":
            straddles = (blo <= 0) & (bhi >= 0)
            if bool(straddles.any()):
                idx = first_index(bk.xp, straddles)
                raise ZeroDivisionError(
                    f"division by an interval containing 0 at index {idx}: "
                    f"[{float(blo[idx])}, {float(bhi[idx])}]; the quotient is unbounded"
                )
        return Interval._new(*getattr(bk.kernels, kernel_name)(alo, ahi, blo, bhi))

    def __add__(self, other):
        return self._binary(other, "add")

    def __radd__(self, other):
        return self._binary(other, "add", reflected=True)

    def __sub__(self, other):
        return self._binary(other, "sub")

    def __rsub__(self, other):
        return self._binary(other, "sub", reflected=True)

    def __mul__(self, other):
        return self._binary(other, "mul")

    def __rmul__(self, other):
        return self._binary(other, "mul", reflected=True)

    def __truediv__(self, other):
        return self._binary(other, "div")

    def __rtruediv__(self, other):
        return self._binary(other, "div", reflected=True)

    def __neg__(self):
        return Interval._new(-self._hi, -self._lo)

    def __pos__(self):
        return self

    def __matmul__(self, other):
        """Enclosure of ``{x @ y : x in self, y in other}`` (:mod:`intervalnn.kernels.gemm`)."""
        return self._matmul(self, coerce(self, other))

    def __rmatmul__(self, other):
        return self._matmul(coerce(self, other), self)

    @staticmethod
    def _matmul(a: Interval, b: Interval) -> Interval:
        bk = a.backend
        return Interval._new(*matmul_bounds(bk.xp, bk.kernels, a._lo, a._hi, b._lo, b._hi))

    def __abs__(self):
        """``{|t| : t in self}`` (exact: no rounding needed)."""
        xp = self.backend.xp
        lo, hi = self._lo, self._hi
        straddles = (lo < 0) & (hi > 0)
        new_lo = xp.where(lo >= 0, lo, xp.where(hi <= 0, -hi, 0))
        new_hi = xp.where(lo >= 0, hi, xp.where(straddles, xp.maximum(-lo, hi), -lo))
        return Interval._new(new_lo.astype(self.dtype), new_hi.astype(self.dtype))

    # Comparisons of intervals are ambiguous (certainly/possibly); use the
    # explicit predicates instead of operators.
    def __eq__(self, other):
        raise TypeError("intervals have no ==; compare .lo and .hi, or use subset/contains")

    __hash__ = None

    def __bool__(self):
        raise TypeError("the truth value of an Interval is ambiguous")

    def __repr__(self) -> str:
        bk = self.backend
        lo, hi = bk.to_host(self._lo), bk.to_host(self._hi)
        body = np.array2string(
            np.stack([lo, hi], axis=-1), precision=17, separator=", ", threshold=20
        )
        where = "" if bk.name == "numpy" else ", backend=cupy"
        return f"Interval({body}, dtype={self.dtype}{where})"


# ---------------------------------------------------------------- helpers


def _as_float(xp, a):
    """Integer/bool arrays become float64 exactly; float32/float64 pass through."""
    if a.dtype.kind in "biu":
        f = a.astype(np.float64)
        if a.dtype.kind != "b" and bool((f.astype(a.dtype) != a).any()):
            raise ValueError("integer values beyond 2**53 are not exactly representable")
        return f
    check_float_dtype(a.dtype)
    return a


def _validate(xp, lo, hi):
    checks = (
        (xp.isnan(lo) | xp.isnan(hi), "NaN endpoint"),
        (lo > hi, "lo > hi"),
        (lo == np.inf, "lo = +inf"),
        (hi == -np.inf, "hi = -inf"),
    )
    for bad, what in checks:
        if bool(bad.any()):
            idx = first_index(xp, bad)
            raise ValueError(
                f"invalid interval at index {idx}: {what} ([{float(lo[idx])}, {float(hi[idx])}])"
            )


def _radius_up(xp, radius, dtype: np.dtype):
    """``radius`` in ``dtype`` rounded *up*: rounding to nearest could shrink a ball."""
    if isinstance(radius, Real) and not isinstance(radius, np.generic):
        if not (isinstance(radius, float) and not math.isfinite(radius)):
            return xp.asarray(bounds.enclose_real(radius, dtype)[1], dtype=dtype)
    r = xp.asarray(radius)
    if r.dtype.kind in "biu":
        r = _as_float(xp, r)
    return bounds.narrow_up(xp, r, dtype)


def coerce(like: Interval, other) -> Interval:
    """``other`` as an operand of ``like``: an Interval of its backend and dtype, or ``TypeError``.

    Intervals must match already; an exact real scalar is enclosed outward, an
    integer array too (exact in float64 first), and a float array of
    ``like``'s dtype becomes point intervals.
    """
    if isinstance(other, Interval):
        backend_of(like._lo, other._lo)  # raises on mixed backends
        if other.dtype != like.dtype:
            raise TypeError(
                f"cannot combine {like.dtype} and {other.dtype} intervals; convert one "
                "explicitly with .astype()"
            )
        return other
    if isinstance(other, Real) and not isinstance(other, np.generic | bool):
        return Interval._exact(other, like)
    if _is_integer_array(other):  # exact in float64, then enclosed outward in like's dtype
        pts = _coerce_points(like, other)
        return Interval._new(pts, pts.copy()).astype(like.dtype)
    pts = _coerce_points(like, other).view()  # a view: freezing it leaves the caller's array alone
    return Interval._new(pts, pts)


def _is_integer_array(x) -> bool:
    return (isinstance(x, np.ndarray | np.generic) or is_cupy_array(x)) and x.dtype.kind in "biu"


def _coerce_points(like: Interval, x):
    """``x`` as finite points in ``like``'s dtype; integer arrays as exact float64 (unrounded)."""
    if isinstance(x, Real) and not isinstance(x, np.generic):
        lo, hi = bounds.enclose_real(x, like.dtype)
        if lo != hi:
            raise TypeError(f"{x!r} is not exactly representable in {like.dtype}")
        x = lo
    bk = backend_of(like._lo, x)
    if not (is_cupy_array(x) or isinstance(x, np.ndarray | np.generic)):
        raise TypeError(f"cannot combine an Interval with {type(x).__name__}")
    arr = bk.xp.asarray(x)
    if arr.dtype.kind in "biu":
        arr = _as_float(bk.xp, arr)
    elif arr.dtype != like.dtype:
        raise TypeError(
            f"cannot combine a {like.dtype} interval with a {arr.dtype} array; convert "
            "explicitly (Interval(x).astype(...) rounds outward)"
        )
    if bool(bk.xp.isnan(arr).any() | bk.xp.isinf(arr).any()):
        raise ValueError("point operands must be finite (an infinite point is not a real number)")
    return arr


def concatenate(intervals, axis=0) -> Interval:
    """Join intervals along an existing axis."""
    intervals = list(intervals)
    if not intervals:
        raise ValueError("need at least one interval to concatenate")
    first = intervals[0]
    others = [coerce(first, iv) for iv in intervals[1:]]
    xp = first.backend.xp
    parts = [first, *others]
    return Interval._new(
        xp.concatenate([p.lo for p in parts], axis=axis),
        xp.concatenate([p.hi for p in parts], axis=axis),
    )
