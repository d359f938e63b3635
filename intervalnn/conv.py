"""Image layers: ``Conv2d``, ``AvgPool2d``, ``MaxPool2d``, ``Flatten``, ``Unflatten`` (NCHW).

Same two-model contract as :mod:`intervalnn.layers`: an interval forward and
hand-written backward, and the nominal model's float forward and backward.
Only data movement happens here besides ``Interval`` operations, so every
bound is as sound as the operations it is made of:

* the convolution is a matrix product over im2col patches, ``[cols, 1] @
  [W; b]`` (the sound GEMM bound, :mod:`intervalnn.kernels.gemm`), which
  covers the real product and a float evaluation in any summation order;
* patch extraction, zero padding, flattening and the max are exact;
* overlapping windows' input gradients are accumulated offset by offset with
  outward-rounded interval additions, and the nominal model accumulates the
  same terms in the same order, so by monotonicity of rounding each partial
  float sum stays inside its interval partial sum.

Input gradients of frozen layers are never needed; parameter gradients of a
convolution are summed over the batch (``per_sample`` is refused: k-of-n
poisoning needs per-sample factors, which only ``Linear`` keeps; freeze the
convolutions and certify the head instead).
"""

from __future__ import annotations

import math

import numpy as np

from .backend import Backend, backend_of, get_backend
from .interval import Interval, concatenate
from .linalg import MidRad, matmul


def _pair(v, name: str) -> tuple[int, int]:
    pair = (v, v) if isinstance(v, (int, np.integer)) else tuple(v) if np.iterable(v) else ()
    if len(pair) != 2 or not all(isinstance(p, (int, np.integer)) for p in pair):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return int(pair[0]), int(pair[1])


