"""The fused engine: Linear/ReLU MLPs on the NumPy backend, one kernel call per step.

:mod:`intervalnn.kernels.fused` does a whole SGD step (interval model and
nominal model) or a whole interval forward pass in one serial Numba call on
flat float64 arrays; :class:`FusedEngine` holds a model's parameters in those
arrays.  It applies to stacks of ``Linear`` and ``ReLU`` layers (a Linear
first, as ``Sequential`` needs; then any order, consecutive ReLUs acting as
one) with the BCE or cross-entropy loss, float32 or float64, on the CPU.
Any step or forward pass whose a-priori overflow guard fails falls back,
inside the engine, to the layered engine (the general path and the
reference) on the same model.  The soundness argument is in the kernel
module's docstring.
"""

from __future__ import annotations

import copy
from fractions import Fraction
from typing import NamedTuple

import numpy as np

from ..interval import Interval
from ..kernels import fused as _k
from ..kernels import fused_layout as layout
from ..kernels.bounds import enclose_real
from ..layers import Linear, ReLU, Sequential
from .layered import LayeredEngine, StepResult

_LOSSES = {"bce": _k.BCE, "ce": _k.CE}


def structure(model: Sequential):
    """``(linear_indices, relu_after)`` for a Linear/ReLU stack on NumPy, else None."""
    if not isinstance(model, Sequential) or type(model.layers[0]) is not Linear:
        return None
    if model.backend.name != "numpy":
        return None
    linears, relu_after = [], []
    for i, layer in enumerate(model.layers):
        if type(layer) is ReLU:
            relu_after[-1] = True
        elif type(layer) is Linear:
            linears.append(i)
            relu_after.append(False)
        else:
            return None
    return linears, relu_after


def _data_planes(lo, hi, nominal):
    """Feature-major float64 planes ``(4, n, N)`` (lo, hi, nominal, magnitude) of a data box.

    Also returns ``max |x|``, the tiny flag (a nonzero endpoint below
    ``TINY``) and whether every lower endpoint is ``>= 0``.
    """
    lo, hi, nominal = (np.asarray(a).T for a in (lo, hi, nominal))
    xs = np.empty((4, *lo.shape))
    xs[0], xs[1], xs[2] = lo, hi, nominal
    np.maximum(np.abs(xs[0]), np.abs(xs[1]), out=xs[3])
    ends = xs[:2]
    tiny = bool(np.any((ends != 0) & (np.abs(ends) < _k.TINY)))
    return xs, float(xs[3].max(initial=0.0)), tiny, bool((xs[0] >= 0).all())


