"""What the CLI commands do, kept apart from option parsing (``cli/__init__.py``)."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

from intervalnn.backend import get_backend
from intervalnn.certify import certify
from intervalnn.datasets import DataError, load_dataset
from intervalnn.io import load_model, model_file_bytes, write_atomic
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train


def _load(dataset: str, data_dir, seed: int, pretrain_size: int = 0):
    if data_dir is not None:
        d = Path(data_dir)
        if not d.exists():
            raise DataError(f"data directory {d} does not exist: check --data-dir")
        if not d.is_dir():
            raise DataError(f"--data-dir {d} is a file, not a directory: pass its directory")
        if not os.access(d, os.R_OK | os.X_OK):
            raise DataError(
                f"data directory {d} is not readable (permission denied): fix its "
                "permissions or copy the files elsewhere"
            )
    elif dataset.strip().lower().startswith("mnist") and not os.environ.get("INTERVALNN_MNIST_DIR"):
        raise DataError(
            f"--dataset {dataset} needs --data-dir DIR, a directory with the four MNIST IDX "
            "files (or set INTERVALNN_MNIST_DIR)"
        )
    kw = {"n_pretrain": pretrain_size} if pretrain_size else {}
    return load_dataset(dataset, data_dir=data_dir, seed=seed, **kw)


def _backend(device: str):
    """The backend for ``--device``; for ``gpu``, fail early and clearly without CuPy / a GPU."""
    if device != "gpu":
        return get_backend("numpy")
    try:
        import cupy
    except ImportError:
        raise RuntimeError(
            "--device gpu needs CuPy, which is not installed: pip install 'intervalnn[gpu]' "
            "(CUDA 12), or use --device cpu"
        ) from None
    try:
        count = int(cupy.cuda.runtime.getDeviceCount())
        reason = "no CUDA device"
    except Exception as exc:  # CUDA driver or runtime missing or broken
        count, reason = 0, f"{type(exc).__name__}: {exc}"
    if count < 1:
        raise RuntimeError(
            f"--device gpu found CuPy but no usable CUDA GPU ({reason}); check the driver "
            "with nvidia-smi, or use --device cpu"
        )
    return get_backend("cupy")


def model_classes(model) -> int:
    """How many classes ``model`` tells apart (one logit means two classes)."""
    return 2 if model.out_features == 1 else model.out_features


def load_model_and_data(model_path, dataset, data_dir, seed, device="cpu"):
    """A saved model, its metadata and matching data :class:`Splits`.

    ``dataset`` and ``seed`` default to the ones the model was trained with;
    the data must have the model's number of features and no label the
    model cannot predict (``DataError`` otherwise).
    """
    model, meta = load_model(model_path, backend=_backend(device).name)
    trained_on = meta.get("dataset", {})
    dataset = dataset or trained_on.get("name")
    if dataset is None:
        raise ValueError(f"{model_path} names no data set: pass --dataset")
    seed = trained_on.get("seed", 0) if seed is None else seed
    splits = _load(dataset, data_dir, seed)
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


def _progress(total: int, quiet: bool):
    """A progress bar showing the live certified validation accuracy (none when quiet)."""
    if quiet:
        return contextlib.nullcontext(None)

    def show(row):
        acc = None if row is None else row.get("val_certified_accuracy")
        return None if acc is None else f"val certified {acc:.1%}"

    return click.progressbar(
        length=total, label="certified training", item_show_func=show, file=sys.stderr
    )


def setup_training(
    *,
    dataset,
    data_dir,
    epsilon,
    inference_epsilon,
    epochs,
    learning_rate,
    schedule,
    batch_size,
    hidden,
    layers,
    loss,
    seed,
    pretrain_epochs,
    pretrain_size,
    pretrain_learning_rate,
    dtype,
    device,
    **config_extra,
):
    """Backend, data splits, threat model, config and initial model from the training options.

    Shared by ``intervalnn train`` and ``intervalnn audit-training``.
    """
    backend = _backend(device)  # fails early and clearly without CuPy / a GPU
    splits = _load(dataset, data_dir, seed, pretrain_size)
    if loss == "bce" and splits.num_classes != 2:
        raise ValueError(
            f"--loss bce needs 2 classes, the data has {splits.num_classes}; use --loss ce"
        )
    threat = ThreatModel(epsilon, inference_epsilon, splits.domain)
    config = TrainConfig(
        epochs=epochs,
        learning_rate=learning_rate,
        batch_size=batch_size,
        schedule=schedule,
        seed=seed,
        loss=loss,
        pretrain_epochs=pretrain_epochs,
        pretrain_learning_rate=pretrain_learning_rate,
        **config_extra,
    )
    n_out = 1 if loss == "bce" else splits.num_classes
    model = mlp(
        splits.num_features,
        n_out,
        hidden=hidden,
        layers=layers,
        seed=seed,
        dtype=np.dtype(dtype),
        backend=backend.name,
    )
    return backend, splits, threat, config, model


def train_and_certify(*, quiet=True, validate_every, **options) -> tuple[dict, bytes]:
    """Certified training with the options of ``intervalnn train``, then test certification.

    Returns the summary and the model file's bytes (written by the caller:
    ``intervalnn train`` to ``--output``, ``intervalnn sweep`` on the client).
    ``options`` are the training options of :func:`setup_training`.
    """
    backend, splits, threat, config, model = setup_training(
        validate_every=validate_every, **options
    )
    steps_per_epoch = -(-len(splits.train) // config.batch_size)
    total = config.epochs * steps_per_epoch if validate_every == "step" else config.epochs
    pretrain = (
        (splits.pretrain.x, splits.pretrain.y) if splits.pretrain is not None else (None, None)
    )

    t0 = time.perf_counter()
    with _progress(total + 1, quiet) as bar:
        result = train(
            model,
            splits.train.x,
            splits.train.y,
            threat,
            config,
            splits.val.x,
            splits.val.y,
            *pretrain,
            progress=None if bar is None else lambda row: bar.update(1, row),
        )
    seconds = time.perf_counter() - t0
    test = certify(result.model, splits.test.x, splits.test.y, threat)
    params = result.model.named_params()
    widths = np.concatenate([backend.to_host(p.width).ravel() for p in params.values()])
    data = model_file_bytes(
        result.model,
        threat,
        config=config.to_dict(),
        dataset={
            "name": options["dataset"],
            "seed": config.seed,
            "train": splits.train.fingerprint(),
            "num_features": splits.num_features,
            "num_classes": splits.num_classes,
        },
        history=result.history,
        best=result.best,
    )
    summary = {
        "dataset": options["dataset"],
        "epsilon": threat.epsilon,
        "inference_epsilon": threat.inference_epsilon,
        "certified_accuracy": test.certified_accuracy,
        "accuracy": test.nominal_accuracy,
        "n": test.n,
        "best_step": result.best.get("step"),
        "val_certified_accuracy": result.best.get("val_certified_accuracy"),
        "steps": result.history[-1]["step"] if result.history else 0,
        "mean_parameter_width": float(widths.mean()),
        "max_parameter_width": float(widths.max()),
        "seconds": seconds,
    }
    if result.stopped:
        summary["stopped"] = result.stopped
    return summary, data


def run_train(*, output, **options) -> dict:
    """``intervalnn train``: :func:`train_and_certify`, and the model written to ``output``."""
    summary, data = train_and_certify(**options)
    write_atomic(output, data)
    return {"model": str(output), **summary}


def run_certify(
    *,
    model_path,
    dataset,
    data_dir,
    epsilon,
    split,
    seed,
    device,
    per_sample,
    workers=None,
    scheduler=None,
) -> dict:
    """``intervalnn certify``; on Dask workers with ``workers`` or ``scheduler``."""
    if workers or scheduler:
        from .cluster import require_dask

        require_dask("intervalnn certify --workers/--scheduler")
    model, meta, dataset, splits = load_model_and_data(model_path, dataset, data_dir, seed, device)
    data = getattr(splits, split)
    stored = meta["threat_model"]
    threat = ThreatModel(
        stored.epsilon, stored.inference_epsilon if epsilon is None else epsilon, stored.domain
    )
    if workers or scheduler:
        from .cluster import certify_on_dask

        result = certify_on_dask(
            model, data.x, data.y, threat, workers=workers, scheduler=scheduler
        )
    else:
        result = certify(model, data.x, data.y, threat)
    if per_sample:
        try:
            with open(per_sample, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["index", "label", "certified", "margin", "nominal_correct"])
                rows = zip(
                    data.y, result.certified, result.margin, result.nominal_correct, strict=True
                )
                for i, (yy, c, m, ok) in enumerate(rows):
                    writer.writerow([i, int(yy), int(c), repr(float(m)), int(ok)])
        except OSError as exc:
            raise OSError(f"cannot write --per-sample file {per_sample}: {exc.strerror}") from None
    return {
        **result.summary(),
        "split": split,
        "dataset": dataset,
        "model": str(model_path),
        "training_epsilon": stored.epsilon,
    }


def run_info(*, model_path) -> dict:
    model, meta = load_model(model_path)
    params = model.named_params()
    widths = np.concatenate([p.width.ravel() for p in params.values()])
    threat = meta["threat_model"]
    return {
        "model": str(model_path),
        "architecture": repr(model),
        "dtype": meta["dtype"],
        "parameters": int(sum(p.size for p in params.values())),
        "training_epsilon": threat.epsilon,
        "inference_epsilon": threat.inference_epsilon,
        "domain": threat.domain,
        "dataset": meta.get("dataset", {}),
        "config": meta.get("config", {}),
        "best": meta.get("best", {}),
        "history_rows": len(meta.get("history", [])),
        "mean_parameter_width": float(widths.mean()),
        "max_parameter_width": float(widths.max()),
        "library_version": meta["library_version"],
        "format_version": meta["format_version"],
        "checks": "SHA-256 ok; shapes, ordering and nominal-inside-box ok",
    }
