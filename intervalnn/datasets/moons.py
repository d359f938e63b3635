"""The two-moons toy problem: :func:`two_moons` and :func:`two_moons_splits`."""

from __future__ import annotations

import numpy as np

from .base import Dataset, Splits

__all__ = ["two_moons", "two_moons_splits"]


def two_moons(n: int, noise: float = 0.1, seed=0) -> Dataset:
    """``n`` two-moons points with Gaussian noise of standard deviation ``noise``.

    Same distribution as scikit-learn's
    ``make_moons(n_samples=n, noise=noise, shuffle=True)``: the outer moon has
    ``n // 2`` points ``(cos t, sin t)`` at ``t = linspace(0, pi, n // 2)``,
    label 0; the inner moon has the other ``n - n // 2`` points
    ``(1 - cos t, 1 - sin t - 0.5)`` at ``t = linspace(0, pi, n - n // 2)``,
    label 1; the points are shuffled and then noise is added.  The random
    numbers come from ``np.random.default_rng(seed)``, so the draws differ
    from scikit-learn's (``RandomState``) for the same seed: only the
    distribution matches, not the stream.  With ``noise == 0`` no noise is
    drawn and the points lie exactly on the arcs.

    ``seed`` is anything ``np.random.default_rng`` accepts (an int, a
    ``SeedSequence``, ...).  Features are float64.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"two_moons: n must be >= 0, got {n}")
    noise = float(noise)
    if not (noise >= 0 and np.isfinite(noise)):
        raise ValueError(f"two_moons: noise must be a finite number >= 0, got {noise}")
    rng = np.random.default_rng(seed)
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    x = np.empty((n, 2), dtype=np.float64)
    x[:n_out, 0] = np.cos(t_out)
    x[:n_out, 1] = np.sin(t_out)
    x[n_out:, 0] = 1.0 - np.cos(t_in)
    x[n_out:, 1] = 1.0 - np.sin(t_in) - 0.5
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    perm = rng.permutation(n)
    x, y = x[perm], y[perm]
    if noise > 0:
        x += rng.normal(scale=noise, size=x.shape)
    return Dataset(x, y, 2, "moons")


def two_moons_splits(
    seed=0,
    noise: float = 0.1,
    n_train: int = 1000,
    n_val: int = 200,
    n_test: int = 200,
    n_pretrain: int = 0,
) -> Splits:
    """Independent two-moons draws for train / val / test (/ pretrain).

    Each split has its own generator, spawned from ``np.random.SeedSequence(seed)``
    (children 0..3 for train, val, test, pretrain), so changing one split's
    size leaves the others unchanged.  ``pretrain`` is ``None`` when
    ``n_pretrain == 0``.  The domain is ``None`` (unbounded inputs).
    """
    if n_train < 1:
        raise ValueError(f"two_moons_splits: n_train must be >= 1, got {n_train}")
    s_train, s_val, s_test, s_pre = np.random.SeedSequence(seed).spawn(4)

    def draw(m, ss, label):
        ds = two_moons(m, noise=noise, seed=ss)
        return Dataset(ds.x, ds.y, 2, f"moons/{label}")

    return Splits(
        train=draw(n_train, s_train, "train"),
        val=draw(n_val, s_val, "val"),
        test=draw(n_test, s_test, "test"),
        pretrain=draw(n_pretrain, s_pre, "pretrain") if n_pretrain > 0 else None,
        domain=None,
        name="moons",
    )
