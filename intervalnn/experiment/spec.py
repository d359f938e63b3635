"""A typed, validated specification of one certified training run.

A :class:`RunSpec` holds everything that decides a run's result: the data
(:class:`DataSpec`), the threat model (:class:`ThreatSpec`), the
architecture (:class:`ModelSpec`), the training configuration
(:class:`TrainingSpec`), the endpoint dtype, the device and the seed.  Every
part is a frozen dataclass that checks and converts its fields on
construction with the option schema (:data:`~intervalnn.experiment.schema.FIELDS`)
and raises :class:`~intervalnn.experiment.SpecError` naming the bad field.

The same options as a flat dictionary (``{"dataset": "moons", "epsilon":
0.01, ...}``, the names of ``intervalnn train``'s options) convert both
ways: :meth:`RunSpec.from_options` and :meth:`RunSpec.options`.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field

from intervalnn.train import TrainConfig

from .errors import SpecError
from .schema import FIELDS


def _check(part) -> None:
    """Parse every field of the dataclass ``part`` with its schema entry, in place."""
    for f in dataclasses.fields(part):
        object.__setattr__(part, f.name, FIELDS[f.name].parse(getattr(part, f.name)))


@dataclass(frozen=True)
class DataSpec:
    """The data set: ``moons``, ``mnist17`` (IDX files in ``data_dir``) or a ``.npz`` path.

    ``pretrain_size`` clean training points are held out for pretraining the
    nominal model (see :attr:`TrainingSpec.pretrain_epochs`).
    """

    dataset: str
    data_dir: str | None = None
    pretrain_size: int = 0

    def __post_init__(self):
        if self.dataset is None:
            raise SpecError(
                "dataset",
                "{dataset} is required: moons, mnist17 or a path to a .npz file",
                sentence=True,
            )
        _check(self)


@dataclass(frozen=True)
class ThreatSpec:
    """Poisoning radius ``epsilon`` (l-infinity) and test-time radius (default: ``epsilon``)."""

    epsilon: float = 1e-3
    inference_epsilon: float | None = None

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class ModelSpec:
    """An MLP of ``layers`` Linear layers with ``hidden`` ReLUs between them."""

    hidden: int = 20
    layers: int = 2

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class TrainingSpec:
    """The fields of :class:`intervalnn.train.TrainConfig` that a run chooses.

    The seed is the run's (:attr:`RunSpec.seed`); whether the fused kernel
    runs is the library's choice (:func:`~intervalnn.experiment.prepare`).
    """

    epochs: int = 5
    learning_rate: float = 0.5
    schedule: str = "constant"
    batch_size: int = 100
    loss: str = "bce"
    validate_every: str = "step"
    min_step: int = 0
    patience: int = 0
    pretrain_epochs: int = 0
    pretrain_learning_rate: float = 0.5

    def __post_init__(self):
        _check(self)


@dataclass(frozen=True)
class RunSpec:
    """One certified training run: data, threat model, architecture, training, dtype, device, seed.

    The seed draws the data splits, the initial model and the batch order.
    """

    data: DataSpec
    threat: ThreatSpec = field(default_factory=ThreatSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    dtype: str = "float64"
    device: str = "cpu"
    seed: int = 0

    def __post_init__(self):
        for name, kind in (
            ("data", DataSpec),
            ("threat", ThreatSpec),
            ("model", ModelSpec),
            ("training", TrainingSpec),
        ):
            if not isinstance(getattr(self, name), kind):
                raise TypeError(f"RunSpec.{name} must be a {kind.__name__}")
        for name in ("dtype", "device", "seed"):
            object.__setattr__(self, name, FIELDS[name].parse(getattr(self, name)))
        if self.training.pretrain_epochs and not self.data.pretrain_size:
            raise SpecError(
                "pretrain_epochs",
                "{pretrain_epochs} needs clean pretraining data: add {pretrain_size} N (e.g. 100)",
                sentence=True,
            )

    @classmethod
    def from_options(cls, options: Mapping | None = None, /, **more) -> RunSpec:
        """The spec of the flat options (schema names; ``-`` may stand for ``_``), defaults
        filled in.  An unknown name is a :class:`SpecError`."""
        given = {**(options or {}), **more}
        parts: dict[str, dict] = {"data": {}, "threat": {}, "model": {}, "training": {}, "": {}}
        for key, value in given.items():
            name = key.replace("-", "_")
            if name not in FIELDS:
                close = difflib.get_close_matches(name, list(FIELDS), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise SpecError(name, f"unknown option{hint}")
            parts[FIELDS[name].section][name] = value
        return cls(
            data=DataSpec(**{"dataset": None, **parts["data"]}),
            threat=ThreatSpec(**parts["threat"]),
            model=ModelSpec(**parts["model"]),
            training=TrainingSpec(**parts["training"]),
            **parts[""],
        )

    def options(self) -> dict:
        """The flat options, every one, in schema order (the inverse of :meth:`from_options`)."""
        parts = {
            "data": self.data,
            "threat": self.threat,
            "model": self.model,
            "training": self.training,
            "": self,
        }
        return {name: getattr(parts[f.section], name) for name, f in FIELDS.items()}

    def replace(self, **options) -> RunSpec:
        """A copy with some flat options changed: ``spec.replace(epsilon=0.1, seed=3)``."""
        return RunSpec.from_options({**self.options(), **options})

    def train_config(self, *, fused: bool = True) -> TrainConfig:
        """The :class:`~intervalnn.train.TrainConfig` of this run."""
        t = self.training
        return TrainConfig(
            epochs=t.epochs,
            learning_rate=t.learning_rate,
            batch_size=t.batch_size,
            schedule=t.schedule,
            seed=self.seed,
            loss=t.loss,
            pretrain_epochs=t.pretrain_epochs,
            pretrain_learning_rate=t.pretrain_learning_rate,
            validate_every=t.validate_every,
            min_step=t.min_step,
            patience=t.patience,
            fused=fused,
        )
