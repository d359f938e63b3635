"""The network as plain arrays: a saved model's layer stack as float64 host copies.

The model audit's oracle, falsification and naive bounds all read the model
through this view, never through the engine's layers.  Data rows stay flat
(C order, PyTorch's ``nn.Flatten``) from the input to the logits, so
``Flatten`` and ``Unflatten`` are the identity here and vanish from the view;
what remains are three kinds of layer, each with a ReLU after it or not:

* :class:`Dense` (``Linear``): ``x W + b`` with ``W`` (in, out);
* :class:`Conv` (``Conv2d``): at every output position, the window's
  entries (:class:`Window`, zero padding included) times ``W`` reshaped to
  (in * kh * kw, out), plus ``b``: a dense layer with shared weights;
* :class:`Pool` (``AvgPool2d`` / ``MaxPool2d``): the window's sum divided
  by its size (exactly: ``1 / (kh kw)`` is no float for a 3x3 window, so
  the view keeps the count, never a rounded weight), or its maximum.

Window geometry is defined here directly (an index map), from the layers'
attributes only (sizes, kernel, stride, padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from ..conv import AvgPool2d, Conv2d, Flatten, MaxPool2d, Unflatten
from ..layers import Linear, ReLU, Sequential

WINDOW_ENTRIES = 1 << 24  # window entries per chunk of rows (Window.by_rows)


@dataclass(frozen=True)
class Window:
    """A sliding window over a flat C-order image of shape ``in_shape`` (C, H, W).

    ``index[p, k]`` is the flat input position that output position ``p``
    (row-major ``(i, j)``) reads at window entry ``k`` (row-major
    ``(c, u, v)``, all channels for a convolution), or ``size`` (the
    input's length) where the window lies on zero padding.  ``channels``:
    the window spans every input channel (a convolution), else one channel
    per output (a pool: ``index`` is then (C * P, kh * kw), outputs in C
    order).
    """

    in_shape: tuple[int, int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int] = (0, 0)
    channels: bool = True
    index: np.ndarray = field(init=False, repr=False, compare=False)
    out_hw: tuple[int, int] = field(init=False)

    def __post_init__(self):
        c, h, w = self.in_shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
        if min(oh, ow) < 1:
            raise ValueError(f"a {kh}x{kw} window does not fit the input {self.in_shape}")
        size = c * h * w
        padded = np.full((c, h + 2 * ph, w + 2 * pw), size, dtype=np.int64)
        padded[:, ph : ph + h, pw : pw + w] = np.arange(size).reshape(c, h, w)
        idx = np.empty((c, oh, ow, kh, kw), dtype=np.int64)
        for i in range(oh):
            for j in range(ow):
                idx[:, i, j] = padded[:, i * sh : i * sh + kh, j * sw : j * sw + kw]
        if self.channels:  # (P, C * kh * kw): all channels at each position
            idx = idx.transpose(1, 2, 0, 3, 4).reshape(oh * ow, c * kh * kw)
        else:  # (C * P, kh * kw): each channel alone, outputs in C order
            idx = idx.reshape(c * oh * ow, kh * kw)
        object.__setattr__(self, "index", idx)
        object.__setattr__(self, "out_hw", (oh, ow))

    @property
    def size(self) -> int:
        return int(np.prod(self.in_shape))

    @property
    def positions(self) -> int:
        return self.out_hw[0] * self.out_hw[1]

    def by_rows(self, fn, *arrays) -> np.ndarray:
        """``fn(*arrays)`` on chunks of rows (at most ~2^24 window entries at a time), joined:
        the windows of a large batch need not all exist at once."""
        n = arrays[0].shape[0]
        step = max(1, WINDOW_ENTRIES // max(1, self.index.size))
        if n <= step:
            return fn(*arrays)
        return np.concatenate([fn(*(a[s : s + step] for a in arrays)) for s in range(0, n, step)])

    def patches(self, a, zero=0.0) -> np.ndarray:
        """The windows of flat rows ``a`` (N, size): (N, *index.shape); padding reads ``zero``."""
        a = np.asarray(a)
        pad = np.empty((a.shape[0], 1), dtype=a.dtype)
        pad[:] = zero
        return np.concatenate([a, pad], axis=1)[:, self.index]

    def scatter(self, parts, zero=0.0) -> np.ndarray:
        """The adjoint of :meth:`patches`: ``parts`` (N, *index.shape) summed into flat rows."""
        n = parts.shape[0]
        if parts.dtype != object:  # floats: one weighted count over every row's positions
            width = self.size + 1
            flat = (self.index[None] + (np.arange(n) * width)[:, None, None]).ravel()
            sums = np.bincount(flat, weights=parts.ravel(), minlength=n * width)
            return sums.reshape(n, width)[:, : self.size]
        acc = np.empty((n, self.size + 1), dtype=parts.dtype)
        acc[:] = zero
        for k in range(self.index.shape[1]):  # one entry of every window at a time: no repeats
            col = self.index[:, k]
            acc[:, col] = acc[:, col] + parts[:, :, k]
        return acc[:, : self.size]


def conv_rows(windows, w_mat, b):
    """Convolution outputs from windows (N, P, K), ``w_mat`` (K, out) and ``b`` (out,).

    ``windows @ w_mat + b`` at every position, returned as flat rows in C
    order (out, P); exact for rationals.
    """
    n, positions, k = windows.shape
    z = (windows.reshape(n * positions, k) @ w_mat + b).reshape(n, positions, -1)
    return z.transpose(0, 2, 1).reshape(n, -1)


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


@dataclass(frozen=True)
class Conv:
    """One Conv2d layer: weights (out, in, kh, kw) and bias (float64 box and nominal), its window.

    :meth:`matrix` is a weight array as (in * kh * kw, out), the window
    entries' order.
    """

    w_lo: np.ndarray
    w_hi: np.ndarray
    w_nom: np.ndarray
    b_lo: np.ndarray
    b_hi: np.ndarray
    b_nom: np.ndarray
    window: Window
    relu: bool = False

    @staticmethod
    def matrix(w) -> np.ndarray:
        return w.reshape(w.shape[0], -1).T


@dataclass(frozen=True)
class Pool:
    """One AvgPool2d (``op = "avg"``) or MaxPool2d (``"max"``) layer, and a ReLU after it or not."""

    op: str
    window: Window
    relu: bool = False

    @property
    def count(self) -> int:
        """The window's size (the mean's exact divisor)."""
        return self.window.kernel[0] * self.window.kernel[1]


def has_params(layer) -> bool:
    return not isinstance(layer, Pool)


def network_layers(model: Sequential) -> list:
    """``model`` as the audit's view: :class:`Dense`, :class:`Conv`, :class:`Pool` layers.

    Float64 copies (exact).  Any ReLU placement after the first layer with
    an output of its own: a ReLU sets the flag of the layer before it,
    consecutive ReLUs set it once, which is exact: ``relu(relu(z)) =
    relu(z)`` and ``[relu(z) > 0] [z > 0] = [z > 0]``.  (The training
    audit's reference SGD does not use this view: it runs the layer list
    itself.)
    """
    bk = model.backend
    host = lambda a: np.array(bk.to_host(a), dtype=np.float64)  # noqa: E731
    out: list = []
    shape: tuple[int, ...] = (model.in_features,)
    for layer in model.layers:
        kind = type(layer)
        if kind in (Linear, Conv2d):
            w, b = layer.weight, layer.bias
            arrays = (
                host(w.lo), host(w.hi), host(layer.nominal["weight"]),
                host(b.lo), host(b.hi), host(layer.nominal["bias"]),
            )  # fmt: skip
            if kind is Linear:
                if len(shape) != 1 or shape[0] != arrays[0].shape[0]:
                    raise ValueError(f"the audit's Linear layer needs a flat input, got {shape}")
                out.append(Dense(*arrays))
                shape = (arrays[0].shape[1],)
            else:
                if len(shape) != 3 or shape[0] != layer.in_channels:
                    raise ValueError(
                        f"Conv2d needs ({layer.in_channels}, H, W) inputs, not {shape}"
                    )
                win = Window(shape, layer.kernel_size, layer.stride, layer.padding)
                out.append(Conv(*arrays, window=win))
                shape = (layer.out_channels, *win.out_hw)
        elif kind in (AvgPool2d, MaxPool2d):
            if len(shape) != 3:
                raise ValueError(f"{kind.__name__} needs (C, H, W) inputs, not {shape}")
            win = Window(shape, layer.kernel_size, layer.stride, channels=False)
            out.append(Pool("avg" if kind is AvgPool2d else "max", win))
            shape = (shape[0], *win.out_hw)
        elif kind is Flatten:
            shape = (int(np.prod(shape)),)
        elif kind is Unflatten:
            if int(np.prod(layer.shape)) != int(np.prod(shape)):
                raise ValueError(f"Unflatten{layer.shape} does not fit inputs of shape {shape}")
            shape = tuple(layer.shape)
        elif kind is ReLU:
            if not out:
                raise ValueError("the audit supports models whose first ReLU follows a layer")
            out[-1] = replace(out[-1], relu=True)
        else:
            raise ValueError(
                "the audit supports Linear, Conv2d, AvgPool2d, MaxPool2d, Flatten, Unflatten "
                f"and ReLU layers, not {kind.__name__}"
            )
    if not out:
        raise ValueError("the audit needs a model with at least one Linear or Conv2d layer")
    return out


dense_layers = network_layers  # its name from when the view held Linear layers only
