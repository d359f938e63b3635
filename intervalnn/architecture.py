"""Architectures as compact strings: parse, check shapes, build, describe.

An architecture is its layers joined by ``-``::

    unflatten(1,28,28)-conv(8,5)-relu-maxpool(2)-conv(16,5)-relu-maxpool(2)-flatten-linear(64)-relu-linear(10)

* ``linear(OUT)``: :class:`~intervalnn.layers.Linear` (``nn.Linear``);
* ``relu``: :class:`~intervalnn.layers.ReLU`;
* ``conv(OUT,K[,stride=S][,padding=P])``: :class:`~intervalnn.layers.Conv2d`;
* ``maxpool(K[,stride=S])``, ``avgpool(K[,stride=S])``: the pools;
* ``flatten``: :class:`~intervalnn.layers.Flatten` (``nn.Flatten()``);
* ``unflatten(C,H,W)``: :class:`~intervalnn.layers.Unflatten` (``nn.Unflatten(1, (C, H, W))``).

``K``, ``S`` and ``P`` are an integer or ``HxW`` (``conv(8,3x5)``); a
convolution's stride defaults to 1 and its padding to 0, a pool's stride to
its kernel.  Every size is inferred from the input (a convolution's input
channels, a Linear layer's input features), so the string fixes the model
once the number of input features is known.  Data rows are flat: a model
starts with ``linear(N)`` or with ``unflatten(C,H,W)``, and its outputs (the
logits) are those of its last ``linear(N)``, which only ``relu`` may follow.

:func:`parse` reads a string into :class:`LayerSpec` s, :func:`output_shapes`
checks them against an input size, :func:`build` makes the
:class:`~intervalnn.layers.Sequential` (PyTorch's default initialisation,
seeded) and :func:`describe` gives a model's canonical string back
(``parse(describe(m))`` describes ``m`` again).  Every error is a
``ValueError`` with a one-line message naming the layer at fault.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

import numpy as np

#: The layer names of the string, in the order the documentation lists them.
KINDS = ("linear", "relu", "conv", "maxpool", "avgpool", "flatten", "unflatten")
#: The keyword arguments each layer takes.
_KEYWORDS = {"conv": ("stride", "padding"), "maxpool": ("stride",), "avgpool": ("stride",)}
_TOKEN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
_INT = re.compile(r"^[0-9]+$")
_PAIR = re.compile(r"^([0-9]+)\s*[xX]\s*([0-9]+)$")
_KEYWORD = re.compile(r"^([A-Za-z_]+)\s*=\s*(.*)$", re.DOTALL)


@dataclass(frozen=True)
class LayerSpec:
    """One layer of an architecture string, with every default filled in.

    ``kind`` is one of :data:`KINDS`; ``out`` the output features or
    channels (``linear``, ``conv``); ``kernel``, ``stride`` and ``padding``
    pairs (``conv``, pools; a pool's padding is ``(0, 0)``); ``shape`` the
    shape of ``unflatten``.  ``str(spec)`` is the layer's canonical token.
    """

    kind: str
    out: int | None = None
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None
    shape: tuple[int, ...] | None = None

    def __str__(self) -> str:
        if self.kind == "linear":
            return f"linear({self.out})"
        if self.kind == "conv":
            args = [str(self.out), _pair_text(self.kernel)]
            if self.stride != (1, 1):
                args.append(f"stride={_pair_text(self.stride)}")
            if self.padding != (0, 0):
                args.append(f"padding={_pair_text(self.padding)}")
            return f"conv({','.join(args)})"
        if self.kind in ("maxpool", "avgpool"):
            stride = "" if self.stride == self.kernel else f",stride={_pair_text(self.stride)}"
            return f"{self.kind}({_pair_text(self.kernel)}{stride})"
        if self.kind == "unflatten":
            return f"unflatten({','.join(map(str, self.shape))})"
        return self.kind

    @property
    def has_parameters(self) -> bool:
        return self.kind in ("linear", "conv")


def _pair_text(pair: tuple[int, int]) -> str:
    return str(pair[0]) if pair[0] == pair[1] else f"{pair[0]}x{pair[1]}"


def split_outside(text: str, sep: str) -> list[str]:
    """``text`` cut at ``sep`` outside parentheses (``linear(-3)`` stays whole)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _layer(token: str, where: str) -> LayerSpec:
    """One token (``conv(8,5,stride=2)``) as a :class:`LayerSpec`; ``where`` names it in errors."""

    def bad(reason: str) -> ValueError:
        return ValueError(f"{where}: {reason}")

    m = _TOKEN.match(token)
    if not m or token.count("(") != token.count(")") or "(" in (m[2] or ""):
        raise bad("not NAME or NAME(ARGS)")
    name, body = m[1].lower(), m[2]
    if name not in KINDS:
        raise bad(f"unknown layer {m[1]!r}; known: {', '.join(KINDS)}")
    positional, keywords = [], {}
    if body is not None and body.strip():
        for arg in (a.strip() for a in body.split(",")):
            kw = _KEYWORD.match(arg)
            if kw:
                key = kw[1].lower()
                if key not in _KEYWORDS.get(name, ()):
                    known = _KEYWORDS.get(name, ())
                    takes = f"takes {', '.join(known)}" if known else "takes no keyword arguments"
                    raise bad(f"unknown argument {kw[1]!r} ({name} {takes})")
                if key in keywords:
                    raise bad(f"{key} is given twice")
                keywords[key] = kw[2].strip()
            elif keywords:
                raise bad(f"positional argument {arg!r} after a keyword argument")
            else:
                positional.append(arg)

    def size(arg: str, what: str, minimum: int = 1) -> int:
        if not _INT.match(arg) or int(arg) < minimum:
            rule = "an integer >= 0" if minimum == 0 else "a positive integer"
            raise bad(f"{what} must be {rule}, got {arg!r}")
        return int(arg)

    def pair(arg: str, what: str, minimum: int = 1) -> tuple[int, int]:
        p = _PAIR.match(arg)
        if p:
            return size(p[1], what, minimum), size(p[2], what, minimum)
        try:
            v = size(arg, what, minimum)
        except ValueError:
            rule = ">= 0" if minimum == 0 else ">= 1"
            raise bad(f"{what} must be an integer {rule} or HxW, got {arg!r}") from None
        return v, v

    def arity(*names: str) -> None:
        if len(positional) != len(names):
            usage = f"{name}({','.join(names)})" if names else name
            n = f"{len(names)} argument{'s' * (len(names) != 1)}" if names else "no arguments"
            raise bad(f"{name} takes {n} ({usage}), got {len(positional)}")

    if name in ("relu", "flatten"):
        arity()
        return LayerSpec(name)
    if name == "linear":
        arity("OUT")
        return LayerSpec(name, out=size(positional[0], "OUT"))
    if name == "conv":
        arity("OUT", "K")
        out, kernel = size(positional[0], "OUT"), pair(positional[1], "K")
        stride = pair(keywords.get("stride", "1"), "stride")
        padding = pair(keywords.get("padding", "0"), "padding", minimum=0)
        return LayerSpec(name, out=out, kernel=kernel, stride=stride, padding=padding)
    if name in ("maxpool", "avgpool"):
        arity("K")
        kernel = pair(positional[0], "K")
        stride = pair(keywords["stride"], "stride") if "stride" in keywords else kernel
        return LayerSpec(name, kernel=kernel, stride=stride, padding=(0, 0))
    # unflatten
    if not positional:
        raise bad("unflatten takes the shape of a row, e.g. unflatten(1,28,28)")
    return LayerSpec(name, shape=tuple(size(a, "every size") for a in positional))


def parse(text: str) -> list[LayerSpec]:
    """The layers of an architecture string (a ``ValueError`` naming the bad token)."""
    if not isinstance(text, str):
        raise ValueError(f"an architecture is a string such as 'linear(20)-relu-linear(1)', "
                         f"not {type(text).__name__}")  # fmt: skip
    if not text.strip():
        raise ValueError("empty architecture: give layers such as 'linear(20)-relu-linear(1)'")
    depth = 0
    for ch in text:
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if depth < 0 or depth > 1:
            break
    if depth != 0:
        raise ValueError(f"architecture {_short(text)}: unbalanced or nested parentheses")
    tokens = split_outside(text, "-")
    layers = []
    for i, token in enumerate(tokens):
        if not token.strip():
            raise ValueError(f"architecture {_short(text)}: empty layer {i} (a doubled or "
                             "stray '-')")  # fmt: skip
        layers.append(_layer(token, f"layer {i} {_short(token.strip())}"))
    return layers


def _short(text: str, limit: int = 60) -> str:
    """``text`` quoted on one line, cut to ``limit`` characters."""
    one = " ".join(text.split())
    return repr(one if len(one) <= limit else one[: limit - 3] + "...")


def canonical(text: str) -> str:
    """The canonical form of an architecture string (spaces dropped, defaults left out)."""
    return "-".join(map(str, parse(text)))


def mlp_string(hidden: int, layers: int, out: int) -> str:
    """The string of :func:`intervalnn.layers.mlp`'s MLP: ``layers`` Linear layers, ``hidden``
    units, ReLUs between them, ``out`` outputs."""
    if layers < 1 or hidden < 1 or out < 1:
        raise ValueError("an MLP needs layers >= 1, hidden >= 1 and out >= 1")
    return f"linear({hidden})-relu-" * (layers - 1) + f"linear({out})"


def _is_int(v) -> bool:
    """An integer (NumPy's too), not a boolean."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool | np.bool_)


def _as_specs(architecture) -> list[LayerSpec]:
    return parse(architecture) if isinstance(architecture, str) else list(architecture)


def output_shapes(architecture, in_features: int) -> list[tuple[int, ...]]:
    """The shape of every layer's output for one flat input row of ``in_features`` values.

    ``architecture`` is a string or :func:`parse`'s list.  A ``ValueError``
    naming the layer when a shape does not fit: a kernel larger than its
    padded input, a convolution or pool on a flat input, a Linear layer on an
    image, an ``unflatten`` whose size is not its input's; and when the model
    does not start with ``linear`` or ``unflatten`` or does not end with its
    logits (a last ``linear``, followed by ``relu`` at most).
    """
    specs = _as_specs(architecture)
    if not _is_int(in_features) or in_features < 1:
        raise ValueError(f"in_features must be a positive integer, got {in_features!r}")
    in_features = int(in_features)
    if not specs:
        raise ValueError("an architecture needs at least one layer")
    if specs[0].kind not in ("linear", "unflatten"):
        raise ValueError(
            f"layer 0 {str(specs[0])!r}: data rows are flat, so a model starts with linear(N) "
            "or unflatten(C,H,W)"
        )
    shape: tuple[int, ...] = (in_features,)
    shapes = []
    for i, spec in enumerate(specs):
        where = f"layer {i} {str(spec)!r}"
        if spec.kind == "linear":
            if len(shape) != 1:
                raise ValueError(f"{where} needs a flat input, got an image {shape}: add flatten "
                                 "before it")  # fmt: skip
            shape = (spec.out,)
        elif spec.kind == "unflatten":
            if len(shape) != 1:
                raise ValueError(f"{where} needs a flat input, got {shape}")
            if math.prod(spec.shape) != shape[0]:
                raise ValueError(
                    f"{where} has {math.prod(spec.shape)} values, but its input has {shape[0]}"
                )
            shape = spec.shape
        elif spec.kind == "flatten":
            shape = (math.prod(shape),)
        elif spec.kind in ("conv", "maxpool", "avgpool"):
            if len(shape) != 3:
                if len(shape) == 1:
                    raise ValueError(f"{where} needs an image (C, H, W), got a flat input: "
                                     "unflatten it first, e.g. unflatten(1,28,28)")  # fmt: skip
                raise ValueError(f"{where} needs an image (C, H, W), got shape {shape}")
            size = []
            for axis, (n, k, s, p) in enumerate(
                zip(shape[1:], spec.kernel, spec.stride, spec.padding, strict=True)
            ):
                if n + 2 * p < k:
                    what = "padded input" if p else "input"
                    raise ValueError(
                        f"{where}: kernel {k} is larger than its {what} "
                        f"({'height' if axis == 0 else 'width'} {n + 2 * p}; input {shape})"
                    )
                size.append((n + 2 * p - k) // s + 1)
            channels = spec.out if spec.kind == "conv" else shape[0]
            shape = (channels, *size)
        shapes.append(shape)  # relu keeps its input's shape
    last = max((i for i, s in enumerate(specs) if s.kind == "linear"), default=None)
    if last is None:
        end = "end with linear(N)" if len(shape) == 1 else "end with flatten-linear(N)"
        raise ValueError(f"the model's outputs (logits) are those of a last linear(N), and it has "
                         f"none: {end}")  # fmt: skip
    after = [i for i, s in enumerate(specs[last + 1 :], last + 1) if s.kind != "relu"]
    if after:
        raise ValueError(
            f"layer {after[0]} {str(specs[after[0]])!r} follows the last linear(N) (layer "
            f"{last}), whose outputs are the model's logits: only relu may follow it"
        )
    return shapes


def parameter_count(architecture, in_features: int) -> int:
    """How many parameters (weights and biases) the model has, checked but not built."""
    specs = _as_specs(architecture)
    shapes = output_shapes(specs, in_features)
    count, shape = 0, (int(in_features),)
    for spec, out in zip(specs, shapes, strict=True):
        if spec.kind == "linear":
            count += shape[0] * spec.out + spec.out
        elif spec.kind == "conv":
            count += spec.out * shape[0] * spec.kernel[0] * spec.kernel[1] + spec.out
        shape = out
    return count


def check_frozen(architecture, frozen: int) -> None:
    """``frozen`` leading layers can be frozen: at most all the layers, and some layer with
    parameters after them (a ``ValueError`` otherwise)."""
    specs = _as_specs(architecture)
    if not _is_int(frozen) or frozen < 0:
        raise ValueError(f"frozen must be an integer >= 0, got {frozen!r}")
    if frozen > len(specs):
        raise ValueError(f"cannot freeze {frozen} layers: the model has {len(specs)}")
    if not any(s.has_parameters for s in specs[frozen:]):
        raise ValueError(
            f"freezing {frozen} of the {len(specs)} layers leaves no layer with parameters "
            "to train (the last layer with parameters is layer "
            f"{max(i for i, s in enumerate(specs) if s.has_parameters)})"
        )


def build(
    architecture,
    in_features: int,
    *,
    seed: int = 0,
    dtype=np.float64,
    backend="numpy",
    frozen: int = 0,
):
    """The :class:`~intervalnn.layers.Sequential` of an architecture for ``in_features`` inputs.

    ``architecture`` is a string or :func:`parse`'s list.  Initialisation is
    PyTorch's default, drawn from one ``np.random.default_rng(seed)`` by
    each layer with parameters in order: ``build("linear(20)-relu-linear(1)",
    2, seed=s)`` is ``mlp(2, 1, hidden=20, layers=2, seed=s)``.  The first
    ``frozen`` layers are frozen (:func:`check_frozen`).  Shapes that do not
    fit are a ``ValueError`` (:func:`output_shapes`) before anything is allocated.
    """
    from .layers import (
        AvgPool2d,
        Conv2d,
        Flatten,
        Linear,
        MaxPool2d,
        ReLU,
        Sequential,
        Unflatten,
    )

    specs = _as_specs(architecture)
    shapes = output_shapes(specs, in_features)
    check_frozen(specs, frozen)
    in_features, frozen = int(in_features), int(frozen)
    rng = np.random.default_rng(seed)
    kw = {"rng": rng, "dtype": dtype, "backend": backend}
    layers, shape = [], (in_features,)
    for spec, out in zip(specs, shapes, strict=True):
        if spec.kind == "linear":
            layers.append(Linear(shape[0], spec.out, **kw))
        elif spec.kind == "conv":
            layers.append(Conv2d(shape[0], spec.out, spec.kernel, spec.stride, spec.padding, **kw))
        elif spec.kind == "maxpool":
            layers.append(MaxPool2d(spec.kernel, spec.stride))
        elif spec.kind == "avgpool":
            layers.append(AvgPool2d(spec.kernel, spec.stride))
        elif spec.kind == "flatten":
            layers.append(Flatten())
        elif spec.kind == "unflatten":
            layers.append(Unflatten(spec.shape))
        else:
            layers.append(ReLU())
        shape = out
    return Sequential(*layers, frozen=frozen)


def layer_spec(layer) -> LayerSpec:
    """The :class:`LayerSpec` of a built layer (a ``ValueError`` for a layer the strings lack)."""
    from .layers import AvgPool2d, Conv2d, Flatten, Linear, MaxPool2d, ReLU, Unflatten

    if isinstance(layer, Linear):
        return LayerSpec("linear", out=int(layer.weight.shape[1]))
    if isinstance(layer, Conv2d):
        return LayerSpec(
            "conv",
            out=int(layer.out_channels),
            kernel=tuple(map(int, layer.kernel_size)),
            stride=tuple(map(int, layer.stride)),
            padding=tuple(map(int, layer.padding)),
        )
    for cls, kind in ((MaxPool2d, "maxpool"), (AvgPool2d, "avgpool")):
        if isinstance(layer, cls):
            kernel = tuple(map(int, layer.kernel_size))
            return LayerSpec(kind, kernel=kernel, stride=tuple(map(int, layer.stride)),
                             padding=(0, 0))  # fmt: skip
    if isinstance(layer, Unflatten):
        return LayerSpec("unflatten", shape=tuple(map(int, layer.shape)))
    if isinstance(layer, Flatten):
        return LayerSpec("flatten")
    if isinstance(layer, ReLU):
        return LayerSpec("relu")
    raise ValueError(f"layer {layer!r} has no architecture string")


def describe(model) -> str:
    """The canonical architecture string of a :class:`~intervalnn.layers.Sequential`:
    ``build(describe(m), m.in_features)`` has ``m``'s layers and shapes."""
    return "-".join(str(layer_spec(layer)) for layer in model.layers)
