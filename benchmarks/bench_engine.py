"""Interval engine speed as ratios to plain NumPy, measured in one run.

    python benchmarks/bench_engine.py [--repeat 15] [--backend numpy|cupy]

Prints a Markdown table: for each operation the median time of the plain
array operation, of the sound interval operation on the same data, and their
ratio.  Elementwise operations use 10^6 elements; matmul uses n x n
intervals times n x n intervals (and a point matrix times intervals, the
shape of a network's first layer).
"""

import argparse
import datetime
import operator
import os
import platform
import statistics
import time
from functools import partial

import numpy as np

import intervalnn as inn


def median_seconds(fn, repeat, sync):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--backend", choices=["numpy", "cupy"], default="numpy")
    parser.add_argument("--sizes", default="256,1024", help="matmul sizes")
    args = parser.parse_args()

    backend = inn.get_backend(args.backend)
    xp = backend.xp
    sync = (lambda: xp.cuda.Device().synchronize()) if args.backend == "cupy" else (lambda: None)
    rng = np.random.default_rng(0)
    rows = []

    def record(name, dtype, plain, interval):
        tp = median_seconds(plain, args.repeat, sync)
        ti = median_seconds(interval, args.repeat, sync)
        rows.append((name, dtype, tp * 1e3, ti * 1e3, ti / tp))

    def box(shape, dtype, rel):
        c = xp.asarray(rng.standard_normal(shape).astype(dtype))
        return c, inn.Interval.from_center_radius(c, xp.abs(c) * dtype(rel))

    for dtype in (np.float64, np.float32):
        name = np.dtype(dtype).name
        try:
            backend.require_dtype(dtype)
        except TypeError as refused:
            print(f"# {name} skipped: {refused}")
            continue
        a, ia = box(10**6, dtype, 1e-3)
        b, ib = box(10**6, dtype, 1e-3)
        record("add, 10^6", name, partial(operator.add, a, b), partial(operator.add, ia, ib))
        record("mul, 10^6", name, partial(operator.mul, a, b), partial(operator.mul, ia, ib))
        if hasattr(inn, "exp"):
            record("exp, 10^6", name, partial(xp.exp, a), partial(inn.exp, ia))
        for n in map(int, args.sizes.split(",")):
            m, im = box((n, n), dtype, 1e-3)
            w, iw = box((n, n), dtype, 1e-3)
            plain = partial(operator.matmul, m, w)
            record(
                f"matmul interval @ interval, n={n}", name, plain, partial(operator.matmul, im, iw)
            )
            record(f"matmul point @ interval, n={n}", name, plain, partial(operator.matmul, m, iw))

    print(f"# intervalnn engine benchmark, {datetime.date.today()}, backend {args.backend}")
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"numpy {np.__version__}, median of {args.repeat}"
    )
    print("| operation | dtype | plain (ms) | interval (ms) | ratio |")
    print("|---|---|---:|---:|---:|")
    for name, dtype, tp, ti, ratio in rows:
        print(f"| {name} | {dtype} | {tp:.3f} | {ti:.3f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
