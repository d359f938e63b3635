"""Running a sweep: the cells of a grid as independent Dask tasks (or one by one), resumable.

Cells run as independent tasks on a Dask cluster (short cells a few to a
task, see :func:`default_cells_per_task`), and every finished cell is
appended at once to the results file (:mod:`~intervalnn.experiment.results`),
so a crash or Ctrl-C loses nothing finished and rerunning the same sweep
skips those cells.  A cell that fails is recorded with its error and the
others go on.  Each cell runs exactly as ``intervalnn train`` would
(:func:`~intervalnn.experiment.train_and_certify`).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from intervalnn import __version__

from .errors import UnavailableError
from .grid import Grid, cell_key
from .outputs import check_output
from .results import ResultsWriter, latest, read_results
from .run import train_and_certify
from .spec import RunSpec

#: Cells per task when not given: tasks of ~16 Two-Moons cells take ~0.3 s, well
#: above Dask's overhead per task (a few ms), and at least 32 tasks per worker thread
#: keep the load balanced; a crashed worker loses at most one task's cells.
MAX_CELLS_PER_TASK = 16
TASKS_PER_THREAD = 32


# ------------------------------------------------------------------ one cell (on a worker)


def run_cell(
    cell: dict, index: int, search: tuple[str, ...], keep_model: bool = True
) -> tuple[dict, bytes | None]:
    """Train and certify one cell as ``intervalnn train`` would; its results row and model file.

    Runs on a Dask worker (or in-process with ``--serial``).  Errors become a
    ``failed`` row: one cell never stops the sweep.  The model file's bytes
    travel back only with ``keep_model`` (the client writes them).
    """
    t0 = time.perf_counter()
    row = {"key": cell_key(cell), "index": index, "status": "ok", "config": cell}
    row["search"] = list(search)
    data = None
    try:
        with warnings.catch_warnings():  # overflowing widths stop training; say it once, below
            warnings.simplefilter("ignore", RuntimeWarning)
            outcome = train_and_certify(RunSpec.from_options(cell))
            row["metrics"], data = outcome.summary, outcome.model_file
    except Exception as exc:  # recorded in the results file, with its type
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - t0
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    row["version"] = __version__
    return row, data if keep_model else None


def run_cells(chunk: list[tuple[int, dict]], search, keep_model: bool) -> list:
    """:func:`run_cell` for each ``(index, cell)`` of ``chunk``: one Dask task."""
    return [run_cell(cell, index, search, keep_model) for index, cell in chunk]


# ------------------------------------------------------------------ planning


class Plan(NamedTuple):
    cells: list[dict]  # every cell of the grid, in grid order
    todo: list[tuple[int, dict]]  # (index, cell) of those not yet finished
    unreadable: int  # lines of the results file that could not be read


def plan(grid: Grid, results) -> Plan:
    """The grid's cells, those not yet finished in ``results`` (with their index), and how
    many lines of ``results`` could not be read."""
    cells = grid.cells()
    previous, unreadable = read_results(results)
    done = {k for k, r in latest(previous).items() if r.get("status") == "ok"}
    todo = [(i, c) for i, c in enumerate(cells) if cell_key(c) not in done]
    return Plan(cells, todo, unreadable)


def results_path(grid: Grid, grid_file=None, results=None):
    """Where a sweep's rows go: ``results`` (as given), else the grid file's ``results``,
    else ``GRID.jsonl`` next to the grid file, else ``sweep.jsonl``."""
    if results is not None:
        return results
    results = grid.results or (Path(grid_file).with_suffix(".jsonl") if grid_file else None)
    return Path(results or "sweep.jsonl")


def check_results(results, grid: Grid, grid_file=None) -> None:
    """Before any cell runs: ``results`` may be appended to (a usage error if it is the grid
    file, a data set of the grid, or an existing file that is not a results file)."""
    inputs = [("grid file", grid_file)]
    datasets = [*grid.axes.get("dataset", [])]
    datasets += [case.get("dataset") for group in grid.cases for case in group]
    inputs += [("data set", d) for d in datasets if isinstance(d, str)]
    check_output(results, "--results", inputs, what="results file", results=True)


def default_models_dir(results) -> Path:
    """Where a sweep's model files go by default: ``RESULTS-models/`` next to the results."""
    return Path(results).with_name(Path(results).stem + "-models")


