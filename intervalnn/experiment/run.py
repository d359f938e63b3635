"""Running one :class:`~intervalnn.experiment.RunSpec`: data, model, certified training, test.

:func:`prepare` turns a spec into everything training needs (backend, data
splits, threat model, :class:`~intervalnn.train.TrainConfig`, initial
model); :func:`train_and_certify` trains, certifies the test split and
returns the summary ``intervalnn train`` prints with the model file's bytes.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from intervalnn import architecture
from intervalnn.backend import Backend, cuda_device_count, get_backend
from intervalnn.certify import CertificationResult, certify
from intervalnn.checkpoint import CheckpointError, checkpoint_bytes, load_checkpoint
from intervalnn.datasets import DataError, Splits, load_dataset
from intervalnn.engine import parameter_widths
from intervalnn.io import model_file_bytes, write_atomic
from intervalnn.layers import Sequential
from intervalnn.poisoning import Poisoning
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, TrainResult, train

from .describe import describe_rules, describe_threat
from .errors import SpecError, UnavailableError
from .spec import DataSpec, RunSpec, library_error


def device_backend(device: str) -> Backend:
    """The backend for ``device`` (``"cpu"`` or ``"gpu"``); for the GPU, an
    :class:`UnavailableError` saying what is missing when CuPy or a usable
    CUDA device is not there."""
    if device != "gpu":
        return get_backend("numpy")
    try:
        count, reason = cuda_device_count(), "no CUDA device"
    except ImportError:
        raise UnavailableError(
            "--device gpu needs CuPy, which is not installed: pip install 'intervalnn[gpu]' "
            "(CUDA 12), or use --device cpu"
        ) from None
    except RuntimeError as exc:  # CUDA driver or runtime missing or broken
        count, reason = 0, str(exc)
    if count < 1:
        raise UnavailableError(
            f"--device gpu found CuPy but no usable CUDA GPU ({reason}); check the driver "
            "with nvidia-smi, or use --device cpu"
        )
    return get_backend("cupy")


def load_splits(data: DataSpec, seed: int) -> Splits:
    """The train / validation / test (/ pretraining) splits of ``data`` for ``seed``.

    A missing, unreadable or misplaced data directory is a
    :class:`~intervalnn.datasets.DataError` saying how to fix it.
    """
    if data.data_dir is not None:
        d = Path(data.data_dir)
        if not d.exists():
            raise DataError(f"data directory {d} does not exist: check --data-dir")
        if not d.is_dir():
            raise DataError(f"--data-dir {d} is a file, not a directory: pass its directory")
        if not os.access(d, os.R_OK | os.X_OK):
            raise DataError(
                f"data directory {d} is not readable (permission denied): fix its "
                "permissions or copy the files elsewhere"
            )
    elif data.dataset.strip().lower().startswith("mnist") and not os.environ.get(
        "INTERVALNN_MNIST_DIR"
    ):
        raise DataError(
            f"--dataset {data.dataset} needs --data-dir DIR, a directory with the four MNIST IDX "
            "files (or set INTERVALNN_MNIST_DIR)"
        )
    kw = {"n_pretrain": data.pretrain_size} if data.pretrain_size else {}
    return load_dataset(data.dataset, data_dir=data.data_dir, seed=seed, **kw)


@dataclass
class PreparedRun:
    """A spec made ready to train: its backend, data, threat model, config and initial model.

    ``trusted`` is the boolean mask of the training points the attacker cannot
    touch (:func:`trusted_mask`), or None when every point may be poisoned.
    """

    spec: RunSpec
    backend: Backend
    splits: Splits
    threat: ThreatModel
    config: TrainConfig
    model: Sequential
    trusted: np.ndarray | None = None

    @property
    def validations(self) -> int:
        """How many times training reports progress (once per validation) at most."""
        config = self.config
        per_epoch = -(-len(self.splits.train) // config.batch_size)
        if config.steps is not None:
            if config.validate_every == "step":
                return config.steps + 1
            return -(-config.steps // per_epoch) + 1
        if config.validate_every == "step":
            return config.epochs * per_epoch + 1
        return config.epochs + 1


def trusted_mask(splits: Splits, first: int) -> np.ndarray | None:
    """The trusted training points: the data set's own mask (a ``.npz`` file's ``trusted``
    array), united with the ``first`` training points (``--trusted N``); None if none.

    ``first`` larger than the training set is a :class:`SpecError`.
    """
    n = len(splits.train)
    if first > n:
        raise SpecError("trusted", f"{first} trusted points, but the training set has only {n}")
    mask = None if splits.trusted is None else np.array(splits.trusted, dtype=bool)
    if first:
        mask = np.zeros(n, dtype=bool) if mask is None else mask
        mask[:first] = True
    return mask


def check_threat(spec: RunSpec, splits: Splits, config: TrainConfig, trusted) -> ThreatModel:
    """The run's threat model on ``splits``, checked against the data with the library's
    rules (a budget over the training set, a label target the data lacks, ``epsilon = inf``
    without clipping on data without a domain): a :class:`SpecError` naming the option."""
    threat = spec.threat.threat_model(splits.domain)
    n = len(splits.train)
    try:
        threat.check_data(n, splits.num_classes)
        Poisoning(threat, n, trusted, config.clipping)
    except ValueError as exc:
        raise library_error(exc) from None
    return threat


def prepare(spec: RunSpec, *, fused: bool = True, splits: Splits | None = None) -> PreparedRun:
    """Backend, data splits (``splits`` if given), threat model, config and initial model.

    ``fused=False`` makes training take the layered step (audits compare both).
    Data that does not fit the spec (a binary loss on more than two classes)
    is a ``ValueError``.
    """
    backend = device_backend(spec.device)  # fails early and clearly without CuPy / a GPU
    try:
        backend.require_dtype(spec.dtype)
    except TypeError as exc:  # the GPU refuses this dtype: the spec's fault, not a bug
        raise SpecError("dtype", str(exc)) from None
    if splits is None:
        splits = load_splits(spec.data, spec.seed)
    loss = spec.training.loss
    if loss == "bce" and splits.num_classes != 2:
        raise ValueError(
            f"--loss bce needs 2 classes, the data has {splits.num_classes}; use --loss ce"
        )
    config = spec.train_config(fused=fused)
    trusted = trusted_mask(splits, spec.threat.trusted)
    threat = check_threat(spec, splits, config, trusted)
    n_out = 1 if loss == "bce" else splits.num_classes
    model = initial_model(spec, splits.num_features, n_out, backend)
    return PreparedRun(spec, backend, splits, threat, config, model, trusted)


def initial_model(spec: RunSpec, in_features: int, n_out: int, backend: Backend) -> Sequential:
    """The run's initial model: its architecture (``--arch``, or the MLP of ``--hidden`` and
    ``--layers``) for ``in_features`` inputs and ``n_out`` logits, seeded, its first
    ``--freeze`` layers frozen, with the ``--weights`` file's weights if given.

    An architecture that does not fit the data, a freeze it cannot take or a
    weights file that does not fit it is a :class:`SpecError` naming the option.
    """
    ms = spec.model
    arch = ms.architecture(n_out)
    try:
        architecture.output_shapes(arch, in_features)
    except ValueError as exc:
        raise SpecError("arch", f"{exc} (the data has {in_features} features)") from None
    outputs = [s.out for s in architecture.parse(arch) if s.kind == "linear"][-1]
    if outputs != n_out:
        loss = spec.training.loss
        raise SpecError(
            "arch",
            f"{{arch}} ends with linear({outputs}), but {{loss}} {loss} on this data needs "
            f"{n_out} logit{'s' * (n_out != 1)}: end with linear({n_out})",
            sentence=True,
        )
    try:
        architecture.check_frozen(arch, ms.freeze)
    except ValueError as exc:
        raise SpecError("freeze", f"{exc} ({arch})") from None
    dtype = np.dtype(spec.dtype)
    try:
        model = architecture.build(
            arch, in_features, seed=spec.seed, dtype=dtype, backend=backend.name, frozen=ms.freeze
        )
    except MemoryError:
        count = architecture.parameter_count(arch, in_features)
        raise SpecError(
            "arch", f"{arch} has {count:,} parameters: too many for this machine's memory"
        ) from None
    if ms.weights is not None:
        from intervalnn.weights import load_weights

        try:
            load_weights(model, ms.weights)
        except ValueError as exc:
            raise SpecError("weights", str(exc)) from None
    return model


@dataclass
class RunOutcome:
    """What :func:`train_and_certify` gives: the summary, the model file, and the raw results."""

    summary: dict  # what `intervalnn train --json` prints (without the model path)
    model_file: bytes  # the model file's bytes (see intervalnn.io.write_atomic)
    training: TrainResult
    test: CertificationResult  # the kept model on the test split


def _resume_state(path: Path, spec: RunSpec, model: Sequential):
    """The checkpoint at ``path`` if it exists (None otherwise), refused if another run wrote it."""
    if not path.exists():
        return None
    state, options = load_checkpoint(path, model)
    mine = json.loads(json.dumps(spec.options()))  # as the checkpoint stores them
    changed = [k for k in mine if options.get(k) != mine[k]]
    if changed or set(options) != set(mine):
        what = changed[0] if changed else "the set of options"
        raise CheckpointError(
            f"--resume: {path} was written by another run ({what} differs); "
            "rerun with the same options, or without --resume to start afresh"
        )
    return state


def train_and_certify(
    run: RunSpec | PreparedRun,
    *,
    progress: Callable[[dict], None] | None = None,
    checkpoint=None,
    resume: bool = False,
    checkpoint_every: float = 5.0,
) -> RunOutcome:
    """Certified training of ``run``, then certification of the test split.

    ``progress(row)`` is called after every validation with the latest
    history row (at most :attr:`PreparedRun.validations` times).  With a
    ``checkpoint`` path the run's state is written there after an epoch, at
    most every ``checkpoint_every`` seconds (:mod:`intervalnn.checkpoint`);
    ``resume=True`` continues from that file if it exists (bit-identically
    to an uninterrupted run), else starts afresh.
    """
    prepared = run if isinstance(run, PreparedRun) else prepare(run)
    spec, splits = prepared.spec, prepared.splits
    threat, config = prepared.threat, prepared.config
    pretrain = (
        (splits.pretrain.x, splits.pretrain.y) if splits.pretrain is not None else (None, None)
    )
    saving, state = {}, None
    if checkpoint is not None:
        path, options = Path(checkpoint), spec.options()
        state = _resume_state(path, spec, prepared.model) if resume else None
        saving = {
            "checkpoint": lambda s: write_atomic(path, checkpoint_bytes(s, options)),
            "checkpoint_every": checkpoint_every,
        }
    t0 = time.perf_counter()
    result = train(
        prepared.model,
        splits.train.x,
        splits.train.y,
        threat,
        config,
        splits.val.x,
        splits.val.y,
        *pretrain,
        progress=progress,
        resume=state,
        trusted=prepared.trusted,
        **saving,
    )
    seconds = time.perf_counter() - t0
    test = certify(result.model, splits.test.x, splits.test.y, threat)
    mean_width, max_width = parameter_widths(result.model.named_params(trainable=True))
    data = model_file_bytes(
        result.model,
        threat,
        config=config.to_dict(),
        dataset={
            "name": spec.data.dataset,
            "seed": config.seed,
            "train": splits.train.fingerprint(),
            "num_features": splits.num_features,
            "num_classes": splits.num_classes,
            "pretrain_size": spec.data.pretrain_size,
            "train_size": len(splits.train),
            "trusted": trusted_count(prepared.trusted),
        },
        history=result.history,
        best=result.best,
    )
    summary = {
        "dataset": spec.data.dataset,
        "epsilon": threat.epsilon,
        "inference_epsilon": threat.inference_epsilon,
        "certified_accuracy": test.certified_accuracy,
        "accuracy": test.nominal_accuracy,
        "n": test.n,
        "best_step": result.best.get("step"),
        "val_certified_accuracy": result.best.get("val_certified_accuracy"),
        "steps": result.history[-1]["step"] if result.history else 0,
        "mean_parameter_width": mean_width,
        "max_parameter_width": max_width,
        "seconds": seconds,
    }
    trusted = trusted_count(prepared.trusted)
    if not threat.is_fullcert or trusted:
        summary["threat"] = describe_threat(threat, len(splits.train), trusted)
    rules = describe_rules(config.to_dict())
    if rules != describe_rules({}):
        summary["training_rules"] = rules
    if result.stopped:
        summary["stopped"] = result.stopped
    pretrained = bool(config.pretrain_epochs) and pretrain[0] is not None
    note = kept_note(result, config, pretrained=pretrained)
    if note:
        summary["note"] = note
    return RunOutcome(summary, data, result, test)


def trusted_count(trusted) -> int:
    """How many training points a trusted mask (or None) holds."""
    return 0 if trusted is None else int(np.count_nonzero(trusted))


def kept_note(result: TrainResult, config: TrainConfig, *, pretrained: bool) -> str | None:
    """What to tell the user when the kept model had no poisoned-training step, or None.

    That is when the best validation was at step 0 (the untrained model, or the clean
    pretrained point box), or when no validated model qualified for ``config.min_step``
    (it exceeds the steps trained; training then keeps the last model).
    """
    steps = result.history[-1]["step"] if result.history else 0
    best_step = result.best.get("step")
    if best_step is None and result.history and config.min_step > steps:
        return (
            f"--min-step {config.min_step} exceeds the {steps} steps trained: no validated "
            f"model qualified, so the last model (step {steps}) was kept"
        )
    if best_step == 0:
        start = "clean pretrained model (a point box)" if pretrained else "untrained model"
        return (
            f"the kept model is the {start} at step 0: no step of certified training "
            "improved the certified validation accuracy"
        )
    return None
