"""AGT's half-moons poisoning benchmark with sound k-of-n certificates (issue 13).

    python benchmarks/agt_halfmoons.py [--seeds 5] [--rows eps0.01-k50,flip-k1] [--quick]
                                       [--json OUT] [--rate R] [--clip G] [--decay D]

The setup of Abstract Gradient Training's own script
(``scripts/poisoning_paper/halfmoons.py`` of psosnin/AbstractGradientTraining;
Sosnin et al., TMLR 2025), with the data built here from NumPy alone:

* two moons as scikit-learn's ``make_moons`` draws them (upper moon class 0,
  lower moon class 1, Gaussian noise 0.1), class 0 then moved *up* by 0.2
  (AGT: ``x[y == 0, 1] += sep``); 3,000 training, 500 validation and 500
  test points, shuffled and split per seed;
* features ``(x1, x2, x1^2, x2^2, x1^3, x2^3)`` (AGT's ``hstack``);
* a 6-128-2 ReLU MLP, cross-entropy, full-batch SGD (batch 3,000), float64;
* certificates against training poisoning only (``test_epsilon = 0``).

The recipe starts from the prototype's best (``DESIGN.md`` section 7):
learning rate 4 with decay 0.6, clamp clipping of per-sample gradients at
0.3, certified validation accuracy after every step and the best of at most
12 steps kept; rows with k > 1 (but eps = 0.01, k = 50) use rate 8 and
clamp 0.1 instead, chosen on validation data of other seeds (``TUNED``);
then the test set is certified with ``intervalnn.certify.certify``.  Each
seed changes the data and the initialisation.  Everything goes through the
public library API, so the figures follow the library's bounds as they
tighten.

``--rate/--clip/--decay`` override the recipe for every chosen row (for
tuning); ``--select`` instead tries each combination of the listed rates,
clip thresholds and decays per row and keeps, per row and seed, the one
with the best *validation* certified accuracy (the test set plays no part
in the choice).

Prints a Markdown table: AGT's figures measured on a 2-core machine and a
round-to-nearest prototype's (from issue 13) beside ours, mean +- std over
the seeds.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import numpy as np

from intervalnn.certify import certify
from intervalnn.layers import mlp
from intervalnn.threat import ThreatModel
from intervalnn.train import TrainConfig, train

N_TRAIN, N_VAL, N_TEST = 3000, 500, 500


@dataclass(frozen=True)
class Row:
    name: str  # short id for --rows
    label: str  # the setting as the table shows it
    epsilon: float
    poison_count: int | None
    label_flips: int = 0
    paired: bool = False
    rate: float = 4.0  # the recipe: learning rate, clamp threshold, learning-rate decay
    clip: float = 0.3
    decay: float = 0.6
    agt: str = "–"  # AGT measured on a 2-core machine (issue 13)
    prototype: str = "–"  # the round-to-nearest prototype's best recipe (issue 13)

    def threat(self) -> ThreatModel:
        return ThreatModel(
            self.epsilon,
            test_epsilon=0.0,
            poison_count=self.poison_count,
            label_flips=self.label_flips,
            paired=self.paired,
        )


# Tuned on certified *validation* accuracy of seeds 100-102 (never the test set, never the
# table's seeds 0-4): rate 8 with clamp 0.1 beat the prototype's rate 4 / clamp 0.3 (and rates
# 2, 16, 32, clamps 0.03-0.2) in every row tried except those with k = 1 and eps = 0.01, k = 50,
# which keep the prototype's recipe.
TUNED = {"rate": 8.0, "clip": 0.1}

ROWS = [
    Row("eps0.01-k50", "ε = 0.01, k = 50", 0.01, 50, agt=".842", prototype=".909"),
    Row("eps0.01-k100", "ε = 0.01, k = 100", 0.01, 100, **TUNED, agt=".658", prototype=".894"),
    Row("eps0.01-k200", "ε = 0.01, k = 200", 0.01, 200, **TUNED, agt=".386", prototype=".869"),
    Row("eps0.01-k300", "ε = 0.01, k = 300", 0.01, 300, **TUNED, agt=".120", prototype=".860"),
    Row("k10-eps0.05", "k = 10, ε = 0.05", 0.05, 10, **TUNED, agt=".842", prototype=".917"),
    Row("k10-eps0.1", "k = 10, ε = 0.1", 0.1, 10, **TUNED, agt=".612", prototype=".905"),
    Row("k10-eps0.15", "k = 10, ε = 0.15", 0.15, 10, **TUNED, agt="–", prototype=".894"),
    Row("k10-eps0.2", "k = 10, ε = 0.2", 0.2, 10, **TUNED, agt=".260", prototype=".883"),
    Row("flip-k1", "label flips k = 1", 0.0, 0, 1, agt=".910", prototype=".938"),
    Row("flip-k7", "label flips k = 7", 0.0, 0, 7, **TUNED, agt=".032", prototype=".894"),
    Row("paired-k1", "paired, ε = 0.1, k = 1", 0.1, 1, 1, True, agt=".890", prototype=".936"),
    Row(
        "paired-k7",
        "paired, ε = 0.1, k = 7",
        0.1,
        7,
        7,
        True,
        **TUNED,
        agt=".000",
        prototype=".892",
    ),
    Row("inf-k1", "ε = ∞, clamp clipping, k = 1", math.inf, 1, prototype=".928"),
    Row("inf-k10", "ε = ∞, clamp clipping, k = 10", math.inf, 10, **TUNED, prototype=".850"),
    Row("inf-k50", "ε = ∞, clamp clipping, k = 50", math.inf, 50, **TUNED, prototype=".781"),
]


def make_moons(n: int, noise: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaving half circles as scikit-learn's ``make_moons`` draws them (shuffled)."""
    n_out = n // 2
    n_in = n - n_out
    t_out = np.linspace(0.0, np.pi, n_out)
    t_in = np.linspace(0.0, np.pi, n_in)
    x = np.concatenate(
        [
            np.stack([np.cos(t_out), np.sin(t_out)], axis=1),
            np.stack([1.0 - np.cos(t_in), 1.0 - np.sin(t_in) - 0.5], axis=1),
        ]
    )
    y = np.concatenate([np.zeros(n_out, np.int64), np.ones(n_in, np.int64)])
    order = rng.permutation(n)
    x, y = x[order], y[order]
    return x + rng.normal(scale=noise, size=x.shape), y


