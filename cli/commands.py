"""``intervalnn train``, ``certify`` and ``info``: parse options, call the library, print."""

from __future__ import annotations

from pathlib import Path

import click

from intervalnn.experiment import (
    RunSpec,
    certify_saved,
    model_info,
    prepare,
    train_and_certify,
    write_per_sample,
)
from intervalnn.experiment.outputs import check_output, quiet_divergence
from intervalnn.experiment.saved import history_csv
from intervalnn.io import write_atomic

from .common import Failure, command, echo_err, emit, progress
from .options import (
    dataset_options,
    device_option,
    epsilon_option,
    json_option,
    model_argument,
    seed_option,
    split_option,
    training_options,
)


def _show_validation(row):
    acc = None if row is None else row.get("val_certified_accuracy")
    return None if acc is None else f"val certified {acc:.1%}"


def _data_file(options):
    """The data set as an input file (a ``.npz`` path), for the output checks."""
    return ("data set", options.get("dataset"))


@command(
    "train",
    interrupted="nothing was written (the model file is written when training ends)",
    short_help="Certified training (FullCert, k-of-n poisoning); writes a model file.",
)
@training_options
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    default="model.npz",
    show_default=True,
    help="Where to write the model file.",
)
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Save the run's state to this file after an epoch, at most every --checkpoint-every "
    "seconds, so that an interrupted run can continue with --resume.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the --checkpoint file if it exists (bit-identical to an uninterrupted "
    "run; the options must be the same), else start afresh.",
)
@click.option(
    "--checkpoint-every",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="Seconds between checkpoints (one after the last epoch in any case).",
)
@json_option("Print the summary as JSON.")
def train_command(output, checkpoint, resume, checkpoint_every, as_json, **options):
    """Train with FullCert on a box of poisoned datasets and save the model.

    By default every feature of every training point may move by --epsilon
    (FullCert).  --poison-count K lets only K points move (--epsilon inf:
    anywhere, with --clip), --label-flips K flips up to K labels, --trusted N
    keeps the first N points (and a .npz file's 'trusted' rows) clean; the
    training rules (--clip, --weight-decay, --momentum, --lr-decay, --steps)
    keep the boxes tight.  The model file stores all of it (intervalnn info).

    \b
    Examples:
      intervalnn train --dataset moons --epsilon 0.01 --output moons.npz
      intervalnn train --dataset mnist17 --data-dir ~/mnist --epsilon 1e-4 \\
          --layers 2 --hidden 10 --batch-size 11007 --epochs 3 -o mnist17.npz
      intervalnn train --dataset moons --epsilon inf --inference-epsilon 0 \\
          --poison-count 10 --clip 0.5 --momentum 0.9 -o k10.npz
    """
    check_output(output, "--output", [_data_file(options)])
    if resume and checkpoint is None:
        raise click.UsageError("--resume needs --checkpoint FILE")
    if checkpoint is not None:
        if Path(checkpoint).resolve() == Path(output).resolve():
            raise click.UsageError("--checkpoint: choose a file other than --output")
        check_output(checkpoint, "--checkpoint", [_data_file(options)])
    run = prepare(RunSpec.from_options(options))
    saving = {"checkpoint": checkpoint, "resume": resume, "checkpoint_every": checkpoint_every}
    with progress(run.validations, "certified training", as_json, _show_validation) as bar:
        with quiet_divergence():  # the library says "bounds became infinite" in one line
            outcome = train_and_certify(
                run, progress=None if bar is None else bar.advance, **saving
            )
    try:
        write_atomic(output, outcome.model_file)
    except OSError as exc:  # found only now (a full disk ...): name the option, not a temp file
        raise Failure(f"cannot write --output file {output}: {exc.strerror or exc}") from None
    emit({"model": str(output), **outcome.summary}, as_json)


@command(
    "certify",
    interrupted="nothing was written",
    short_help="Certify a saved model on a data split.",
)
@model_argument
@dataset_options
@epsilon_option("Test-time radius (default: the model's inference epsilon).")
@split_option
@seed_option("Data seed (default: the one the model was trained with).")
@device_option
@click.option(
    "--per-sample",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write per-sample results as CSV: index, label, certified, margin, nominal_correct.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Shard the data across this many local Dask worker processes.",
)
@click.option(
    "--scheduler",
    metavar="tcp://HOST:PORT",
    default=None,
    help="Shard the data across the workers of this running Dask cluster.",
)
@json_option("Print the result as JSON.")
def certify_command(model, per_sample, as_json, **options):
    """Certify a saved model on a data split.

    With --workers or --scheduler the split is cut into shards certified on
    Dask workers (pip install 'intervalnn[dask]'); the results are identical
    to the serial run.

    \b
    Examples:
      intervalnn certify moons.npz --dataset moons --epsilon 0.01
      intervalnn certify moons.npz --dataset moons --json --per-sample out.csv
      intervalnn certify mnist17.npz --data-dir ~/mnist --workers 2
    """
    if per_sample is not None:
        check_output(
            per_sample,
            "--per-sample",
            [("model file", model), _data_file(options)],
            make_dirs=False,
        )
    done = certify_saved(model, **options)
    if per_sample:
        try:
            write_per_sample(per_sample, done.labels, done.result)
        except OSError as exc:
            raise Failure(f"cannot write --per-sample file {per_sample}: {exc.strerror}") from None
    summary = done.summary
    if summary.get("data_matches_training") is False:
        echo_err(
            f"Note: {summary['dataset']} with this seed is not the data set the model was "
            "trained on (the training split's fingerprint differs; see intervalnn info)"
        )
    if as_json:
        emit(summary, True)
        return
    text = {k: v for k, v in summary.items() if k != "per_class"}
    for row in summary["per_class"]:
        if row["n"]:
            text[f"class {row['class']}"] = (
                f"certified {row['certified_accuracy']:.1%}, accuracy {row['accuracy']:.1%} "
                f"(n={row['n']})"
            )
        else:
            text[f"class {row['class']}"] = "no samples"
    emit(text, False)


@command("info", short_help="Show what a model file holds.")
@model_argument
@click.option(
    "--history",
    "history",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE.csv",
    help="Write the training history (one row per validation) as CSV.",
)
@json_option("Print the metadata as JSON (with the history rows).")
def info_command(model, history, as_json):
    """Show what a model file holds (architecture, threat model, training, checks).

    \b
    Examples:
      intervalnn info moons.npz
      intervalnn info moons.npz --json --history history.csv
    """
    if history is not None:
        check_output(history, "--history", [("model file", model)], make_dirs=False)
    info = model_info(model)
    if history is not None:
        try:
            write_atomic(history, history_csv(info["history"]))
        except OSError as exc:
            raise Failure(f"cannot write --history file {history}: {exc.strerror}") from None
    if not as_json:  # one line per field: the rows go to --history
        info = {k: v for k, v in info.items() if k != "history"}
    emit(info, as_json)
