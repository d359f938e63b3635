"""The results file of a sweep: JSON lines, one row per finished cell, appended as cells finish.

A row holds the cell's ``key`` (:func:`~intervalnn.experiment.grid.cell_key`),
``index``, ``status`` (``ok`` or ``failed``), ``config`` (every option),
``metrics`` (or ``error``), timing and place, and the model file's path and
digest.  A crash can cut the last line at most: :func:`read_results` skips
unreadable lines (and rows of the wrong shape) and counts them, and rerunning
a sweep skips every cell already ``ok`` (resume).  Metric values are checked
where they are used: :func:`~intervalnn.experiment.tables.summarize` skips rows
whose metrics are not numbers in [0, 1] and counts them.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

#: Per-cell fields that differ between two runs of the same cell (timing, place).
VOLATILE = ("seconds", "worker", "finished", "model")


def read_results(path) -> tuple[list[dict], int]:
    """The rows of a results file and how many unreadable lines it had (a crash mid-write)."""
    path = Path(path)
    if not path.exists():
        return [], 0
    rows, bad = [], 0
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad += 1
                continue
            if _well_formed(row):
                if row["status"] == "failed" and not isinstance(row.get("error"), str):
                    row["error"] = str(row.get("error", "no error recorded"))
                rows.append(row)
            else:
                bad += 1
    return rows, bad


def _well_formed(row) -> bool:
    """A row's structure, as the tables read it: config values are plain JSON scalars
    (they key groups of cells), ``search`` a list of option names."""
    return (
        isinstance(row, dict)
        and isinstance(row.get("key"), str)
        and type(row.get("index")) is int
        and isinstance(row.get("config"), dict)
        and all(v is None or isinstance(v, str | int | float) for v in row["config"].values())
        and row.get("status") in ("ok", "failed")
        and (row["status"] != "ok" or isinstance(row.get("metrics"), dict))
        and (
            "search" not in row
            or (isinstance(row["search"], list) and all(isinstance(s, str) for s in row["search"]))
        )
    )


def latest(rows: list[dict]) -> dict[str, dict]:
    """The last row of every cell (a rerun replaces an earlier failure)."""
    return {r["key"]: r for r in rows}


class ResultsWriter:
    """Appends rows to a JSON-lines file, each flushed as it arrives, synced once a second."""

    def __init__(self, path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a+b")
        except OSError as exc:
            raise OSError(f"cannot write results file {path}: {exc.strerror or exc}") from None
        try:  # one sweep per results file, or both would run the same cells
            import fcntl

            fcntl.flock(self._f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX
            pass
        except OSError:
            self._f.close()
            raise OSError(f"{path} is being written by another sweep: wait for it") from None
        self._f.seek(0, os.SEEK_END)
        if self._f.tell():  # a crash may have cut the last line: start on a fresh one
            self._f.seek(-1, os.SEEK_END)
            if self._f.read(1) != b"\n":
                self._f.write(b"\n")
        self._synced = time.monotonic()

    def write(self, row: dict) -> None:
        self._f.write((json.dumps(row, default=str) + "\n").encode())
        self._f.flush()
        if time.monotonic() - self._synced > 1.0:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._f.fileno())
        self._synced = time.monotonic()

    def close(self) -> None:
        if not self._f.closed:
            self.sync()
            self._f.close()
