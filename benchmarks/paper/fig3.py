"""FullCert Fig. 3: certified accuracy with and without clean pretraining.

Protocol: the nominal model is first trained with plain SGD on a small
*clean* pretraining set (drawn apart from the training set, which the
adversary may poison); the parameter box starts as the point box at the
pretrained model; then certified training on the (poisonable) training set.
"From scratch" skips pretraining.  The paper's figure axis is not
reproducible from its text; we sweep the pretraining set size and the
number of pretraining epochs.

* Two-Moons, epsilon 1e-3: one hidden layer of 20 ReLUs; pretraining rate
  1.0 with the certified-training batch size (full: the whole pretraining
  set); per seed, the search of Table 1 (``common.MOONS_GRID``) plus rates
  0.01 and 0.03, by certified validation accuracy, for every row.
* MNIST 1/7, epsilon 1e-4, boxes clipped to the pixel domain [0, 1]:
  784-10-1 (ours) and the paper's 784-10-10-1, full batch (pretraining:
  the whole pretraining set as one batch), at most 6 epochs (stopping after
  3 validations without a new best); pretraining rate 0.5; per seed the
  rate from {0.5, 1, 2} by certified validation accuracy.

Every reported model had at least one certified training step
(``min_step=1``); the column "pretrained only" certifies the pretrained
model itself (no certified training: it never saw the poisonable data).
"""

from __future__ import annotations

import statistics
import time

import common

MOONS_EPS, MNIST_EPS = 1e-3, 1e-4
PAPER_SCRATCH = {"moons": "75", "mnist17": "60"}
# Table 1's search, plus small rates (a pretrained model may need only a nudge).
MOONS_GRID = common.MOONS_GRID + [
    {"batch_size": b, "learning_rate": lr, "schedule": "constant", "loss": loss}
    for b in (50, 100, 200, None)
    for lr in (0.01, 0.03)
    for loss in ("bce", "ce")
]
MNIST_GRID = [{"learning_rate": lr} for lr in (0.5, 1.0, 2.0)]
MOONS_PRE = [(10, 10), (10, 100), (10, 1000), (100, 1), (100, 10), (100, 100), (100, 1000)]
MOONS_PRE += [(500, 10), (500, 100)]
MNIST_PRE = [(100, 10), (100, 100), (1000, 10), (1000, 100)]


def _line(label: str, part: list[dict], paper: str) -> str:
    mine = common.picked(part)
    steps = [r["best_step"] for r in mine]
    pre = (
        common.mean_std(r["start_certified_accuracy"] for r in mine)
        if mine[0]["pretrain_epochs"]
        else "–"
    )
    return (
        f"| {label} | **{common.mean_std(r['certified_accuracy'] for r in mine)}** | {paper} "
        f"| {pre} | {common.mean_std(r['accuracy'] for r in mine)} "
        f"| {statistics.median(steps):g} ({min(steps)}-{max(steps)}) |"
    )


def moons(seeds, quick: bool) -> tuple[list[dict], list[str]]:
    rows, lines = [], []
    grid = common.QUICK_GRID if quick else MOONS_GRID
    common.log("Two-Moons from scratch")
    part = common.select(grid, seeds, common.log, dataset="moons", epsilon=MOONS_EPS)
    rows += part
    lines.append(_line("from scratch", part, PAPER_SCRATCH["moons"]))
    for size, ep in MOONS_PRE[:2] if quick else MOONS_PRE:
        common.log(f"Two-Moons, pretraining on {size} points for {ep} epochs")
        part = common.select(
            grid,
            seeds,
            common.log,
            dataset="moons",
            epsilon=MOONS_EPS,
            pretrain_size=size,
            pretrain_epochs=ep,
            pretrain_learning_rate=1.0,
        )
        rows += part
        lines.append(_line(f"{size} points × {ep} epochs", part, "–"))
    return rows, lines


def mnist(seeds, quick: bool) -> tuple[list[dict], list[str]]:
    rows, lines = [], []
    grid = MNIST_GRID[:1] if quick else MNIST_GRID
    fixed = dict(dataset="mnist17", epsilon=MNIST_EPS, batch_size=None, hidden=10)
    fixed["epochs"] = 2 if quick else 6
    fixed["stale"] = 3
    for layers in (2, 3):
        arch = "784-10-1" if layers == 2 else "784-10-10-1 (paper)"
        common.log(f"MNIST 1/7 {arch} from scratch")
        part = common.select(grid, seeds, common.log, layers=layers, **fixed)
        rows += part
        lines.append(_line(f"{arch}, from scratch", part, PAPER_SCRATCH["mnist17"]))
        for size, ep in MNIST_PRE[:1] if quick else MNIST_PRE:
            common.log(f"MNIST 1/7 {arch}, pretraining on {size} images for {ep} epochs")
            part = common.select(
                grid,
                seeds,
                common.log,
                layers=layers,
                pretrain_size=size,
                pretrain_epochs=ep,
                pretrain_learning_rate=0.5,
                **fixed,
            )
            rows += part
            lines.append(_line(f"{arch}, {size} images × {ep} epochs", part, "–"))
    return rows, lines


HEADER = (
    "| pretraining | ours: certified | paper | pretrained only (no certified training) "
    "| ours: nominal acc. | best step, median (range) |\n|---|---|---|---|---|---|"
)


def main(argv=None) -> list[dict]:
    p = common.parser(__doc__)
    p.add_argument("--mnist-seeds", type=int, default=5, help="seeds for MNIST (default 5)")
    p.add_argument("--dataset", choices=("moons", "mnist17", "both"), default="both")
    args = p.parse_args(argv)
    quick = args.quick
    t0 = time.perf_counter()
    rows = []
    print(f"    {common.command()}\n")
    if args.dataset in ("moons", "both"):
        seeds = range(2 if quick else args.seeds)
        part, lines = moons(seeds, quick)
        rows += part
        print(
            f"Fig. 3 (Two-Moons): certified accuracy (%), ε = {MOONS_EPS:g}, {len(seeds)} seeds\n"
        )
        print(HEADER + "\n" + "\n".join(lines) + "\n")
    if args.dataset in ("mnist17", "both"):
        if not common.mnist_available():
            common.log(f"MNIST files not found in {common.MNIST_DIR}: skipping MNIST 1/7")
        else:
            seeds = range(1 if quick else args.mnist_seeds)
            part, lines = mnist(seeds, quick)
            rows += part
            print(
                f"Fig. 3 (MNIST 1/7): certified accuracy (%), ε = {MNIST_EPS:g}, "
                f"pixel domain [0, 1], {len(seeds)} seeds\n"
            )
            print(HEADER + "\n" + "\n".join(lines) + "\n")
    print(f"{len(rows)} runs, {time.perf_counter() - t0:.0f} s.")
    if not args.no_save:
        suffix = "" if args.dataset == "both" else f"_{args.dataset}"
        common.save("fig3" + suffix + ("_quick" if quick else ""), rows)
    return rows


if __name__ == "__main__":
    main()