class FusedMLP:
    """The parameters (box and nominal) of a Linear/ReLU ``Sequential`` as one flat float64 array.

    Per Linear layer: ``W (4, n, p)`` then ``b (4, p)``, planes lo, hi,
    nominal, ``max(|lo|, |hi|)``.  ``pull`` reads the model, ``push``
    writes fresh parameter arrays back (in the model's dtype).
    """

    def __init__(self, model: Sequential, loss: str = "bce"):
        st = structure(model)
        if st is None:
            raise ValueError("the fused path needs a Linear/ReLU Sequential on the NumPy backend")
        self.linears, self.relu_after = st
        self.dtype = model.dtype
        lin = [model.layers[i] for i in self.linears]
        self.sizes = [lin[0].weight.shape[0]] + [la.weight.shape[1] for la in lin]
        offsets, off = [], 0
        for n, p in zip(self.sizes[:-1], self.sizes[1:], strict=True):
            offsets.append(off)
            off += 4 * n * p + 4 * p
        self.meta = layout.make_meta(
            _LOSSES[loss], self.dtype == np.float32, self.sizes, self.relu_after, offsets
        )
        self.th = np.empty(off)
        self.layer_views = [self._make_views(layer) for layer in range(len(lin))]
        self.pull(model)

    def views(self, layer: int):
        """``(W, b)`` of Linear layer ``layer``: views of the flat array (made once)."""
        return self.layer_views[layer]

    def _make_views(self, layer: int):
        nl = len(self.linears)
        n, p = self.sizes[layer], self.sizes[layer + 1]
        off = int(self.meta[layout.meta_offset_pos(nl, layer)])
        w = self.th[off : off + 4 * n * p].reshape(4, n, p)
        b = self.th[off + 4 * n * p : off + 4 * n * p + 4 * p].reshape(4, p)
        return w, b

    def pull(self, model: Sequential) -> None:
        params, nominal = model.named_params(), model.named_nominal()
        for layer, i in enumerate(self.linears):
            for name, view in zip(("weight", "bias"), self.views(layer), strict=True):
                box = params[f"{i}.{name}"]
                view[0], view[1], view[2] = box.lo, box.hi, nominal[f"{i}.{name}"]
                np.maximum(np.abs(view[0]), np.abs(view[1]), out=view[3])

    def named(self) -> tuple[dict[str, Interval], dict]:
        """Fresh ``(params, nominal)`` dicts in the model's dtype (copies, never views)."""
        params, nominal = {}, {}
        for layer, i in enumerate(self.linears):
            for name, view in zip(("weight", "bias"), self.views(layer), strict=True):
                lo, hi = view[0].astype(self.dtype), view[1].astype(self.dtype)
                params[f"{i}.{name}"] = Interval._new(lo, hi)
                nominal[f"{i}.{name}"] = view[2].astype(self.dtype)
        return params, nominal

    def push(self, model: Sequential) -> None:
        model.load(*self.named())

    def nominal_model(self, model: Sequential) -> Sequential:
        """A private copy of ``model`` whose nominal parameters follow this array.

        float64: its nominal arrays are views of the nominal planes, current
        at every moment; float32: copies that :meth:`copy_nominal_into` refreshes.
        """
        copy_ = Sequential(*map(copy.copy, model.layers))
        for layer, i in enumerate(self.linears):
            views = dict(zip(("weight", "bias"), self.views(layer), strict=True))
            f64 = self.dtype == np.float64
            copy_.layers[i].nominal = {
                k: v[2] if f64 else v[2].astype(self.dtype) for k, v in views.items()
            }
        return copy_

    def copy_nominal_into(self, model: Sequential) -> None:
        """Refresh a float32 :meth:`nominal_model`'s arrays in place (RN, as astype)."""
        if self.dtype == np.float64:
            return  # views
        for layer, i in enumerate(self.linears):
            nominal = model.layers[i].nominal
            for name, view in zip(("weight", "bias"), self.views(layer), strict=True):
                np.copyto(nominal[name], view[2], casting="same_kind")

    def set_data_flags(self, tiny: bool, nonneg: bool) -> None:
        self.meta[layout.META_TINY] = tiny
        self.meta[layout.meta_nonneg_pos(len(self.linears))] = nonneg

    def name_of(self, layer: int, is_bias: bool) -> str:
        return f"{self.linears[layer]}.{'bias' if is_bias else 'weight'}"


# Rows per fused forward call: the kernel sweeps its input planes once per output unit, so a
# chunk whose planes stay in cache (~4 MB at 784 features) runs ~1.7x faster than 2,000 rows.
CHUNK_FLOATS = 2**17


class _Prepared(NamedTuple):
    """An input box made ready for the fused forward (or the box itself, for the layers).

    The rows are cut into chunks of feature-major planes; every chunk shares
    the data flags and ``max |x|`` of the whole box, so each row's bounds do
    not depend on the chunking.
    """

    box: Interval
    chunks: list  # (first row, planes, out) per chunk; empty: the fused forward does not apply
    x_mag: float
    meta: np.ndarray
    ws: np.ndarray
    lo: np.ndarray  # (m, K) logit bounds, filled chunk by chunk
    hi: np.ndarray


