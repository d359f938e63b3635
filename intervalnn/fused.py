"""The fused fast path for Linear/ReLU MLPs on the NumPy backend.

:mod:`intervalnn.kernels.fused` does a whole SGD step (interval model and
nominal model) or a whole interval forward pass in one serial Numba call on
flat float64 arrays; this module maps a :class:`~intervalnn.layers.Sequential`
to those arrays and back.  It applies to stacks of ``Linear`` and ``ReLU``
layers (a Linear first, as ``Sequential`` needs; then any order, consecutive
ReLUs acting as one) with the BCE or cross-entropy loss, float32 or float64,
on the CPU; anything else, and any step whose a-priori overflow guard fails,
stays on the layered path (``model.forward`` / ``backward``), which is the
general path and the reference.  The soundness argument is in the kernel
module's docstring.

Training validation (``FusedTrainer.certify``) builds the test box of the
validation set once per run and certifies with the fused forward pass;
:func:`forward_bounds` serves :func:`intervalnn.certify.certify`.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import numpy as np

from .interval import Interval, _scalar_bounds
from .kernels import fused as _k
from .layers import Linear, ReLU, Sequential

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
        nl = len(lin)
        self.meta = np.array(
            [nl, _LOSSES[loss], self.dtype == np.float32, 0]
            + self.sizes
            + [int(r) for r in self.relu_after]
            + offsets
            + [0],  # the data's lower bounds are all >= 0 (set with the data)
            dtype=np.int64,
        )
        self.th = np.empty(off)
        self.pull(model)

    def views(self, layer: int):
        nl = len(self.linears)
        n, p = self.sizes[layer], self.sizes[layer + 1]
        off = int(self.meta[5 + 2 * nl + layer])
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

    def set_data_flags(self, tiny: bool, nonneg: bool) -> None:
        self.meta[3] = tiny
        self.meta[-1] = nonneg

    def name_of(self, layer: int, is_bias: bool) -> str:
        return f"{self.linears[layer]}.{'bias' if is_bias else 'weight'}"


class StepResult(NamedTuple):
    loss: tuple[float, float]  # bounds on the batch's mean loss
    finite: bool  # every new parameter bound is finite
    outside: str | None  # name of a parameter whose nominal left its box (a bug), else None


class FusedTrainer:
    """Fused SGD steps for one training run: the data box, labels and flat parameters.

    ``step`` returns None (having changed nothing) when the fused kernel
    declines a step; the caller then takes the layered step with the model
    synchronised by ``push`` and calls ``pull`` afterwards.
    """

    def __init__(self, model: Sequential, loss: str, box: Interval, x, y, batch_size: int):
        self.net = FusedMLP(model, loss)
        # the kernel reads the rows of each batch straight from these (no copy of the data)
        self.data = tuple(np.ascontiguousarray(a) for a in (box.lo, box.hi, x))
        self.x_mag, x_tiny, x_nonneg = _k.data_flags(self.data[0], self.data[1])
        self.net.set_data_flags(x_tiny, x_nonneg)
        self.y = np.ascontiguousarray(y, dtype=np.int64)
        self.ws = np.empty(
            _k.workspace_size(self.net.sizes, self.net.relu_after, max(batch_size, 1))
        )
        self.scal = np.zeros(6)
        self.scal[5] = self.x_mag
        self.out = np.zeros(8)
        self._inv: dict = {}
        self._constant: tuple[float, float, float] | None = None
        self._cert = None
        self._labels: tuple = (None, None)  # the last checked labels, and as int64

    def push(self, model: Sequential) -> None:
        """Write the current box and nominal parameters into ``model`` (fresh arrays)."""
        self.net.push(model)

    def pull(self, model: Sequential) -> None:
        """Read ``model``'s parameters (after a layered step)."""
        self.net.pull(model)

    def named(self) -> tuple[dict[str, Interval], dict]:
        return self.net.named()

    def widths(self) -> tuple[float, float]:
        """Mean and max parameter width, as ``train._widths`` computes them from the model."""
        w = np.empty(self.net.th.size // 4)
        _k.widths(self.net.th, self.net.meta, w)
        return float(w.mean()), float(w.max())

    def certify(self, model: Sequential, x, y, threat):
        """``certify(model, x, y, threat)`` for the current parameters (pushed to ``model``).

        The test box of ``x`` is built once per data set and threat model
        (validation during training); the logit bounds come from the fused
        forward on this trainer's parameters, the nominal predictions from
        ``model.forward_nominal`` as in :func:`intervalnn.certify.certify`.
        """
        from .certify import CertificationResult, _clear_caches, certify, check_labels, margins

        if self._cert is None or self._cert[0] is not x or self._cert[1] != threat:
            xd = np.asarray(x).astype(model.dtype)
            box = threat.test_box(np.asarray(x), model.dtype)  # encloses x as given
            planes, x_mag, tiny, nonneg = _data_planes(box.lo, box.hi, box.lo)
            meta = self.net.meta.copy()
            meta[3], meta[-1] = tiny, nonneg
            m = xd.shape[0]
            ws = np.empty(_k.workspace_size(self.net.sizes, self.net.relu_after, max(m, 1)))
            out = np.empty((4, self.net.sizes[-1], m))
            self._cert = (x, threat, xd, planes, x_mag, meta, ws, out)
        _, _, xd, planes, x_mag, meta, ws, out = self._cert
        y = np.asarray(y)
        if xd.ndim != 2 or xd.shape[1] != self.net.sizes[0] or y.shape != (xd.shape[0],):
            return certify(model, x, y, threat)  # its error messages
        if self._labels[0] is not y:  # validation passes the same labels at every step
            check_labels(y, self.net.sizes[-1])
            self._labels = (y, y.astype(np.int64))
        y = self._labels[1]
        if not _k.forward(planes, self.net.th, meta, x_mag, ws, out):
            return certify(model, x, y, threat)
        margin = margins(out[0].T, out[1].T, y)
        z = model.forward_nominal(xd)
        pred = (z[:, 0] > 0).astype(np.int64) if z.shape[1] == 1 else z.argmax(axis=1)
        _clear_caches(model)
        return CertificationResult(margin > 0, margin, pred == y, threat.inference_epsilon)

    @classmethod
    def create(cls, model, loss: str, box: Interval, x, y, batch_size: int):
        """A trainer, or None where the fused path does not apply (the layered path then runs)."""
        st = structure(model)
        if st is None or loss not in _LOSSES or box.backend.name != "numpy":
            return None
        k = model.out_features
        labels = np.asarray(y)
        if labels.ndim != 1 or labels.shape[0] != box.shape[0] or labels.dtype.kind not in "iub":
            return None
        valid = (k == 1 and np.isin(labels, (0, 1)).all()) if loss == "bce" else (k >= 2)
        if not valid or (loss == "ce" and not ((labels >= 0) & (labels < k)).all()):
            return None
        return cls(model, loss, box, x, y, batch_size)

    def _rate_bounds(self, rate: Fraction) -> tuple[float, float, float]:
        """``lambda`` enclosed in the model's dtype (as the layered SGD does), and its nominal."""
        dt = np.dtype(self.net.dtype)
        lo, hi = _scalar_bounds(rate, dt)
        return float(lo), float(hi), float(dt.type(float(rate)))

    def _inv_bounds(self, m: int) -> tuple[float, float]:
        got = self._inv.get(m)
        if got is None:
            lo, hi = _scalar_bounds(Fraction(1, m), np.dtype(np.float64))
            got = self._inv[m] = (float(lo), float(hi))
        return got

    def step(self, idx, opt) -> StepResult | None:
        """One SGD step on rows ``idx`` with ``opt``'s next learning rate, or None if declined."""
        s = self.scal
        if opt.schedule == "constant":
            if self._constant is None:
                self._constant = self._rate_bounds(opt.rate(1))
            s[0], s[1], s[2] = self._constant
        else:
            s[0], s[1], s[2] = self._rate_bounds(opt.rate(opt.t + 1))
        s[3], s[4] = self._inv_bounds(len(idx))
        out = self.out
        _k.train_step(*self.data, self.y, idx, self.net.th, self.ws, self.net.meta, s, out)
        if out[0] == _k.DECLINED:
            return None
        opt.t += 1
        outside = None
        if out[4] >= 0:
            outside = self.net.name_of(int(out[4]), bool(out[6]))
        return StepResult((float(out[1]), float(out[2])), bool(out[3]), outside)


def forward_bounds(model: Sequential, box: Interval):
    """Sound float64 logit bounds ``(lo, hi)`` of ``model`` on ``box``, or None (use the layers)."""
    if structure(model) is None or box.backend.name != "numpy" or box.ndim != 2:
        return None
    net = FusedMLP(model)
    xs, x_mag, x_tiny, x_nonneg = _data_planes(box.lo, box.hi, box.lo)
    net.set_data_flags(x_tiny, x_nonneg)
    m, k = box.shape[0], net.sizes[-1]
    ws = np.empty(_k.workspace_size(net.sizes, net.relu_after, max(m, 1)))
    out = np.empty((4, k, m))
    if not _k.forward(xs, net.th, net.meta, x_mag, ws, out):
        return None
    return out[0].T, out[1].T
