"""Certified training speed as ratios to plain NumPy SGD of the same network, in one run.

    python benchmarks/bench_train.py [--repeat 400] [--mnist-repeat 7] [--data-dir DIR]

Workloads: Two-Moons (1000 points, 2-layer MLP with 20 hidden units, batch
100, so 10 steps per epoch, eps 0.01) with BCE and with cross-entropy (2
logits), float64 and float32; MNIST 1/7 (11,007 points, 3 layers of 10
hidden units, batch 100, eps 1e-4 clipped to [0, 1]) when the IDX files are
in ``--data-dir`` (default /work/shared/data/mnist; skipped with a message
otherwise).  For each, medians over many epochs, measured round-robin so
that load from other processes hits every contender alike:

* plain NumPy SGD of the same network on the same batches (written here:
  forward, loss gradient, backward and update with NumPy/BLAS, float64);
* the interval epoch with the fused kernel (``intervalnn.engine.fused``: one Numba
  call per step doing the interval and the nominal model), each timed epoch
  starting from the initial model (certified training runs a few epochs);
* the interval epoch on the layered path (one kernel call per interval
  operation; fewer repetitions, it is slow), likewise from the initial model;
* ``intervalnn.train`` per epoch, with certification of the validation set
  after every epoch (total wall time of ``train`` / epochs: set-up and the
  initial validation included), and for BCE also after every step;
* PyTorch SGD of the same network when ``import torch`` works (optional).

Prints a Markdown table with every time in microseconds per epoch and its
ratio to plain NumPy.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import intervalnn as inn
from intervalnn.datasets import mnist17_splits, two_moons_splits
from intervalnn.layers import mlp
from intervalnn.optim import SGD
from intervalnn.threat import ThreatModel


def plain_epoch(params, x, y, batch, lr, loss, rng):
    """One epoch of plain float64 SGD (mean loss) of a Linear/ReLU MLP with NumPy."""
    order = rng.permutation(x.shape[0])
    nl = len(params) // 2
    for s in range(0, x.shape[0], batch):
        idx = order[s : s + batch]
        xb, yb, m = x[idx], y[idx], len(idx)
        acts, pre = [xb], []
        for i in range(nl):
            z = acts[-1] @ params[2 * i] + params[2 * i + 1]
            pre.append(z)
            acts.append(np.maximum(z, 0.0) if i < nl - 1 else z)
        z = acts[-1]
        if loss == "bce":
            g = (1.0 / (1.0 + np.exp(-z)) - yb[:, None]) / m
        else:
            e = np.exp(z - z.max(axis=1, keepdims=True))
            g = e / e.sum(axis=1, keepdims=True)
            g[np.arange(m), yb] -= 1.0
            g /= m
        for i in reversed(range(nl)):
            gw, gb = acts[i].T @ g, g.sum(axis=0)
            if i:
                g = (g @ params[2 * i].T) * (pre[i - 1] > 0)
            params[2 * i] -= lr * gw
            params[2 * i + 1] -= lr * gb


def plain_predict(params, x):
    """The plain network's predicted classes on ``x`` (a validation pass)."""
    nl = len(params) // 2
    for i in range(nl):
        x = x @ params[2 * i] + params[2 * i + 1]
        if i < nl - 1:
            x = np.maximum(x, 0.0)
    return (x[:, 0] > 0) if x.shape[1] == 1 else x.argmax(axis=1)


