"""Shared runner for the paper reproductions (FullCert, GCPR 2024), on the CPU.

Every script here prints a Markdown table of mean +- std over seeds next to
the paper's number and writes the raw runs as JSON lines next to itself
(``results/<script>.jsonl``).  Learning rates are in this library's
mean-loss convention; the paper's (BoundFlow's) rates are ``m`` times larger
(``m`` = batch size), see intervalnn/losses.py.

Each run is a :class:`intervalnn.experiment.RunSpec` made ready by
:func:`intervalnn.experiment.prepare` (data, threat model, initial model,
training configuration, exactly as ``intervalnn train`` builds them); the
paper's protocol of model selection (below) is this module's own.

Hyper-parameters are chosen on the **validation** split only: within one run
:func:`run` keeps the step (``>= 1``) with the best certified validation
accuracy, and :func:`select` runs a grid of configurations and marks, per
seed, the one with the best certified validation accuracy (and, over all
seeds, the one with the best mean).  Test accuracy is computed once per run,
for the model validation picked, and feeds no choice.  See
RESULTS_PAPER.md for the protocol and the results.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path

import numpy as np

import intervalnn as inn
from intervalnn.certify import certify
from intervalnn.engine import parameter_widths
from intervalnn.experiment import (
    DataSpec,
    ModelSpec,
    RunSpec,
    ThreatSpec,
    TrainingSpec,
    load_splits,
    prepare,
)
from intervalnn.interval import Interval
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import pretrain_nominal, train

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MNIST_DIR = Path(os.environ.get("INTERVALNN_MNIST", HERE.parents[2] / "shared" / "data" / "mnist"))

_MNIST_CACHE: dict = {}
_PRETRAINED: dict = {}


def _git_commit() -> str | None:
    """The library's commit, with ``+dirty`` when its files differ from it."""
    root = HERE.parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "intervalnn", "kernels"],
            cwd=root,
            capture_output=True,
            text=True,
        ).stdout.strip()
    except OSError:
        return None
    return (head + ("+dirty" if dirty else "")) or None


COMMIT = _git_commit()


def mnist_available() -> bool:
    names = ("train-images-idx3-ubyte", "t10k-images-idx3-ubyte")
    return all((MNIST_DIR / n).exists() or (MNIST_DIR / f"{n}.gz").exists() for n in names)


def _data(dataset: str, pretrain_size: int) -> DataSpec:
    if dataset not in ("moons", "mnist17"):
        raise ValueError(f"unknown dataset {dataset!r}; use 'moons' or 'mnist17'")
    data_dir = str(MNIST_DIR) if dataset == "mnist17" else None
    return DataSpec(dataset, data_dir=data_dir, pretrain_size=pretrain_size)


def _splits(dataset: str, seed: int, pretrain_size: int):
    data = _data(dataset, pretrain_size)
    if dataset == "moons":
        return load_splits(data, seed)
    key = (seed, pretrain_size)
    if key not in _MNIST_CACHE:  # reading and checksumming MNIST takes ~1 s
        _MNIST_CACHE.clear()
        _MNIST_CACHE[key] = load_splits(data, seed)
    return _MNIST_CACHE[key]


