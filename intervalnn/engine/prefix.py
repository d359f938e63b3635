"""A frozen prefix, computed once per input: the engine for fine-tuning a model's head.

A model with ``frozen = N`` trains only its layers from ``N`` on.  The first
``N`` layers are points that no step changes, so the box of their output for
every training input under the data threat model -- and the nominal model's
float output -- is the same at every step.  :class:`PrefixEngine` computes
both once (in row chunks) and hands them to an inner engine for the head,
which then costs what training the head alone costs.  The last few results
are remembered by content, so runs that share a prefix and data (a sweep
over ``k``) compute them once.

Soundness: the prefix's interval forward encloses its real output and its
float output for every input in the input box (each layer's bound covers
both), so the cached feature box contains every feature vector any poisoned
training set can produce, and the head's training on it is FullCert's (or
k-of-n's) training on those features.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from fractions import Fraction

import numpy as np

from ..backend import backend_of
from ..interval import Interval, concatenate
from ..layers import Sequential
from .layered import Engine, StepResult, clear_caches

ROWS = 256  # rows per chunk of the prefix's forward (im2col patches grow with the rows)


class PrefixEngine:
    """``model``'s frozen ``prefix`` applied once to each input, then ``inner`` on the head.

    Parameter names are the whole model's (``f"{i}.weight"`` with ``i`` the
    layer's index in ``model``); the prefix's are its fixed point boxes.
    """

    def __init__(self, model: Sequential, prefix: Sequential, inner: Engine):
        self.model, self.prefix, self.inner = model, prefix, inner
        self.name = inner.name
        self.offset = len(prefix.layers)

    # the frozen prefix ----------------------------------------------------
    def features(self, box: Interval) -> Interval:
        """The prefix's output box for every row of ``box`` (the head's input box)."""
        return features(self.prefix, box)

    def nominal_features(self, x):
        """The nominal prefix's float output for the rows ``x``."""
        return nominal_features(self.prefix, x)

    # the engine interface -------------------------------------------------
    def prepare(self, box: Interval):
        return self.inner.prepare(self.features(box))

    def logit_bounds(self, prepared) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.logit_bounds(prepared)

    def nominal_logits(self, x) -> np.ndarray:
        return self.inner.nominal_logits(self.nominal_features(x))

    def step(self, idx, rate: Fraction) -> StepResult:
        return self.inner.step(idx, rate)

    def parameters(self) -> tuple[dict[str, Interval], dict]:
        params, nominal = self.prefix.named_params(), self.prefix.named_nominal()
        head, head_nominal = self.inner.parameters()
        params.update({self._name(k): v for k, v in head.items()})
        nominal.update({self._name(k): v for k, v in head_nominal.items()})
        return params, nominal

    def widths(self) -> tuple[float, float]:
        """The trainable head's widths (the frozen parameters' are 0)."""
        return self.inner.widths()

    @property
    def velocity(self):
        return self.inner.velocity

    @velocity.setter
    def velocity(self, value) -> None:
        self.inner.velocity = value

    def _name(self, head_name: str) -> str:
        index, field = head_name.split(".", 1)
        return f"{int(index) + self.offset}.{field}"


def features(prefix: Sequential, box: Interval) -> Interval:
    """``prefix``'s output box for every row of ``box``, in row chunks (remembered)."""

    def compute():
        parts = [prefix.forward(box[i : i + ROWS]) for i in range(0, box.shape[0], ROWS)]
        clear_caches(prefix)
        return _join(parts, box)

    params = [a for p in prefix.named_params().values() for a in (p.lo, p.hi)]
    return _remembered(compute, f"box {prefix!r}", *params, box.lo, box.hi)


def nominal_features(prefix: Sequential, x):
    """The nominal ``prefix``'s float output for the rows ``x``, in row chunks (remembered)."""

    def compute():
        parts = [prefix.forward_nominal(x[i : i + ROWS]) for i in range(0, x.shape[0], ROWS)]
        clear_caches(prefix)
        return backend_of(x).xp.concatenate(parts) if parts else x

    return _remembered(compute, f"nominal {prefix!r}", *prefix.named_nominal().values(), x)


# The last few feature arrays, by a digest of the prefix (its layers, as repr shows their
# geometry, and its parameters) and the input: runs
# and sweep cells that share a frozen prefix and data compute their features once.
_MEMORY: OrderedDict[bytes, object] = OrderedDict()
REMEMBERED = 8


def _remembered(compute, kind: str, *arrays):
    """``compute()``, or the value it gave for equal ``arrays`` (NumPy only; read-only)."""
    if not all(type(a) is np.ndarray for a in arrays):
        return compute()
    h = hashlib.blake2b(kind.encode(), digest_size=32)
    for a in arrays:
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(np.ascontiguousarray(a).data)
    key = h.digest()
    if key not in _MEMORY:
        value = compute()
        for a in (value.lo, value.hi) if isinstance(value, Interval) else (value,):
            a.flags.writeable = False
        _MEMORY[key] = value
        while len(_MEMORY) > REMEMBERED:
            _MEMORY.popitem(last=False)
    _MEMORY.move_to_end(key)
    return _MEMORY[key]


def _join(parts: list[Interval], like: Interval) -> Interval:
    return concatenate(parts) if parts else like


def unbounded_features(model: Sequential, rows: int, like: Interval) -> Interval:
    """Every float vector, in the shape of ``model``'s frozen prefix's output: features that
    nothing bounds (an input box of infinite width, read by no step)."""
    shape = (rows, *model.output_shapes()[model.frozen - 1])
    xp = like.backend.xp
    return Interval._new(
        xp.full(shape, -np.inf, dtype=like.dtype), xp.full(shape, np.inf, dtype=like.dtype)
    )
