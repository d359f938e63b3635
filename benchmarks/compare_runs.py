"""Compare two output folders of benchmarks/same_results.sh, bit for bit.

    python benchmarks/compare_runs.py OLD NEW

Model files: every array (parameters, nominal model, history) and the JSON
metadata; CSV files: the text; JSON and JSON-lines: every field except
timings, worker names, dates and the folders' own paths.  Prints the files
that differ; exit status 1 if any does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

VOLATILE = ("second", "time", "worker", "finished", "started")


def clean(value, folders):
    if isinstance(value, dict):
        return {k: clean(v, folders) for k, v in value.items() if not any(w in k for w in VOLATILE)}
    if isinstance(value, list):
        return [clean(v, folders) for v in value]
    if isinstance(value, str):
        for folder in folders:
            value = value.replace(str(folder), "DIR")
    return value


def npz_difference(a: Path, b: Path, folders) -> str | None:
    x, y = np.load(a), np.load(b)
    if sorted(x.files) != sorted(y.files):
        return "different arrays"
    for k in x.files:
        u, v = x[k], y[k]
        if u.dtype.kind in "US":
            if clean(json.loads(str(u)), folders) != clean(json.loads(str(v)), folders):
                return f"{k} differs"
        elif u.shape != v.shape or not np.array_equal(u, v, equal_nan=u.dtype.kind == "f"):
            return f"{k} differs"
    return None


def difference(a: Path, b: Path, folders) -> str | None:
    if not b.exists():
        return "missing"
    if a.suffix == ".npz":
        return npz_difference(a, b, folders)
    if a.suffix == ".json":
        same = clean(json.loads(a.read_text()), folders) == clean(
            json.loads(b.read_text()), folders
        )
        return None if same else "differs"
    if a.suffix == ".jsonl":
        rows = [
            sorted(json.dumps(clean(json.loads(line), folders), sort_keys=True) for line in f)
            for f in (a.read_text().splitlines(), b.read_text().splitlines())
        ]
        return None if rows[0] == rows[1] else "rows differ"
    return None if a.read_bytes() == b.read_bytes() else "differs"


def main() -> int:
    old, new = Path(sys.argv[1]), Path(sys.argv[2])
    files = [p for p in sorted(old.rglob("*")) if p.is_file()]
    bad = [(p, d) for p in files if (d := difference(p, new / p.relative_to(old), (old, new)))]
    for p, d in bad:
        print(f"{p.relative_to(old)}: {d}")
    print(f"{len(files)} files compared, {len(bad)} differ")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
