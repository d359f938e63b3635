"""``intervalnn sweep``: grids of certified training runs as independent Dask tasks.

A grid names options of ``intervalnn train`` (the same names, types and
checks) with one value or a list of values; a cell is one combination, run
exactly as ``intervalnn train`` would run it.  Cells run as independent
tasks on a Dask cluster (short cells a few to a task, see
:func:`default_cells_per_task`), and every finished cell is appended at once
to a JSON-lines results file (its configuration, metrics, timing, model
path), so a crash or Ctrl-C loses nothing finished and rerunning the same
sweep skips those cells.  A cell that fails is recorded with its error and
the others go on.

TOML grid files::

    search = ["learning_rate", "loss"]   # optional: chosen per seed on validation
    results = "table1.jsonl"             # optional: default <grid file>.jsonl

    [grid]                               # one value, or a list to sweep
    dataset = "moons"
    epsilon = [1e-4, 1e-3, 1e-2, 0.1]
    seed = "0-9"                         # integer ranges as "A-B"
    learning_rate = [0.5, 1.0]
    loss = ["bce", "ce"]

    [[cases]]                            # optional: options that change together,
    batch_size = 50                      # crossed with [grid]; several such lists
    epochs = 10                          # as [[cases.NAME]] are crossed in turn
    [[cases]]
    batch_size = 200
    epochs = 20

``search`` reproduces the paper's protocol: per seed, the cell with the best
certified *validation* accuracy among the searched options is reported.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import os
import re
import socket
import statistics
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from intervalnn import __version__

#: The options of ``intervalnn train`` a grid may set, by their Python names.
TRAIN_OPTIONS: dict[str, click.Option] = {}
#: Per-cell fields that differ between two runs of the same cell (timing, place).
VOLATILE = ("seconds", "worker", "finished", "model")
#: Limits that turn a typo (``seed = "0-100000000"``) into an error instead of a hang.
MAX_VALUES = 100_000
MAX_CELLS = 1_000_000
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class GridError(ValueError):
    """A grid that cannot run: an unknown key, a bad value, an empty list."""


def register(train_command) -> None:
    """Take the grid's options from ``intervalnn train`` (called once, from ``cli``)."""
    for p in train_command.params:
        if isinstance(p, click.Option) and p.expose_value and p.name not in ("output", "as_json"):
            TRAIN_OPTIONS[p.name] = p


def _unknown(name: str, known, what: str) -> GridError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return GridError(f"unknown {what} {name!r}{hint}")


def _option(name: str) -> click.Option:
    key = name.replace("-", "_")
    if key not in TRAIN_OPTIONS:
        raise _unknown(name, TRAIN_OPTIONS, "option")
    return TRAIN_OPTIONS[key]


def convert(name: str, value):
    """One value of option ``name``, checked and converted as ``intervalnn train`` would."""
    opt = _option(name)
    is_int = isinstance(opt.type, click.types.IntParamType)
    if isinstance(value, bool | list | dict) or (is_int and isinstance(value, float)):
        kind = "an integer" if is_int else "a single value"
        raise GridError(f"{opt.name}: {value!r} is not {kind}")
    try:
        return opt.type.convert(value, opt, None)
    except click.BadParameter as exc:
        raise GridError(f"{opt.name}: {exc.message}") from None


def values(name: str, raw, split: bool = False) -> list:
    """The values of ``name`` from a TOML value, or a command-line string with ``split``.

    A list sweeps its elements; with ``split`` a string is split at commas;
    integer options also take ranges ``A-B`` (both ends included).
    Duplicates are an error.
    """
    opt = _option(name)
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if split and isinstance(raw, str):
        items = [s.strip() for s in raw.split(",")]
    out = []
    for item in items:
        m = _RANGE.match(item) if isinstance(item, str) else None
        if m and isinstance(opt.type, click.types.IntParamType):
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise GridError(f"{opt.name}: empty range {item!r}")
            if hi - lo >= MAX_VALUES:
                raise GridError(f"{opt.name}: range {item!r} has over {MAX_VALUES:,} values")
            out.extend(convert(name, v) for v in range(lo, hi + 1))
        elif item == "":
            raise GridError(f"{opt.name}: empty value in {raw!r}")
        else:
            out.append(convert(name, item))
    if not out:
        raise GridError(f"{opt.name}: give at least one value")
    dupes = [v for v, n in Counter(out).items() if n > 1]
    if dupes:
        raise GridError(f"{opt.name}: {dupes[0]!r} is given twice")
    return out


