"""The cost of `intervalnn train` with its defaults, per Two-Moons epoch, as a ratio to plain NumPy.

    python benchmarks/bench_cli.py [--repeat 5]

The CLI run is what a user types, ``intervalnn train --dataset moons
--epsilon 0.01 -o FILE`` (2x20 MLP, batch 100, validation after every step,
progress bar), with its stderr on a pseudo-terminal so that the progress bar
draws as it does for a user.  Its cost per epoch is (wall time of N + 2
epochs - wall time of 2 epochs) / N (``--epochs N``, default 20, as issue 11
measures it: start-up, data, compilation and saving cancel; many more epochs
would measure a different run, whose boxes grow until the fused kernel's
overflow guard hands steps to the layered path).
The baseline, in this process on the same data, is plain NumPy SGD of the
same network (``bench_train.plain_epoch``) plus one validation pass
(predictions on the validation split) per epoch.  Medians over ``--repeat``
rounds, run in turns.
"""

from __future__ import annotations

import argparse
import os
import pty
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import plain_epoch, plain_predict  # noqa: E402

from intervalnn.datasets import two_moons_splits  # noqa: E402
from intervalnn.layers import mlp  # noqa: E402


def cli_seconds(epochs: int, out: Path, env: dict) -> float:
    """Wall time of one `intervalnn train` run with its defaults, stderr on a pseudo-terminal."""
    command = [sys.executable, "-m", "intervalnn.cli", "train", "--dataset", "moons"]
    command += ["--epsilon", "0.01", "--epochs", str(epochs), "-o", str(out)]
    out.unlink(missing_ok=True)
    parent, child = pty.openpty()
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=child, env=env)
    os.close(child)
    while True:  # drain the terminal so the progress bar never blocks
        try:
            if not os.read(parent, 65536):
                break
        except OSError:
            break
    proc.wait()
    seconds = time.perf_counter() - t0
    os.close(parent)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed with exit code {proc.returncode}")
    return seconds


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9, help="rounds (each: 2 CLI runs)")
    parser.add_argument("--epochs", type=int, default=20, help="N: epochs measured per run")
    parser.add_argument(
        "--pythonpath", help="run the CLI of another copy of the package (e.g. an older commit)"
    )
    args = parser.parse_args()
    env = dict(os.environ)
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
        env["NUMBA_CACHE_DIR"] = str(Path(args.pythonpath) / ".numba-cache")
    n = args.epochs
    cli, plain = [], []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model.npz"
        cli_seconds(2, out, env)  # warm the Numba cache
        for _ in range(args.repeat):
            cli.append((cli_seconds(n + 2, out, env) - cli_seconds(2, out, env)) / n)
            plain.append(plain_seconds(50))
    c, p = statistics.median(cli), statistics.median(plain)
    print(f"intervalnn train defaults, per Two-Moons epoch: {c * 1e3:.2f} ms")
    print(f"plain NumPy SGD epoch + validation pass:        {p * 1e3:.3f} ms")
    print(f"ratio: {c / p:.2f}x  (medians of {args.repeat} rounds)")


if __name__ == "__main__":
    main()