def _window_shape(shape, kernel, stride, padding, what: str) -> tuple[int, int]:
    """Output height and width of a window of ``kernel`` over an image of ``shape`` (C, H, W)."""
    if len(shape) != 3:
        raise ValueError(f"{what} needs (channels, height, width) inputs, got shape {shape}")
    geometry = zip(shape[1:], kernel, stride, padding, strict=True)
    size = [(n + 2 * p - k) // s + 1 for n, k, s, p in geometry]
    if min(size) < 1:
        raise ValueError(
            f"{what}: kernel {kernel} does not fit the input {shape[1:]} with padding {padding}"
        )
    return size[0], size[1]


def _patches(xp, a, kernel, stride, padding, out_hw):
    """``P[n, c, i, j, u, v] = a_pad[n, c, i*sh + u, j*sw + v]``: a strided view (no copy but
    the padding's), exact data movement."""
    (sh, sw), (ph, pw), (oh, ow) = stride, padding, out_hw
    if ph or pw:
        a = xp.pad(a, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    windows = xp.lib.stride_tricks.sliding_window_view(a, kernel, axis=(2, 3))
    return windows[:, :, : sh * (oh - 1) + 1 : sh, : sw * (ow - 1) + 1 : sw]


def _scatter(parts, in_shape, kernel, stride, padding, add, zeros):
    """The adjoint of :func:`_patches`: ``parts`` (N, C, OH, OW, kh, kw) summed into the input.

    ``add(a, b)`` adds two (interval or float) arrays; the terms enter each
    input position offset by offset in row-major ``(u, v)`` order, the same
    order for the interval and the nominal model.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    n, c, h, w = in_shape
    oh, ow = parts.shape[2:4]
    acc = zeros((n, c, h + 2 * ph, w + 2 * pw))
    for u in range(kh):
        for v in range(kw):
            rows, cols = slice(u, u + sh * oh, sh), slice(v, v + sw * ow, sw)
            region = (slice(None), slice(None), rows, cols)
            acc[region] = add(acc[region], parts[..., u, v])
    return acc[:, :, ph : ph + h, pw : pw + w]


class _IntervalAccumulator:
    """Interval lo/hi arrays that ``_scatter`` can slice and assign like one array."""

    def __init__(self, xp, shape, dtype):
        self.lo, self.hi = xp.zeros(shape, dtype=dtype), xp.zeros(shape, dtype=dtype)

    def __getitem__(self, key) -> Interval:
        return Interval._new(self.lo[key], self.hi[key])

    def __setitem__(self, key, value: Interval) -> None:
        self.lo[key], self.hi[key] = value.lo, value.hi


def _interval_patches(x: Interval, *args) -> Interval:  # the pools' windows
    xp = x.backend.xp
    return Interval._new(_patches(xp, x.lo, *args), _patches(xp, x.hi, *args))


def _interval_scatter(parts: Interval, in_shape, kernel, stride, padding) -> Interval:
    xp = parts.backend.xp
    return _scatter(
        parts, in_shape, kernel, stride, padding, lambda a, b: a + b,
        lambda shape: _IntervalAccumulator(xp, shape, parts.dtype),
    )  # fmt: skip


def _float_scatter(parts, in_shape, kernel, stride, padding):
    xp = backend_of(parts).xp
    return _scatter(
        parts, in_shape, kernel, stride, padding, lambda a, b: a + b,
        lambda shape: xp.zeros(shape, dtype=parts.dtype),
    )  # fmt: skip


def start_at(layer, w, b, dtype, backend: Backend) -> None:
    """Give ``layer`` the point boxes and nominal model at the sampled weight ``w`` and bias
    ``b`` (in ``dtype`` on ``backend``), no gradients and empty caches."""
    w, b = backend.xp.asarray(w.astype(dtype)), backend.xp.asarray(b.astype(dtype))
    layer.weight, layer.bias = Interval(w), Interval(b)
    layer.nominal = {"weight": w.copy(), "bias": b.copy()}
    layer.grads, layer.nominal_grads = {}, {}
    layer._x = layer._x_nominal = None


class Parameterless:
    """A layer without parameters (nothing to set, nothing to train)."""

    params: dict = {}

    def set_params(self, params) -> None:
        pass


class Conv2d:
    """2-d convolution, NCHW, ``weight`` (out, in, kh, kw) as PyTorch's, ``bias`` (out,)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size,
        stride=1,
        padding=0,
        *,
        rng: np.random.Generator,
        dtype=np.float64,
        backend: str | Backend = "numpy",
    ):
        if in_channels < 1 or out_channels < 1:
            raise ValueError("Conv2d needs in_channels >= 1 and out_channels >= 1")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if min(self.kernel_size) < 1 or min(self.stride) < 1 or min(self.padding) < 0:
            raise ValueError("Conv2d needs kernel_size >= 1, stride >= 1 and padding >= 0")
        self.in_channels, self.out_channels = in_channels, out_channels
        bk = get_backend(backend) if isinstance(backend, str) else backend
        # PyTorch's default: kaiming_uniform_(a=sqrt(5)) is U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        # and the bias uses the same bound; fan_in = in * kh * kw.
        bound = 1.0 / math.sqrt(in_channels * self.kernel_size[0] * self.kernel_size[1])
        w = rng.uniform(-bound, bound, size=(out_channels, in_channels, *self.kernel_size))
        b = rng.uniform(-bound, bound, size=out_channels)
        start_at(self, w, b, dtype, bk)

    @property
    def params(self) -> dict[str, Interval]:
        return {"weight": self.weight, "bias": self.bias}

    def set_params(self, params: dict[str, Interval]) -> None:
        self.weight, self.bias = params["weight"], params["bias"]

    def output_shape(self, shape) -> tuple[int, int, int]:
        if len(shape) == 3 and shape[0] != self.in_channels:
            raise ValueError(f"Conv2d expects {self.in_channels} input channels, got {shape[0]}")
        oh, ow = _window_shape(shape, self.kernel_size, self.stride, self.padding, "Conv2d")
        return self.out_channels, oh, ow

    def _cols(self, patches):
        """(N, C, OH, OW, kh, kw) patches as im2col rows (N*OH*OW, C*kh*kw), PyTorch's order."""
        n, c, oh, ow, kh, kw = patches.shape
        return patches.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)

    def _geometry(self, shape):
        return self.kernel_size, self.stride, self.padding, self.output_shape(shape[1:])[1:]

    # interval model -------------------------------------------------------
    def forward(self, x: Interval) -> Interval:
        """``[cols, 1] @ [W^T; b]``: the bias is one more term of each dot product (as Linear).

        The patches are taken of the image's midpoints and radii (exact data
        movement: every member of a patch is within its radius of its
        midpoint), so the GEMM bound needs no midpoint-radius pass over them.
        """
        n = x.shape[0]
        oh, ow = self.output_shape(x.shape[1:])[1:]
        xp = x.backend.xp
        geometry = self._geometry(x.shape)
        mid, rad = x.midrad()
        cols = MidRad(*(self._cols(_patches(xp, a, *geometry)) for a in (mid, rad)))
        self._x = (x.shape, cols)  # backward's im2col rows
        ones = xp.ones((cols.mid.shape[0], 1), dtype=x.dtype)
        rows = MidRad(xp.concatenate([cols.mid, ones], 1), xp.concatenate([cols.rad, 0 * ones], 1))
        w = self.weight.reshape(self.out_channels, -1).T
        out = matmul(rows, concatenate([w, self.bias.reshape(1, -1)]))
        return out.reshape(n, oh, ow, self.out_channels).transpose(0, 3, 1, 2)

    def backward(self, g: Interval, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        """``dW = g_mat^T cols``, ``db = sum g``, ``dx = scatter(g_mat W)`` (g has the 1/m)."""
        if per_sample:
            raise ValueError(
                "per-sample gradients (k-of-n poisoning, clipping) are not available for a "
                "trainable Conv2d: freeze the convolutional layers (--freeze N)"
            )
        (shape, cols), self._x = self._x, None
        g_mat = g.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        self.grads = {
            "weight": matmul(g_mat.T, cols).reshape(self.weight.shape),
            "bias": g_mat.sum(axis=0),
        }
        if not need_input_grad:
            return None
        d_cols = g_mat @ self.weight.reshape(self.out_channels, -1)
        geometry = self._geometry(shape)[:3]
        return _interval_scatter(self._uncols(d_cols, shape), shape, *geometry)

    def _uncols(self, d_cols, in_shape):
        n, c = in_shape[:2]
        oh, ow = self.output_shape(in_shape[1:])[1:]
        kh, kw = self.kernel_size
        return d_cols.reshape(n, oh, ow, c, kh, kw).transpose(0, 3, 1, 2, 4, 5)

    # nominal model --------------------------------------------------------
    def forward_nominal(self, x):
        xp = backend_of(x).xp
        n = x.shape[0]
        oh, ow = self.output_shape(x.shape[1:])[1:]
        cols = self._cols(_patches(xp, x, *self._geometry(x.shape)))
        self._x_nominal = (x.shape, cols)
        w = self.nominal["weight"].reshape(self.out_channels, -1)
        out = cols @ w.T + self.nominal["bias"]
        return out.reshape(n, oh, ow, self.out_channels).transpose(0, 3, 1, 2)

    def backward_nominal(self, g, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        if per_sample:
            return self.backward(None, per_sample=True)  # the same refusal
        (shape, cols), self._x_nominal = self._x_nominal, None
        g_mat = g.transpose(0, 2, 3, 1).reshape(-1, self.out_channels)
        self.nominal_grads = {
            "weight": (g_mat.T @ cols).reshape(self.nominal["weight"].shape),
            "bias": g_mat.sum(axis=0),
        }
        if not need_input_grad:
            return None
        d_cols = g_mat @ self.nominal["weight"].reshape(self.out_channels, -1)
        geometry = self._geometry(shape)[:3]
        return _float_scatter(self._uncols(d_cols, shape), shape, *geometry)

    def __repr__(self) -> str:
        extra = "" if self.stride == (1, 1) else f", stride={self.stride}"
        extra += "" if self.padding == (0, 0) else f", padding={self.padding}"
        return f"Conv2d({self.in_channels}, {self.out_channels}, {self.kernel_size}{extra})"


class _Pool(Parameterless):
    """Shared window geometry of the pooling layers (no padding; stride = kernel by default)."""

    padding = (0, 0)

    def __init__(self, kernel_size, stride=None):
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{type(self).__name__} needs kernel_size >= 1 and stride >= 1")
        self._x = self._x_nominal = None

    def output_shape(self, shape) -> tuple[int, int, int]:
        oh, ow = _window_shape(shape, self.kernel_size, self.stride, (0, 0), type(self).__name__)
        return shape[0], oh, ow

    def _geometry(self, shape):
        return self.kernel_size, self.stride, (0, 0), self.output_shape(shape[1:])[1:]

    def __repr__(self) -> str:
        extra = "" if self.stride == self.kernel_size else f", stride={self.stride}"
        return f"{type(self).__name__}({self.kernel_size}{extra})"


class AvgPool2d(_Pool):
    """Mean over each window: an outward sum (any order) divided by the window size outward."""

    def forward(self, x: Interval) -> Interval:
        self._x = x
        patches = _interval_patches(x, *self._geometry(x.shape))
        return patches.sum(axis=(4, 5)) / self._count

    @property
    def _count(self) -> float:
        return float(self.kernel_size[0] * self.kernel_size[1])

    def backward(self, g: Interval, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        x, self._x = self._x, None
        if not need_input_grad:
            return None
        share = g / self._count
        xp = g.backend.xp
        kh, kw = self.kernel_size
        parts = Interval._new(
            xp.broadcast_to(share.lo[..., None, None], (*g.shape, kh, kw)),
            xp.broadcast_to(share.hi[..., None, None], (*g.shape, kh, kw)),
        )
        return _interval_scatter(parts, x.shape, *self._geometry(x.shape)[:3])

    def forward_nominal(self, x):
        self._x_nominal = x
        xp = backend_of(x).xp
        patches = _patches(xp, x, *self._geometry(x.shape))
        return patches.sum(axis=(4, 5)) / x.dtype.type(self._count)

    def backward_nominal(self, g, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        x, self._x_nominal = self._x_nominal, None
        if not need_input_grad:
            return None
        xp = backend_of(g).xp
        share = g / g.dtype.type(self._count)
        parts = xp.broadcast_to(share[..., None, None], (*g.shape, *self.kernel_size))
        return _float_scatter(parts, x.shape, *self._geometry(x.shape)[:3])


class MaxPool2d(_Pool):
    """Maximum over each window: monotone, so the bounds are the windows' max of lo and of hi.

    Backward: a position can be the maximum when its upper bound reaches the
    window's largest lower bound.  Where that is one position, it is the
    maximum for every member of the box and takes the whole gradient;
    otherwise every candidate takes the hull of 0 and the gradient (as ReLU's
    undecided sign), which covers any tie-breaking.  The nominal model routes
    the gradient to the window's first maximum (PyTorch's choice).
    """

    def forward(self, x: Interval) -> Interval:
        self._x = x
        patches = _interval_patches(x, *self._geometry(x.shape))
        return Interval._new(patches.lo.max(axis=(4, 5)), patches.hi.max(axis=(4, 5)))

    def backward(self, g: Interval, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        x, self._x = self._x, None
        if not need_input_grad:
            return None
        xp = g.backend.xp
        geometry = self._geometry(x.shape)
        patches = _interval_patches(x, *geometry)
        floor = patches.lo.max(axis=(4, 5), keepdims=True)
        candidate = patches.hi >= floor
        alone = (candidate.sum(axis=(4, 5), keepdims=True) == 1)[..., 0, 0]
        lo = xp.where(alone, g.lo, xp.minimum(g.lo, 0))[..., None, None]
        hi = xp.where(alone, g.hi, xp.maximum(g.hi, 0))[..., None, None]
        parts = Interval._new(
            xp.where(candidate, lo, 0).astype(g.dtype), xp.where(candidate, hi, 0).astype(g.dtype)
        )
        return _interval_scatter(parts, x.shape, *geometry[:3])

    def forward_nominal(self, x):
        self._x_nominal = x
        xp = backend_of(x).xp
        return _patches(xp, x, *self._geometry(x.shape)).max(axis=(4, 5))

    def backward_nominal(self, g, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        x, self._x_nominal = self._x_nominal, None
        if not need_input_grad:
            return None
        xp = backend_of(g).xp
        geometry = self._geometry(x.shape)
        patches = _patches(xp, x, *geometry)
        flat = patches.reshape(*patches.shape[:4], -1)
        first = flat.argmax(axis=-1)[..., None]  # the first maximum, row-major in the window
        chosen = xp.arange(flat.shape[-1]) == first
        parts = xp.where(chosen, g[..., None], 0).astype(g.dtype).reshape(patches.shape)
        return _float_scatter(parts, x.shape, *geometry[:3])


class Flatten(Parameterless):
    """(N, C, H, W) -> (N, C*H*W) in C order, as ``torch.nn.Flatten()``; exact."""

    def __init__(self):
        self._shape = self._shape_nominal = None

    def output_shape(self, shape) -> tuple[int]:
        return (int(np.prod(shape)),)

    def forward(self, x: Interval) -> Interval:
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g: Interval, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        shape, self._shape = self._shape, None
        return g.reshape(*shape) if need_input_grad else None

    def forward_nominal(self, x):
        self._shape_nominal = x.shape
        return x.reshape(x.shape[0], -1)

    def backward_nominal(self, g, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        shape, self._shape_nominal = self._shape_nominal, None
        return g.reshape(shape) if need_input_grad else None

    def __repr__(self) -> str:
        return "Flatten()"


class Unflatten(Parameterless):
    """(N, prod(shape)) -> (N, *shape), as ``torch.nn.Unflatten(1, shape)``; exact.

    The library's data rows are flat; a convolutional model starts here.
    """

    def __init__(self, shape):
        self.shape = tuple(int(s) for s in shape)
        if not self.shape or min(self.shape) < 1:
            raise ValueError(f"Unflatten needs a shape of positive sizes, got {shape!r}")

    def output_shape(self, shape) -> tuple[int, ...]:
        if int(np.prod(shape)) != int(np.prod(self.shape)):
            raise ValueError(
                f"Unflatten{self.shape} needs {int(np.prod(self.shape))} input features, "
                f"got {int(np.prod(shape))}"
            )
        return self.shape

    def forward(self, x: Interval) -> Interval:
        self.output_shape(x.shape[1:])
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, g: Interval, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        return g.reshape(g.shape[0], -1) if need_input_grad else None

    def forward_nominal(self, x):
        self.output_shape(x.shape[1:])
        return x.reshape(x.shape[0], *self.shape)

    def backward_nominal(self, g, need_input_grad=True, per_sample=False, zero_sum_ref=None):
        return g.reshape(g.shape[0], -1) if need_input_grad else None

    def __repr__(self) -> str:
        return f"Unflatten({self.shape})"
