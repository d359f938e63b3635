"""Minimal layers for FullCert: interval forward and hand-written backward side by side.

Every layer runs two models at once:

* the **interval model**: parameters are ``Interval`` boxes that contain every
  parameter value that training on any dataset inside the threat model could
  produce; ``forward``/``backward`` propagate sound interval bounds;
* the **nominal model**: plain arrays trained on the clean data with ordinary
  round-to-nearest arithmetic (``forward_nominal``/``backward_nominal``): the
  model a user deploys, which must stay inside the box.

Caches hold only what the backward pass needs and are dropped by it, so
memory stays flat over epochs.  Conventions: inputs are row vectors,
``y = x W + b`` with ``W`` of shape ``(in, out)``.
"""

from __future__ import annotations

import math

import numpy as np

from .backend import Backend, backend_of, get_backend
from .conv import AvgPool2d, Conv2d, Flatten, MaxPool2d, Parameterless, Unflatten, start_at
from .interval import Interval, concatenate

__all__ = [
    "AvgPool2d",
    "Conv2d",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "ReLU",
    "Sequential",
    "Unflatten",
    "class_pairs",
    "difference_matrix",
    "mlp",
]


class Linear:
    """Affine layer ``y = x W + b`` with interval ``W``, ``b`` and a nominal copy."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rng: np.random.Generator,
        dtype=np.float64,
        backend: str | Backend = "numpy",
    ):
        if in_features < 1 or out_features < 1:
            raise ValueError("Linear needs in_features >= 1 and out_features >= 1")
        bk = get_backend(backend) if isinstance(backend, str) else backend
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in))
        # for the weight, and the bias uses the same bound.
        bound = 1.0 / math.sqrt(in_features)
        w = rng.uniform(-bound, bound, size=(out_features, in_features)).T  # torch's layout
        b = rng.uniform(-bound, bound, size=out_features)
        start_at(self, w, b, dtype, bk)

    @classmethod
    def from_params(cls, weight: Interval, bias: Interval) -> Linear:
        """A layer holding the boxes ``weight`` (in, out) and ``bias`` (out,); nominal: lo."""
        layer = object.__new__(cls)
        layer.weight, layer.bias = weight, bias
        layer.nominal = {"weight": weight.lo, "bias": bias.lo}
        layer.grads, layer.nominal_grads = {}, {}
        layer._x = layer._x_nominal = None
        return layer

    @property
    def params(self) -> dict[str, Interval]:
        return {"weight": self.weight, "bias": self.bias}

    def differences(self) -> Linear:
        """The layer whose outputs are ``z_c - z_j`` for the pairs ``c < j`` (:func:`class_pairs`).

        Its weight is ``W_c - W_j`` and bias ``b_c - b_j`` (intervals, and the
        nominal's in floats), so an input box enters each difference once.
        """
        c, j = class_pairs(self.weight.shape[1])
        w, b = self.weight, self.bias
        layer = Linear.from_params(w[:, c] - w[:, j], b[c] - b[j])
        w, b = self.nominal["weight"], self.nominal["bias"]
        layer.nominal = {"weight": w[:, c] - w[:, j], "bias": b[c] - b[j]}
        return layer

    def set_params(self, params: dict[str, Interval]) -> None:
        self.weight, self.bias = params["weight"], params["bias"]

    def output_shape(self, shape) -> tuple[int]:
        n_in, n_out = self.weight.shape
        if tuple(shape) != (n_in,):
            raise ValueError(f"Linear({n_in}, {n_out}) needs {n_in} flat features, got {shape}")
        return (n_out,)

    # interval model -------------------------------------------------------
    def forward(self, x: Interval) -> Interval:
        """``x W + b`` as one product ``[x, 1] [W; b]``.

        The bias is one more term of each dot product, so the GEMM bound also
        covers a float evaluation that adds it in any position of the sum
        (``x @ W + b`` would bound the sum without it and add it after).
        """
        self._x = x
        xp = x.backend.xp
        ones = Interval._new(*(xp.ones((*x.shape[:-1], 1), dtype=x.dtype),) * 2)
        bias_row = self.bias.reshape(1, -1)
        return concatenate([x, ones], axis=-1) @ concatenate([self.weight, bias_row], axis=0)

    def backward(
        self, g: Interval, need_input_grad: bool = True, per_sample: bool = False, zero_sum_ref=None
    ) -> Interval | None:
        """``dW = x^T g``, ``db = sum_rows g``, ``dx = g W^T`` (g already has the 1/m).

        ``per_sample``: keep each row's gradient in factored form,
        ``sample_factors = (x, g)`` (row i's ``dW_i = x_i^T g_i``, ``db_i =
        g_i``), not summed.  ``zero_sum_ref``: each row of ``g`` sums to 0
        over the outputs in the reals (cross-entropy's ``p - onehot``), so
        ``dx_i = sum_{j != r_i} g_ij (W_j - W_{r_i})`` with ``r_i`` the row's
        reference output: the outputs' shared dependence on ``dx`` cancels.
        """
        x, self._x = self._x, None
        if per_sample:
            self.sample_factors = (x, g)
        else:
            self.grads = {"weight": x.T @ g, "bias": g.sum(axis=0)}
        if not need_input_grad:
            return None
        if zero_sum_ref is None:
            return g @ self.weight.T
        return _zero_sum_input_grad(g, self.weight.T, zero_sum_ref)

    # nominal model --------------------------------------------------------
    def forward_nominal(self, x):
        self._x_nominal = x
        return x @ self.nominal["weight"] + self.nominal["bias"]

    def backward_nominal(
        self, g, need_input_grad: bool = True, per_sample: bool = False, zero_sum_ref=None
    ):
        x, self._x_nominal = self._x_nominal, None
        if per_sample:
            self.nominal_factors = (x, g)
        else:
            self.nominal_grads = {"weight": x.T @ g, "bias": g.sum(axis=0)}
        if not need_input_grad:
            return None
        if zero_sum_ref is None:
            return g @ self.nominal["weight"].T
        return _zero_sum_input_grad(g, self.nominal["weight"].T, zero_sum_ref)

    def __repr__(self) -> str:
        n_in, n_out = self.weight.shape
        return f"Linear({n_in}, {n_out})"


def class_pairs(k: int) -> tuple[np.ndarray, np.ndarray]:
    """The pairs ``c < j`` of ``k`` outputs in row-major order: the columns of differences."""
    c, j = np.triu_indices(k, 1)
    return c, j


def difference_matrix(pairs, k: int):
    """``D[b, i, j] = z_j - z_i`` (shape (m, k, k)) from ``pairs[b, p] = z_c - z_j`` (class_pairs).

    Intervals or floats alike; the negations and the zero diagonal are exact.
    """
    c, j = class_pairs(k)
    interval = isinstance(pairs, Interval)
    xp = pairs.backend.xp if interval else backend_of(pairs).xp
    m = pairs.shape[0]
    if not interval:
        out = xp.zeros((m, k, k), dtype=pairs.dtype)
        out[:, j, c], out[:, c, j] = pairs, -pairs
        return out
    lo = xp.zeros((m, k, k), dtype=pairs.dtype)
    hi = xp.zeros((m, k, k), dtype=pairs.dtype)
    lo[:, j, c], hi[:, j, c] = pairs.lo, pairs.hi
    lo[:, c, j], hi[:, c, j] = -pairs.hi, -pairs.lo
    return Interval._new(lo, hi)


def _zero_sum_input_grad(g, w_t, ref):
    """``sum_{j != r_i} g_ij (W_j - W_{r_i})`` per row i, ``W_j`` the rows of ``w_t`` (out, in).

    Intervals or floats alike: entry ``r_i`` of ``g`` is dropped exactly and
    the products summed over the outputs (the sum covers any order).
    """
    interval = isinstance(g, Interval)
    xp = g.backend.xp if interval else backend_of(g).xp
    ref = xp.asarray(ref)
    m, k = g.shape
    rows = xp.arange(m)
    others = xp.ones((m, k), dtype=bool)
    others[rows, ref] = False
    diff = w_t.reshape(1, *w_t.shape) - w_t[ref].reshape(m, 1, -1)  # (m, out, in)
    if interval:
        kept = Interval._new(xp.where(others, g.lo, 0), xp.where(others, g.hi, 0))
        return (kept.reshape(m, k, 1) * diff).sum(axis=1)
    kept = xp.where(others, g, 0).astype(g.dtype)
    return (kept[:, :, None] * diff).sum(axis=1)


class ReLU(Parameterless):
    """``max(z, 0)``; its derivative on an interval is 0, 1 or the hull [0, 1]."""

    def __init__(self):
        self._z = self._z_nominal = None

    def output_shape(self, shape) -> tuple[int, ...]:
        return tuple(shape)

    def forward(self, z: Interval) -> Interval:
        self._z = z
        xp = z.backend.xp
        return Interval._new(xp.maximum(z.lo, 0), xp.maximum(z.hi, 0))

    def backward(self, g: Interval, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        # g * d with d = 1 (z > 0), 0 (z <= 0) or [0, 1]: exact, no rounding.
        z, self._z = self._z, None
        xp = g.backend.xp
        active, inactive = z.lo > 0, z.hi <= 0
        lo = xp.where(active, g.lo, xp.where(inactive, 0, xp.minimum(g.lo, 0)))
        hi = xp.where(active, g.hi, xp.where(inactive, 0, xp.maximum(g.hi, 0)))
        return Interval._new(lo.astype(g.dtype), hi.astype(g.dtype))

    def forward_nominal(self, z):
        self._z_nominal = z
        xp = np if type(z) is np.ndarray else backend_of(z).xp
        return xp.maximum(z, 0).astype(z.dtype, copy=False)  # not z * (z > 0): -inf * 0 is NaN

    def backward_nominal(self, g, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        z, self._z_nominal = self._z_nominal, None
        xp = backend_of(g).xp
        return xp.where(z > 0, g, 0).astype(g.dtype)

    def __repr__(self) -> str:
        return "ReLU()"


class Sequential:
    """Layers applied in order; ``backward`` runs them in reverse.

    ``frozen``: the first ``frozen`` layers are fixed (their parameters are
    points and get no gradient): training computes their output once per
    data point (:class:`intervalnn.engine.PrefixEngine`).
    """

    def __init__(self, *layers, frozen: int = 0):
        if not layers:
            raise ValueError("Sequential needs at least one layer")
        if not 0 <= frozen <= len(layers):
            raise ValueError(f"frozen must be between 0 and {len(layers)} layers, got {frozen}")
        self.layers = list(layers)
        self.frozen = frozen
        if isinstance(layers[0], (Linear, Unflatten)):
            self.output_shapes()  # a one-line ValueError where a layer does not fit its input

    def forward(self, x: Interval) -> Interval:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def backward(self, g: Interval, per_sample: bool = False, zero_sum_ref=None) -> None:
        """Gradients of the trainable layers' parameters; ``per_sample``: one per row of ``g``.

        Frozen layers (the first ``frozen``) get none, and no input gradient
        is computed below them.  ``zero_sum_ref``: ``g``'s rows sum to 0 in
        the reals (see ``Linear.backward``); used where the last layer is Linear.
        """
        ref = zero_sum_ref if isinstance(self.layers[-1], Linear) else None
        lowest = self._lowest_trained
        for i in range(len(self.layers) - 1, lowest - 1, -1):
            g = self.layers[i].backward(g, i > lowest, per_sample, ref)
            ref = None

    def forward_nominal(self, x):
        for layer in self.layers:
            x = layer.forward_nominal(x)
        return x

    def backward_nominal(self, g, per_sample: bool = False, zero_sum_ref=None) -> None:
        ref = zero_sum_ref if isinstance(self.layers[-1], Linear) else None
        lowest = self._lowest_trained
        for i in range(len(self.layers) - 1, lowest - 1, -1):
            g = self.layers[i].backward_nominal(g, i > lowest, per_sample, ref)
            ref = None

    @property
    def _lowest_trained(self) -> int:
        """The first trainable layer with parameters: no gradient is needed below it."""
        return next(
            (i for i in range(self.frozen, len(self.layers)) if self.layers[i].params),
            len(self.layers) - 1,
        )

    def logit_differences(self, nominal: bool = False):
        """After ``forward`` (``forward_nominal``): ``D[b, i, j]`` bounding ``z_j - z_i``.

        Computed through the last layer's difference layer from its cached
        input (:meth:`Linear.differences`); None unless the last layer is a
        Linear with at least two outputs.
        """
        last = self.layers[-1]
        if not isinstance(last, Linear) or last.weight.shape[1] < 2:
            return None
        pairs = last.differences()
        if nominal:
            return difference_matrix(pairs.forward_nominal(last._x_nominal), last.weight.shape[1])
        return difference_matrix(pairs.forward(last._x), last.weight.shape[1])

    def named_params(self, trainable: bool = False) -> dict[str, Interval]:
        """Every parameter box by name (``trainable``: only those after the frozen prefix)."""
        first = self.frozen if trainable else 0
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            if i >= first
            for k, v in layer.params.items()
        }

    def named_nominal(self) -> dict:
        return {
            f"{i}.{k}": v
            for i, layer in enumerate(self.layers)
            for k, v in getattr(layer, "nominal", {}).items()
        }

    def named_grads(self) -> tuple[dict[str, Interval], dict]:
        """The trainable parameters' gradients (box and nominal) after ``backward``."""
        grads, nominal = {}, {}
        for i, layer in enumerate(self.layers[self.frozen :], self.frozen):
            for k in layer.params:
                grads[f"{i}.{k}"] = layer.grads[k]
                nominal[f"{i}.{k}"] = layer.nominal_grads[k]
        return grads, nominal

    def load(self, params: dict[str, Interval], nominal: dict | None = None) -> None:
        """Replace parameters by name (``named_params``'s names; frozen ones may be left out)."""
        for i, layer in enumerate(self.layers):
            if i < self.frozen and not any(f"{i}.{k}" in params for k in layer.params):
                continue
            mine = {k: params[f"{i}.{k}"] for k in layer.params}
            if mine:
                layer.set_params(mine)
            if nominal is not None and hasattr(layer, "nominal"):
                layer.nominal = {k: nominal[f"{i}.{k}"] for k in layer.nominal}

    @property
    def in_features(self) -> int:
        """The size of a (flat) input row."""
        first = self.layers[0]
        if isinstance(first, Unflatten):
            return int(np.prod(first.shape))
        if isinstance(first, Linear):
            return first.weight.shape[0]
        raise ValueError(
            f"a model that starts with {type(first).__name__} has no known input size: "
            "start with Linear, or with Unflatten for images"
        )

    @property
    def out_features(self) -> int:
        return [la for la in self.layers if isinstance(la, Linear)][-1].weight.shape[1]

    @property
    def _first_parameter(self) -> Interval:
        return next(p for la in self.layers for p in la.params.values())

    @property
    def dtype(self):
        return self._first_parameter.dtype

    @property
    def backend(self) -> Backend:
        return self._first_parameter.backend

    def output_shapes(self) -> list[tuple[int, ...]]:
        """Every layer's output shape for one input row (a ``ValueError`` if one does not fit)."""
        shapes, shape = [], (self.in_features,)
        for layer in self.layers:
            shape = layer.output_shape(shape)
            shapes.append(shape)
        return shapes

    def split(self) -> tuple[Sequential | None, Sequential]:
        """The frozen prefix (None if nothing is frozen) and the trainable head.

        Both share this model's layer objects.  ``frozen`` is honoured by
        training (:func:`intervalnn.engine.make_engine`); ``forward`` and
        ``backward`` here always run every layer (clean pretraining trains them all).
        """
        if self.frozen == len(self.layers):
            raise ValueError("every layer is frozen: nothing is left to train")
        head = Sequential(*self.layers[self.frozen :])
        return (Sequential(*self.layers[: self.frozen]) if self.frozen else None), head

    def __repr__(self) -> str:
        return "Sequential(" + ", ".join(map(repr, self.layers)) + ")"


def mlp(
    in_features: int,
    out_features: int,
    *,
    hidden: int = 20,
    layers: int = 2,
    seed: int = 0,
    dtype=np.float64,
    backend: str = "numpy",
) -> Sequential:
    """The paper's MLPs: ``layers`` Linear layers with ReLU between them.

    ``layers=2, hidden=20`` is Linear(in, 20) - ReLU - Linear(20, out) (the
    paper's "2-layer MLP").  Initialisation is PyTorch's default, seeded.
    """
    if layers < 1 or hidden < 1:
        raise ValueError("an MLP needs layers >= 1 and hidden >= 1")
    rng = np.random.default_rng(seed)
    sizes = [in_features] + [hidden] * (layers - 1) + [out_features]
    modules = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        modules.append(Linear(n_in, n_out, rng=rng, dtype=dtype, backend=backend))
        if i < layers - 1:
            modules.append(ReLU())
    return Sequential(*modules)
