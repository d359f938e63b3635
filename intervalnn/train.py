"""FullCert certified training: interval SGD on the box of poisoned datasets.

Each step feeds the same batch to two models: the interval model sees the
threat model's box around every training point and yields a parameter box
that contains every model SGD could produce from any poisoned dataset; the
nominal model trains on the clean batch.  The nominal model is checked to lie
inside the box after every step (``SoundnessError`` otherwise: that would be
a bug).  Widths only grow (paper eq. 16), so the model with the best
certified validation accuracy is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from .certify import Certifier, check_labels
from .engine import make_engine
from .interval import Interval
from .layers import Sequential
from .losses import get_loss
from .optim import SCHEDULES, SGD, UpdateRule, nominal_update
from .poisoning import CLIP_METHODS, Clipping, Poisoning
from .threat import ThreatModel


class SoundnessError(AssertionError):
    """The nominal model left the parameter box: a soundness bug, never expected."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; the defaults are ``intervalnn train``'s (its options read them from here)."""

    epochs: int = 5
    learning_rate: float = 0.5  # mean-loss convention (BoundFlow's rate / batch size)
    batch_size: int = 100
    schedule: str = "constant"
    seed: int = 0
    loss: str = "bce"
    pretrain_epochs: int = 0
    pretrain_learning_rate: float = 0.5
    pretrain_batch_size: int | None = None  # the clean pretraining's batch size (None: batch_size)
    validate_every: str = "step"  # or "epoch": how often to validate and maybe keep the model
    fused: bool = True  # the fused engine where it applies; False: the layered engine throughout
    min_step: int = 0  # the kept model has had at least this many SGD steps
    patience: int = 0  # stop after this many validations in a row certify nothing (0: never)
    steps: int | None = None  # train exactly this many SGD steps and keep that model
    clip: float | None = None  # per-sample gradient clipping threshold gamma
    clip_method: str = "clamp"  # "clamp": each entry to [-gamma, gamma]; "norm": l2 norm <= gamma
    weight_decay: float = 0.0  # lambda of theta <- (1 - rate lambda) theta - rate g
    momentum: float = 0.0  # mu of v <- mu v + g, theta <- theta - rate v
    nesterov: bool = False  # theta <- theta - rate (g + mu v) instead
    lr_decay: float = 0.0  # d of rate_t = max(rate / (1 + d (t - 1)), lr_min)
    lr_min: float = 0.0

    def __post_init__(self):
        if self.epochs < 0 or self.pretrain_epochs < 0:
            raise ValueError("epochs must be >= 0")
        for rate in (self.learning_rate, self.pretrain_learning_rate):
            if not (rate > 0 and math.isfinite(rate)):
                raise ValueError(f"learning rates must be finite and > 0, got {rate}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.pretrain_batch_size is not None and self.pretrain_batch_size < 1:
            raise ValueError(f"pretrain_batch_size must be >= 1, got {self.pretrain_batch_size}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}")
        if self.min_step < 0 or self.patience < 0:
            raise ValueError("min_step and patience must be >= 0")
        if self.validate_every not in ("epoch", "step"):
            raise ValueError("validate_every must be 'epoch' or 'step'")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.clip is not None and not (self.clip > 0 and math.isfinite(self.clip)):
            raise ValueError(f"clip must be a finite number > 0, got {self.clip}")
        if self.clip_method not in CLIP_METHODS:
            raise ValueError(f"clip_method must be one of {CLIP_METHODS}")
        for name in ("weight_decay", "lr_decay", "lr_min"):
            v = getattr(self, name)
            if not (v >= 0 and math.isfinite(v)):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if self.nesterov and not self.momentum:
            raise ValueError("nesterov needs momentum > 0")
        if self.learning_rate * self.weight_decay >= 1:
            raise ValueError(
                "learning_rate * weight_decay must be < 1 (else the decay factor "
                f"1 - rate * decay is <= 0), got {self.learning_rate * self.weight_decay}"
            )
        get_loss(self.loss)

    @property
    def rules(self) -> UpdateRule:
        """The update rule: weight decay, momentum, Nesterov."""
        return UpdateRule(self.weight_decay, self.momentum, self.nesterov)

    @property
    def clipping(self) -> Clipping | None:
        return None if self.clip is None else Clipping(self.clip, self.clip_method)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: Sequential  # the parameters with the best certified validation accuracy
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=dict)
    stopped: str | None = None  # why training stopped early, if it did
    engine: str = ""  # the engine that trained: "fused" or "layered"
    seconds: float = 0.0


