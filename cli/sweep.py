"""``intervalnn sweep``: grids of certified training runs as independent Dask tasks.

The grid language, the results file, the Dask runner and the tables are
:mod:`intervalnn.experiment` (``grid``, ``results``, ``sweep``, ``tables``);
this command parses options, calls them and prints.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

import click

from intervalnn.experiment import FIELDS, GridError, format_table, run_sweep, summarize
from intervalnn.experiment.cluster import local_workers, require_dask
from intervalnn.experiment.grid import Grid
from intervalnn.experiment.sweep import (
    check_models_dir,
    check_results,
    default_models_dir,
    failed_rows,
    grid_rows,
    plan,
    results_path,
)

from .common import Failure, command, echo_err, emit, progress


def _grid_options(fn):
    """Every option of a run as a comma-separated list (``seed`` as ``--seeds``)."""
    for name, f in reversed(FIELDS.items()):
        fn = click.option(
            "--seeds" if name == "seed" else f.flag,
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
    return f"on {workers or local_workers()} local Dask workers"


@command(
    "sweep",
    interrupted="the cells finished so far are saved: rerun the same command to resume",
    short_help="Grids of training runs on Dask: resumable, with mean ± std tables.",
)
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
        grid = Grid.from_sources(grid_file, grid_options, search)
        results = results_path(grid, grid_file, results)
    except GridError as exc:
        raise click.UsageError(str(exc)) from None
    if Path(results).suffix.lower() == ".toml" or (
        grid_file and Path(results).resolve() == Path(grid_file).resolve()
    ):
        raise click.UsageError(f"--results {results} would overwrite a grid: use a .jsonl file")
    if not dry_run:  # before any cell runs: never append to an input or a foreign file
        check_results(results, grid, grid_file)
    try:
        planned = plan(grid, results)
    except GridError as exc:
        raise click.UsageError(str(exc)) from None
    except OSError as exc:  # the results file cannot be read
        raise Failure(str(exc)) from None
    cells, todo, unreadable = planned
    if models is None and not no_models:
        models = default_models_dir(results)
    if dry_run:
        vary = grid.varying()
        fixed = {n: v[0] for n, v in grid.axes.items() if n not in vary}
        click.echo("every cell: " + "  ".join(f"{n}={v}" for n, v in fixed.items()))
        for i, cell in enumerate(cells):
            click.echo(f"{i:>5}  " + "  ".join(f"{n}={cell[n]}" for n in vary))
        click.echo(f"{len(cells)} cells")
        return
    if not serial:
        require_dask("intervalnn sweep")
    if models is not None and todo:
        check_models_dir(models)
    if unreadable:
        echo_err(f"{results}: skipped {unreadable} unreadable lines (cut off by a crash?)")
    echo_err(
        f"sweep: {len(cells)} cells, {len(cells) - len(todo)} already done in {results}, "
        f"{len(todo)} to run {_where(serial, workers, scheduler)}"
    )
    finished = [0, 0]  # cells, failures

    def show(row):
        return f"{finished[1]} failed" if finished[1] else None

    ctrl_c = threading.Event()

    def on_ctrl_c(signum, frame):
        ctrl_c.set()
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGINT, on_ctrl_c)
    except ValueError:  # not the main thread
        previous = None
    try:
        with progress(len(todo), "sweep", quiet, show, show_pos=True) as bar:

            def count(row):
                finished[0] += 1
                finished[1] += row["status"] != "ok"
                if bar is not None:
                    bar.advance(row)

            outcome = run_sweep(
                grid,
                results,
                models,
                serial=serial,
                workers=workers,
                scheduler=scheduler,
                per_task=cells_per_task,
                progress=count,
                planned=planned,
                interrupted=ctrl_c.is_set,
            )
    except KeyboardInterrupt:
        echo_err(
            f"\nsweep: interrupted; {finished[0]} cells finished this run and are saved in "
            f"{results}: rerun the same command to resume"
        )
        sys.exit(130)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
    # this grid's rows, in this grid's order and with its search (the file may hold others)
    rows = grid_rows(cells, results)
    summary = summarize(rows, search=grid.search)
    if as_json:
        emit({**summary, "results": str(results), "seconds": outcome.seconds}, True)
    else:
        click.echo(format_table(summary))
        click.echo(
            f"\n{outcome.ran} cells run in {outcome.seconds:.1f} s, {outcome.skipped} already "
            f"done; results: {results}" + (f"; models: {models}" if models is not None else "")
        )
    failed = failed_rows(rows)
    if failed:
        raise Failure(
            f"{len(failed)} of {len(cells)} cells failed (e.g. cell {failed[0]['index']}: "
            f"{failed[0]['error']}); their errors are in {results}, and rerunning retries them"
        )
