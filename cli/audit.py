"""``intervalnn audit`` and ``intervalnn audit-training``: independent soundness audits.

The work is in :mod:`intervalnn.audit`; this module parses options, shows a
progress bar (stderr) and prints a table or JSON.  Exit code 1 when the
audit finds a refuted certificate, an enclosure violation, a counterexample
or a parameter outside its box.
"""

from __future__ import annotations

import contextlib
import math

import click

from intervalnn.experiment import RunSpec, audit_run, audit_saved
from intervalnn.experiment.outputs import quiet_divergence

from .common import Failure, Progress, command, emit
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


@contextlib.contextmanager
def _bar(label: str, quiet: bool):
    """A progress callback ``(done, total)`` drawing a progress bar on stderr (None: quiet)."""
    if quiet:
        yield None
        return
    state = {"bar": None, "done": 0}

    def update(done, total):
        if state["bar"] is None:
            state["bar"] = Progress(total, label).__enter__()
        state["bar"].advance(steps=done - state["done"])
        state["done"] = done

    try:
        yield update
    finally:
        if state["bar"] is not None:
            state["bar"].__exit__(None, None, None)


def _fmt(v, spec=".4g") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return format(v, spec)


# ---------------------------------------------------------------- audit MODEL


def _print_audit(r: dict) -> None:
    ex, fa, nv = r["exact"], r["falsification"], r["naive"]
    echo = click.echo
    echo(
        f"Audit of {r['model']} on {r['dataset']}/{r['split']}: {r['n']} points, "
        f"epsilon {r['epsilon']:g}, {r['dtype']}"
    )
    echo(f"certified: {r['certified']} / {r['n']} ({r['certified_accuracy']:.1%})")
    echo("")
    sampled = "all points" if ex["points"] == r["n"] else f"{ex['points']} sampled points"
    echo(
        f"(a) exact re-verification: MPFR {r['precision_bits']} bits, directed rounding, {sampled}"
    )
    layered = (
        f"; layered path: {ex['violations_layered_path']}"
        if ex["violations_layered_path"] is not None
        else ""
    )
    if ex.get("violations_differences") is not None:
        layered += f"; logit differences: {ex['violations_differences']}"
    rows = [
        ("certificates checked", ex["checked"]),
        ("refuted", ex["refuted"]),
        (
            "enclosure violations",
            f"{ex['violations']}  (certify path, {ex['certify_path']}: "
            f"{ex['violations_certify_path']}{layered})",
        ),
        (
            "certified by the oracle",
            f"{ex['oracle_certified']}  (lost to soundness: {ex['lost_to_soundness']})",
        ),
        (
            "engine - oracle, ulps",
            f"median {_fmt(ex['median_slack_ulps'])}, max {_fmt(ex['max_slack_ulps'])}",
        ),
        ("engine - oracle, of the width", f"max {_fmt(ex['max_slack_relative'], '.3g')}"),
    ]
    for name, value in rows:
        echo(f"  {name:<30} {value}")
    echo(
        f"(b) falsification: {fa['models']} models, {fa['evaluations']} evaluations "
        f"(vertices, random points, PGD)"
    )
    closest = fa["closest_to_bound"]
    rows = [
        ("counterexamples", fa["counterexamples"]),
        (
            "outputs outside the bounds",
            f"{fa['outside_bounds']}  (logit differences: {fa['outside_difference_bounds']})"
            if r["exact"].get("violations_differences") is not None
            else fa["outside_bounds"],
        ),
        ("float64 false alarms", f"{fa['float_only']}  (refuted by exact re-evaluation)"),
        ("smallest certified margin", _fmt(fa["min_certified_margin"])),
        ("closest approach to a bound", "-" if closest is None else f"{closest:.1%} of the width"),
    ]
    for name, value in rows:
        echo(f"  {name:<30} {value}")
    echo("(c) naive round-to-nearest arithmetic (no directed rounding, no error terms)")
    echo(f"  {'':<38} {'endpoint':>16} {'midrad':>16}")
    e, m = nv["endpoint"], nv["midrad"]
    rows = [
        ("bounds not enclosing the oracle's", f"{e['violations']}/{e['bounds']}",
         f"{m['violations']}/{m['bounds']}"),
        ("points with such a bound", e["points_with_violations"], m["points_with_violations"]),
        ("naive certificates refuted", e["refuted"], m["refuted"]),
        ("certificates differing from sound", e["certificates_differ"], m["certificates_differ"]),
        ("extra width of sound, median ulps", _fmt(e["extra_ulps_median"]),
         _fmt(m["extra_ulps_median"])),
        ("extra width of sound, max ulps", _fmt(e["extra_ulps_max"]), _fmt(m["extra_ulps_max"])),
    ]  # fmt: skip
    for name, a, b in rows:
        echo(f"  {name:<38} {a!s:>16} {b!s:>16}")
    echo(f"({r['seconds']:.1f} s)")


