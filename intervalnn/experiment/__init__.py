"""The experiment API: typed run specifications and the functions that run them.

One run::

    from intervalnn.experiment import RunSpec, train_and_certify

    spec = RunSpec.from_options(dataset="moons", epsilon=0.01, epochs=3)
    outcome = train_and_certify(spec)
    outcome.summary["certified_accuracy"]        # what `intervalnn train --json` prints
    intervalnn.io.write_atomic("moons.npz", outcome.model_file)

A :class:`RunSpec` is frozen and validated on construction (a
:class:`SpecError` names the bad field); :data:`FIELDS` is the schema of
its options (names, kinds, defaults, help), which the command line and
sweep grids share.  Saved models: :func:`certify_saved` (serial, or sharded
on Dask workers), :func:`load_model_and_data`, :func:`model_info`.  Sweeps:
:class:`Grid` (grid language, :mod:`.grid`), :func:`run_sweep` (Dask runner,
:mod:`.sweep`), :func:`read_results` (results file, :mod:`.results`),
:func:`summarize` and :func:`format_table` (tables, :mod:`.tables`).
Dask itself: :mod:`.cluster`.  The ``intervalnn`` command line only parses
options, calls these and prints.
"""

from .audits import audit_run, audit_saved
from .errors import SpecError, UnavailableError
from .grid import Grid, GridError, cell_key
from .results import VOLATILE, ResultsWriter, read_results
from .run import (
    PreparedRun,
    RunOutcome,
    device_backend,
    load_splits,
    prepare,
    train_and_certify,
)
from .saved import (
    SavedCertification,
    certify_saved,
    load_model_and_data,
    model_classes,
    model_info,
    saved_threat,
    write_per_sample,
)
from .schema import FIELDS, Field
from .spec import DataSpec, ModelSpec, RunSpec, ThreatSpec, TrainingSpec
from .sweep import Plan, SweepOutcome, plan, run_cell, run_sweep
from .tables import format_table, summarize

__all__ = [
    "FIELDS",
    "VOLATILE",
    "DataSpec",
    "Field",
    "Grid",
    "GridError",
    "ModelSpec",
    "Plan",
    "PreparedRun",
    "ResultsWriter",
    "RunOutcome",
    "RunSpec",
    "SavedCertification",
    "SpecError",
    "SweepOutcome",
    "ThreatSpec",
    "TrainingSpec",
    "UnavailableError",
    "audit_run",
    "audit_saved",
    "cell_key",
    "certify_saved",
    "device_backend",
    "format_table",
    "load_model_and_data",
    "load_splits",
    "model_classes",
    "model_info",
    "plan",
    "prepare",
    "read_results",
    "run_cell",
    "run_sweep",
    "saved_threat",
    "summarize",
    "train_and_certify",
    "write_per_sample",
]