def check_models_dir(directory) -> None:
    """An ``OSError`` before any cell runs if model files cannot be written to ``directory``."""
    import tempfile

    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OSError(f"--models {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise OSError(f"cannot write model files to {directory}: {exc.strerror or exc}") from None


def default_cells_per_task(cells: int, threads: int) -> int:
    """Cells per task for ``cells`` cells on ``threads`` worker threads."""
    return max(1, min(MAX_CELLS_PER_TASK, cells // (TASKS_PER_THREAD * max(1, threads))))


# ------------------------------------------------------------------ running


@dataclass
class SweepOutcome:
    cells: int
    skipped: int  # finished before this run
    ran: int = 0
    seconds: float = 0.0


def _serial(todo, search, keep_model):
    for index, cell in todo:
        yield run_cell(cell, index, search, keep_model)


def _task_key(chunk, search, keep_model) -> str:
    """A Dask key naming everything the task computes: sweeps sharing a cluster never collide."""
    text = json.dumps([[cell_key(c) for _, c in chunk], list(search), keep_model])
    return f"intervalnn-cells-{hashlib.sha256(text.encode()).hexdigest()[:24]}"


def _task_failed(future, chunk, search) -> list[tuple[dict, None]]:
    """The rows of the cells of a task that failed outside ``run_cell`` (a worker died)."""
    exc = future.exception()
    rows = []
    for index, cell in chunk:
        row = {"key": cell_key(cell), "index": index, "status": "failed", "config": cell}
        row.update(search=list(search), version=__version__)
        row["error"] = f"{type(exc).__name__}: {exc}"
        rows.append((row, None))
    return rows


def _on_dask(todo, search, keep_model, workers, scheduler, per_task=None):
    from .cluster import dask_client

    with dask_client("intervalnn sweep", workers, scheduler) as client:
        import distributed

        if per_task is None:
            threads = sum(w["nthreads"] for w in client.scheduler_info()["workers"].values())
            per_task = default_cells_per_task(len(todo), threads)
        chunks = [todo[i : i + per_task] for i in range(0, len(todo), per_task)]
        futures = [
            client.submit(
                run_cells, chunk, search, keep_model, key=_task_key(chunk, search, keep_model)
            )
            for chunk in chunks
        ]
        by_key = {f.key: chunk for f, chunk in zip(futures, chunks, strict=True)}
        try:
            # finished tasks in batches, each fetched in one round trip
            for batch in distributed.as_completed(futures).batches():
                status = {f.key: f.status for f in batch}  # read once: it may change
                if any(v not in ("finished", "error") for v in status.values()):
                    raise UnavailableError(
                        "the Dask cluster dropped the sweep's tasks (scheduler lost or "
                        "restarted?); the cells finished so far are saved: rerun the same "
                        "command to resume"
                    )
                done = [f for f in batch if status[f.key] == "finished"]
                try:
                    gathered = client.gather(done) if done else []
                except (OSError, distributed.CancelledError) as exc:
                    raise UnavailableError(
                        f"lost the Dask cluster ({type(exc).__name__}); the cells finished so "
                        "far are saved: rerun the same command to resume"
                    ) from None
                for rows in gathered:
                    yield from rows
                for future in batch:
                    if status[future.key] == "error":  # the task, not a cell, failed
                        yield from _task_failed(future, by_key[future.key], search)
                client.cancel(batch)  # releases what is kept for them
        finally:
            client.cancel(futures)


def run_sweep(
    grid: Grid,
    results,
    models=None,
    *,
    serial=False,
    workers=None,
    scheduler=None,
    per_task=None,
    progress=None,
    planned=None,
    interrupted=None,
) -> SweepOutcome:
    """Run the cells of ``grid`` not yet finished in ``results``; append their rows.

    Models go to ``models/<key>.npz`` (none when ``models`` is None).  On
    Dask unless ``serial``, ``per_task`` cells per task (default:
    :func:`default_cells_per_task`); ``progress(row)`` is called as each cell finishes.
    ``planned`` is what :func:`plan` gave, if the caller already has it.
    ``interrupted()`` true when a cell finishes raises ``KeyboardInterrupt`` before
    its row is written: a Ctrl-C that a library swallowed inside the cell (Numba
    compiling, say, turns it into a RuntimeError) must not record a failed cell.
    """
    cells, todo, _ = planned or plan(grid, results)
    outcome = SweepOutcome(cells=len(cells), skipped=len(cells) - len(todo))
    if not todo:
        return outcome
    t0 = time.perf_counter()
    keep = models is not None
    if serial:
        run = _serial(todo, grid.search, keep)
    else:
        run = _on_dask(todo, grid.search, keep, workers, scheduler, per_task)
    writer = ResultsWriter(results)
    try:
        for row, data in run:
            if interrupted is not None and interrupted():
                raise KeyboardInterrupt
            if data is not None and models is not None:
                from intervalnn.io import file_digest, write_atomic

                row["model"] = str(write_atomic(Path(models) / f"{row['key']}.npz", data))
                row["model_sha256"] = file_digest(data)
            row["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            writer.write(row)
            outcome.ran += 1
            if progress is not None:
                progress(row)
    finally:
        run.close()
        writer.close()
        outcome.seconds = time.perf_counter() - t0
    return outcome


def grid_rows(cells: list[dict], results) -> list[dict]:
    """The rows of ``results`` that belong to ``cells``, indexed by the cells' order
    (the file may hold the rows of other grids too)."""
    order = {cell_key(c): i for i, c in enumerate(cells)}
    return [{**r, "index": order[r["key"]]} for r in read_results(results)[0] if r["key"] in order]


def failed_rows(rows: list[dict]) -> list[dict]:
    """The cells whose latest row failed, in grid order."""
    return sorted(
        (r for r in latest(rows).values() if r["status"] != "ok"), key=lambda r: r["index"]
    )
