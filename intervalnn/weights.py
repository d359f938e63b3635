"""PyTorch-layout weights in and the nominal model out, without torch.

A weights file is a ``.safetensors`` file (read and written with the
``safetensors`` package's NumPy API) or an ``.npz`` archive (never
unpickled), holding a ``state_dict`` of a ``torch.nn.Sequential`` with
PyTorch's names and layouts: ``f"{i}.weight"`` and ``f"{i}.bias"`` for layer
``i`` of the Sequential (parameterless layers take an index too), a Linear
weight of shape ``(out, in)`` (ours is ``(in, out)``: transposed on the way in
and out), a Conv2d weight of shape ``(out, in, kh, kw)`` (the same as ours).

* :func:`read_state_dict`: the arrays of a weights file, by name;
* :func:`load_weights`: a pretrained ``state_dict`` into a model, checked against
  its architecture: its nominal model becomes the loaded weights and its
  parameter box the point box at them;
* :func:`save_weights`: the nominal model as a weights file that
  ``torch.nn.Sequential.load_state_dict(..., strict=True)`` accepts for the
  equivalent torch model.

Every bad input is a ``ValueError`` with a one-line message naming the file.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from .datasets.archive import read_npz
from .interval import Interval
from .io import write_atomic
from .layers import Linear, Sequential

#: The weights file formats, by suffix.
SUFFIXES = (".safetensors", ".npz")

#: How many unexpected or missing names an error message lists.
_LISTED = 5


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise ValueError(
            f"{path}: a weights file must be a .safetensors or an .npz file "
            f"(got {suffix or 'no suffix'!r})"
        )
    return suffix


def read_state_dict(path) -> dict[str, np.ndarray]:
    """The arrays of the weights file ``path`` by name (format by suffix: see :data:`SUFFIXES`).

    Nothing in the file is executed: an ``.npz`` is parsed without unpickling
    (an object array is refused), a ``.safetensors`` file holds only a JSON
    header and raw numbers.  A missing, unreadable or damaged file is a
    ``ValueError`` with a one-line message.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a weights file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such weights file") from None
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the weights file ({exc.strerror})") from None
    if suffix == ".npz":
        return read_npz(io.BytesIO(data), str(path), ValueError)
    import safetensors.numpy

    try:
        arrays = safetensors.numpy.load(data)
    except KeyError as exc:  # a dtype NumPy does not have (bfloat16, float8 ...)
        raise ValueError(
            f"{path}: tensor dtype {exc.args[0]} has no NumPy equivalent; save the weights as "
            "float32 or float64"
        ) from None
    except Exception as exc:  # SafetensorError and the like on damaged bytes
        raise ValueError(
            f"{path}: not a readable .safetensors file: truncated, corrupted, empty or another "
            f"format ({exc})"
        ) from None
    return {name: np.asarray(a) for name, a in arrays.items()}


def _transposed(layer, name: str) -> bool:
    """Whether parameter ``name`` of ``layer`` is stored transposed in PyTorch's layout."""
    return isinstance(layer, Linear) and name == "weight"


def _named_layers(model: Sequential):
    """``(f"{i}.{name}", layer, name)`` for every parameter of the model, in order."""
    for i, layer in enumerate(model.layers):
        for name in layer.params:
            yield f"{i}.{name}", layer, name


def _names(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else ""
    return ", ".join(keys[:_LISTED]) + more


def load_weights(model: Sequential, path) -> None:
    """Load the PyTorch ``state_dict`` in the weights file ``path`` into ``model``.

    Names and layouts are those of the equivalent ``torch.nn.Sequential`` (see
    the module doc).  The file must hold exactly the model's parameters: a
    missing or unexpected name, a shape that differs from the architecture's
    (in PyTorch's layout), a non-float dtype or a NaN or infinite value is a
    ``ValueError`` naming the file and the parameter; nothing is loaded then.

    Values are converted to the model's dtype: float64 weights loaded into a
    float32 model are rounded to nearest, and the rounded values *are* the
    model's weights from then on (the nominal model and the box hold the same
    numbers, so no bound is claimed about the unrounded ones).  The nominal
    parameters become the loaded arrays and the parameter box the point box
    at them, on the model's backend.
    """
    path = Path(path)
    state = read_state_dict(path)
    expected = {key: (layer, name) for key, layer, name in _named_layers(model)}
    missing = expected.keys() - state.keys()
    if missing:
        raise ValueError(
            f"{path}: missing weights {_names(missing)} (the architecture has "
            f"{_names(expected)}; names are those of a torch.nn.Sequential's state_dict)"
        )
    unexpected = state.keys() - expected.keys()
    if unexpected:
        raise ValueError(
            f"{path}: unexpected weights {_names(unexpected)} (the architecture has "
            f"{_names(expected)}; names are those of a torch.nn.Sequential's state_dict)"
        )
    dtype, xp = model.dtype, model.backend.xp
    boxes = model.named_params()
    converted = {}
    for key, (layer, name) in expected.items():
        a = state[key]
        shape = boxes[key].shape
        if _transposed(layer, name):
            shape = shape[::-1]
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{path}: {key} has dtype {a.dtype}; weights must be floats")
        if a.shape != shape:
            raise ValueError(
                f"{path}: {key} has shape {a.shape}, the architecture expects {shape} "
                f"(PyTorch's layout{': Linear weights are (out, in)' if len(shape) == 2 else ''})"
            )
        if not bool(np.isfinite(a).all()):
            raise ValueError(f"{path}: {key} holds NaN or infinite values")
        value = a.T if _transposed(layer, name) else a
        with np.errstate(over="ignore"):  # an overflow is reported just below
            value = np.ascontiguousarray(value, dtype=dtype)
        if not bool(np.isfinite(value).all()):
            raise ValueError(f"{path}: {key} holds values that overflow {np.dtype(dtype).name}")
        converted[key] = value
    params, nominal = {}, {}
    for key, value in converted.items():
        nominal[key] = xp.asarray(value)
        params[key] = Interval(nominal[key])  # a copy: the nominal is trained on its own
    model.load(params, nominal)


def state_dict_bytes(model: Sequential, suffix: str) -> bytes:
    """The nominal model as a weights file's bytes (``.safetensors`` or ``.npz``), with
    PyTorch's names and layouts (contiguous arrays in the model's dtype)."""
    bk = model.backend
    layers = {key: (layer, name) for key, layer, name in _named_layers(model)}
    arrays = {}
    for key, value in model.named_nominal().items():
        value = bk.to_host(value)
        if _transposed(*layers[key]):
            value = value.T
        arrays[key] = np.ascontiguousarray(value)
    if suffix == ".npz":
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()
    import safetensors.numpy

    return safetensors.numpy.save(arrays)


def save_weights(model: Sequential, path, overwrite: bool = False) -> Path:
    """Write the nominal model to ``path`` (``.safetensors`` or ``.npz`` by suffix) with
    PyTorch's names and layouts, atomically; the path.

    The file loads into the equivalent ``torch.nn.Sequential`` with
    ``load_state_dict(..., strict=True)`` (``safetensors.torch.load_file``, or
    ``torch.from_numpy`` on the ``.npz``'s arrays), and back with
    :func:`load_weights`.  An existing file is refused (``FileExistsError``)
    unless ``overwrite``.
    """
    path = Path(path)
    suffix = _suffix(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path}: the file exists; refusing to overwrite it")
    return write_atomic(path, state_dict_bytes(model, suffix))
