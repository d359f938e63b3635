"""(a) The exact oracle: endpoint interval bound propagation in MPFR with directed rounding.

Also the one place that loads gmpy2 (MPFR/GMP), which every exact check of
the audits needs.
"""

from __future__ import annotations

import numpy as np

from .network import Dense

PRECISION = 200  # bits of the MPFR oracle


def require_gmpy2():
    try:
        import gmpy2
    except ImportError:  # pragma: no cover - gmpy2 is a test dependency
        raise RuntimeError(
            "the audit needs gmpy2 (MPFR/GMP for Python): pip install 'intervalnn[audit]'"
        ) from None
    return gmpy2


class Oracle:
    """Endpoint IBP in MPFR with directed rounding (numpy object arrays of ``mpfr``)."""

    def __init__(self, layers: list[Dense], precision: int = PRECISION):
        if precision < 64:
            raise ValueError("the oracle needs at least 64 bits to be tighter than float64")
        g = self.g = require_gmpy2()
        self.down = g.context(precision=precision, round=g.RoundDown)
        self.up = g.context(precision=precision, round=g.RoundUp)
        self.near = g.context(precision=precision)
        self._mp = np.frompyfunc(g.mpfr, 1, 1)
        with self.near:  # float64 -> mpfr is exact at >= 53 bits
            self.zero = g.mpfr(0)
            self.layers = []
            for la in layers:
                self.layers.append(
                    {
                        "wl": self.mp(la.w_lo),
                        "wh": self.mp(la.w_hi),
                        "wl+": self.mp(np.maximum(la.w_lo, 0.0)),
                        "wl-": self.mp(np.minimum(la.w_lo, 0.0)),
                        "wh+": self.mp(np.maximum(la.w_hi, 0.0)),
                        "wh-": self.mp(np.minimum(la.w_hi, 0.0)),
                        "bl": self.mp(la.b_lo),
                        "bh": self.mp(la.b_hi),
                        "relu": la.relu,
                    }
                )

    def mp(self, a) -> np.ndarray:
        """Exact conversion of a float array to an object array of ``mpfr``."""
        return np.asarray(self._mp(np.asarray(a, dtype=np.float64)), dtype=object)

    def input_box(self, x, eps: float, domain):
        """``[x - eps, x + eps]`` (clipped to the domain) rounded outward at full precision."""
        g = self.g
        with self.near:
            xm, e = self.mp(x), g.mpfr(float(eps))
        with self.down:
            lo = xm - e
        with self.up:
            hi = xm + e
        if domain is not None:
            with self.near:
                a, b = g.mpfr(float(domain[0])), g.mpfr(float(domain[1]))
            lo, hi = np.maximum(lo, a), np.minimum(hi, b)
        return lo, hi

    def forward(self, lo, hi):
        """Output bounds of the network on the input box ``[lo, hi]`` (object arrays)."""
        for la in self.layers:
            if bool(np.all(lo >= 0)):
                # x in [a, b] with a >= 0: min x w = a c+ + b c-, max x w = b d+ + a d-
                # for w in [c, d]; as matmuls, summed with directed rounding.
                with self.down:
                    new_lo = lo @ la["wl+"] + hi @ la["wl-"] + la["bl"]
                with self.up:
                    new_hi = hi @ la["wh+"] + lo @ la["wh-"] + la["bh"]
            else:  # general signs: the four endpoint products per entry
                new_lo, new_hi = self._general(lo, hi, la)
            lo, hi = new_lo, new_hi
            if la["relu"]:
                lo, hi = np.maximum(lo, self.zero), np.maximum(hi, self.zero)
        return lo, hi

    def _general(self, lo, hi, la):
        wl, wh = la["wl"], la["wh"]
        with self.down:
            acc_lo = np.broadcast_to(la["bl"], (lo.shape[0], wl.shape[1])).copy()
            for i in range(lo.shape[1]):
                a, b = lo[:, i : i + 1], hi[:, i : i + 1]
                p = np.minimum(np.minimum(a * wl[i], a * wh[i]), np.minimum(b * wl[i], b * wh[i]))
                acc_lo = acc_lo + p
        with self.up:
            acc_hi = np.broadcast_to(la["bh"], (lo.shape[0], wh.shape[1])).copy()
            for i in range(lo.shape[1]):
                a, b = lo[:, i : i + 1], hi[:, i : i + 1]
                p = np.maximum(np.maximum(a * wl[i], a * wh[i]), np.maximum(b * wl[i], b * wh[i]))
                acc_hi = acc_hi + p
        return acc_lo, acc_hi

    def certified(self, lo, hi, y) -> np.ndarray:
        """Exact certificate test on the oracle's bounds (comparisons of mpfr values)."""
        if lo.shape[1] == 1:
            return np.where(y == 1, lo[:, 0] > 0, hi[:, 0] < 0).astype(bool)
        out = np.empty(lo.shape[0], dtype=bool)
        for r in range(lo.shape[0]):
            others = [hi[r, j] for j in range(hi.shape[1]) if j != y[r]]
            out[r] = all(lo[r, y[r]] > v for v in others)
        return out

    def ulps(self, diff, ref, dtype) -> np.ndarray:
        """``diff`` (object array) in ulps of ``dtype`` at the magnitude of ``ref``."""
        with self.near:
            d = np.array([float(v) for v in diff.ravel()], dtype=np.float64)
            r = np.array([float(v) for v in ref.ravel()], dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            unit = np.spacing(np.abs(r).astype(dtype)).astype(np.float64)
            return (d / unit).reshape(diff.shape)


def oracle_bounds(layers: list[Dense], x, epsilon: float, domain=None, precision=PRECISION):
    """The oracle's output bounds ``(lo, hi)`` (object arrays of ``mpfr``) for inputs ``x``."""
    oracle = Oracle(layers, precision)
    return oracle.forward(*oracle.input_box(x, epsilon, domain))