def halfmoons(seed: int, noise: float = 0.1, sep: float = 0.2):
    """(train, validation, test) splits of AGT's half-moons data, features (x, x^2, x^3)."""
    rng = np.random.default_rng(seed)
    x, y = make_moons(N_TRAIN + N_VAL + N_TEST, noise, rng)
    x[y == 0, 1] += sep  # AGT's separation: the upper moon (class 0) moves up
    x = np.hstack([x, x**2, x**3])
    cuts = [N_TRAIN, N_TRAIN + N_VAL]
    return list(zip(np.split(x, cuts), np.split(y, cuts), strict=True))


def run_one(
    row: Row, seed: int, rate: float, clip: float, decay: float, epochs: int, min_step: int = 1
) -> dict:
    """Certified training of one row for one seed; certified and nominal test accuracy.

    ``min_step = 1`` (the default) never keeps the untrained model: step 0's
    point box certifies whatever the initial model gets right without ever
    seeing the (poisoned) training data.
    """
    (xtr, ytr), (xva, yva), (xte, yte) = halfmoons(seed)
    model = mlp(6, 2, hidden=128, layers=2, seed=seed, dtype=np.float64)
    config = TrainConfig(
        epochs=epochs,
        learning_rate=rate,
        batch_size=N_TRAIN,
        seed=seed,
        loss="ce",
        validate_every="step",
        clip=clip,
        clip_method="clamp",
        lr_decay=decay,
        min_step=min_step,
    )
    threat = row.threat()
    t0 = time.perf_counter()
    result = train(model, xtr, ytr, threat, config, xva, yva)
    cert = certify(model, xte, yte, threat)
    return {
        "row": row.name,
        "seed": seed,
        "rate": rate,
        "clip": clip,
        "decay": decay,
        "certified": cert.certified_accuracy,
        "nominal": cert.nominal_accuracy,
        "val_certified": result.best.get("val_certified_accuracy", float("nan")),
        "best_step": result.best.get("step"),
        "stopped": result.stopped,
        "seconds": time.perf_counter() - t0,
    }


