"""Speed of ``intervalnn sweep`` on Dask: the Table 1 sweep at 1 and 2 workers, and overheads.

Measures, in one run on this machine:

* wall time of the whole Table 1 sweep (``benchmarks/sweeps/table1.toml``,
  5120 cells, ``--no-models``) as the user runs it, a fresh local cluster
  included, at 1 and 2 worker processes, alternating, ``--repeat`` times;
  the speed-up is the ratio of the medians;
* the scheduler's overhead per task: ``--tasks`` no-op tasks through
  ``client.map`` + ``as_completed`` exactly as the sweep submits them, per
  task; and the round trip of one task at a time;
* the start of a local cluster (worker processes, imports, version check);
* ``certify`` against ``certify --workers 2`` (:func:`certify_on_dask`) on
  ``--certify-points`` random MNIST-sized inputs (784 features) with a
  784-256-1 network, on a cluster already started, and its start;
* the data shipped per task: the pickled arguments and results of a task of
  16 Table 1 cells (the default chunk).

    python benchmarks/bench_sweep.py --repeat 3
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE1 = ROOT / "benchmarks" / "sweeps" / "table1.toml"


def sweep_wall(workers: int, per_task: str, grid: Path, tmp: Path) -> tuple[float, list[dict]]:
    results = tmp / f"w{workers}-{time.monotonic_ns()}.jsonl"
    cmd = [sys.executable, "-m", "intervalnn.cli", "sweep", str(grid), "--no-models", "-q"]
    cmd += ["--workers", str(workers), "--results", str(results)]
    if per_task != "auto":
        cmd += ["--cells-per-task", per_task]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    return wall, rows


def _noop(i):
    return i


def overheads(tasks: int) -> dict:
    import distributed

    from intervalnn.experiment import Grid
    from intervalnn.experiment.cluster import dask_client
    from intervalnn.experiment.sweep import run_cells

    out = {}
    for workers in (1, 2):
        t0 = time.perf_counter()
        with dask_client("bench", workers=workers) as client:
            out[f"start_{workers}"] = time.perf_counter() - t0
            client.gather(client.map(_noop, range(100), key=[f"warm-{i}" for i in range(100)]))
            t0 = time.perf_counter()
            futures = client.map(_noop, range(tasks), key=[f"noop-{i}" for i in range(tasks)])
            for f in distributed.as_completed(futures):
                f.result()
            out[f"per_task_ms_{workers}"] = 1e3 * (time.perf_counter() - t0) / tasks
            trips = []
            for i in range(50):
                t0 = time.perf_counter()
                client.submit(_noop, i, key=f"trip-{i}").result()
                trips.append(time.perf_counter() - t0)
            out[f"round_trip_ms_{workers}"] = 1e3 * statistics.median(trips)
    cells = list(enumerate(Grid.from_toml(TABLE1).cells()))[1500:1516]  # one default task
    rows = run_cells(cells, ("learning_rate",), True)
    out["args_bytes"] = len(pickle.dumps((cells, ("learning_rate",), True)))
    out["result_bytes_no_model"] = len(pickle.dumps([(row, None) for row, _ in rows]))
    out["result_bytes_with_model"] = len(pickle.dumps(rows))
    return out


def certify_speed(points: int, repeat: int) -> dict:
    import numpy as np

    from intervalnn.certify import certify
    from intervalnn.experiment.cluster import certify_on_dask, dask_client
    from intervalnn.layers import mlp
    from intervalnn.threat import ThreatModel

    rng = np.random.default_rng(0)
    x, y = rng.random((points, 784)), rng.integers(0, 2, points)
    model, threat = mlp(784, 1, hidden=256, layers=2, seed=0), ThreatModel(1e-4)
    serial, sharded = [], []
    t0 = time.perf_counter()
    with dask_client("bench", workers=2) as client:
        start = time.perf_counter() - t0
        address = client.scheduler.address
        for _ in range(repeat):
            t0 = time.perf_counter()
            a = certify(model, x, y, threat)
            serial.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            b = certify_on_dask(model, x, y, threat, scheduler=address)
            sharded.append(time.perf_counter() - t0)
            assert np.array_equal(a.margin, b.margin)
    return {
        "start": start,
        "serial": statistics.median(serial),
        "sharded": statistics.median(sharded),
        "megabytes": x.nbytes / 2**20,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--tasks", type=int, default=2000)
    p.add_argument("--grid", type=Path, default=TABLE1)
    p.add_argument("--certify-points", type=int, default=20000)
    p.add_argument(
        "--per-task", default="auto", help="comma-separated --cells-per-task values (auto: default)"
    )
    args = p.parse_args(argv)

    print(f"    python benchmarks/bench_sweep.py {' '.join(argv or sys.argv[1:])}\n")
    o = overheads(args.tasks)
    for w in (1, 2):
        print(
            f"{w} worker(s): cluster start {o[f'start_{w}']:.2f} s, "
            f"per task (map + as_completed of {args.tasks} no-ops) {o[f'per_task_ms_{w}']:.2f} ms, "
            f"round trip of one task {o[f'round_trip_ms_{w}']:.2f} ms"
        )
    print(
        f"data per task of 16 cells: arguments {o['args_bytes']} B; "
        f"result {o['result_bytes_no_model']} B "
        f"(--no-models), {o['result_bytes_with_model']} B with the model file\n"
    )

    c = certify_speed(args.certify_points, 5)
    print(
        f"certify {args.certify_points} points ({c['megabytes']:.0f} MiB), 784-256-1: serial "
        f"{c['serial']:.2f} s, on 2 workers {c['sharded']:.2f} s (median of 5, identical "
        f"margins): {c['serial'] / c['sharded']:.2f}x; a fresh local cluster adds "
        f"{c['start']:.2f} s\n",
        flush=True,
    )

    settings = args.per_task.split(",")
    walls: dict[tuple, list[float]] = {(s, w): [] for s in settings for w in (1, 2)}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeat):
            for s, w in walls:
                wall, rows = sweep_wall(w, s, args.grid, Path(tmp))
                walls[s, w].append(wall)
                busy = sum(row["seconds"] for row in rows)
                print(
                    f"run {r + 1}, cells per task {s}, {w} worker(s): {wall:.1f} s wall for "
                    f"{len(rows)} cells ({busy:.1f} s inside cells, "
                    f"{1e3 * busy / len(rows):.1f} ms per cell)",
                    flush=True,
                )
    print()
    for s in settings:
        m1, m2 = statistics.median(walls[s, 1]), statistics.median(walls[s, 2])
        print(
            f"cells per task {s}: median wall 1 worker {m1:.1f} s, 2 workers {m2:.1f} s; "
            f"speed-up {m1 / m2:.2f}x"
        )


if __name__ == "__main__":
    main()
