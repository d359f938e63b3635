"""Which of our choices beat the paper: model selection, rate convention, clipping, batch.

Two-Moons (one hidden layer of 20 ReLUs, BCE, batch 100, constant rate, 10
epochs, 10 seeds) at two rates: 0.01 (= 1 in BoundFlow's convention at
batch 100) and 1.0 (= 100 in BoundFlow's), each kept three ways:

* ``last``: the model after the last epoch (no selection);
* ``best epoch``: the epoch with the best certified validation accuracy;
* ``best step``: the step with the best certified validation accuracy.

MNIST 1/7 (epsilon 1e-4, 3 seeds by default): our recipe (784-10-1, full
batch, rate 1, boxes clipped to [0, 1], best step, at most 8 epochs,
stopping after 3 validations without a new best) against one change at a
time: no clipping, the paper's 784-10-10-1 net, batch 100 with rate 0.01
(BoundFlow 1).  Nothing here is tuned: the configurations are fixed.
"""

from __future__ import annotations

import time

import common

MOONS_EPS = (1e-3, 1e-2, 0.1)
SELECTIONS = {
    "last": {"min_step": 100, "patience": 0},  # 10 epochs x 10 steps: only the last step
    "best epoch": {"validate_every": "epoch"},
    "best step": {"validate_every": "step"},
}
MNIST = {
    "ours: 784-10-1, full batch, lr 1, clipped, best step": {},
    "no clipping to [0, 1]": {"domain": None},
    "paper's 784-10-10-1 net": {"layers": 3},
    "batch 100, lr 0.01 (BoundFlow 1), best step": {"batch_size": 100, "learning_rate": 0.01},
    "batch 100, lr 0.01 (BoundFlow 1), best epoch": {
        "batch_size": 100,
        "learning_rate": 0.01,
        "validate_every": "epoch",
    },
}


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__)
    p.add_argument("--mnist-seeds", type=int, default=3, help="seeds for MNIST (default 3)")
    args = p.parse_args(argv)
    seeds = range(2 if args.quick else args.seeds)
    t0 = time.perf_counter()
    rows = []
    print(f"    {common.command()}\n")
    print(
        f"Two-Moons, batch 100, BCE, constant rate, 10 epochs, {len(seeds)} seeds: "
        "certified test accuracy (%)\n"
    )
    print("| ε | lr (ours) | lr (BoundFlow) | last model | best epoch | best step |")
    print("|---|---|---|---|---|---|")
    for eps in MOONS_EPS:
        for lr in (0.01, 1.0):
            cells = []
            for name, kw in SELECTIONS.items():
                part = common.run_seeds(
                    seeds,
                    dataset="moons",
                    epsilon=eps,
                    learning_rate=lr,
                    batch_size=100,
                    epochs=10,
                    **kw,
                )
                for r in part:
                    r["ablation"] = name
                rows += part
                cells.append(common.mean_std(r["certified_accuracy"] for r in part))
            print(f"| {eps:g} | {lr:g} | {100 * lr:g} | " + " | ".join(cells) + " |")
    if common.mnist_available():
        mseeds = range(1 if args.quick else args.mnist_seeds)
        print(
            f"\nMNIST 1/7, ε = 1e-4, at most 8 epochs, {len(mseeds)} seeds: "
            "certified test accuracy (%)\n"
        )
        print("| configuration | certified | nominal | best step |")
        print("|---|---|---|---|")
        for name, change in MNIST.items():
            kw = dict(
                dataset="mnist17",
                epsilon=1e-4,
                hidden=10,
                layers=2,
                batch_size=None,
                learning_rate=1.0,
                epochs=8,
                stale=3,
            )
            kw.update(change)
            if kw["batch_size"] is not None:  # 110 steps an epoch: no early stop on staleness
                kw.update(epochs=2 if args.quick else 5, stale=None)
            common.log(name)
            part = common.run_seeds(mseeds, common.log, **kw)
            for r in part:
                r["ablation"] = name
            rows += part
            steps = sorted(r["best_step"] for r in part)
            print(
                f"| {name} | {common.mean_std(r['certified_accuracy'] for r in part)} "
                f"| {common.mean_std(r['accuracy'] for r in part)} | {steps} |"
            )
    print(f"\n{len(rows)} runs, {time.perf_counter() - t0:.0f} s.")
    if not args.no_save:
        common.save("ablation" + ("_quick" if args.quick else ""), rows)
    return rows


if __name__ == "__main__":
    main()