class FusedEngine(LayeredEngine):
    """The engine of :mod:`intervalnn.engine.layered` with the fused kernel where it applies.

    The parameters live in the flat array of a :class:`FusedMLP`; ``model``
    is brought up to date only where the layered engine takes over (a step or
    forward pass the kernel declines).  The nominal logits run the model's
    own layers on a private copy (``self.nominal_model``) refreshed in place.
    ``declined`` counts the steps and forward passes handed to the layers.
    """

    name = "fused"

    def __init__(self, model: Sequential, loss="bce", box=None, x=None, y=None, batch_size=1):
        super().__init__(model, loss, box, x, y)
        self.net = FusedMLP(model, loss)
        self.widths_buffer = np.empty(self.net.th.size // 4)
        self.nominal_model = self.net.nominal_model(model)
        self.nominal_fresh = True
        self.declined = 0
        self._rate: tuple = (None, None)  # the last rate and its bounds
        self._inv: dict = {}
        if box is not None:
            # the kernel reads the rows of each batch straight from these (no copy of the data)
            self.data = tuple(np.ascontiguousarray(a) for a in (box.lo, box.hi, x))
            self.x_mag, x_tiny, x_nonneg = _k.data_flags(self.data[0], self.data[1])
            self.net.set_data_flags(x_tiny, x_nonneg)
            self.labels = np.ascontiguousarray(y, dtype=np.int64)
            self.ws = np.empty(
                _k.workspace_size(self.net.sizes, self.net.relu_after, max(batch_size, 1))
            )
            self.scal = np.zeros(layout.SCAL_LENGTH)
            self.scal[layout.SCAL_X_MAG] = self.x_mag
            self.out = np.zeros(layout.OUT_LENGTH)

    @classmethod
    def create(cls, model, loss: str = "bce", box=None, x=None, y=None, batch_size: int = 1):
        """An engine, or None where the fused kernel does not apply (use the layered engine).

        Without ``box`` (certification only) the loss is not used.
        """
        if structure(model) is None or loss not in _LOSSES:
            return None
        if box is None:
            return cls(model)
        if box.backend.name != "numpy":
            return None
        k = model.out_features
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != box.shape[0] or labels.dtype.kind not in "iub":
            return None
        valid = (k == 1 and np.isin(labels, (0, 1)).all()) if loss == "bce" else (k >= 2)
        if not valid or (loss == "ce" and not ((labels >= 0) & (labels < k)).all()):
            return None
        return cls(model, loss, box, x, y, batch_size)

    # -- bounds ----------------------------------------------------------------
    def prepare(self, box: Interval) -> _Prepared:
        net = self.net
        m, k = (box.shape[0] if box.ndim else 0), net.sizes[-1]
        if box.backend.name != "numpy" or box.ndim != 2 or box.shape[1] != net.sizes[0]:
            return _Prepared(box, [], 0.0, net.meta, np.empty(0), np.empty(0), np.empty(0))
        rows = max(16, CHUNK_FLOATS // max(net.sizes))
        chunks, x_mag, tiny, nonneg = [], 0.0, False, True
        for start in range(0, m, rows):
            lo, hi = box.lo[start : start + rows], box.hi[start : start + rows]
            planes, c_mag, c_tiny, c_nonneg = _data_planes(lo, hi, lo)
            chunks.append((start, planes, np.empty((4, k, planes.shape[2]))))
            x_mag = float(np.maximum(x_mag, c_mag))  # NaN propagates: the guard then declines
            tiny, nonneg = tiny or c_tiny, nonneg and c_nonneg
        meta = net.meta.copy()
        meta[layout.META_TINY], meta[layout.meta_nonneg_pos(len(net.linears))] = tiny, nonneg
        ws = np.empty(_k.workspace_size(net.sizes, net.relu_after, max(min(m, rows), 1)))
        if len(chunks) == 1:  # the kernel's output planes are the bounds (no copies)
            return _Prepared(box, chunks, x_mag, meta, ws, chunks[0][2][0].T, chunks[0][2][1].T)
        return _Prepared(box, chunks, x_mag, meta, ws, np.empty((m, k)), np.empty((m, k)))

    def fused_bounds(self, p: _Prepared) -> bool:
        """The fused forward into ``p.lo`` / ``p.hi``; False where it does not apply or declines."""
        if not p.chunks:
            return False
        for start, planes, out in p.chunks:
            if not _k.forward(planes, self.net.th, p.meta, p.x_mag, p.ws, out):
                return False
            if len(p.chunks) > 1:
                stop = start + out.shape[2]
                p.lo[start:stop], p.hi[start:stop] = out[0].T, out[1].T
        return True

    def logit_bounds(self, prepared: _Prepared) -> tuple[np.ndarray, np.ndarray]:
        """Float64 bounds (with the kernel: ``prepared``'s buffers, which the next call reuses)."""
        if self.fused_bounds(prepared):
            return prepared.lo, prepared.hi
        self.declined += 1
        self.net.push(self.model)
        return super().logit_bounds(prepared.box)

    def nominal_logits(self, x) -> np.ndarray:
        if not self.nominal_fresh:
            self.net.copy_nominal_into(self.nominal_model)
            self.nominal_fresh = True
        return self.nominal_model.forward_nominal(x)  # (the private copy may keep its caches)

    # -- training --------------------------------------------------------------
    def _rate_bounds(self, rate: Fraction) -> tuple[float, float, float]:
        """``lambda`` enclosed in the model's dtype (as the layered SGD does), and its nominal."""
        dt = np.dtype(self.net.dtype)
        lo, hi = enclose_real(rate, dt)
        return float(lo), float(hi), float(dt.type(float(rate)))

    def _inv_bounds(self, m: int) -> tuple[float, float]:
        got = self._inv.get(m)
        if got is None:
            lo, hi = enclose_real(Fraction(1, m), np.dtype(np.float64))
            got = self._inv[m] = (float(lo), float(hi))
        return got

    def fused_step(self, idx, rate: Fraction) -> StepResult | None:
        """The kernel's SGD step on rows ``idx``, or None (nothing changed) where it declines."""
        s = self.scal
        if rate is not self._rate[0] and rate != self._rate[0]:  # a new rate (not constant)
            self._rate = (rate, self._rate_bounds(rate))
        s[layout.SCAL_RATE_LO], s[layout.SCAL_RATE_HI], s[layout.SCAL_RATE_NOM] = self._rate[1]
        s[layout.SCAL_INV_M_LO], s[layout.SCAL_INV_M_HI] = self._inv_bounds(len(idx))
        out = self.out
        _k.train_step(*self.data, self.labels, idx, self.net.th, self.ws, self.net.meta, s, out)
        if out[layout.OUT_STATUS] == _k.DECLINED:
            return None
        self.nominal_fresh = False
        outside = None
        if out[layout.OUT_OUTSIDE_LAYER] >= 0:
            outside = self.net.name_of(
                int(out[layout.OUT_OUTSIDE_LAYER]), bool(out[layout.OUT_OUTSIDE_BIAS])
            )
        loss = (float(out[layout.OUT_LOSS_LO]), float(out[layout.OUT_LOSS_HI]))
        return StepResult(loss, bool(out[layout.OUT_FINITE]), True, outside)

    def step(self, idx, rate: Fraction) -> StepResult:
        done = self.fused_step(idx, rate)
        if done is None:  # the layered step on the model, brought up to date and read back
            self.declined += 1
            self.net.push(self.model)
            done = super().step(idx, rate)
            self.net.pull(self.model)
            self.nominal_fresh = False
        return done

    def parameters(self) -> tuple[dict[str, Interval], dict]:
        return self.net.named()

    def widths(self) -> tuple[float, float]:
        """Mean and max parameter width, as the layered engine computes them."""
        w = self.widths_buffer
        _k.widths(self.net.th, self.net.meta, w)
        return float(w.sum()) / w.size, float(w.max())  # w.mean(), without its overhead


def forward_bounds(model: Sequential, box: Interval):
    """Sound float64 logit bounds ``(lo, hi)`` from the fused kernel, or None where it declines."""
    engine = FusedEngine.create(model)
    if engine is None:
        return None
    p = engine.prepare(box)
    return (p.lo, p.hi) if engine.fused_bounds(p) else None