#: The Two-Moons hyper-parameter grid (128 entries) searched per seed on certified
#: validation accuracy: batch size, rate (mean-loss convention), schedule, and
#: loss (BCE on one logit: 2-h-1; or cross-entropy on two logits: 2-h-2).
MOONS_GRID = [
    {"batch_size": b, "learning_rate": lr, "schedule": s, "loss": loss}
    for b in (50, 100, 200, None)
    for lr in (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    for s in ("constant", "1/t")
    for loss in ("bce", "ce")
]
QUICK_GRID = [{"batch_size": 100, "learning_rate": 1.0, "schedule": "constant", "loss": "bce"}]


def without(grid: list[dict], key: str) -> list[dict]:
    """``grid`` with ``key`` dropped, duplicates removed (order kept)."""
    out: list[dict] = []
    for g in grid:
        d = {k: v for k, v in g.items() if k != key}
        if d not in out:
            out.append(d)
    return out


def auto_epochs(n_train: int, batch_size: int | None, min_epochs=10, min_steps=100) -> int:
    """At least ``min_epochs`` epochs and ``min_steps`` SGD steps."""
    per_epoch = 1 if batch_size is None else -(-n_train // batch_size)
    return max(min_epochs, -(-min_steps // per_epoch))


class _EarlyStop(Exception):
    pass


def run(
    dataset="moons",
    epsilon=1e-3,
    seed=0,
    learning_rate=0.5,
    batch_size=100,
    hidden=20,
    layers=2,
    epochs=None,
    loss="bce",
    schedule="constant",
    pretrain_size=0,
    pretrain_epochs=0,
    pretrain_learning_rate=0.5,
    validate_every="step",
    min_step=1,
    patience=5,
    stale=None,
    domain="data",
    init_seed=None,
    max_train=None,
    max_eval=None,
) -> dict:
    """Train and certify once; returns the configuration with its metrics.

    Model selection: the parameter box of the step ``>= min_step`` with the
    best certified validation accuracy (first on ties), validated after every
    step or every epoch (``validate_every``).  ``min_step=1`` (default) never
    returns the untrained (or only clean-pretrained) model: every reported
    model has had at least one certified training step on the poisonable
    training set.  The certified accuracy of the model before certified
    training (step 0) is reported separately (``start_*``).

    Training stops early once ``patience`` validations in a row certify
    nothing (widths only grow; ``patience=0`` never stops early), or, with
    ``stale``, once ``stale`` validations in a row found no new best.
    ``epochs=None`` is :func:`auto_epochs`.  ``batch_size=None`` is full
    batch (one step per epoch; pretraining then uses the whole pretraining
    set as one batch).  ``domain="data"`` clips the
    eps-boxes to the data set's domain (``[0, 1]`` for MNIST, nothing for
    Two-Moons); ``None`` never clips.  ``init_seed`` (default ``seed``) seeds
    the weights.  ``max_train``/``max_eval`` keep the first rows of the
    training and of the validation/test splits (smoke tests only).
    """
    if validate_every not in ("step", "epoch"):
        raise ValueError("validate_every must be 'step' or 'epoch'")
    t0 = time.perf_counter()
    sp = _splits(dataset, seed, pretrain_size)
    tr_x, tr_y = sp.train.x[:max_train], sp.train.y[:max_train]
    va_x, va_y = sp.val.x[:max_eval], sp.val.y[:max_eval]
    te_x, te_y = sp.test.x[:max_eval], sp.test.y[:max_eval]
    m = len(tr_y) if batch_size is None else batch_size
    if epochs is None:
        epochs = auto_epochs(len(tr_y), batch_size)
    spec = RunSpec(
        data=_data(dataset, pretrain_size),
        threat=ThreatSpec(epsilon),
        model=ModelSpec(hidden, layers),
        # train() gets no validation data: the selection protocol is on_step's, below
        training=TrainingSpec(
            epochs=epochs,
            learning_rate=learning_rate,
            schedule=schedule,
            batch_size=m,
            loss=loss,
            validate_every="epoch",
            pretrain_epochs=pretrain_epochs,
            pretrain_learning_rate=pretrain_learning_rate,
        ),
        seed=seed,
    )
    prepared = prepare(spec, splits=sp)
    model, threat, cfg = prepared.model, prepared.threat, prepared.config
    dom = sp.domain if domain == "data" else domain
    if dom != sp.domain:
        threat = ThreatModel(epsilon, domain=dom)
    init = seed if init_seed is None else init_seed
    if init != seed:
        model = mlp(sp.num_features, model.out_features, hidden=hidden, layers=layers, seed=init)
    if pretrain_epochs and sp.pretrain is not None:
        # Clean SGD of the nominal model on the pretraining set; the box becomes
        # the point box at the pretrained model.  Deterministic, so cached
        # across the grid entries that share it.
        n_pre = len(sp.pretrain.y)
        pre_batch = min(batch_size or n_pre, n_pre)
        key = (dataset, seed, init, pretrain_size, pretrain_epochs, pretrain_learning_rate)
        key += (pre_batch, loss, hidden, layers)
        if key not in _PRETRAINED:
            pre_cfg = replace(cfg, batch_size=pre_batch)
            rng = np.random.default_rng(seed)
            pretrain_nominal(model, sp.pretrain.x, sp.pretrain.y, pre_cfg, rng)
            if len(_PRETRAINED) > 64:
                _PRETRAINED.clear()
            _PRETRAINED[key] = {k: v.copy() for k, v in model.named_nominal().items()}
        nominal = {k: v.copy() for k, v in _PRETRAINED[key].items()}
        model.load({k: Interval(v.copy()) for k, v in nominal.items()}, nominal)
    start_val = certify(model, va_x, va_y, threat)
    start_test = certify(model, te_x, te_y, threat)

    steps_per_epoch = -(-len(tr_y) // m)
    best = {"val": -1.0, "step": None}
    state = {"steps": 0, "zeros": 0, "stale": 0}

    def on_step(step: int, params: dict, nominal: dict) -> None:
        state["steps"] = step
        if step < min_step or (validate_every == "epoch" and step % steps_per_epoch):
            return
        model.load(params, nominal)  # the fused path keeps the parameters off the model
        cert = certify(model, va_x, va_y, threat)
        state["stale"] += 1
        if cert.certified_accuracy > best["val"]:
            state["stale"] = 0
            best.update(
                val=cert.certified_accuracy,
                val_accuracy=cert.nominal_accuracy,
                step=step,
                params=params,
                nominal=dict(nominal),
            )
        state["zeros"] = state["zeros"] + 1 if cert.certified_accuracy == 0 else 0
        if patience and state["zeros"] >= patience:
            raise _EarlyStop(f"nothing certified on validation for {patience} validations")
        if stale and state["stale"] >= stale:
            raise _EarlyStop(f"no better certified validation accuracy for {stale} validations")

    stopped = None
    with np.errstate(over="ignore", invalid="ignore"):  # widths may overflow: training stops
        try:
            res = train(model, tr_x, tr_y, threat, replace(cfg, pretrain_epochs=0), on_step=on_step)
            stopped = res.stopped
        except _EarlyStop as e:
            stopped = f"early stop: {e}"
    if best["step"] is not None:
        model.load(best["params"], best["nominal"])
        cert = certify(model, te_x, te_y, threat)
        width_mean, width_max = parameter_widths(best["params"])
    else:  # no step >= min_step finished: nothing to report
        cert, width_mean, width_max = None, float("nan"), float("nan")
    return {
        "dataset": dataset,
        "epsilon": epsilon,
        "seed": seed,
        "init_seed": init,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "hidden": hidden,
        "layers": layers,
        "epochs": epochs,
        "loss": loss,
        "schedule": schedule,
        "pretrain_size": pretrain_size,
        "pretrain_epochs": pretrain_epochs,
        "pretrain_learning_rate": pretrain_learning_rate if pretrain_epochs else None,
        "domain": list(dom) if dom is not None else None,
        "validate_every": validate_every,
        "min_step": min_step,
        "n_train": len(tr_y),
        "steps": state["steps"],
        "certified_accuracy": cert.certified_accuracy if cert else 0.0,
        "accuracy": cert.nominal_accuracy if cert else float("nan"),
        "val_certified_accuracy": max(best["val"], 0.0),
        "val_accuracy": best.get("val_accuracy", float("nan")),
        "best_step": best["step"],
        "best_mean_width": width_mean,
        "best_max_width": width_max,
        "start_certified_accuracy": start_test.certified_accuracy,
        "start_accuracy": start_test.nominal_accuracy,
        "start_val_certified_accuracy": start_val.certified_accuracy,
        "stopped": stopped,
        "seconds": time.perf_counter() - t0,
        "version": inn.__version__,
        "commit": COMMIT,
    }


def run_seeds(seeds: Iterable[int], log: Callable[[str], None] | None = None, **kw) -> list[dict]:
    rows = []
    for s in seeds:
        r = run(seed=s, **kw)
        rows.append(r)
        if log is not None:
            log(
                f"  seed {s}: cert test {100 * r['certified_accuracy']:.1f} "
                f"val {100 * r['val_certified_accuracy']:.1f} step {r['best_step']} "
                f"({r['seconds']:.1f} s)"
            )
    return rows


def select(
    grid: list[dict],
    seeds: Iterable[int],
    log: Callable[[str], None] | None = None,
    **fixed,
) -> list[dict]:
    """Run every configuration of ``grid`` (merged into ``fixed``) on every seed.

    Each row is tagged with ``candidate`` (its index in ``grid``) and two
    validation-only choices:

    * ``selected``: per seed, the configuration with the best certified
      validation accuracy (first in ``grid`` on ties): each seed is one
      complete experiment, hyper-parameter search included;
    * ``selected_global``: the one configuration with the best *mean*
      certified validation accuracy over the seeds.
    """
    seeds = list(seeds)
    rows = []
    for i, cand in enumerate(grid):
        part = run_seeds(seeds, **fixed, **cand)
        for r in part:
            r["candidate"] = i
        rows.extend(part)
        if log is not None:
            val = statistics.mean(r["val_certified_accuracy"] for r in part)
            log(f"  {describe(cand)}: mean certified val {100 * val:.1f}")
    mean_val = [
        statistics.mean(r["val_certified_accuracy"] for r in rows if r["candidate"] == i)
        for i in range(len(grid))
    ]
    g = max(range(len(grid)), key=lambda i: (mean_val[i], -i))
    for s in seeds:
        mine = [r for r in rows if r["seed"] == s]
        b = max(mine, key=lambda r: (r["val_certified_accuracy"], -r["candidate"]))
        for r in mine:
            r["selected"] = r is b
            r["selected_global"] = r["candidate"] == g
    return rows


def describe(cfg: dict) -> str:
    """Short text for a configuration, e.g. ``batch full, lr 0.5, lr/t, BCE``."""
    parts = []
    for k, v in cfg.items():
        if k == "batch_size":
            parts.append(f"batch {'full' if v is None else v}")
        elif k == "learning_rate":
            parts.append(f"lr {v:g}")
        elif k == "schedule":
            parts.append("lr/t" if v == "1/t" else "const")
        elif k == "loss":
            parts.append(v.upper())
        else:
            parts.append(f"{k} {v}")
    return ", ".join(parts)


COLUMNS = [
    "ours: per-seed choice",
    "ours: one config for all seeds",
    "paper",
    "ours: nominal acc.",
    "best step, median (range)",
]


def header(*labels: str) -> str:
    """The Markdown header of a table whose rows end with :func:`row_cells`."""
    cols = [*labels, *COLUMNS]
    return "| " + " | ".join(cols) + " |\n" + "|---" * len(cols) + "|"


def row_cells(part: list[dict], grid: list[dict], paper: str) -> str:
    """The cells after the row labels, for :func:`header`."""
    mine, glob = picked(part), picked(part, "selected_global")
    steps = [r["best_step"] for r in mine]
    return (
        f"**{mean_std(r['certified_accuracy'] for r in mine)}** "
        f"| {mean_std(r['certified_accuracy'] for r in glob)} "
        f"({describe(grid[glob[0]['candidate']])}) | {paper} "
        f"| {mean_std(r['accuracy'] for r in mine)} "
        f"| {statistics.median(steps):g} ({min(steps)}-{max(steps)}) |"
    )


def picked(rows: list[dict], key: str = "selected") -> list[dict]:
    return [r for r in rows if r.get(key, True)]


def choice_summary(rows: list[dict], grid: list[dict]) -> str:
    """How often each grid entry was the per-seed choice, e.g. ``lr 1 ×3; lr 2 ×7``."""
    counts: dict[int, int] = {}
    for r in picked(rows):
        counts[r["candidate"]] = counts.get(r["candidate"], 0) + 1
    return "; ".join(f"{describe(grid[i])} ×{n}" for i, n in sorted(counts.items()))


def pct(values) -> list[float]:
    return [100 * v for v in values]


def mean_std(values) -> str:
    values = pct(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def parser(description: str, default_seeds: int = 10) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--seeds", type=int, default=default_seeds, help="seeds 0..N-1 (default %(default)s)"
    )
    p.add_argument("--quick", action="store_true", help="2 seeds and a minimal grid (smoke test)")
    p.add_argument("--no-save", action="store_true", help="do not write results/*.jsonl")
    return p


def command() -> str:
    rel = Path(sys.argv[0]).resolve()
    try:
        rel = rel.relative_to(HERE.parents[1])
    except ValueError:
        pass
    return " ".join(["python", str(rel), *sys.argv[1:]])


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def save(name: str, rows: list[dict]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