def cell_key(cell: dict) -> str:
    """A cell's identity in results files: a hash of its complete configuration."""
    text = json.dumps(cell, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class Grid:
    """The cells of a sweep: every combination of ``axes``, crossed with each list of ``cases``."""

    axes: dict[str, list] = field(default_factory=dict)
    cases: list[list[dict]] = field(default_factory=list)  # lists of linked option values
    search: tuple[str, ...] = ()
    results: str | None = None

    @classmethod
    def from_toml(cls, path) -> Grid:
        path = Path(path)
        try:
            with open(path, "rb") as f:
                doc = tomllib.load(f)
        except OSError as exc:
            raise GridError(f"cannot read grid file {path}: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise GridError(f"{path} is not valid TOML: {exc}") from None
        try:
            grid = cls.from_dict(doc)
        except GridError as exc:
            raise GridError(f"{path}: {exc}") from None
        grid.resolve(path.parent)
        return grid

    @classmethod
    def from_dict(cls, doc: dict) -> Grid:
        known = ("grid", "cases", "search", "results")
        for key in doc:
            if key not in known:
                raise _unknown(key, known, "top-level key")
        results = doc.get("results")
        if results is not None and (not isinstance(results, str) or not results.strip()):
            raise GridError(f"results must be a file name, not {results!r}")
        grid = cls(results=results)
        table = doc.get("grid", {})
        if not isinstance(table, dict):
            raise GridError("[grid] must be a table of options")
        _no_twice(table, "[grid]")
        for name, raw in table.items():
            grid.set(name, raw)
        cases = doc.get("cases", [])
        for group in cases.values() if isinstance(cases, dict) else [cases]:
            if not isinstance(group, list) or not all(isinstance(c, dict) for c in group):
                raise GridError("cases must be arrays of tables: [[cases]] or [[cases.NAME]]")
            for case in group:
                _no_twice(case, "[[cases]]")
            if group:
                grid.cases.append(
                    [{_option(k).name: convert(k, v) for k, v in c.items()} for c in group]
                )
        grid.set_search(doc.get("search", []))
        return grid

    def resolve(self, base: Path) -> None:
        """Make relative paths absolute, from ``base``: the grid file's directory, or the
        working directory for the command line (workers elsewhere need them, and
        ``a.npz`` and ``./a.npz`` must be the same cell)."""

        def absolute(name, value):
            is_path = name == "data_dir" or (name == "dataset" and value.endswith(".npz"))
            return str((base / Path(value).expanduser()).resolve()) if is_path else value

        for name, vals in self.axes.items():
            self.axes[name] = [absolute(name, v) if isinstance(v, str) else v for v in vals]
        for group in self.cases:
            for case in group:
                for name, v in case.items():
                    case[name] = absolute(name, v) if isinstance(v, str) else v
        if self.results is not None:
            self.results = str(base / self.results)

    def set(self, name: str, raw, split: bool = False) -> None:
        """Sweep option ``name`` over ``raw`` (replacing what it had); see :func:`values`."""
        self.axes[_option(name).name] = values(name, raw, split)

    def set_search(self, names) -> None:
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not isinstance(names, list | tuple):
            raise GridError("search must be a list of option names")
        self.search = tuple(_option(n).name for n in names)

    def cells(self) -> list[dict]:
        """Every cell's complete options (defaults filled in), in a fixed order."""
        linked = [{k for c in group for k in c} for group in self.cases]
        for a, b in itertools.combinations(linked, 2):
            if a & b:
                raise GridError(f"{sorted(a & b)[0]} is set in two lists of [[cases]]")
        for group in linked:
            if group & set(self.axes):
                raise GridError(
                    f"{sorted(group & set(self.axes))[0]} is set both in [[cases]] and in "
                    "[grid] or on the command line"
                )
            searched = group & set(self.search)
            if searched and searched != group:
                raise GridError(
                    f"search names {sorted(searched)[0]}, which [[cases]] ties to "
                    f"{sorted(group - searched)[0]}: search all of them or none"
                )
        count = math.prod(len(v) for v in self.axes.values())
        count *= math.prod(len(g) for g in self.cases)
        if count > MAX_CELLS:
            raise GridError(f"the grid has {count:,} cells, more than {MAX_CELLS:,}")
        if "seed" in self.search:
            raise GridError("search must not include seed: each seed is one experiment")
        varying = self.varying()
        for name in self.search:
            if name not in varying:
                raise GridError(f"search names {name}, which the grid does not vary")
        defaults = {name: opt.default for name, opt in TRAIN_OPTIONS.items()}
        names = list(self.axes)
        out = []
        # cases outermost, then [grid] in file order: with search, ties go to the first
        for cases in itertools.product(*self.cases):
            for combo in itertools.product(*(self.axes[n] for n in names)):
                cell = {**defaults, **dict(zip(names, combo, strict=True))}
                for case in cases:
                    cell.update(case)
                _check_cell(cell)
                out.append(cell)
        return out

    def varying(self) -> list[str]:
        """The options that take more than one value, in option order."""
        seen: dict[str, set] = {}
        for name, vals in self.axes.items():
            seen.setdefault(name, set()).update(map(repr, vals))
        for group in self.cases:
            for case in group:
                for name in {k for c in group for k in c}:
                    default = TRAIN_OPTIONS[name].default
                    seen.setdefault(name, set()).add(repr(case.get(name, default)))
        return [n for n in TRAIN_OPTIONS if len(seen.get(n, ())) > 1]


def _no_twice(table: dict, where: str) -> None:
    """``learning-rate`` and ``learning_rate`` in one table are the same option, twice."""
    seen: dict[str, str] = {}
    for key in table:
        name = key.replace("-", "_")
        if name in seen:
            raise GridError(f"{where} sets {name} twice ({seen[name]!r} and {key!r})")
        seen[name] = key


def _check_cell(cell: dict) -> None:
    from . import check_training_options

    try:
        check_training_options(cell)
    except click.UsageError as exc:
        raise GridError(exc.message.replace("--", "").replace("-", "_")) from None


# ------------------------------------------------------------------ one cell (on a worker)


def run_cell(
    cell: dict, index: int, search: tuple[str, ...], keep_model: bool = True
) -> tuple[dict, bytes | None]:
    """Train and certify one cell as ``intervalnn train`` would; its results row and model file.

    Runs on a Dask worker (or in-process with ``--serial``).  Errors become a
    ``failed`` row: one cell never stops the sweep.  The model file's bytes
    travel back only with ``keep_model`` (the client writes them).
    """
    from .commands import train_and_certify

    t0 = time.perf_counter()
    row = {"key": cell_key(cell), "index": index, "status": "ok", "config": cell}
    row["search"] = list(search)
    data = None
    try:
        with warnings.catch_warnings():  # overflowing widths stop training; say it once, below
            warnings.simplefilter("ignore", RuntimeWarning)
            row["metrics"], data = train_and_certify(quiet=True, **cell)
    except Exception as exc:  # recorded in the results file, with its type
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}")
    row["seconds"] = time.perf_counter() - t0
    row["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    row["version"] = __version__
    return row, data if keep_model else None


# ------------------------------------------------------------------ the results file


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
            if (
                isinstance(row, dict)
                and isinstance(row.get("key"), str)
                and isinstance(row.get("index"), int)
                and isinstance(row.get("config"), dict)
                and row.get("status") in ("ok", "failed")
                and (row["status"] != "ok" or isinstance(row.get("metrics"), dict))
            ):
                rows.append(row)
            else:
                bad += 1
    return rows, bad


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


# ------------------------------------------------------------------ running a sweep


@dataclass
class SweepOutcome:
    cells: int
    skipped: int  # finished before this run
    ran: int = 0
    seconds: float = 0.0


def run_cells(chunk: list[tuple[int, dict]], search, keep_model: bool) -> list:
    """:func:`run_cell` for each ``(index, cell)`` of ``chunk``: one Dask task."""
    return [run_cell(cell, index, search, keep_model) for index, cell in chunk]


def _serial(todo, search, keep_model):
    for index, cell in todo:
        yield run_cell(cell, index, search, keep_model)


#: Cells per task when not given: tasks of ~16 Two-Moons cells take ~0.3 s, well
#: above Dask's overhead per task (a few ms), and at least 32 tasks per worker thread
#: keep the load balanced; a crashed worker loses at most one task's cells.
MAX_CELLS_PER_TASK = 16
TASKS_PER_THREAD = 32


def default_cells_per_task(cells: int, threads: int) -> int:
    """Cells per task for ``cells`` cells on ``threads`` worker threads."""
    return max(1, min(MAX_CELLS_PER_TASK, cells // (TASKS_PER_THREAD * max(1, threads))))


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
                    raise RuntimeError(
                        "the Dask cluster dropped the sweep's tasks (scheduler lost or "
                        "restarted?); the cells finished so far are saved: rerun the same "
                        "command to resume"
                    )
                done = [f for f in batch if status[f.key] == "finished"]
                try:
                    gathered = client.gather(done) if done else []
                except (OSError, distributed.CancelledError) as exc:
                    raise RuntimeError(
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


def plan(grid: Grid, results) -> tuple[list[dict], list[tuple[int, dict]], int]:
    """The grid's cells, those not yet finished in ``results`` (with their index), and how
    many lines of ``results`` could not be read."""
    cells = grid.cells()
    previous, unreadable = read_results(results)
    done = {k for k, r in latest(previous).items() if r.get("status") == "ok"}
    todo = [(i, c) for i, c in enumerate(cells) if cell_key(c) not in done]
    return cells, todo, unreadable


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
) -> SweepOutcome:
    """Run the cells of ``grid`` not yet finished in ``results``; append their rows.

    Models go to ``models/<key>.npz`` (none when ``models`` is None).  On
    Dask unless ``serial``, ``per_task`` cells per task (default:
    :func:`default_cells_per_task`); ``progress(row)`` is called as each cell finishes.
    ``planned`` is what :func:`plan` gave, if the caller already has it.
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


# ------------------------------------------------------------------ the table


def _mean_std(xs: list[float]) -> dict:
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}


def summarize(rows: list[dict], search=None) -> dict:
    """Mean ± std over seeds per cell of the varying options other than seed and search.

    With ``search``, each seed contributes its cell with the best certified
    validation accuracy among the searched options (the first in grid order on
    ties), as the paper's protocol asks; test metrics feed no choice.  ``search``
    defaults to the one the rows were run with.
    """
    rows = sorted(latest(rows).values(), key=lambda r: r["index"])
    if search is None:
        search = {s for r in rows for s in r.get("search", ())}
    search = sorted(search)
    names = list(TRAIN_OPTIONS) or (list(rows[0]["config"]) if rows else [])
    vary = [n for n in names if len({repr(r["config"].get(n)) for r in rows}) > 1]
    columns = [n for n in vary if n != "seed" and n not in search]
    groups: dict[tuple, dict] = {}
    for r in rows:
        g = groups.setdefault(
            tuple(r["config"].get(n) for n in columns), {"best": {}, "failed": 0, "runs": 0}
        )
        g["runs"] += 1
        if r["status"] != "ok":
            g["failed"] += 1
            continue
        seed, best = r["config"].get("seed"), g["best"]
        val = r["metrics"].get("val_certified_accuracy")
        val = -1.0 if val is None else val
        if seed not in best or val > best[seed][0]:
            best[seed] = (val, r)
    table = []
    for values_, g in groups.items():
        picked = [r for _, r in g["best"].values()]
        entry = {"cell": dict(zip(columns, values_, strict=True)), "seeds": len(picked)}
        entry.update(runs=g["runs"], failed=g["failed"])
        for metric in ("certified_accuracy", "accuracy", "val_certified_accuracy"):
            xs = [r["metrics"][metric] for r in picked if r["metrics"].get(metric) is not None]
            entry[metric] = _mean_std(xs) if xs else None
        if search:
            chosen = Counter(", ".join(f"{n}={r['config'].get(n)}" for n in search) for r in picked)
            entry["chosen"] = dict(chosen.most_common())
        table.append(entry)
    return {"columns": columns, "search": search, "rows": table}


def _pct(stats) -> str:
    return "-" if stats is None else f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}"


def format_table(summary: dict) -> str:
    """The summary as a Markdown table, one row per cell as in the paper's tables."""
    cols = summary["columns"]
    head = [*cols, "certified acc. (%)", "accuracy (%)", "val. certified (%)", "seeds", "failed"]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for e in summary["rows"]:
        cells = [
            f"{e['cell'][c]:g}" if isinstance(e["cell"][c], float) else str(e["cell"][c])
            for c in cols
        ]
        cells += [_pct(e["certified_accuracy"]), _pct(e["accuracy"])]
        cells += [_pct(e["val_certified_accuracy"]), str(e["seeds"]), str(e["failed"])]
        lines.append("| " + " | ".join(cells) + " |")
    if summary["search"]:
        lines.append(
            f"\nPer seed, the cell with the best certified validation accuracy over "
            f"{', '.join(summary['search'])} (test accuracy chooses nothing)."
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ the command

from . import Failure, _emit, _guard, _version, main, train_command  # noqa: E402

register(train_command)


def _grid_options(fn):
    """Every option of ``intervalnn train`` as a comma-separated list (``seed`` as ``--seeds``)."""
    for name, opt in reversed(TRAIN_OPTIONS.items()):
        flag = "--seeds" if name == "seed" else opt.opts[0]
        fn = click.option(
            flag,
            name,
            default=None,
            metavar="V,V,...",
            help="Seeds, e.g. 0-9 or 0,3,5." if name == "seed" else None,
        )(fn)
    return fn


def _where(serial, workers, scheduler) -> str:
    if serial:
        return "in this process"
    if scheduler:
        return f"on the Dask cluster at {scheduler}"
    from intervalnn.kernels.cpu import CORES

    return f"on {workers or CORES} local Dask workers"


@main.command(
    "sweep",
    short_help="Grids of training runs on Dask: resumable, with mean ± std tables.",
)
@_version
@click.argument("grid_file", required=False, type=click.Path(dir_okay=False), metavar="[GRID.toml]")
@click.option(
    "--search",
    metavar="OPTION,...",
    help="Options chosen per seed by certified validation accuracy (the paper's protocol).",
)
@click.option(
    "--results",
    type=click.Path(dir_okay=False),
    help="JSON-lines results file  [default: GRID.jsonl, or sweep.jsonl]",
)
@click.option(
    "--models",
    type=click.Path(file_okay=False),
    help="Directory for the model files  [default: RESULTS-models/]",
)
@click.option("--no-models", is_flag=True, help="Keep no model files (large searches).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    help="Worker processes of the local Dask cluster  [default: one per core]",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    help="Run on this running Dask cluster ('dask scheduler' / 'dask worker').",
)
@click.option(
    "--cells-per-task",
    type=click.IntRange(min=1),
    default=None,
    help="Cells run by one Dask task  [default: up to 16, at least 32 tasks per worker]",
)
@click.option("--serial", is_flag=True, help="Run the cells one by one in this process (no Dask).")
@click.option("--dry-run", is_flag=True, help="List the cells and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print the table as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@_grid_options
def sweep_command(
    grid_file,
    search,
    results,
    models,
    no_models,
    workers,
    scheduler,
    cells_per_task,
    serial,
    dry_run,
    as_json,
    quiet,
    **grid_options,
):
    """Run a grid of certified training runs as independent tasks on Dask.

    The grid comes from a TOML file (see the README) and/or from training
    options given as comma-separated lists; each cell runs as 'intervalnn
    train' would.  Rows stream to a JSON-lines results file as cells finish;
    rerunning the same command skips finished cells (resume after a crash or
    Ctrl-C) and retries failed ones.  Ends with a table of mean ± std over
    seeds per cell.

    \b
    Examples:
      intervalnn sweep --dataset moons --epsilon 1e-4,1e-3,1e-2,0.1 --seeds 0-9
      intervalnn sweep benchmarks/sweeps/table1.toml --workers 2
      intervalnn sweep grid.toml --scheduler tcp://10.0.0.5:8786
      intervalnn plot sweep grid.jsonl --x epsilon -o sweep.png
    """
    if sum(map(bool, (serial, workers, scheduler))) > 1:
        raise click.UsageError("use one of --serial, --workers and --scheduler")
    if scheduler is not None and not scheduler.strip():
        raise click.UsageError("--scheduler needs an address, e.g. tcp://HOST:8786")
    if serial and cells_per_task:
        raise click.UsageError("--cells-per-task is for Dask tasks; --serial runs no tasks")
    if no_models and models:
        raise click.UsageError("use --models DIR or --no-models, not both")
    try:
        grid = Grid.from_toml(grid_file) if grid_file else Grid()
        for name, raw in grid_options.items():
            if raw is not None:
                grid.set(name, raw, split=True)
        if search is not None:
            grid.set_search(search)
        grid.resolve(Path.cwd())  # the command line's paths (the file's are absolute by now)
        if results is None:
            results = grid.results or (Path(grid_file).with_suffix(".jsonl") if grid_file else None)
            results = Path(results or "sweep.jsonl")
        planned = plan(grid, results)
    except GridError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # the results file cannot be read
        raise Failure(str(exc)) from None
    cells, todo, unreadable = planned
    if Path(results).suffix.lower() == ".toml" or (
        grid_file and Path(results).resolve() == Path(grid_file).resolve()
    ):
        raise click.UsageError(f"--results {results} would overwrite a grid: use a .jsonl file")
    if models is None and not no_models:
        models = Path(results).with_name(Path(results).stem + "-models")
    if dry_run:
        vary = grid.varying()
        fixed = {n: v[0] for n, v in grid.axes.items() if n not in vary}
        click.echo("every cell: " + "  ".join(f"{n}={v}" for n, v in fixed.items()))
        for i, cell in enumerate(cells):
            click.echo(f"{i:>5}  " + "  ".join(f"{n}={cell[n]}" for n in vary))
        click.echo(f"{len(cells)} cells")
        return
    if not serial:
        from .cluster import require_dask

        _guard(require_dask, "intervalnn sweep")
    if models is not None and todo:
        _guard(_check_writable, Path(models))
    if unreadable:
        echo_err(f"{results}: skipped {unreadable} unreadable lines (cut off by a crash?)")
    echo_err(
        f"sweep: {len(cells)} cells, {len(cells) - len(todo)} already done in {results}, "
        f"{len(todo)} to run {_where(serial, workers, scheduler)}"
    )
    finished = [0, 0]  # cells, failures

    def show(row):
        return f"{finished[1]} failed" if finished[1] else None

    bar = progress_bar(len(todo), quiet, show)
    try:
        with bar as b:

            def progress(row):
                finished[0] += 1
                finished[1] += row["status"] != "ok"
                if b is not None:
                    b.update(1, row)

            outcome = _guard(
                run_sweep,
                grid,
                results,
                models,
                serial=serial,
                workers=workers,
                scheduler=scheduler,
                per_task=cells_per_task,
                progress=progress,
                planned=planned,
            )
    except KeyboardInterrupt:
        echo_err(
            f"\ninterrupted: {finished[0]} cells finished this run and are saved in {results}; "
            "rerun the same command to resume"
        )
        sys.exit(130)
    # this grid's rows, in this grid's order and with its search (the file may hold others)
    order = {cell_key(c): i for i, c in enumerate(cells)}
    rows = [{**r, "index": order[r["key"]]} for r in read_results(results)[0] if r["key"] in order]
    summary = summarize(rows, search=grid.search)
    if as_json:
        _emit({**summary, "results": str(results), "seconds": outcome.seconds}, True)
    else:
        click.echo(format_table(summary))
        click.echo(
            f"\n{outcome.ran} cells run in {outcome.seconds:.1f} s, {outcome.skipped} already "
            f"done; results: {results}" + (f"; models: {models}" if models is not None else "")
        )
    failed = sorted(
        (r for r in latest(rows).values() if r["status"] != "ok"), key=lambda r: r["index"]
    )
    if failed:
        raise Failure(
            f"{len(failed)} of {len(cells)} cells failed (e.g. cell {failed[0]['index']}: "
            f"{failed[0]['error']}); their errors are in {results}, and rerunning retries them"
        )


def _check_writable(directory: Path) -> None:
    """Fail before any cell runs if model files cannot be written to ``directory``."""
    import tempfile

    if directory.exists() and not directory.is_dir():
        raise OSError(f"--models {directory} is a file, not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise OSError(f"cannot write model files to {directory}: {exc.strerror or exc}") from None


def echo_err(message: str) -> None:
    click.echo(message, err=True)


def progress_bar(total: int, quiet: bool, show):
    """A progress bar counting finished cells on stderr (none when quiet)."""
    import contextlib

    if quiet or not total:
        return contextlib.nullcontext(None)
    return click.progressbar(
        length=total, label="sweep", item_show_func=show, file=sys.stderr, show_pos=True
    )
