"""Saved models: load one with matching data, certify it (serially or sharded), describe it."""

from __future__ import annotations

import csv
import dataclasses
import io
from dataclasses import dataclass

import numpy as np

from intervalnn.architecture import describe
from intervalnn.certify import CertificationResult, certify
from intervalnn.datasets import DataError, Splits
from intervalnn.engine import parameter_widths
from intervalnn.io import HISTORY_COLUMNS, load_model, write_atomic
from intervalnn.layers import Sequential
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig

from .describe import describe_frozen, describe_rules, describe_threat
from .errors import SpecError, UnavailableError
from .run import device_backend, load_splits
from .spec import DataSpec

SPLITS = ("test", "val", "train")
#: The training rules ``info`` lists, with the defaults an older model file implies.
_RULES = {
    k: TrainConfig.__dataclass_fields__[k].default
    for k in (
        "clip",
        "clip_method",
        "weight_decay",
        "momentum",
        "nesterov",
        "lr_decay",
        "lr_min",
        "steps",
    )
}


def model_classes(model: Sequential) -> int:
    """How many classes ``model`` tells apart (one logit means two classes)."""
    return 2 if model.out_features == 1 else model.out_features


def load_model_and_data(
    model_path, dataset=None, data_dir=None, seed=None, device="cpu"
) -> tuple[Sequential, dict, str, Splits]:
    """A saved model, its metadata, the data set's name and matching data :class:`Splits`.

    ``dataset`` and ``seed`` default to the ones the model was trained with;
    the data must have the model's number of features and no label the
    model cannot predict (``DataError`` otherwise).
    """
    backend = device_backend(device)
    try:
        model, meta = load_model(model_path, backend=backend.name)
    except TypeError as exc:  # Backend.require_dtype: the GPU refuses the model's dtype
        if backend.name != "cupy":
            raise
        raise UnavailableError(f"{model_path}: {exc}") from None
    trained_on = meta.get("dataset", {})
    dataset = dataset or trained_on.get("name")
    if dataset is None:
        raise ValueError(f"{model_path} names no data set: pass --dataset")
    seed = trained_on.get("seed", 0) if seed is None else seed
    splits = load_splits(DataSpec(dataset, data_dir), seed)
    if splits.num_features != model.in_features:
        raise DataError(
            f"the model was trained for inputs with {model.in_features} features, but "
            f"{dataset} has {splits.num_features}: use the data set it was trained on "
            f"({trained_on.get('name', 'see intervalnn info')})"
        )
    k = model_classes(model)
    if splits.num_classes > k:
        raise DataError(
            f"{dataset} has labels 0..{splits.num_classes - 1}, but the model predicts "
            f"{k} classes (labels 0..{k - 1}): use data with the model's labels"
        )
    return model, meta, dataset, splits


def saved_threat(meta: dict, epsilon: float | None = None) -> ThreatModel:
    """A saved model's threat model, with the test-time radius ``epsilon`` if given
    (an ``epsilon = inf`` model keeps its stored finite test radius otherwise)."""
    stored: ThreatModel = meta["threat_model"]
    radius = stored.inference_epsilon if epsilon is None else epsilon
    return dataclasses.replace(stored, test_epsilon=radius)


@dataclass
class SavedCertification:
    """What :func:`certify_saved` gives: the summary ``intervalnn certify`` prints, and more."""

    summary: dict
    result: CertificationResult
    labels: np.ndarray  # the labels of the certified split, in order


def certify_saved(
    model_path,
    *,
    dataset=None,
    data_dir=None,
    epsilon: float | None = None,
    split: str = "test",
    seed: int | None = None,
    device: str = "cpu",
    workers: int | None = None,
    scheduler: str | None = None,
) -> SavedCertification:
    """Certify a saved model on a data split (``dataset``/``seed``: the model's by default).

    With ``workers`` (a local Dask cluster) or ``scheduler`` (a running
    one) the split is certified in shards on Dask workers
    (:func:`~intervalnn.experiment.cluster.certify_on_dask`): identical results.
    """
    if split not in SPLITS:
        raise SpecError("split", f"{split!r} is not one of {', '.join(map(repr, SPLITS))}.")
    if workers and scheduler:
        raise SpecError(
            "workers", "use {workers} (a local cluster) or {scheduler}, not both", sentence=True
        )
    sharded = bool(workers or scheduler)
    if sharded and device == "gpu":
        raise SpecError(
            "device",
            "{workers}/{scheduler} shard across CPU workers: use {device} cpu",
            sentence=True,
        )
    if sharded:
        from .cluster import require_dask

        require_dask("intervalnn certify --workers/--scheduler")
    model, meta, dataset, splits = load_model_and_data(model_path, dataset, data_dir, seed, device)
    data = getattr(splits, split)
    threat = saved_threat(meta, epsilon)
    if sharded:
        from .cluster import certify_on_dask

        result = certify_on_dask(
            model, data.x, data.y, threat, workers=workers, scheduler=scheduler
        )
    else:
        result = certify(model, data.x, data.y, threat)
    labels = np.asarray(data.y)
    summary = {
        **result.summary(),
        "split": split,
        "dataset": dataset,
        "model": str(model_path),
        "training_epsilon": meta["threat_model"].epsilon,
        "per_class": per_class(result, labels, model_classes(model)),
        "data_matches_training": data_matches_training(meta, dataset, data_dir, seed, splits),
    }
    return SavedCertification(summary, result, labels)


