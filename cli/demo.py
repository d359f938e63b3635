"""``intervalnn demo``: the sound engine next to naive round-to-nearest bounds."""

import time
from fractions import Fraction

import numpy as np

import intervalnn as inn


def _naive_forward(x_lo, x_hi, w1, b1, w2, b2):
    """Interval bounds the way round-to-nearest libraries compute them."""

    def linear(lo, hi, w, b):
        mid, rad = (lo + hi) / 2, (hi - lo) / 2
        return mid @ w + b - rad @ np.abs(w), mid @ w + b + rad @ np.abs(w)

    lo, hi = linear(x_lo, x_hi, w1, b1)
    return linear(np.maximum(lo, 0), np.maximum(hi, 0), w2, b2)


def run_demo(dtype: str, epsilon: float, seed: int, echo=print) -> None:
    rng = np.random.default_rng(seed)
    dt = np.dtype(dtype)
    echo(f"intervalnn {inn.__version__}: sound interval arithmetic ({dt}, outward rounding)")
    s = inn.Interval(np.array([0.1], dtype=dt)) + 0.2
    echo(f"  0.1 + 0.2 (exact reals) lies in [{float(s.lo[0])!r}, {float(s.hi[0])!r}]")

    x = rng.uniform(0, 1, size=(200, 784)).astype(dt)
    w1 = (rng.standard_normal((784, 64)) / 28).astype(dt)
    b1 = np.zeros(64, dt)
    w2 = (rng.standard_normal((64, 10)) / 8).astype(dt)
    b2 = np.zeros(10, dt)
    box = inn.Interval.ball(x, epsilon, domain=(0, 1))

    t0 = time.perf_counter()
    hidden = inn.relu(box @ w1 + b1)
    out = hidden @ w2 + b2
    t_sound = time.perf_counter() - t0
    echo(
        f"  784-64-10 network, 200 inputs, eps = {epsilon}: sound bounds in {t_sound * 1e3:.1f} ms"
    )
    echo(f"  mean output width {float(np.mean(out.width)):.3e}")

    lo_n, hi_n = _naive_forward(box.lo, box.hi, w1, b1, w2, b2)
    # One output checked exactly: the naive bound against the exact rational
    # value at the box corner that minimises the first logit of sample 0.
    pre = [Fraction(float(v)) for v in x[0]]
    corner = [
        max(Fraction(float(box.lo[0, i])), min(Fraction(float(box.hi[0, i])), p))
        for i, p in enumerate(pre)
    ]
    h = [
        max(Fraction(0), sum(c * Fraction(float(w1[i, j])) for i, c in enumerate(corner)))
        for j in range(64)
    ]
    z = sum(hj * Fraction(float(w2[j, 0])) for j, hj in enumerate(h))
    inside = out.lo[0, 0] <= z <= out.hi[0, 0]
    echo(
        f"  exact logit at x[0]: sound bound contains it: {inside}; "
        f"naive bound [{float(lo_n[0, 0])!r}, {float(hi_n[0, 0])!r}]"
    )
    widen = np.median((out.hi - out.lo) / np.maximum(hi_n - lo_n, np.finfo(dt).tiny))
    echo(f"  median width ratio sound / naive: {widen:.6f} (the price of soundness)")
