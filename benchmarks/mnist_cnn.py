"""Full MNIST, a CNN: certified fine-tuning of the Linear head of a pretrained network (issue 14).

    python benchmarks/mnist_cnn.py [--features pretrained,random] [--rows fullcert,kofn,flip]
        [--epsilons 0.001,0.01] [--ks 10,100,1000] [--seed 0] [--json OUT]
        [--weights PRETRAINED.safetensors] [--save-weights OUT.safetensors]
    python benchmarks/mnist_cnn.py --speed [--repeats 5]

The realistic setting, through the public library API only:

1. ``load_dataset("mnist", n_pretrain=N)``: all 10 digits, ``N`` clean training
   images held out as the *trusted* pretraining split, the rest (minus 5,000
   for validation) the training set an attacker may poison;
2. ``architecture.build(ARCH, 784, frozen=FREEZE)``: two conv + max-pool blocks,
   then the Linear head ``linear(64)-relu-linear(10)``; the first ``FREEZE`` layers
   (the convolutional feature extractor, up to its Flatten) are frozen;
3. features ``pretrained``: ``train.pretrain_nominal`` (plain SGD of the nominal
   model, every layer) on the trusted split, ``--pretrain-epochs`` at
   ``--pretrain-rate`` then 2 epochs at a fifth of it; ``random``: the feature extractor
   keeps its random initialisation and only the head is pretrained on the trusted
   split (the baseline that shows what pretrained features buy);
4. certified training of the head (``train``, the frozen prefix's feature boxes
   computed once by the engine) on the training set.  FullCert: one epoch at
   batch ``--fullcert-batch`` with one rate per epsilon, validated after every
   step, keeping the step with the best certified validation accuracy after
   step 1 (``min_step = 1``: the pretrained point box never counts; training
   stops after ``--fullcert-patience`` validations in a row certify nothing).
   k-of-n and flips: exactly ``--max-steps`` steps (``TrainConfig(steps=N)``, no
   model selection) at batch ``--batch``, rate ``--rate``, clamp clipping ``--clip``;
5. ``certify`` on the 10,000 TEST images.

Rows (``domain = (0, 1)``; certified against training-time poisoning, test epsilon 0,
and for FullCert also with the same epsilon at test time):

* ``fullcert``: FullCert's threat model: every pixel of every training image moved
  by at most ``epsilon`` (``--epsilons``);
* ``kofn``: ``k`` training images replaced by anything (``epsilon = inf``, no
  bound on the moved features at all: per-sample clamp clipping at ``--clip``);
* ``flip``: ``k`` training labels flipped to any other class (clamp clipping too).

``--speed`` times, interleaved (one call of each in turn, ``--repeats`` rounds
after a warm-up), medians: (1) the interval Conv2d forward + backward against
the same layer's nominal model (a plain NumPy im2col convolution of the same
shapes) and against PyTorch's conv2d where torch is installed, for both
convolutions of ARCH at batch 100; (2) one epoch of certified fine-tuning of the
head on cached features (FullCert, fused engine; and k-of-n) against plain
NumPy SGD of the head alone on the same features and batches, and the one-time
cost of the prefix's feature boxes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from fractions import Fraction

import numpy as np

from intervalnn.architecture import build
from intervalnn.certify import certify
from intervalnn.datasets import load_dataset
from intervalnn.engine import make_engine
from intervalnn.interval import Interval
from intervalnn.layers import Sequential
from intervalnn.poisoning import Clipping, Poisoning
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, batch_indices, pretrain_nominal, train
from intervalnn.weights import load_weights, save_weights

ARCH = (
    "unflatten(1,28,28)-conv(8,5)-relu-maxpool(2)-conv(16,5)-relu-maxpool(2)-flatten"
    "-linear(64)-relu-linear(10)"
)
FREEZE = 8  # up to and including the Flatten
DOMAIN = (0.0, 1.0)
DEFAULT_DIR = "../shared/data/mnist"


def threat_for(row: str, value) -> ThreatModel:
    if row == "fullcert":
        return ThreatModel(value, 0.0, DOMAIN)
    if row == "kofn":
        return ThreatModel(math.inf, 0.0, poison_count=value)
    if row == "flip":
        return ThreatModel(0.0, 0.0, DOMAIN, label_flips=value)
    raise ValueError(f"unknown row {row!r}")


def config_for(row: str, value, args) -> TrainConfig:
    common = dict(seed=args.seed, loss="ce", validate_every="step", min_step=1)
    if row == "fullcert":
        rate = dict(zip(args.epsilons, args.fullcert_rates, strict=True))[value]
        return TrainConfig(
            learning_rate=rate, batch_size=args.fullcert_batch, epochs=1,
            patience=args.fullcert_patience, **common,
        )  # fmt: skip
    return TrainConfig(
        learning_rate=args.rate, batch_size=args.batch, steps=args.max_steps, clip=args.clip,
        **common,
    )  # fmt: skip


def pretrained_model(splits, features: str, args) -> Sequential:
    """The model after clean pretraining on the trusted split (``features``: see the docstring)."""
    model = build(ARCH, splits.num_features, seed=args.seed, frozen=FREEZE)
    schedule = ((args.pretrain_epochs, args.pretrain_rate), (2, args.pretrain_rate / 5))
    phases = [
        TrainConfig(
            batch_size=args.pretrain_batch,
            loss="ce",
            pretrain_epochs=epochs,
            pretrain_learning_rate=rate,
        )  # fmt: skip
        for epochs, rate in schedule
    ]
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    if features == "pretrained":
        if args.weights:
            load_weights(model, args.weights)
        else:
            for cfg in phases:
                pretrain_nominal(model, splits.pretrain.x, splits.pretrain.y, cfg, rng)
            if args.save_weights:
                save_weights(model, args.save_weights)
    else:  # random features: only the head learns, on the frozen random prefix's outputs
        prefix, head = model.split()
        x = prefix.forward_nominal(splits.pretrain.x.astype(model.dtype))
        for cfg in phases:
            pretrain_nominal(head, x, splits.pretrain.y, cfg, rng)
    print(f"# {features} features ready in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return model


def run_cell(model: Sequential, start, splits, row: str, value, args) -> dict:
    model.load(*start)
    threat = threat_for(row, value)
    t0 = time.perf_counter()
    result = train(
        model, splits.train.x, splits.train.y, threat, config_for(row, value, args),
        splits.val.x, splits.val.y,
    )  # fmt: skip
    te = splits.test
    cert = certify(model, te.x, te.y, threat)
    kept = result.best.get("step", f"{args.max_steps} (fixed)")
    cell = {
        "row": row, "value": value, "certified": cert.certified_accuracy,
        "nominal": cert.nominal_accuracy, "kept_step": kept,
        "stopped": result.stopped, "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    if row == "fullcert":  # the same epsilon at test time too
        both = ThreatModel(value, value, DOMAIN)
        cell["certified_test_eps"] = certify(model, te.x, te.y, both).certified_accuracy
    print(json.dumps(cell), file=sys.stderr)
    return cell


def accuracy_tables(args) -> None:
    splits = load_dataset(
        "mnist", data_dir=args.data_dir, seed=args.seed, n_pretrain=args.n_pretrain
    )
    cells = []
    for features in args.features:
        model = pretrained_model(splits, features, args)
        start = ({k: Interval(v) for k, v in model.named_nominal().items()}, model.named_nominal())
        for row in args.rows:
            values = args.epsilons if row == "fullcert" else args.ks
            for value in values:
                cell = run_cell(model, start, splits, row, value, args)
                cells.append({"features": features, **cell})
    print(f"\nFull MNIST, CNN `{ARCH}`, first {FREEZE} layers frozen, seed {args.seed}; "
          "certified / nominal test accuracy (%), test epsilon 0\n")  # fmt: skip
    print("| features | threat | certified | nominal | kept step |")
    print("|---|---|---|---|---|")
    for c in cells:
        what = {
            "fullcert": f"FullCert eps={c['value']}", "kofn": f"k={c['value']}, eps=inf (clamp)",
            "flip": f"k={c['value']} label flips",
        }[c["row"]]  # fmt: skip
        extra = (
            f" ({100 * c['certified_test_eps']:.2f} with test eps={c['value']})"
            if "certified_test_eps" in c
            else ""
        )
        print(
            f"| {c['features']} | {what} | {100 * c['certified']:.2f}{extra} | "
            f"{100 * c['nominal']:.2f} | {c['kept_step']} |"
        )
    if args.json:
        with open(args.json, "x") as f:  # never overwrite
            json.dump({"args": vars(args), "cells": cells}, f, indent=1)


# ---------------------------------------------------------------- speed
def _interleaved(calls: dict, repeats: int) -> dict:
    times = {name: [] for name in calls}
    for fn in calls.values():
        fn()  # warm-up (Numba compilation, BLAS threads)
    for _ in range(repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def _numpy_head_sgd(weights, x, y, batches, rate: float) -> None:
    """Plain NumPy SGD of the head ``linear-relu-linear`` with softmax cross-entropy."""
    w1, b1, w2, b2 = (a.copy() for a in weights)
    for idx in batches:
        xb, yb = x[idx], y[idx]
        h = xb @ w1 + b1
        a = np.maximum(h, 0)
        z = a @ w2 + b2
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(idx)), yb] -= 1
        g = p / len(idx)
        gw2, gb2 = a.T @ g, g.sum(axis=0)
        gh = (g @ w2.T) * (h > 0)
        gw1, gb1 = xb.T @ gh, gh.sum(axis=0)
        w1 -= rate * gw1
        b1 -= rate * gb1
        w2 -= rate * gw2
        b2 -= rate * gb2


def speed(args) -> None:
    rng = np.random.default_rng(0)
    model = build(ARCH, 784, seed=0, frozen=FREEZE)
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:
        torch = None
    print("| what | interval | plain NumPy | ratio | PyTorch | ratio to PyTorch |")
    print("|---|---|---|---|---|---|")
    shape = (1, 28, 28)
    batch = 100
    for layer in model.layers[1:FREEZE]:
        out = layer.output_shape(shape)
        if type(layer).__name__ == "Conv2d":
            x = rng.uniform(0, 1, size=(batch, *shape))
            box = Interval(x - 1e-3, x + 1e-3)
            g = rng.normal(size=(batch, *out)) * 1e-3
            gbox = Interval(g - 1e-6, g + 1e-6)

            def interval_step(layer=layer, box=box, gbox=gbox):
                layer.forward(box)
                layer.backward(gbox)

            def numpy_step(layer=layer, x=x, g=g):
                layer.forward_nominal(x)
                layer.backward_nominal(g)

            calls = {"interval": interval_step, "numpy": numpy_step}
            if torch is not None:
                tx = torch.tensor(x, requires_grad=True)
                tw = torch.tensor(layer.nominal["weight"], requires_grad=True)
                tb = torch.tensor(layer.nominal["bias"], requires_grad=True)
                tg = torch.tensor(g)

                def torch_step(tx=tx, tw=tw, tb=tb, tg=tg, layer=layer):
                    out = torch.nn.functional.conv2d(tx, tw, tb, layer.stride, layer.padding)
                    out.backward(tg)

                calls["torch"] = torch_step
            t = _interleaved(calls, args.repeats)
            pt = t.get("torch")
            print(
                f"| {layer!r} fwd+bwd, batch {batch}, input {shape} | {t['interval']:.4f} s | "
                f"{t['numpy']:.4f} s | {t['interval'] / t['numpy']:.1f}x | "
                + (f"{pt:.4f} s | {t['interval'] / pt:.1f}x |" if pt else "- | - |")
            )
        shape = out

    splits = load_dataset("mnist", data_dir=args.data_dir, seed=0, n_pretrain=args.n_pretrain)
    x, y = splits.train.x, splits.train.y
    threat = ThreatModel(1e-3, 0.0, DOMAIN)
    box = threat.train_box(x, model.dtype)
    xs = x.astype(model.dtype)
    t0 = time.perf_counter()
    engine = make_engine(model, "ce", box, xs, y, args.batch_speed)
    once = time.perf_counter() - t0
    features = engine.nominal_features(xs)
    head = model.split()[1]
    weights = [head.layers[0].nominal["weight"], head.layers[0].nominal["bias"]]
    weights += [head.layers[2].nominal["weight"], head.layers[2].nominal["bias"]]
    kofn = make_engine(
        model, "ce", box, xs, y, args.batch_speed, True,
        Poisoning(ThreatModel(math.inf, 0.0, poison_count=100), x.shape[0], None, Clipping(0.01)),
    )  # fmt: skip
    order = batch_indices(x.shape[0], args.batch_speed, np.random.default_rng(0))

    def epoch(e):
        return lambda: [e.step(idx, Fraction(1, 100)) for idx in order]

    t = _interleaved(
        {
            "fullcert": epoch(engine),
            "kofn": epoch(kofn),
            "numpy": lambda: _numpy_head_sgd(weights, features, y, order, 0.01),
        },
        max(1, args.repeats // 2),
    )
    n = x.shape[0]
    print(
        f"| fine-tuning epoch of the head, {n} images, batch {args.batch_speed}, FullCert "
        f"({engine.name}) | {t['fullcert']:.2f} s | {t['numpy']:.2f} s | "
        f"{t['fullcert'] / t['numpy']:.1f}x | | |"
    )
    print(
        f"| the same, k-of-n (k=100, eps=inf, clamp 0.01; {kofn.name}) | {t['kofn']:.2f} s | "
        f"{t['numpy']:.2f} s | {t['kofn'] / t['numpy']:.1f}x | | |"
    )
    what = "one-time feature boxes and nominal features of the frozen prefix"
    print(f"| {what} | {once:.1f} s | | | | |")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", default=DEFAULT_DIR)
    p.add_argument("--features", default="pretrained,random")
    p.add_argument("--rows", default="fullcert,kofn,flip")
    p.add_argument("--epsilons", default="0.001,0.01")
    p.add_argument("--ks", default="10,100,1000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-pretrain", type=int, default=20000)
    p.add_argument("--pretrain-epochs", type=int, default=10)
    p.add_argument("--pretrain-rate", type=float, default=0.1)
    p.add_argument("--pretrain-batch", type=int, default=50)
    p.add_argument("--weights", help="pretrained weights (.safetensors) instead of pretraining")
    p.add_argument("--save-weights", help="write the pretrained weights here (never overwrites)")
    p.add_argument("--fullcert-rates", default="0.01,0.0001", help="one per --epsilons")
    p.add_argument("--fullcert-batch", type=int, default=1000)
    p.add_argument("--fullcert-patience", type=int, default=3)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--clip", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--json")
    p.add_argument("--speed", action="store_true")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batch-speed", type=int, default=100)
    args = p.parse_args(argv)
    args.features = args.features.split(",")
    args.rows = args.rows.split(",")
    args.epsilons = [float(v) for v in args.epsilons.split(",")]
    args.ks = [int(v) for v in args.ks.split(",")]
    args.fullcert_rates = [float(v) for v in args.fullcert_rates.split(",")]
    if args.speed:
        speed(args)
    else:
        accuracy_tables(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
