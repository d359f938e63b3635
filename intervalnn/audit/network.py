"""The network as plain arrays: a saved model's Linear/ReLU stack as float64 host copies.

The model audit's oracle, falsification and naive bounds all read the model
through this view (:class:`Dense`), never through the engine's layers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..layers import Linear, ReLU, Sequential


@dataclass(frozen=True)
class Dense:
    """One Linear layer as float64 host arrays (box and nominal), and a ReLU after it or not."""

    w_lo: np.ndarray
    w_hi: np.ndarray
    w_nom: np.ndarray
    b_lo: np.ndarray
    b_hi: np.ndarray
    b_nom: np.ndarray
    relu: bool = False


def dense_layers(model: Sequential) -> list[Dense]:
    """The Linear/ReLU stack of ``model`` as :class:`Dense` layers (float64 copies, exact).

    Any order after the first Linear: a ReLU after the last Linear sets its
    flag like any other, Linear after Linear leaves it unset, and
    consecutive ReLUs set it once, which is exact: ``relu(relu(z)) = relu(z)``
    and ``[relu(z) > 0] [z > 0] = [z > 0]``.  (The training audit's
    reference SGD does not use this view: it runs the layer list itself.)
    """
    bk = model.backend
    host = lambda a: np.array(bk.to_host(a), dtype=np.float64)  # noqa: E731
    out: list[Dense] = []
    for layer in model.layers:
        if type(layer) is Linear:
            w, b = layer.weight, layer.bias
            out.append(
                Dense(
                    host(w.lo), host(w.hi), host(layer.nominal["weight"]),
                    host(b.lo), host(b.hi), host(layer.nominal["bias"]),
                )
            )  # fmt: skip
        elif type(layer) is ReLU:
            if not out:
                raise ValueError("the audit supports MLPs that start with a Linear layer")
            out[-1] = replace(out[-1], relu=True)
        else:
            raise ValueError(f"the audit supports Linear/ReLU MLPs, not {type(layer).__name__}")
    return out
