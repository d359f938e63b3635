"""A run's threat model, training rules and frozen layers in words, for ``intervalnn train``
and ``info``."""

from __future__ import annotations

import math

from intervalnn.architecture import parse
from intervalnn.threat import ThreatModel


def _radius(eps: float) -> str:
    return "inf (anywhere)" if math.isinf(eps) else f"{eps:g}"


def describe_threat(threat: ThreatModel, n: int | None = None, trusted: int = 0) -> str:
    """One line: which training points and labels the attacker controls, and the test radius.

    ``n`` is the number of training points (None: unknown, an older model file),
    ``trusted`` how many of them are trusted.
    """
    of = "" if n is None else f" of {n}"
    if threat.epsilon == 0 or threat.poison_count == 0:
        features = "no training features poisoned"
    elif threat.poison_count is None:
        which = f"every training point{of}"
        if trusted:
            which = "every untrusted training point" + (f" ({n - trusted} of {n})" if n else "")
        features = f"{which} poisoned within epsilon {_radius(threat.epsilon)}"
    else:
        features = (
            f"at most {threat.poison_count}{of} training points poisoned within epsilon "
            f"{_radius(threat.epsilon)}"
        )
    parts = [features]
    if threat.label_flips:
        to = "any other class" if threat.label_target is None else f"class {threat.label_target}"
        flips = f"at most {threat.label_flips} labels flipped to {to}"
        if threat.paired:
            flips += " (the same points)"
        parts.append(flips)
    if trusted:
        parts.append(f"{trusted} trusted points")
    parts.append(f"test radius {threat.inference_epsilon:g}")
    return "; ".join(parts)


def describe_rules(config: dict) -> str:
    """One line: the training rules of a stored training configuration (``TrainConfig``'s
    fields; missing ones, in an older model file, are the defaults)."""
    parts = []
    if config.get("clip") is not None:
        parts.append(f"clip {config['clip']:g} ({config.get('clip_method', 'clamp')})")
    if config.get("weight_decay"):
        parts.append(f"weight decay {config['weight_decay']:g}")
    if config.get("momentum"):
        nesterov = ", Nesterov" if config.get("nesterov") else ""
        parts.append(f"momentum {config['momentum']:g}{nesterov}")
    if config.get("lr_decay"):
        parts.append(f"rate decay {config['lr_decay']:g} (min {config.get('lr_min', 0.0):g})")
    if config.get("steps") is not None:
        parts.append(f"fixed {config['steps']} steps (no model selection)")
    return ", ".join(parts) or "plain SGD"


def describe_frozen(architecture: str, frozen: int) -> str:
    """The frozen layers of a model with the architecture string ``architecture``:
    ``"first 2 layers frozen: linear(20)-relu"`` (``"first layer frozen: ..."``), or
    ``"none"``."""
    if not frozen:
        return "none"
    prefix = "-".join(map(str, parse(architecture)[:frozen]))
    first = "first layer" if frozen == 1 else f"first {frozen} layers"
    return f"{first} frozen: {prefix}"
