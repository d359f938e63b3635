"""(a) The exact oracle: endpoint interval bound propagation in MPFR with directed rounding.

Every kind of the view (:mod:`.network`): Linear and convolution entries as
the exact minimum / maximum of the endpoint products summed rounding down / up,
the mean of a window as its sum divided by its size rounding outward, the
maximum and ReLU by monotonicity (exact).

Also the one place that loads gmpy2 (MPFR/GMP), which every exact check of
the audits needs.
"""

from __future__ import annotations

import numpy as np

from .network import Conv, Dense, Pool

PRECISION = 200  # bits of the MPFR oracle


def pair_columns(k: int) -> list[tuple[int, int]]:
    """The pairs ``(c, j)``, ``c < j``, of ``k`` logits in row-major order: the columns of
    the logit differences ``z_c - z_j`` that multi-class certificates bound."""
    return [(c, j) for c in range(k) for j in range(c + 1, k)]


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

    def __init__(self, layers: list, precision: int = PRECISION):
        if precision < 64:
            raise ValueError("the oracle needs at least 64 bits to be tighter than float64")
        g = self.g = require_gmpy2()
        self.down = g.context(precision=precision, round=g.RoundDown)
        self.up = g.context(precision=precision, round=g.RoundUp)
        self.near = g.context(precision=precision)
        self._mp = np.frompyfunc(g.mpfr, 1, 1)
        with self.near:  # float64 -> mpfr is exact at >= 53 bits
            self.zero = g.mpfr(0)
            self.layers = [self._layer(la) for la in layers]
        self.difference_layer = self._differences(layers[-1])

    def _differences(self, last) -> dict | None:
        """The last Dense layer with outputs ``z_c - z_j`` for the pairs ``c < j`` (row-major).

        Weights ``[lo_c - hi_j, hi_c - lo_j]`` (and the bias alike) rounded
        outward: the set of differences ``W_c - W_j`` of the box's members.
        None unless the model ends with a Dense layer of >= 2 outputs and no ReLU
        (where certificates bound the logit differences).
        """
        if not isinstance(last, Dense) or last.relu or last.w_lo.shape[1] < 2:
            return None
        k = last.w_lo.shape[1]
        c, j = (np.array(v, dtype=np.int64) for v in zip(*pair_columns(k), strict=True))
        with self.near:
            wl, wh, bl, bh = (self.mp(a) for a in (last.w_lo, last.w_hi, last.b_lo, last.b_hi))
        with self.down:
            dwl, dbl = wl[:, c] - wh[:, j], bl[c] - bh[j]
        with self.up:
            dwh, dbh = wh[:, c] - wl[:, j], bh[c] - bl[j]
        plus, minus = (
            np.frompyfunc(lambda v: max(v, self.zero), 1, 1),
            np.frompyfunc(lambda v: min(v, self.zero), 1, 1),
        )
        obj = lambda a: np.asarray(a, dtype=object)  # noqa: E731
        return {
            "kind": "affine", "window": None, "point": bool(np.all(dwl == dwh)), "relu": False,
            "k": k,
            "wl": dwl, "wh": dwh, "wl+": obj(plus(dwl)), "wl-": obj(minus(dwl)),
            "wh+": obj(plus(dwh)), "wh-": obj(minus(dwh)), "bl": dbl, "bh": dbh,
        }  # fmt: skip

    def _layer(self, la) -> dict:
        """One view layer as MPFR arrays: an affine map (Dense, Conv) or a pool."""
        if isinstance(la, Pool):
            return {"kind": la.op, "window": la.window, "count": la.count, "relu": la.relu}
        conv = isinstance(la, Conv)
        wl, wh = (Conv.matrix(la.w_lo), Conv.matrix(la.w_hi)) if conv else (la.w_lo, la.w_hi)
        return {
            "kind": "affine",
            "window": la.window if conv else None,
            "point": bool(np.array_equal(wl, wh)),  # frozen (or untrained) weights
            "wl": self.mp(wl),
            "wh": self.mp(wh),
            "wl+": self.mp(np.maximum(wl, 0.0)),
            "wl-": self.mp(np.minimum(wl, 0.0)),
            "wh+": self.mp(np.maximum(wh, 0.0)),
            "wh-": self.mp(np.minimum(wh, 0.0)),
            "bl": self.mp(la.b_lo),
            "bh": self.mp(la.b_hi),
            "relu": la.relu,
        }

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

    def forward(self, lo, hi, differences: bool = False):
        """Output bounds of the network on the input box ``[lo, hi]`` (object arrays).

        ``differences``: also the bounds of the logit differences (columns
        :func:`pair_columns`) through :attr:`difference_layer` from the same
        penultimate box, as ``(lo, hi, diff_lo, diff_hi)`` (None, None where
        the model has no difference layer).
        """
        for i, la in enumerate(self.layers):
            if i == len(self.layers) - 1:
                penultimate = lo, hi
            if la["kind"] == "affine":
                lo, hi = self._affine(lo, hi, la)
            else:
                lo, hi = self._pool(lo, hi, la)
            if la["relu"]:
                lo, hi = np.maximum(lo, self.zero), np.maximum(hi, self.zero)
        if not differences:
            return lo, hi
        if self.difference_layer is None:
            return lo, hi, None, None
        return lo, hi, *self._affine(*penultimate, self.difference_layer)

    def _affine(self, lo, hi, la):
        """``x W + b`` on flat rows, or at every window of a convolution (then back to C order)."""
        win = la["window"]
        n = lo.shape[0]
        if win is not None:  # (N, positions, in * kh * kw); padding is an exact 0
            lo, hi = win.patches(lo, self.zero), win.patches(hi, self.zero)
        if la["point"] or bool(np.all(lo >= 0)):
            # x in [a, b] with a >= 0: min x w = a c+ + b c-, max x w = b d+ + a d-
            # for w in [c, d]; the same when c = d, whatever the signs of a and b.
            # As matmuls, summed with directed rounding.
            with self.down:
                new_lo = lo @ la["wl+"] + hi @ la["wl-"] + la["bl"]
            with self.up:
                new_hi = hi @ la["wh+"] + lo @ la["wh-"] + la["bh"]
        else:  # general signs: the four endpoint products per entry
            new_lo, new_hi = self._general(lo, hi, la)
        if win is not None:  # (N, positions, out) -> (N, out * positions), C order
            new_lo = new_lo.transpose(0, 2, 1).reshape(n, -1)
            new_hi = new_hi.transpose(0, 2, 1).reshape(n, -1)
        return new_lo, new_hi

    def _pool(self, lo, hi, la):
        """Each window's mean (its sum, then divided by the count, rounded outward) or maximum."""
        win = la["window"]
        lo, hi = win.patches(lo, self.zero), win.patches(hi, self.zero)
        if la["kind"] == "max":  # monotone: the max of the lower and of the upper bounds, exact
            return lo.max(axis=2), hi.max(axis=2)
        with self.near:
            count = self.g.mpfr(la["count"])
        with self.down:
            new_lo = lo.sum(axis=2) / count
        with self.up:
            new_hi = hi.sum(axis=2) / count
        return new_lo, new_hi

    def _general(self, lo, hi, la):
        wl, wh = la["wl"], la["wh"]
        shape = (*lo.shape[:-1], wl.shape[1])
        with self.down:
            acc_lo = np.broadcast_to(la["bl"], shape).copy()
            for i in range(lo.shape[-1]):
                a, b = lo[..., i : i + 1], hi[..., i : i + 1]
                p = np.minimum(np.minimum(a * wl[i], a * wh[i]), np.minimum(b * wl[i], b * wh[i]))
                acc_lo = acc_lo + p
        with self.up:
            acc_hi = np.broadcast_to(la["bh"], shape).copy()
            for i in range(lo.shape[-1]):
                a, b = lo[..., i : i + 1], hi[..., i : i + 1]
                p = np.maximum(np.maximum(a * wl[i], a * wh[i]), np.maximum(b * wl[i], b * wh[i]))
                acc_hi = acc_hi + p
        return acc_lo, acc_hi

    def certified_differences(self, lo, hi, y) -> np.ndarray:
        """Exact certificate test on bounds of the differences: ``lower(z_y - z_j) > 0``."""
        k = self.difference_layer["k"]
        column = {pair: i for i, pair in enumerate(pair_columns(k))}
        out = np.empty(lo.shape[0], dtype=bool)
        for r in range(lo.shape[0]):
            t = int(y[r])
            out[r] = all(
                lo[r, column[t, j]] > 0 if t < j else hi[r, column[j, t]] < 0
                for j in range(k)
                if j != t
            )
        return out

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


def oracle_bounds(layers: list, x, epsilon: float, domain=None, precision=PRECISION):
    """The oracle's output bounds ``(lo, hi)`` (object arrays of ``mpfr``) for inputs ``x``."""
    oracle = Oracle(layers, precision)
    return oracle.forward(*oracle.input_box(x, epsilon, domain))