@dataclass
class Checkpoint:
    """Everything ``train`` needs to continue a run bit-identically, taken after an epoch.

    ``params`` / ``nominal`` are the current parameters, ``best`` the kept
    ones; ``rng_state`` is the batch-order generator's state.
    """

    epoch: int
    step: int
    params: dict[str, Interval]
    nominal: dict
    best_params: dict[str, Interval]
    best_nominal: dict
    best_accuracy: float
    best_row: dict
    barren: int
    history: list[dict]
    rng_state: dict
    seconds: float
    velocity: tuple[dict, dict] | None = None  # momentum's (box, nominal) velocities


def batch_indices(n: int, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches: a random permutation of ``range(n)`` cut into ``batch_size`` rows."""
    order = rng.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def _check_training_labels(model: Sequential, loss, y, split: str) -> None:
    """``ValueError`` unless ``loss`` fits the model's outputs and every label is a class."""
    k = model.out_features
    if loss.name == "bce" and k != 1:
        raise ValueError(f"the bce loss needs a model with 1 output, this one has {k}: use ce")
    if loss.name == "ce" and k < 2:
        raise ValueError("the ce loss needs a model with at least 2 outputs: use bce")
    try:
        check_labels(y, k)
    except ValueError as err:
        raise ValueError(f"{split} labels: {err}") from None


def pretrain_nominal(model: Sequential, x, y, config: TrainConfig, rng) -> None:
    """Clean SGD of the nominal model only (the paper's Fig. 3 protocol).

    Afterwards the parameter box is the point box at the pretrained model.
    """
    loss = get_loss(config.loss)
    xp = model.backend.xp
    x = xp.asarray(np.asarray(x, dtype=model.dtype))
    y = xp.asarray(np.asarray(y))
    rate = config.pretrain_learning_rate
    every = Sequential(*model.layers)  # clean pretraining trains the frozen layers too
    for _ in range(config.pretrain_epochs):
        for idx in batch_indices(x.shape[0], config.pretrain_batch_size or config.batch_size, rng):
            every.backward_nominal(loss.nominal_grad(every.forward_nominal(x[idx]), y[idx]))
            for layer in model.layers:
                for k, g in getattr(layer, "nominal_grads", {}).items():
                    layer.nominal[k] = nominal_update(layer.nominal[k], g, rate)
    model.load({k: Interval(v) for k, v in model.named_nominal().items()})


def train(
    model: Sequential,
    train_x,
    train_y,
    threat: ThreatModel,
    config: TrainConfig,
    val_x=None,
    val_y=None,
    pretrain_x=None,
    pretrain_y=None,
    progress: Callable[[dict], None] | None = None,
    on_step: Callable[[int, dict, dict], None] | None = None,
    checkpoint: Callable[[Checkpoint], None] | None = None,
    checkpoint_every: float = 5.0,
    resume: Checkpoint | None = None,
    trusted=None,
) -> TrainResult:
    """Certified training of ``model`` in place; returns the best model and the history.

    ``progress`` is called after every validation with the latest history row
    (the CLI turns it into a progress bar); ``on_step(step, box, nominal)``
    after every SGD step with the new parameter box and nominal parameters
    (for audits and tests; ``model`` holds them too at that moment).
    Validation certifies ``val_x`` under the threat model's *test* box;
    without validation data the last model is kept.  ``trusted`` is a
    boolean mask of the training rows the attacker cannot touch.

    Model selection: the first validated model with the best certified
    validation accuracy among those after ``config.min_step`` steps or more
    (the last model if none).  The kept step then depends on the data at
    hand, so a certificate covers the pipeline "train t* steps" with ``t*``
    as chosen; ``config.steps`` fixes the step count beforehand instead (no
    selection: the model after that many steps is kept).  Widths only grow,
    so once validation certifies nothing it rarely recovers:
    ``config.patience`` such validations in a row (after step 0) stop
    training early.

    Interrupted runs: ``checkpoint(state)`` is called after an epoch when
    ``checkpoint_every`` seconds have passed since the last one (and after the
    last epoch); ``train(..., resume=state)`` with the same model
    architecture, data, threat model and configuration continues from it
    bit-identically (the model's parameters are replaced by the state's).
    """
    t0 = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    loss = get_loss(config.loss)
    bk, dtype = model.backend, model.dtype
    if resume is not None:  # pretraining is in the state's parameters already
        t0 -= resume.seconds
        rng.bit_generator.state = resume.rng_state
        model.load(resume.params, resume.nominal)
    elif config.pretrain_epochs and pretrain_x is not None:
        pretrain_nominal(model, pretrain_x, pretrain_y, config, rng)

    _check_training_labels(model, loss, train_y, "training")
    if val_y is not None:
        _check_training_labels(model, loss, val_y, "validation")
    given = bk.xp.asarray(np.asarray(train_x))
    x = given.astype(dtype)  # the nominal model trains on the data rounded to its dtype
    y = bk.xp.asarray(np.asarray(train_y))
    threat.check_data(x.shape[0], max(model.out_features, 2))
    poisoning = Poisoning(threat, x.shape[0], trusted, config.clipping)
    box_x = threat.train_box(given, dtype)  # every poisoned training set lies in here
    clean = None if given.dtype == dtype else ThreatModel(0.0).train_box(given, dtype)
    engine = make_engine(
        model, config.loss, box_x, x, y, config.batch_size, config.fused,
        poisoning, config.rules, clean,
    )  # fmt: skip
    if resume is not None:
        engine.velocity = resume.velocity
    certifier = Certifier(engine, val_x, val_y, threat) if val_x is not None else None
    schedule = SGD(config.learning_rate, config.schedule, config.lr_decay, config.lr_min)
    result = TrainResult(model=model, engine=engine.name)
    best = engine.parameters()
    best_acc = -1.0
    step = 0
    barren = 0  # validations in a row that certified nothing
    first_epoch = 1
    if resume is not None:
        best, best_acc = (resume.best_params, resume.best_nominal), resume.best_accuracy
        step, barren, first_epoch = resume.step, resume.barren, resume.epoch + 1
        result.history, result.best = list(resume.history), dict(resume.best_row)
    last_checkpoint = time.perf_counter()

    def save_checkpoint(epoch: int) -> None:
        nonlocal last_checkpoint
        params, nominal = engine.parameters()
        state = Checkpoint(
            epoch, step, params, nominal, *best, best_acc, dict(result.best), barren,
            list(result.history), rng.bit_generator.state, time.perf_counter() - t0,
        )  # fmt: skip
        state.velocity = engine.velocity
        checkpoint(state)
        last_checkpoint = time.perf_counter()

    def validate(epoch: int, loss_lo: float, loss_hi: float):
        nonlocal best_acc, best, barren
        row = {"epoch": epoch, "step": step, "loss_lo": loss_lo, "loss_hi": loss_hi}
        row["mean_width"], row["max_width"] = engine.widths()
        if certifier is not None:
            cert = certifier()
            row["val_certified_accuracy"] = cert.certified_accuracy
            row["val_accuracy"] = cert.nominal_accuracy
            chooses = config.steps is None and step >= config.min_step
            if chooses and cert.certified_accuracy > best_acc:
                best_acc = cert.certified_accuracy
                best = engine.parameters()
                result.best = dict(row)
            if step >= max(1, config.min_step):
                barren = barren + 1 if cert.certified_accuracy == 0 else 0
                if config.patience and barren >= config.patience:
                    result.stopped = (
                        f"early stop: nothing certified on validation for {barren} validations"
                    )
        result.history.append(row)
        if progress is not None:
            progress(row)

    if resume is None:
        validate(0, float("nan"), float("nan"))
    last_epoch = config.epochs
    if config.steps is not None:  # as many epochs as the steps need; the last one may stop early
        batches = math.ceil(x.shape[0] / config.batch_size)
        last_epoch = math.ceil(config.steps / batches)
    for epoch in range(first_epoch, last_epoch + 1):
        loss_bounds = []
        for idx in batch_indices(x.shape[0], config.batch_size, rng):
            if config.steps is not None and step == config.steps:
                break
            step += 1
            done = engine.step(idx, schedule.rate(step))
            loss_bounds.append(done.loss)
            if not done.finite:
                result.stopped = (
                    f"parameter bounds became infinite at epoch {epoch}, step "
                    f"{step}: lower the learning rate or epsilon"
                )
                break
            if not done.nominal_finite:
                result.stopped = (
                    f"the nominal model overflowed (inf or NaN) at epoch {epoch}, step "
                    f"{step}: lower the learning rate"
                )
                break
            if done.outside is not None:
                raise SoundnessError(
                    f"step {step}: the nominal {done.outside} left its parameter box"
                )
            if on_step is not None:
                params, nominal = engine.parameters()
                model.load(params, nominal)  # the hook may read the model too
                on_step(step, params, nominal)
            if config.validate_every == "step":
                validate(epoch, *loss_bounds[-1])
                if result.stopped:
                    break
        if result.stopped:
            break
        if config.validate_every == "epoch":
            lo, hi = np.mean(loss_bounds, axis=0)
            validate(epoch, float(lo), float(hi))
            if result.stopped:
                break
        due = time.perf_counter() - last_checkpoint >= checkpoint_every
        if checkpoint is not None and (due or epoch == last_epoch):
            save_checkpoint(epoch)

    model.load(*(best if best_acc >= 0 else engine.parameters()))
    result.seconds = time.perf_counter() - t0
    return result
