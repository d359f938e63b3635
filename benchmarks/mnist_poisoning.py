"""MNIST k-of-n poisoning: certified test accuracy against k (issue 13).

    python benchmarks/mnist_poisoning.py --dataset mnist17|mnist [--seeds 3] [--first-seed 0]
        [--rows eps0.1,inf-clamp,inf-norm,flip] [--ks 1,10,100,1000] [--json OUT]
        [--hidden 100] [--batch 2000] [--rate 0.1] [--clip 0.01] [--max-steps 3]
        [--n-pretrain 2000] [--pretrain-epochs 5] [--data-dir DIR]

The AGT fine-tuning setting, through the public library API only:

1. ``intervalnn.datasets.load_dataset`` (``mnist17``: MNIST 1 vs 7, 2
   classes, one output and ``bce``; ``mnist``: all 10 digits, 10 outputs and
   ``ce``), with ``n_pretrain`` clean images held out of the training set;
2. ``intervalnn.train.pretrain_nominal`` (what ``train`` runs for ``pretrain_epochs``, here
   with its own batch size ``--pretrain-batch``) on that held-out
   split: plain SGD of the nominal model, after which the parameter box is
   the point box at the pretrained model (the held-out images are trusted:
   the attacker never touches them);
3. then certified k-of-n training on the (possibly poisoned) training set:
   large batches, per-sample gradient clipping, a small learning rate and at
   ``--max-steps`` SGD steps (``TrainConfig(steps=...)``); certified
   validation accuracy after every step, and the step ``train`` would keep
   with ``min_step = 1`` and no ``steps`` (the first best certified
   validation accuracy at step >= 1: the pretrained point box, step 0, never
   counts) read from the history, so one run gives both figures below;
4. ``intervalnn.certify.certify`` on the TEST split (``test_epsilon = 0``:
   certificates against training poisoning only).

Rows (``ThreatModel(epsilon, test_epsilon=0.0, domain=(0.0, 1.0),
poison_count=k, label_flips=...)``):

* ``eps0.1``: k poisoned images, each pixel moved by at most 0.1 within [0, 1];
* ``inf-clamp`` / ``inf-norm``: k arbitrary images (epsilon = inf; the domain
  [0, 1] bounds the features), clamp or l2-norm clipping;
* ``flip``: k labels flipped to any other class (``label_flips = k``).

Besides the step kept on validation, the script reports the FIXED step
count ``N`` chosen on validation beforehand: ``N`` is the step with the best
certified validation accuracy of the first seed's run (its data only), and every
seed's figure is its model after exactly ``N`` steps.  Training is
deterministic given the seed, so that model is the one
``TrainConfig(steps=N)`` trains, and the kept step's model is the one
``TrainConfig(steps=None, min_step=1)`` keeps within the same steps
(``--check-fixed`` reruns one cell with ``steps=N`` and asserts the same
certified test accuracy).  The test set is
certified after every step through the ``on_step`` hook (measurement only;
it plays no part in any choice).

Prints Markdown tables (mean +- std over seeds) and, with ``--json``, every
cell's figures and history.

``--speed`` instead times one SGD step of the engine ``train`` builds
(``intervalnn.engine.make_engine``, as ``train`` calls it): FullCert
(``poison_count = None``, the fused kernel) against k-of-n (``poison_count =
10``, without and with clamp clipping at 0.01) on the same network, data
and batch, interleaved (one step of each in turn, ``--repeats`` rounds after
one warm-up step each), medians; MNIST 784-100-10 (real MNIST training
images, ``ce``) at batch 100 and 1000, and the half-moons shape 6-128-2
(uniform random features in [-1, 1], ``ce``) at batch 3000.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time

import numpy as np

from intervalnn.certify import certify
from intervalnn.datasets import load_dataset
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, pretrain_nominal, train

DEFAULT_DIR = "../shared/data/mnist"
ROWS = ("eps0.1", "inf-clamp", "inf-norm", "flip")


def threat_for(row: str, k: int) -> ThreatModel:
    if row == "eps0.1":
        return ThreatModel(0.1, test_epsilon=0.0, domain=(0.0, 1.0), poison_count=k)
    if row in ("inf-clamp", "inf-norm"):
        return ThreatModel(math.inf, test_epsilon=0.0, domain=(0.0, 1.0), poison_count=k)
    if row == "flip":
        return ThreatModel(0.0, test_epsilon=0.0, domain=(0.0, 1.0), label_flips=k)
    raise ValueError(f"unknown row {row!r}: choose from {', '.join(ROWS)}")


def mean_std(values) -> str:
    values = [100 * v for v in values]
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def run_cell(splits, row, k, seed, args, steps=None):
    """One training run; the certified test accuracy after every step (0 = pretrained)."""
    binary = splits.num_classes == 2
    model = mlp(
        splits.num_features, 1 if binary else splits.num_classes, hidden=args.hidden, seed=seed
    )
    threat = threat_for(row, k)
    loss = "bce" if binary else "ce"
    pre = TrainConfig(
        batch_size=args.pretrain_batch,
        loss=loss,
        seed=seed,
        pretrain_epochs=args.pretrain_epochs,
        pretrain_learning_rate=args.pretrain_rate,
    )
    t0 = time.perf_counter()
    pretrain_nominal(model, splits.pretrain.x, splits.pretrain.y, pre, np.random.default_rng(seed))
    config = TrainConfig(
        learning_rate=args.rate,
        batch_size=args.batch,
        seed=seed,
        loss=loss,
        validate_every="step",
        min_step=1,
        clip=args.clip,
        clip_method="norm" if row == "inf-norm" else "clamp",
        steps=args.max_steps if steps is None else steps,
    )
    te = splits.test
    per_step = []

    def on_step(step, params, nominal):
        c = certify(model, te.x, te.y, threat)
        per_step.append((step, c.certified_accuracy, c.nominal_accuracy))

    result = train(
        model, splits.train.x, splits.train.y, threat, config, splits.val.x, splits.val.y,
        on_step=on_step,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    # the selection rule of train (config.steps is None): the first step >= min_step with the
    # best certified validation accuracy; with steps set, train itself keeps the last model
    kept, best = per_step[-1][0], -1.0
    for r in result.history:
        if r["step"] >= config.min_step and r["val_certified_accuracy"] > best:
            kept, best = r["step"], r["val_certified_accuracy"]
    hist = [
        (r["step"], r.get("val_certified_accuracy"), r.get("val_accuracy")) for r in result.history
    ]
    return {
        "row": row,
        "k": k,
        "seed": seed,
        "engine": result.engine,
        "stopped": result.stopped,
        "seconds": seconds,
        "kept": kept,
        "val": hist,  # (step, certified, nominal) on validation, step 0 = pretrained
        "test": per_step,  # (step, certified, nominal) on test, steps >= 1
    }


def kept_step(cell) -> int:
    """The step ``train`` kept (the first best certified validation accuracy, step >= 1)."""
    return cell["kept"]


def at_step(cell, step):
    for s, cert, nom in cell["test"]:
        if s == step:
            return cert, nom
    s, cert, nom = cell["test"][-1]  # a run that stopped early keeps its last model
    return cert, nom


def speed(args) -> None:
    from fractions import Fraction

    from intervalnn.engine import make_engine
    from intervalnn.poisoning import Clipping, Poisoning

    mn = load_dataset("mnist", data_dir=args.data_dir, seed=0).train
    rng = np.random.default_rng(0)
    moons_x = rng.uniform(-1.0, 1.0, (3000, 6))
    moons_y = rng.integers(0, 2, 3000)
    shapes = [
        ("MNIST 784-100-10", mn.x, mn.y, 100, 100),
        ("MNIST 784-100-10", mn.x, mn.y, 100, 1000),
        ("half-moons 6-128-2", moons_x, moons_y, 128, 3000),
    ]
    variants = [
        ("FullCert (eps 0.01)", ThreatModel(0.01, 0.0, domain=None), None),
        ("k-of-n k=10 (eps 0.01)", ThreatModel(0.01, 0.0, poison_count=10), None),
        ("k-of-n k=10, clamp 0.01", ThreatModel(0.01, 0.0, poison_count=10), Clipping(0.01)),
    ]
    rate = Fraction(1, 1000)
    print("| network | batch | engine step | median s | / FullCert | epoch of 55,000 (est.) |")
    print("|---|---|---|---|---|---|")
    for label, x, y, hidden, b in shapes:
        n = len(y)
        engines = []
        for name, threat, clip in variants:
            model = mlp(x.shape[1], 10 if x is mn.x else 2, hidden=hidden, seed=0)
            box = threat.train_box(x)
            poisoning = Poisoning(threat, n, None, clip)
            eng = make_engine(model, "ce", box, x, y, b, True, poisoning)
            eng.step(rng.permutation(n)[:b], rate)  # warm-up (compiles)
            engines.append((name, eng, []))
        for _ in range(args.repeats):
            for _name, eng, times in engines:
                idx = rng.permutation(n)[:b]
                t = time.perf_counter()
                eng.step(idx, rate)
                times.append(time.perf_counter() - t)
        base = statistics.median(engines[0][2])
        for name, eng, times in engines:
            med = statistics.median(times)
            epoch = f"{med * -(-55000 // b):.1f} s" if x is mn.x else "–"
            print(
                f"| {label} | {b} | {name} ({eng.name}) | {med:.4f} | {med / base:.2f} | {epoch} |",
                flush=True,
            )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="mnist17", choices=("mnist17", "mnist"))
    p.add_argument("--data-dir", default=DEFAULT_DIR)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--ks", default="1,10,100,1000")
    p.add_argument("--hidden", type=int, default=100)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument("--rate", type=float, default=0.1)
    p.add_argument("--clip", type=float, default=0.01)
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--n-val", type=int, default=None)
    p.add_argument("--n-pretrain", type=int, default=2000)
    p.add_argument("--pretrain-epochs", type=int, default=5)
    p.add_argument("--pretrain-rate", type=float, default=0.1)
    p.add_argument("--pretrain-batch", type=int, default=100)
    p.add_argument("--check-fixed", action="store_true")
    p.add_argument("--speed", action="store_true", help="time engine steps instead")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.speed:
        speed(args)
        return 0
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    ks = [int(k) for k in args.ks.split(",")]
    for r in rows:
        threat_for(r, 1)

    kw = {"n_pretrain": args.n_pretrain}
    if args.n_val is not None:
        kw["n_val"] = args.n_val
    splits_by_seed = {
        s: load_dataset(args.dataset, data_dir=args.data_dir, seed=s, **kw)
        for s in range(args.first_seed, args.first_seed + args.seeds)
    }
    sp = splits_by_seed[args.first_seed]
    print(
        f"# {args.dataset}: train {len(sp.train)}, val {len(sp.val)}, pretrain "
        f"{len(sp.pretrain)}, test {len(sp.test)}; 784-{args.hidden}-"
        f"{1 if sp.num_classes == 2 else sp.num_classes}, batch {args.batch}, rate {args.rate}, "
        f"clip {args.clip}, <= {args.max_steps} steps, pretrain {args.pretrain_epochs} "
        f"epochs at {args.pretrain_rate}, batch {args.pretrain_batch}",
        flush=True,
    )
    cells = []
    for row in rows:
        for k in ks:
            for seed in splits_by_seed:
                c = run_cell(splits_by_seed[seed], row, k, seed, args)
                cells.append(c)
                ks_ = kept_step(c)
                cert, nom = at_step(c, ks_)
                print(
                    f"{row} k={k} seed={seed}: kept step {ks_}, certified {cert:.4f}, nominal "
                    f"{nom:.4f}, pretrained val {c['val'][0][2]:.4f}, {c['seconds']:.1f} s"
                    + (f" ({c['stopped']})" if c["stopped"] else ""),
                    flush=True,
                )

    print()
    print(
        "| row | k | certified (kept step, min_step 1) | nominal | kept steps "
        "| fixed N | certified at N | nominal at N |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        for k in ks:
            cs = [c for c in cells if c["row"] == row and c["k"] == k]
            kept = [kept_step(c) for c in cs]
            sel = [at_step(c, s) for c, s in zip(cs, kept, strict=True)]
            n_fixed = kept[0]  # chosen on the first seed's validation set
            fixed = [at_step(c, n_fixed) for c in cs]
            print(
                f"| {row} | {k} | {mean_std([a for a, _ in sel])} | {mean_std([b for _, b in sel])}"
                f" | {','.join(map(str, kept))} | {n_fixed} | {mean_std([a for a, _ in fixed])}"
                f" | {mean_std([b for _, b in fixed])} |"
            )
    if args.check_fixed:
        c = cells[0]
        n_fixed = kept_step(c)
        again = run_cell(splits_by_seed[c["seed"]], c["row"], c["k"], c["seed"], args, n_fixed)
        last = again["test"][-1]
        assert last[0] == n_fixed and last[1] == at_step(c, n_fixed)[0], (last, n_fixed)
        print(f"\ncheck: TrainConfig(steps={n_fixed}) reproduces the fixed-N figure ({last[1]})")
    if args.json:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "commit": commit, "cells": cells}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