def mean_std(values) -> str:
    values = list(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",")]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per row (default 5)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds start here (default 0)")
    ap.add_argument("--rows", default=None, help="comma-separated row ids (default: all)")
    ap.add_argument("--quick", action="store_true", help="one seed")
    ap.add_argument("--json", default=None, metavar="OUT", help="write per-seed numbers here")
    ap.add_argument("--epochs", type=int, default=12, help="most full-batch steps (default 12)")
    ap.add_argument(
        "--min-step",
        type=int,
        default=1,
        help="keep only steps >= this (default 1: never the untrained model)",
    )
    ap.add_argument("--rate", default=None, help="learning rate(s) (default: the row's, 4 or 2)")
    ap.add_argument("--clip", default=None, help="clamp threshold(s) (default: the row's)")
    ap.add_argument("--decay", default=None, help="learning-rate decay(s) (default: the row's)")
    ap.add_argument(
        "--select",
        action="store_true",
        help="several --rate/--clip/--decay values: per row and seed, keep the best on validation",
    )
    args = ap.parse_args(argv)
    known = {r.name: r for r in ROWS}
    if args.rows:
        names = args.rows.split(",")
        unknown = [n for n in names if n not in known]
        if unknown:
            ap.error(f"unknown row(s) {', '.join(unknown)}; choose from {', '.join(known)}")
        rows = [known[n] for n in names]
    else:
        rows = ROWS
    if args.json and os.path.exists(args.json):
        ap.error(f"{args.json} exists: choose another --json file (never overwritten)")
    seeds = range(args.first_seed, args.first_seed + (1 if args.quick else args.seeds))
    grid = [len(floats(v)) for v in (args.rate, args.clip, args.decay) if v]
    if math.prod(grid) > 1 and not args.select:
        ap.error("several --rate/--clip/--decay values need --select")

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    records, lines, recipes = [], [], []
    for row in rows:
        rates = floats(args.rate) if args.rate else [row.rate]
        clips = floats(args.clip) if args.clip else [row.clip]
        decays = floats(args.decay) if args.decay else [row.decay]
        chosen = []
        for seed in seeds:
            tried = []
            for rate, clip, decay in itertools.product(rates, clips, decays):
                rec = run_one(row, seed, rate, clip, decay, args.epochs, args.min_step)
                records.append(rec)
                tried.append(rec)
                print(
                    f"{row.name} seed {seed} rate {rate} clip {clip} decay {decay}: certified "
                    f"{rec['certified']:.3f} (val {rec['val_certified']:.3f}, step "
                    f"{rec['best_step']}) nominal {rec['nominal']:.3f}, {rec['seconds']:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
            best = max(tried, key=lambda r: r["val_certified"])  # first best on validation
            best["chosen"] = True
            chosen.append(dict(best, seconds=sum(r["seconds"] for r in tried)))
        recipes.append(f"{row.name} {rates}, {clips}, {decays}")
        lines.append(
            f"| {row.label} | {row.agt} | {row.prototype} | "
            f"{mean_std(r['certified'] for r in chosen)} | "
            f"{mean_std(r['nominal'] for r in chosen)} | "
            f"{statistics.fmean(r['seconds'] for r in chosen):.0f} |"
        )
    print(f"\nintervalnn commit {commit}, seeds {list(seeds)}\n")
    print(
        "| setting | AGT measured here | prototype (round-to-nearest) | "
        "intervalnn (sound) mean ± std | nominal acc | seconds |"
    )
    print("|---|---|---|---|---|---:|")
    print("\n".join(lines))
    print("\nrecipes (rate, clamp, decay): " + "; ".join(recipes))
    if args.json:
        with open(args.json, "x") as f:  # never overwrite
            json.dump({"commit": commit, "argv": sys.argv[1:], "runs": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