@command(
    "audit",
    interrupted="nothing was written",
    short_help="Check a model's certificates independently (exact oracle).",
)
@model_argument
@dataset_options
@epsilon_option("Test-time radius (default: the model's inference epsilon).")
@split_option
@seed_option("Data seed (default: the model's).")
@device_option
@click.option(
    "--precision",
    type=click.IntRange(64, 100000),
    default=200,
    show_default=True,
    help="Bits of the MPFR oracle.",
)
@click.option(
    "--max-points",
    type=click.IntRange(min=1),
    default=None,
    help="Check a random sample of this many points exactly (default: all).",
)
@click.option(
    "--models",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Random vertex models, and as many random interior models, besides the nominal one.",
)
@click.option(
    "--inputs",
    type=click.IntRange(min=0),
    default=8,
    show_default=True,
    help="Random vertices and as many interior points of each test box, per model.",
)
@click.option(
    "--pgd-steps", type=click.IntRange(min=0), default=20, show_default=True, help="PGD steps."
)
@click.option(
    "--audit-seed", type=int, default=0, show_default=True, help="Seed of all audit sampling."
)
@json_option("Print the report as JSON.")
def audit_command(model, as_json, **options):
    """Audit a saved model's certificates independently of the engine.

    \b
    (a) recomputes every point's output bounds with an MPFR oracle (tightest
        interval bounds, directed rounding): no certificate may be refuted,
        and the engine's bounds must contain the oracle's;
    (b) samples concrete models from the parameter box and inputs from the
        test box (vertices, random points, PGD attacks): no certified
        prediction may change, no output may leave the engine's bounds;
    (c) reports what plain round-to-nearest interval arithmetic would have
        given: bounds that miss the oracle's, changed certificates, and the
        width soundness costs, in ulps.

    Exit code 1 when anything is refuted, violated or falsified.

    \b
    Examples:
      intervalnn audit moons.npz
      intervalnn audit mnist17.npz --data-dir ~/mnist --max-points 500 --json
    """
    with _bar("audit", as_json) as bar:
        report = audit_saved(model, progress=bar, **options)
    if as_json:
        emit(report, True)
    else:
        _print_audit(report)
    if not report["passed"]:
        what = ", ".join(
            f"{report[k]} {k.replace('_', ' ')}"
            for k in ("refuted", "violations", "counterexamples", "outside_bounds", "inconsistent")
            if report[k]
        )
        raise Failure(f"audit FAILED: {what}")
    if not as_json:
        click.echo("audit passed: 0 refuted, 0 violations, 0 counterexamples")


# ---------------------------------------------------------------- audit-training


def _print_training(r: dict) -> None:
    echo = click.echo
    path = "fused" if r["fused"] else "layered"
    echo(
        f"Training audit on {r['dataset']}: {r['train_size']} training points, epsilon "
        f"{r['epsilon']:g}, {r['dtype']}, {r['steps']} steps ({path} training step), "
        f"{r['runs']} concrete runs ({r['exact_runs']} exact)"
    )
    echo(f"threat model: {r['threat_description']}")
    flips = r["certified_flipped"] is not None
    w = max(len("attack"), *(len(k) for k in r["by_kind"]))
    head = f"  {'attack':<{w}} {'moved':>5} {'flips':>5} {'runs':>4} {'max excursion':>14}"
    head += f" {'outside':>7}"
    echo(head + (f" {'cert. flipped':>13} {'uncert. flipped':>15}" if flips else ""))
    for kind, row in r["by_kind"].items():
        line = (
            f"  {kind:<{w}} {row['features']:>5} {row['labels']:>5} {row['runs']:>4} "
            f"{_fmt(row['max_excursion'], '.3g'):>14} {row['outside']:>7}"
        )
        if flips:
            line += (
                f" {_fmt(row['certified_flipped'], 'd'):>13} "
                f"{_fmt(row['uncertified_flipped'], 'd'):>15}"
            )
        if row["diverged"]:
            line += f"  ({row['diverged']} diverged)"
        echo(line)
    echo(
        "  moved / flips: training points whose features the attack moves / labels it changes; "
        "excursion: max over parameters and steps of max(lo - p, p - hi) / width; "
        "<= 0 means inside"
    )
    echo(f"max excursion: {_fmt(r['max_excursion'], '.3g')} (must be <= 0)")
    if r.get("frozen"):
        echo(
            f"frozen prefix: {r['frozen']} layers; frozen parameter entries not at their "
            f"initial point: {r['frozen_changed']} (must be 0)"
        )
    if flips:
        echo(
            f"kept model: step {r['kept_step']}; test points: {r['test_certified']} of "
            f"{r['test_size']} certified; certified "
            f"points a poisoned model misclassifies: {r['certified_flipped']} (must be 0); "
            f"uncertified points the attacks flipped: up to {r['uncertified_flipped']}"
        )
    else:
        echo("no certified-flip check (training stopped early, or no test points)")
    echo(
        f"clean float64 run vs the nominal model: max |difference| "
        f"{r['clean_vs_nominal']:.3g} (same initial model, batches, learning rates and rules)"
    )
    if r["stopped"]:
        echo(f"training stopped early: {r['stopped']}")
    echo(f"({r['seconds']:.1f} s)")


