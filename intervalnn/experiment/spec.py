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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from intervalnn.architecture import mlp_string
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig

from .errors import SpecError
from .schema import FIELDS

#: The library's names that are not the schema's (``ThreatModel.test_epsilon``).
_LIBRARY_NAMES = {"test_epsilon": "inference_epsilon"}
_WORD = re.compile(r"\b[a-z][a-z_]*\b")


def _check(part) -> None:
    """Parse every field of the dataclass ``part`` with its schema entry, in place."""
    for f in dataclasses.fields(part):
        object.__setattr__(part, f.name, FIELDS[f.name].parse(getattr(part, f.name)))


def library_error(exc: ValueError) -> SpecError:
    """The library's one-line ``ValueError`` about its options (:class:`ThreatModel`,
    :class:`TrainConfig`, the data checks) as a :class:`SpecError` naming the options.

    The rules and their words stay the library's (one home per rule); each option
    name in the message (``label_flips``, ``test_epsilon``) becomes the schema's
    ``{name}``, which the command line spells as a flag (``--label-flips``).
    """
    text = str(exc)
    named = []

    def name(m):
        word = _LIBRARY_NAMES.get(m[0], m[0])
        if word not in FIELDS:
            return m[0]
        named.append(word)
        return "{" + word + "}"

    reason = _WORD.sub(name, text.replace("{", "(").replace("}", ")"))
    if not named:
        return SpecError("options", text)
    return SpecError(named[0], reason, sentence=True)


@dataclass(frozen=True)
class DataSpec:
    """The data set: ``moons``, ``mnist17`` or ``mnist`` (IDX files in ``data_dir``), or a ``.npz``.

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
                "{dataset} is required: moons, mnist17, mnist or a path to a .npz file",
                sentence=True,
            )
        _check(self)


@dataclass(frozen=True)
class ThreatSpec:
    """The threat model (:class:`~intervalnn.threat.ThreatModel`) and the trusted points.

    Poisoning radius ``epsilon`` (l-infinity; ``inf``: anywhere, which needs
    gradient clipping or a data domain, and a finite ``inference_epsilon``),
    test-time radius ``inference_epsilon`` (default: ``epsilon``), at most
    ``poison_count`` poisoned training points (None: all), ``label_flips``
    flipped labels (to ``label_target`` only, if given), ``paired`` budgets,
    and the ``trusted`` first training points, which are never poisoned.
    The rules that need the data (a budget larger than the training set, a
    class the data lacks) are checked by :func:`~intervalnn.experiment.prepare`.
    """

    epsilon: float = 1e-3
    inference_epsilon: float | None = None
    poison_count: int | None = None
    label_flips: int = 0
    label_target: int | None = None
    paired: bool = False
    trusted: int = 0

    def __post_init__(self):
        _check(self)
        self.threat_model()  # the library's rules: one home

    def threat_model(self, domain: tuple[float, float] | None = None) -> ThreatModel:
        """The :class:`~intervalnn.threat.ThreatModel` (a :class:`SpecError` if invalid)."""
        try:
            return ThreatModel(
                self.epsilon, self.inference_epsilon, domain, self.poison_count,
                self.label_flips, self.label_target, self.paired,
            )  # fmt: skip
        except ValueError as exc:
            raise library_error(exc) from None


@dataclass(frozen=True)
class ModelSpec:
    """The model: an architecture string ``arch`` (:mod:`intervalnn.architecture`), or by
    default an MLP of ``layers`` Linear layers with ``hidden`` ReLUs between them; its first
    ``freeze`` layers frozen; its initial ``weights`` from a file (PyTorch's names).
    """

    hidden: int = 20
    layers: int = 2
    arch: str | None = None
    freeze: int = 0
    weights: str | None = None

    def __post_init__(self):
        _check(self)
        if self.arch is not None and (self.hidden, self.layers) != (
            FIELDS["hidden"].default,
            FIELDS["layers"].default,
        ):
            raise SpecError(
                "arch",
                "{arch} gives the whole architecture: leave out {hidden} and {layers}, which "
                "size the default MLP",
                sentence=True,
            )

    def architecture(self, out_features: int) -> str:
        """The architecture string: ``arch``, or the MLP's with ``out_features`` outputs."""
        if self.arch is not None:
            return self.arch
        return mlp_string(self.hidden, self.layers, out_features)


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
    pretrain_batch_size: int | None = None
    steps: int | None = None
    clip: float | None = None
    clip_method: str = "clamp"
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    lr_decay: float = 0.0
    lr_min: float = 0.0

    def __post_init__(self):
        _check(self)
        self.train_config()  # the library's rules (momentum in [0, 1), rate * decay < 1 ...)

    def train_config(self, *, seed: int = 0, fused: bool = True) -> TrainConfig:
        """The :class:`~intervalnn.train.TrainConfig` (a :class:`SpecError` if invalid)."""
        try:
            return TrainConfig(
                **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                seed=seed,
                fused=fused,
            )
        except ValueError as exc:
            raise library_error(exc) from None


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
        return self.training.train_config(seed=self.seed, fused=fused)