def per_class(result: CertificationResult, labels, num_classes: int) -> list[dict]:
    """Certified and nominal accuracy on each class's samples (None for a class with none)."""
    labels = np.asarray(labels)
    rows = []
    for c in range(num_classes):
        mine = labels == c
        n = int(np.count_nonzero(mine))
        rows.append(
            {
                "class": c,
                "n": n,
                "certified_accuracy": np.count_nonzero(result.certified[mine]) / n if n else None,
                "accuracy": np.count_nonzero(result.nominal_correct[mine]) / n if n else None,
            }
        )
    return rows


def data_matches_training(meta: dict, dataset, data_dir, seed, splits: Splits) -> bool | None:
    """Whether ``splits`` hold the training data the model file's fingerprint names
    (None: the file stores no fingerprint, so nobody knows).

    ``seed`` is the data seed asked for (None: the model's).  Pretraining points are
    taken out of the training split, so with a stored ``pretrain_size`` the training
    split is loaded again the way training loaded it.
    """
    trained_on = meta.get("dataset") or {}
    stored = trained_on.get("train")
    if not isinstance(stored, str):
        return None
    seed = trained_on.get("seed", 0) if seed is None else seed
    pretrain = trained_on.get("pretrain_size")
    if pretrain is None and meta.get("config", {}).get("pretrain_epochs"):
        return None  # pretrained, but how many points were held out is not stored
    if isinstance(pretrain, int) and pretrain > 0:
        try:
            splits = load_splits(DataSpec(dataset, data_dir, pretrain_size=pretrain), seed)
        except ValueError:  # too few points to hold that many out: not the training data
            return False
    return splits.train.fingerprint() == stored


def write_per_sample(path, labels, result: CertificationResult) -> None:
    """One CSV row per sample: ``index, label, certified, margin, nominal_correct``; written
    atomically (:func:`~intervalnn.io.write_atomic`): a crash leaves the old file or the new."""
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(["index", "label", "certified", "margin", "nominal_correct"])
    rows = zip(labels, result.certified, result.margin, result.nominal_correct, strict=True)
    for i, (yy, c, m, ok) in enumerate(rows):
        writer.writerow([i, int(yy), int(c), repr(float(m)), int(ok)])
    write_atomic(path, text.getvalue().encode())


def history_csv(history: list[dict]) -> bytes:
    """The history rows as CSV: the usual columns first, then any others in order of first
    appearance; an empty cell for a value a row lacks (or null), floats written exactly."""
    columns = [c for c in HISTORY_COLUMNS if any(c in r for r in history)] or list(HISTORY_COLUMNS)
    for row in history:
        columns += [k for k in row if k not in columns]
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in history:
        cells = []
        for c in columns:
            v = row.get(c)
            cells.append("" if v is None else repr(float(v)) if isinstance(v, float) else v)
        writer.writerow(cells)
    return text.getvalue().encode()


def model_info(model_path) -> dict:
    """What a model file holds, after checking it (architecture, threat model, training)."""
    model, meta = load_model(model_path)
    arch = describe(model)
    params = model.named_params()
    mean_width, max_width = parameter_widths(model.named_params(trainable=True))  # frozen: 0
    threat = meta["threat_model"]
    dataset, config = meta.get("dataset", {}), meta.get("config", {})
    trusted = dataset.get("trusted") or 0
    return {
        "model": str(model_path),
        "architecture": repr(model),
        "arch": arch,  # what --arch takes
        "frozen": describe_frozen(arch, model.frozen),
        "dtype": meta["dtype"],
        "parameters": int(sum(p.size for p in params.values())),
        "threat": describe_threat(threat, dataset.get("train_size"), trusted),
        "training_epsilon": threat.epsilon,
        "inference_epsilon": threat.inference_epsilon,
        "domain": threat.domain,
        "poison_count": threat.poison_count,
        "train_size": dataset.get("train_size"),
        "label_flips": threat.label_flips,
        "label_target": threat.label_target,
        "paired": threat.paired,
        "trusted": trusted,
        "training_rules": describe_rules(config),
        "rules": {k: config.get(k, v) for k, v in _RULES.items()},
        "dataset": dataset,
        "config": config,
        "best": meta.get("best", {}),
        "history_rows": len(meta.get("history", [])),
        "history": meta.get("history", []),
        "mean_parameter_width": mean_width,
        "max_parameter_width": max_width,
        "library_version": meta["library_version"],
        "format_version": meta["format_version"],
        "checks": "SHA-256 ok; shapes, ordering and nominal-inside-box ok",
    }
