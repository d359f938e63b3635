"""The options of one run: names, kinds, defaults, help and parsers, in one ordered schema.

:data:`FIELDS` lists every option of a :class:`~intervalnn.experiment.RunSpec`
in the order the command line shows them.  A grid of ``intervalnn sweep``
may vary any of them, and the command line builds its training options from
them (``cli/options.py``).  :meth:`Field.parse` checks and converts one value
(a Python value, or the text a user typed) and raises a
:class:`~intervalnn.experiment.SpecError` naming the option; its messages are
the ones click gives for the same kinds, so that a grid and the command line
word a bad value alike.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from intervalnn.architecture import canonical
from intervalnn.poisoning import CLIP_METHODS
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig

from .errors import SpecError

_TRAIN = TrainConfig()  # the training options' defaults: TrainConfig's, one source
_THREAT = ThreatModel(0.0)  # the threat model's defaults (poison count, label flips ...)

#: The kinds of value an option takes.
KINDS = (
    "text", "path", "radius", "rate", "number", "count", "int", "choice", "flag", "architecture"
)  # fmt: skip
#: How a bad radius, rate or number is explained: (example, rule).
_BOUNDS = {
    "radius": ("a radius such as 0.01", "a radius must be a finite number >= 0"),
    "rate": ("a rate such as 0.5", "a learning rate must be > 0 (e.g. 0.5)"),
    "number": ("a number such as 0.1", "give a finite number"),
}
#: The words a flag's value may be spelled with (sweep grids: ``--paired true,false``).
_FLAG_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass(frozen=True)
class Field:
    """One option of a run: its name, what it takes, its default and its help.

    ``kind`` is one of :data:`KINDS`: ``text`` and ``path`` (strings),
    ``radius`` (a finite float >= 0; ``inf`` too where ``infinite``), ``rate``
    (a finite float > 0), ``number`` (a finite float whose range the library
    checks: :class:`~intervalnn.train.TrainConfig`), ``count`` (an integer
    >= ``minimum``), ``int`` (any integer), ``choice`` (one of ``choices``),
    ``flag`` (a boolean: a command-line switch) or ``architecture`` (an
    architecture string, :mod:`intervalnn.architecture`, made canonical).
    ``none_word`` is a word that stands for the default ``None``
    (``--poison-count all``).
    ``section`` is the part of :class:`~intervalnn.experiment.RunSpec` that
    holds it (``""``: the spec itself).
    """

    name: str
    kind: str
    section: str
    default: object = None
    help: str | None = None
    minimum: int | None = None
    choices: tuple[str, ...] = ()
    metavar: str | None = None
    infinite: bool = False
    none_word: str | None = None

    @property
    def flag(self) -> str:
        """The command-line spelling: ``--learning-rate``."""
        return flag(self.name)

    @property
    def is_int(self) -> bool:
        return self.kind in ("count", "int")

    def parse(self, value):
        """``value`` checked and converted (``None`` only where the default is None)."""
        if value is None:
            if self.default is None:
                return None
            raise SpecError(self.name, "a value is required")
        if self.kind == "flag":
            return self._flag(value)
        if self.none_word is not None and isinstance(value, str):
            if value.strip().lower() == self.none_word:
                return None
        if isinstance(value, bool | list | tuple | dict | set) or (
            self.is_int and isinstance(value, float)
        ):
            raise SpecError(
                self.name, f"{value!r} is not {'an integer' if self.is_int else 'a single value'}"
            )
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        if self.is_int:
            return self._integer(value)
        if self.kind in _BOUNDS:
            return self._bounded(value)
        if self.kind == "choice":
            for choice in self.choices:
                if str(value) == choice:
                    return choice
            listed = ", ".join(map(repr, self.choices))
            raise SpecError(self.name, f"{value!r} is not one of {listed}.")
        if self.kind == "architecture":
            try:
                return canonical(str(value))
            except ValueError as exc:
                raise SpecError(self.name, str(exc)) from None
        if self.kind == "path":
            try:
                return os.fspath(value)
            except TypeError:
                raise SpecError(self.name, f"{value!r} is not a path") from None
        return str(value)

    def _flag(self, value) -> bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _FLAG_WORDS:
            return _FLAG_WORDS[value.strip().lower()]
        raise SpecError(self.name, f"{value!r} is not true or false")

    def _integer(self, value) -> int:
        try:
            v = int(value)
        except (TypeError, ValueError):
            kind = "integer range" if self.minimum is not None else "integer"  # click's words
            raise SpecError(self.name, f"{value!r} is not a valid {kind}.") from None
        if self.minimum is not None and v < self.minimum:
            raise SpecError(self.name, f"{v} is not in the range x>={self.minimum}.")
        return v

    def _bounded(self, value) -> float:
        example, rule = _BOUNDS[self.kind]
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise SpecError(self.name, f"{value!r} is not a number; give {example}") from None
        if self.infinite and v == math.inf:
            return v  # float() reads inf, Infinity, +inf in any case
        if self.kind == "number":
            if not math.isfinite(v):
                raise SpecError(self.name, f"{value} is not allowed: {rule}")
            return v
        if not math.isfinite(v) or v < 0 or (self.kind == "rate" and v == 0):
            if self.infinite:
                rule = rule.replace("finite number >= 0", "number >= 0 or inf")
            raise SpecError(self.name, f"{value} is not allowed: {rule}")
        return v


def flag(name: str) -> str:
    """The command-line flag of option ``name``: ``learning_rate`` -> ``--learning-rate``."""
    return "--" + name.replace("_", "-")


def _count(name, section, default, minimum, help=None):
    return Field(name, "count", section, default, help, minimum=minimum)


def _choice(name, section, choices, help=None, default=None):
    default = choices[0] if default is None else default
    return Field(name, "choice", section, default, help, choices=tuple(choices))


def _number(name, section, default, help, metavar="X"):
    return Field(name, "number", section, default, help, metavar=metavar)


def _flag(name, section, default, help):
    return Field(name, "flag", section, default, help)


#: Every option of a run, in the order the command line lists them.
FIELDS: dict[str, Field] = {
    f.name: f
    for f in (
        Field(
            "dataset",
            "text",
            "data",
            help="Data set: Two-Moons, MNIST 1/7, MNIST (10 digits), or your .npz with x and y.",
            metavar="moons|mnist17|mnist|PATH.npz",
        ),
        Field(
            "data_dir",
            "path",
            "data",
            help="Directory with the MNIST IDX files (for --dataset mnist17 or mnist).",
            metavar="DIR",
        ),
        Field(
            "epsilon",
            "radius",
            "threat",
            1e-3,
            "Poisoning radius: each poisoned training feature may move by this much (l-inf); "
            "inf: anywhere (needs --clip, or data with a domain, and --inference-epsilon).",
            infinite=True,
        ),
        Field(
            "inference_epsilon",
            "radius",
            "threat",
            None,
            "Test-time radius for validation (default: --epsilon; 0: poisoning only).",
        ),
        Field(
            "poison_count",
            "count",
            "threat",
            _THREAT.poison_count,
            "At most K training points have their features poisoned (default: all of them, "
            "FullCert's threat model; 'all' in sweep grids).",
            minimum=0,
            metavar="K",
            none_word="all",
        ),
        Field(
            "label_flips",
            "count",
            "threat",
            _THREAT.label_flips,
            "At most K training labels may be flipped to another class.",
            minimum=0,
            metavar="K",
        ),
        Field(
            "label_target",
            "count",
            "threat",
            _THREAT.label_target,
            "Flipped labels become this class only (default: any other class).",
            minimum=0,
            metavar="CLASS",
        ),
        _flag(
            "paired",
            "threat",
            _THREAT.paired,
            "The feature and label budgets touch the same points (default: independent).",
        ),
        Field(
            "trusted",
            "count",
            "threat",
            0,
            "The first N training points are trusted: never poisoned (added to a .npz data "
            "set's own 'trusted' mask).",
            minimum=0,
            metavar="N",
        ),
        _count("epochs", "training", _TRAIN.epochs, 1, "Passes over the training data."),
        Field(
            "learning_rate",
            "rate",
            "training",
            _TRAIN.learning_rate,
            "SGD step size for the mean loss over a batch.  BoundFlow (the FullCert paper's "
            "code) divides gradients by the batch size twice, so a BoundFlow rate R is "
            "R / batch size here.",
        ),
        _choice(
            "schedule",
            "training",
            ("constant", "1/t"),
            "Learning-rate schedule: constant, or 1/t (the rate divided by the step number t).",
        ),
        _count("batch_size", "training", _TRAIN.batch_size, 1, "Training points per SGD step."),
        Field(
            "steps",
            "count",
            "training",
            _TRAIN.steps,
            "Train exactly N SGD steps and keep that model (no model selection on validation).",
            minimum=1,
            metavar="N",
        ),
        Field(
            "clip",
            "number",
            "training",
            _TRAIN.clip,
            "Clip every per-sample gradient (nominal and interval) at this threshold > 0.",
            metavar="G",
        ),
        _choice(
            "clip_method",
            "training",
            CLIP_METHODS,
            "How --clip clips: clamp (each entry to [-G, G]) or norm (l2 norm at most G).",
            default=_TRAIN.clip_method,
        ),
        _number(
            "weight_decay",
            "training",
            _TRAIN.weight_decay,
            "Weight decay L as a contraction: theta <- (1 - rate L) theta - rate g.",
            "L",
        ),
        _number(
            "momentum",
            "training",
            _TRAIN.momentum,
            "SGD momentum M in [0, 1): v <- M v + g, theta <- theta - rate v.",
            "M",
        ),
        _flag(
            "nesterov",
            "training",
            _TRAIN.nesterov,
            "Nesterov momentum: theta <- theta - rate (g + M v) (needs --momentum).",
        ),
        _number(
            "lr_decay",
            "training",
            _TRAIN.lr_decay,
            "Learning-rate decay D: the rate at step t is max(rate / (1 + D (t - 1)), --lr-min).",
            "D",
        ),
        _number(
            "lr_min",
            "training",
            _TRAIN.lr_min,
            "The smallest learning rate --lr-decay decays to.",
            "R",
        ),
        _count("hidden", "model", 20, 1, "Units of each hidden layer."),
        _count("layers", "model", 2, 1, "Number of Linear layers (2 = Linear-ReLU-Linear)."),
        Field(
            "arch",
            "architecture",
            "model",
            None,
            "Architecture: layers joined by '-': linear(OUT), relu, conv(OUT,K[,stride=S]"
            "[,padding=P]), maxpool(K[,stride=S]), avgpool(K[,stride=S]), flatten, "
            "unflatten(C,H,W); rows are flat, so a CNN starts with unflatten, e.g. "
            "unflatten(1,28,28)-conv(8,5)-relu-maxpool(2)-flatten-linear(10).  The last "
            "linear(N) gives the logits (1 for --loss bce).  Default: the MLP of --hidden "
            "and --layers.",
            metavar="LAYERS",
        ),
        Field(
            "freeze",
            "count",
            "model",
            0,
            "Freeze the first N layers (of --arch, or of the MLP): their parameters stay "
            "points and get no gradient, and their outputs are computed once.",
            minimum=0,
            metavar="N",
        ),
        Field(
            "weights",
            "path",
            "model",
            None,
            "Initial weights: a .safetensors or .npz file with PyTorch's state_dict names "
            "and layouts (0.weight of shape (out, in) or (out, in, kh, kw)).",
            metavar="FILE",
        ),
        _choice(
            "loss",
            "training",
            ("bce", "ce"),
            "Loss: bce (binary cross-entropy, one logit, two classes) or ce (cross-entropy).",
        ),
        _count(
            "seed",
            "",
            0,
            0,
            "Random seed of the data splits, the initial model and the batch order.",
        ),
        _choice(
            "validate_every",
            "training",
            ("step", "epoch"),
            "How often to certify the validation split.",
        ),
        _count(
            "min_step",
            "training",
            0,
            0,
            "Keep only models after at least this many SGD steps (1: never the initial model).",
        ),
        _count(
            "patience",
            "training",
            0,
            0,
            "Stop after this many validations in a row certify nothing (0: never).",
        ),
        _count(
            "pretrain_epochs",
            "training",
            0,
            0,
            "Epochs of clean SGD of the nominal model before certified training (0: none).",
        ),
        _count(
            "pretrain_size",
            "data",
            0,
            0,
            "Clean training points for pretraining the nominal model.",
        ),
        Field(
            "pretrain_learning_rate",
            "rate",
            "training",
            _TRAIN.pretrain_learning_rate,
            "SGD step size of the clean pretraining (mean-loss convention).",
        ),
        Field(
            "pretrain_batch_size",
            "count",
            "training",
            _TRAIN.pretrain_batch_size,
            "Points per SGD step of the clean pretraining (default: --batch-size).",
            minimum=1,
            metavar="N",
        ),
        _choice("dtype", "", ("float64", "float32"), "Precision of the interval endpoints."),
        _choice(
            "device",
            "",
            ("cpu", "gpu"),
            "Where to compute: cpu (NumPy/Numba) or gpu (CuPy; pip install 'intervalnn[gpu]').",
        ),
    )
}


def defaults() -> dict:
    """Every option's default, in :data:`FIELDS` order."""
    return {name: f.default for name, f in FIELDS.items()}