@command("audit-training", short_help="Rerun training against concrete poisoned SGD runs.")
@training_options
@json_option("Print the summary as JSON.")
@click.option(
    "--train-size",
    type=click.IntRange(min=1),
    default=None,
    help="Train on the first N training points only (e.g. a tiny --exact run).",
)
@click.option(
    "--test-size",
    type=click.IntRange(min=1),
    default=None,
    help="Check certified flips on the first N test points only (default: all).",
)
@click.option(
    "--validate",
    is_flag=True,
    help="Validate as 'intervalnn train' does and check the model it would keep "
    "(default: the last model, no validation).",
)
@click.option(
    "--vertices",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Poisoned datasets at random vertices of the training box.",
)
@click.option(
    "--randoms",
    type=click.IntRange(min=0),
    default=2,
    show_default=True,
    help="Poisoned datasets at random points of the training box.",
)
@click.option(
    "--adversarial/--no-adversarial",
    default=True,
    show_default=True,
    help="Poison along the sign of the loss gradient (at the start, and every step).",
)
@click.option(
    "--exact",
    is_flag=True,
    help="Also run exact rational SGD (tiny configurations: see --train-size).",
)
@click.option(
    "--layered", is_flag=True, help="Audit the layered training step instead of the fused one."
)
@click.option("--audit-seed", type=int, default=0, show_default=True, help="Seed of the poisoning.")
def audit_training_command(
    as_json,
    train_size,
    test_size,
    validate,
    vertices,
    randoms,
    adversarial,
    exact,
    layered,
    audit_seed,
    **options,
):
    """Rerun certified training and attack it with concrete poisoned SGD runs.

    Trains with the same options as 'intervalnn train' (no model file is
    written; the threat model and training rules too) and, step by step with
    the same initial model, batches, learning rates and rules (clipping,
    weight decay, momentum, rate decay), runs float64 SGD on concretely
    poisoned training sets: the clean data; with every point poisoned
    (FullCert) all +eps, all -eps, random vertices and random points; with
    --poison-count / --label-flips the K most influential points (largest
    clean gradient norm) and K random ones, trusted points never; features
    moved to random vertices, random points or along the sign of the loss
    gradient (at the start, and every step), or with --epsilon inf far away
    (1e3, 1e6; the domain's corners); labels flipped (to --label-target);
    --paired: the same points.  After every step each concrete parameter
    must lie in its interval.  --exact adds exact rational SGD
    (sigmoid/softmax via MPFR at 300 bits).

    The kept model is then certified on the test points: no poisoned run's
    final model (the nominal model trained on that poisoned data) may
    misclassify a certified point; the report also counts the uncertified
    points the attacks flipped.  The kept model is the last one, or with
    --validate the one 'intervalnn train' would keep (validation does not
    change training, only which step is kept).

    Exit code 1 when a concrete parameter leaves its interval or a certified
    point is flipped.

    \b
    Examples:
      intervalnn audit-training --dataset moons --epsilon 0.001
      intervalnn audit-training --dataset moons --epsilon 0.01 --train-size 40 \\
          --hidden 5 --epochs 2 --batch-size 20 --exact
      intervalnn audit-training --dataset moons --epsilon inf --inference-epsilon 0 \\
          --poison-count 5 --clip 0.5 --label-flips 3 --paired --trusted 100
    """
    spec = RunSpec.from_options(options)
    with _bar("training audit", as_json) as bar, quiet_divergence():
        report = audit_run(
            spec,
            train_size=train_size,
            test_size=test_size,
            validate=validate,
            layered=layered,
            audit_seed=audit_seed,
            progress=bar,
            vertices=vertices,
            randoms=randoms,
            adversarial=adversarial,
            exact=exact,
        )
    if as_json:
        emit(report, True)
    else:
        _print_training(report)
    if not report["passed"]:
        what = []
        if report["outside"] or (report["max_excursion"] or 0) > 0:
            what.append(
                f"{report['outside']} concrete parameter values outside their intervals, "
                f"max excursion {report['max_excursion']:.3g}"
            )
        if report["certified_flipped"]:
            what.append(f"{report['certified_flipped']} certified test points flipped")
        if report.get("frozen_changed"):
            what.append(f"{report['frozen_changed']} frozen parameter entries changed")
        raise Failure(f"training audit FAILED: {'; '.join(what)}")
    if not as_json:
        click.echo(
            "training audit passed: every concrete run stayed inside the parameter box"
            + ("" if report["certified_flipped"] is None else "; no certified point flipped")
        )
