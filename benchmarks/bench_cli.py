"""The cost of `intervalnn train` with its defaults, per Two-Moons epoch, as a ratio to plain NumPy.

    python benchmarks/bench_cli.py [--repeat 15] [--epochs 20]

The CLI run is what a user types, ``intervalnn train --dataset moons
--epsilon 0.01 -o FILE`` (2x20 MLP, batch 100, validation after every step,
progress bar), invoked through the click command in this process (after one
warm-up run, so Numba's cache and the imports are loaded), with stderr on a
pseudo-terminal so that the progress bar draws as it does for a user.  Its
cost per epoch is (wall time of N + 2 epochs - wall time of 2 epochs) / N
(issue 11's measure with N = 20): data, set-up, the test certification and
saving cancel.  (Timing whole processes instead adds start-up noise of
~0.3 s per run on a shared machine, far above the signal.)  The baseline, in
the same process on the same data, is plain NumPy SGD of the same network
(``bench_train.plain_epoch``) plus one validation pass (predictions on the
validation split) per epoch.  Medians over ``--repeat`` rounds run in turns.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pty
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import plain_epoch, plain_predict  # noqa: E402

from intervalnn.cli import main  # noqa: E402
from intervalnn.datasets import two_moons_splits  # noqa: E402
from intervalnn.layers import mlp  # noqa: E402


def cli_seconds(epochs: int, out: Path) -> float:
    """Wall time of one `intervalnn train` with its defaults (stderr on a pseudo-terminal)."""
    args = ["train", "--dataset", "moons", "--epsilon", "0.01", "--epochs", str(epochs)]
    out.unlink(missing_ok=True)
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        t0 = time.perf_counter()
        main([*args, "-o", str(out)], standalone_mode=False)
        return time.perf_counter() - t0


@contextlib.contextmanager
def terminal_stderr():
    """``sys.stderr`` on a pseudo-terminal, drained by a thread (the progress bar draws)."""
    parent, child = pty.openpty()
    drain = threading.Thread(target=lambda: _drain(parent), daemon=True)
    drain.start()
    saved, sys.stderr = sys.stderr, open(child, "w", buffering=1)  # noqa: SIM115
    try:
        yield
    finally:
        sys.stderr.close()
        sys.stderr = saved
        drain.join(timeout=5)
        os.close(parent)


def _drain(fd: int) -> None:
    while True:
        try:
            if not os.read(fd, 65536):
                return
        except OSError:
            return


def plain_seconds(epochs: int) -> float:
    """Plain NumPy SGD of the same 2x20 network, one validation pass per epoch."""
    sp = two_moons_splits(seed=0)
    model = mlp(2, 1, hidden=20, layers=2, seed=0)
    params = [v.lo.astype(np.float64) for v in model.named_params().values()]
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(epochs):
        plain_epoch(params, sp.train.x, sp.train.y, 100, 0.5, "bce", rng)
        plain_predict(params, sp.val.x)
    return (time.perf_counter() - t0) / epochs


def run():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds (each: 2 CLI runs)")
    parser.add_argument("--epochs", type=int, default=20, help="N: epochs measured per run")
    args = parser.parse_args()
    n, cli, plain = args.epochs, [], []
    with tempfile.TemporaryDirectory() as tmp, terminal_stderr():
        out = Path(tmp) / "model.npz"
        cli_seconds(2, out)  # warm-up: imports and Numba's cache
        for _ in range(args.repeat):
            cli.append((cli_seconds(n + 2, out) - cli_seconds(2, out)) / n)
            plain.append(plain_seconds(50))
    c, p = statistics.median(cli), statistics.median(plain)
    print(f"intervalnn train defaults, per Two-Moons epoch: {c * 1e3:.2f} ms")
    print(f"plain NumPy SGD epoch + validation pass:        {p * 1e3:.3f} ms")
    print(f"ratio: {c / p:.2f}x  (medians of {args.repeat} rounds, N = {n})")


if __name__ == "__main__":
    run()