def torch_epoch_fn(sizes, x, y, batch, lr, loss):
    """A PyTorch SGD epoch of the same network, or None without PyTorch."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    layers = []
    for i, (n, p) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(torch.nn.Linear(n, p).double())
        if i < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    lossf = torch.nn.BCEWithLogitsLoss() if loss == "bce" else torch.nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(x.shape[0], generator=gen)
        for s in range(0, x.shape[0], batch):
            idx = order[s : s + batch]
            out = net(xt[idx])
            target = yt[idx].double()[:, None] if loss == "bce" else yt[idx]
            opt.zero_grad()
            lossf(out, target).backward()
            opt.step()

    return epoch


def round_robin(fns: dict, repeat: dict) -> dict:
    """Median seconds of each callable, run in turns (each one warmed up first)."""
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for r in range(max(repeat.values())):
        for name, fn in fns.items():
            if r < repeat[name]:
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def workload(
    name,
    sp,
    sizes,
    loss,
    eps,
    domain,
    lr,
    dtype,
    repeat,
    layered_repeat,
    train_epochs,
    per_step=False,
):
    """Rows ``(workload, contender, us/epoch, ratio)`` for one data set and network."""
    from intervalnn.certify import Certifier  # here, so bench_cli.py runs on older versions
    from intervalnn.engine import FusedEngine
    from intervalnn.train import TrainConfig, batch_indices, train

    x, y = sp.train.x, sp.train.y
    threat = ThreatModel(eps, domain=domain)
    batch = 100
    rng = np.random.default_rng(0)
    model = mlp(sizes[0], sizes[-1], hidden=sizes[1], layers=len(sizes) - 1, seed=0, dtype=dtype)
    params = [v.lo.astype(np.float64) for v in model.named_params().values()]
    xd = x.astype(dtype)
    box = threat.train_box(xd)
    trainer = FusedEngine.create(model, loss, box, xd, y, batch)
    assert trainer is not None
    init = trainer.net.th.copy()
    epoch_rng = np.random.default_rng(1)

    def fused_epoch():
        # every timed epoch starts from the initial model (widths grow with every step)
        np.copyto(trainer.net.th, init)
        schedule = SGD(lr)
        for t, idx in enumerate(batch_indices(x.shape[0], batch, epoch_rng), 1):
            done = trainer.fused_step(idx, schedule.rate(t))
            if done is None or not done.finite:
                raise RuntimeError(f"{name}: the fused kernel declined or overflowed")

    validation = Certifier(trainer, sp.val.x, sp.val.y, threat)  # as train() validates

    def plain_epoch_validated():
        plain_epoch(params, x, y, batch, lr, loss, rng)
        plain_predict(params, sp.val.x)

    layered = mlp(sizes[0], sizes[-1], hidden=sizes[1], layers=len(sizes) - 1, seed=0, dtype=dtype)
    layered_cfg = TrainConfig(epochs=1, learning_rate=lr, batch_size=batch, loss=loss, fused=False)
    layered_init = layered.named_params(), layered.named_nominal()

    def layered_epoch():
        layered.load(*layered_init)
        result = train(layered, xd, y, threat, layered_cfg)
        assert result.stopped is None, result.stopped

    fns = {
        "plain NumPy SGD": lambda: plain_epoch(params, x, y, batch, lr, loss, rng),
        "plain NumPy SGD + validation pass": plain_epoch_validated,
        "interval, fused kernel": fused_epoch,
        "validation of the val split (fused)": validation,
        "interval, layered": layered_epoch,
    }
    reps = {name: repeat for name in fns}
    reps["interval, layered"] = layered_repeat
    torch_epoch = torch_epoch_fn(sizes, x, y, batch, lr, loss)
    if torch_epoch is not None:
        fns["PyTorch SGD"] = torch_epoch
        reps["PyTorch SGD"] = repeat
    if train_epochs:
        cfg = TrainConfig(
            epochs=train_epochs,
            learning_rate=lr,
            batch_size=batch,
            loss=loss,
            validate_every="epoch",
        )

        def full_train():
            m = mlp(sizes[0], sizes[-1], hidden=sizes[1], layers=len(sizes) - 1, dtype=dtype)
            res = train(m, xd, y, threat, cfg, sp.val.x, sp.val.y)
            assert res.stopped is None, res.stopped

        fns["intervalnn.train, validation every epoch"] = full_train
        reps["intervalnn.train, validation every epoch"] = max(3, repeat // 4)
        if per_step:
            cfg_step = TrainConfig(
                epochs=train_epochs,
                learning_rate=lr,
                batch_size=batch,
                loss=loss,
                validate_every="step",
            )

            def full_train_steps():
                m = mlp(sizes[0], sizes[-1], hidden=sizes[1], layers=len(sizes) - 1, dtype=dtype)
                res = train(m, xd, y, threat, cfg_step, sp.val.x, sp.val.y)
                assert res.stopped is None, res.stopped

            fns["intervalnn.train, validation every step"] = full_train_steps
            reps["intervalnn.train, validation every step"] = max(3, repeat // 4)
    med = round_robin(fns, reps)
    for k in med:
        if k.startswith("intervalnn.train"):
            med[k] /= train_epochs
    base = med["plain NumPy SGD"]
    return [(name, k, v * 1e6, v / base) for k, v in med.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=400, help="Two-Moons epochs per contender")
    parser.add_argument("--mnist-repeat", type=int, default=7, help="MNIST epochs per contender")
    parser.add_argument("--data-dir", default="/work/shared/data/mnist")
    args = parser.parse_args()

    rows = []
    moons = two_moons_splits(seed=0)
    lay = max(5, args.repeat // 20)
    common = dict(sp=moons, eps=0.01, domain=None, lr=0.1, layered_repeat=lay)
    rows += workload(
        "Two-Moons 2x20 BCE f64",
        sizes=[2, 20, 1],
        loss="bce",
        dtype=np.float64,
        repeat=args.repeat,
        train_epochs=10,
        per_step=True,
        **common,
    )
    rows += workload(
        "Two-Moons 2x20 CE f64",
        sizes=[2, 20, 2],
        loss="ce",
        dtype=np.float64,
        repeat=args.repeat,
        train_epochs=10,
        **common,
    )
    rows += workload(
        "Two-Moons 2x20 BCE f32",
        sizes=[2, 20, 1],
        loss="bce",
        dtype=np.float32,
        repeat=args.repeat,
        train_epochs=0,
        **common,
    )
    if args.mnist_repeat and Path(args.data_dir).is_dir():
        mnist = mnist17_splits(args.data_dir)
        rows += workload(
            "MNIST 1/7 3x10 BCE f64",
            mnist,
            [784, 10, 10, 1],
            "bce",
            1e-4,
            (0.0, 1.0),
            0.002,
            np.float64,
            args.mnist_repeat,
            1,
            2,
        )
    else:
        print(f"MNIST skipped: --mnist-repeat 0 or no IDX files in {args.data_dir}\n")

    cpu = platform.processor() or platform.machine()
    print(
        f"intervalnn {inn.__version__}, NumPy {np.__version__}, {os.cpu_count()} CPUs ({cpu}), "
        f"{datetime.date.today()}; medians, Two-Moons {args.repeat} epochs, "
        f"MNIST {args.mnist_repeat} epochs per contender\n"
    )
    print("| workload | contender | us / epoch | / plain NumPy |")
    print("|---|---|---:|---:|")
    for name, k, us, ratio in rows:
        print(f"| {name} | {k} | {us:,.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
