"""Checkpoint files: an interrupted training run, saved so that it resumes bit-identically.

A checkpoint is an ``.npz`` archive: the current and the kept parameters
(``lo/``, ``hi/``, ``nominal/`` and ``best_lo/``, ``best_hi/``,
``best_nominal/`` per parameter name, in the model's dtype), momentum's
velocities when the run has momentum (``velocity_lo/``, ``velocity_hi/``,
``velocity_nominal/``: the box and the nominal velocity), and one JSON
``meta`` entry with the rest of :class:`intervalnn.train.Checkpoint` (epoch,
step, history, the batch-order generator's state, ...) and the options of
the run that wrote it, so that resuming a different run is refused.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from .backend import backend_of
from .datasets.archive import read_npz
from .interval import Interval
from .train import Checkpoint

FORMAT = "intervalnn-checkpoint"
_PLANES = ("lo", "hi", "nominal")


class CheckpointError(ValueError):
    """A checkpoint file that is unreadable, damaged, or from another run."""


def _host(a) -> np.ndarray:
    return backend_of(a).to_host(a)


def checkpoint_bytes(state: Checkpoint, options: dict) -> bytes:
    """The contents of a checkpoint file for ``state`` of the run with ``options``."""
    arrays = {}
    planes = [
        ("", state.params, state.nominal),
        ("best_", state.best_params, state.best_nominal),
    ]
    if state.velocity is not None:
        planes.append(("velocity_", *state.velocity))
    for prefix, params, nominal in planes:
        for name, box in params.items():
            arrays[f"{prefix}lo/{name}"] = _host(box.lo)
            arrays[f"{prefix}hi/{name}"] = _host(box.hi)
            arrays[f"{prefix}nominal/{name}"] = _host(nominal[name])
    meta = {
        "format": FORMAT,
        "options": options,
        "epoch": state.epoch,
        "step": state.step,
        "best_accuracy": state.best_accuracy,
        "best_row": state.best_row,
        "barren": state.barren,
        "history": state.history,
        "rng_state": state.rng_state,
        "seconds": state.seconds,
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _parameters(arrays: dict, prefix: str) -> tuple[dict, dict]:
    names = [k.split("/", 1)[1] for k in arrays if k.startswith(f"{prefix}lo/")]
    params = {n: Interval(arrays[f"{prefix}lo/{n}"], arrays[f"{prefix}hi/{n}"]) for n in names}
    return params, {n: arrays[f"{prefix}nominal/{n}"] for n in names}


def _check_fits(state: Checkpoint, model, where: str) -> None:
    """The state's parameters (and velocities) have the model's names, shapes and dtype."""
    planes = [(state.params, state.nominal), (state.best_params, state.best_nominal)]
    if state.velocity is not None:
        planes.append(state.velocity)
    for params, nominal in planes:
        for name, box in model.named_params().items():
            got = params.get(name)
            if got is None or got.shape != box.shape or got.dtype != box.dtype:
                raise CheckpointError(f"{where}: parameter {name} does not fit the model")
            if np.shape(nominal[name]) != box.shape or nominal[name].dtype != box.dtype:
                raise CheckpointError(f"{where}: nominal {name} does not fit the model")
        if set(params) != set(model.named_params()):
            raise CheckpointError(f"{where}: its parameters are not the model's")


def _on(model, params: dict, nominal: dict) -> tuple[dict, dict]:
    """Velocities on ``model``'s backend (the engine adds them to its own arrays)."""
    xp = model.backend.xp
    boxes = {n: Interval(xp.asarray(b.lo), xp.asarray(b.hi)) for n, b in params.items()}
    return boxes, {n: xp.asarray(v) for n, v in nominal.items()}


def load_checkpoint(path, model=None) -> tuple[Checkpoint, dict]:
    """``(state, options)`` of a checkpoint file; :class:`CheckpointError` if it is not one
    (or, given ``model``, if its parameters do not fit that model).

    ``state.velocity`` is None unless the run has momentum; given ``model``, its
    velocities are on the model's backend."""
    path = Path(path)
    where = f"checkpoint {path}"
    try:
        with open(path, "rb") as f:
            arrays = read_npz(f, where, CheckpointError)
        meta = json.loads(bytes(arrays.pop("meta")).decode())
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{where}: not an intervalnn checkpoint")
        params, nominal = _parameters(arrays, "")
        best_params, best_nominal = _parameters(arrays, "best_")
        state = Checkpoint(
            int(meta["epoch"]), int(meta["step"]), params, nominal, best_params, best_nominal,
            float(meta["best_accuracy"]), dict(meta["best_row"]), int(meta["barren"]),
            list(meta["history"]), dict(meta["rng_state"]), float(meta["seconds"]),
        )  # fmt: skip
        if any(k.startswith("velocity_lo/") for k in arrays):
            state.velocity = _parameters(arrays, "velocity_")
        np.random.default_rng().bit_generator.state = state.rng_state  # a state it accepts
        if model is not None:
            _check_fits(state, model, where)
            if state.velocity is not None:
                state.velocity = _on(model, *state.velocity)
        return state, dict(meta["options"])
    except CheckpointError:
        raise
    except OSError as exc:
        raise CheckpointError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    except (KeyError, TypeError, ValueError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{where}: damaged ({type(exc).__name__}: {exc})") from None
