"""The model audit: the engine's bounds against the oracle, falsification and naive bounds."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .. import certify as _certify
from ..engine import FusedEngine, clear_caches, make_engine
from ..layers import Sequential
from ..threat import ThreatModel
from .falsification import falsify
from .naive import naive_bounds
from .network import network_layers
from .oracle import PRECISION, Oracle

# ---------------------------------------------------------------- the engine under audit


@dataclass
class EngineBounds:
    """What the engine computes for a set of test points (float64 host arrays)."""

    lo: np.ndarray  # logit bounds on certify's path (the fused kernel where it applies)
    hi: np.ndarray
    layered_lo: np.ndarray  # logit bounds on the layered path (midpoint-radius GEMM)
    layered_hi: np.ndarray
    box_lo: np.ndarray  # the input box (the test box, rounded outward, clipped)
    box_hi: np.ndarray
    fused: bool  # certify's path is the fused kernel (else it is the layered path)
    diff_lo: np.ndarray | None = None  # bounds of the logit differences (pair_columns), as
    diff_hi: np.ndarray | None = None  # certify computes them; None: certificates read lo, hi


def engine_bounds(model: Sequential, x, threat: ThreatModel, batch_size: int = 1024):
    """The engine's logit bounds on ``x``'s test boxes, batch by batch exactly as ``certify``.

    Returns :class:`EngineBounds`: certify's bounds, the layered path's
    bounds (the same when certify takes the layered path) and the input box;
    for a model whose certificates bound the logit differences, those bounds
    too (the last Linear layer's difference layer on the frozen prefix's
    features, as ``certify`` computes them).
    """
    bk = model.backend
    x = np.asarray(x)
    keys = ("lo", "hi", "llo", "lhi", "blo", "bhi", "dlo", "dhi")
    parts: dict[str, list] = {k: [] for k in keys}
    engine = make_engine(model)  # the engine certify() uses
    diff = _certify.difference_model(model, model.named_params(), model.frozen)
    bounds = make_engine(diff) if diff is not None else None
    host = lambda a: np.asarray(bk.to_host(a), dtype=np.float64)  # noqa: E731
    for start in range(0, x.shape[0], batch_size):
        box = threat.test_box(bk.xp.asarray(x[start : start + batch_size]), model.dtype)
        fast = tuple(host(b) for b in engine.logit_bounds(engine.prepare(box)))
        out = model.forward(box)
        layered = host(out.lo), host(out.hi)
        differences = (None, None)
        if bounds is not None:
            d = bounds.logit_bounds(bounds.prepare(engine.features(box)))
            differences = tuple(host(b) for b in d)
        values = (*fast, *layered, host(box.lo), host(box.hi), *differences)
        for key, value in zip(parts, values, strict=True):
            parts[key].append(value)
    clear_caches(model)
    if diff is not None:
        clear_caches(diff)
    joined = [np.concatenate(v) if v and v[0] is not None else None for v in parts.values()]
    core = getattr(engine, "inner", engine)  # a frozen prefix's engine: the head's
    fused = isinstance(core, FusedEngine) and core.declined == 0
    return EngineBounds(*joined[:6], fused=bool(fused and x.shape[0] > 0), diff_lo=joined[6],
                        diff_hi=joined[7])  # fmt: skip


# ---------------------------------------------------------------- audit_model


def audit_model(
    model: Sequential,
    x,
    y,
    threat: ThreatModel,
    *,
    precision: int = PRECISION,
    max_points: int | None = None,
    models: int = 8,
    inputs: int = 8,
    pgd_steps: int = 20,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Audit ``model``'s certificates on ``(x, y)`` under ``threat``'s test box (see module doc).

    ``max_points`` limits the exact oracle to a random sample of that many
    points (drawn with ``seed``; all points when None).  ``progress(done,
    total)`` is called as the work advances.  Returns a JSON-ready dict; the
    audit passes when ``refuted``, ``violations``, ``counterexamples``,
    ``outside_bounds`` and ``inconsistent`` are all 0 (``passed``).
    """
    t0 = time.perf_counter()
    x = np.asarray(x)
    y = np.asarray(y)
    layers = network_layers(model)
    dtype = np.dtype(model.dtype)
    eps, domain = threat.inference_epsilon, threat.domain
    n = x.shape[0]
    xd = x.astype(dtype).astype(np.float64)  # the points the model sees

    cert = _certify.certify(model, x, y, threat)
    eb = engine_bounds(model, x, threat)
    e_lo, e_hi, box_lo, box_hi = eb.lo, eb.hi, eb.box_lo, eb.box_hi
    diffs = eb.diff_lo is not None  # certificates bound the logit differences
    if diffs:
        claimed = _certify.difference_margins(eb.diff_lo, eb.diff_hi, y, model.out_features)
    else:
        claimed = _certify.margins(e_lo, e_hi, y)
    inconsistent = int(np.sum(claimed != cert.margin))
    certified = cert.certified

    rng = np.random.default_rng(seed)
    sample = np.arange(n) if max_points is None or max_points >= n else None
    if sample is None:
        sample = np.sort(rng.choice(n, size=max_points, replace=False))
    chunk = 64
    n_chunks = -(-sample.size // chunk)
    total = n_chunks + 1 + 2 * models + 1
    done = 0

    def tick(units=1):
        nonlocal done
        done += units
        if progress is not None:
            progress(done, total)

    # (a) exact re-verification ------------------------------------------------
    oracle = Oracle(layers, precision)
    o_parts: list[list] = [[], [], [], []]
    for s in range(0, sample.size, chunk):
        rows = sample[s : s + chunk]
        for part, value in zip(
            o_parts, oracle.forward(*oracle.input_box(xd[rows], eps, domain), True), strict=True
        ):
            part.append(value)
        tick()

    def joined(part, width):
        return np.concatenate(part) if part else np.empty((0, width), object)

    o_lo, o_hi = joined(o_parts[0], e_lo.shape[1]), joined(o_parts[1], e_lo.shape[1])
    s_cert = certified[sample]
    s_lo, s_hi = e_lo[sample], e_hi[sample]
    lo_bad = (s_lo > o_lo).astype(bool)  # exact comparisons (float vs mpfr)
    hi_bad = (s_hi < o_hi).astype(bool)
    diff_bad = 0
    if diffs:  # the bounds certificates read: the logit differences'
        o_dlo = joined(o_parts[2], eb.diff_lo.shape[1])
        o_dhi = joined(o_parts[3], eb.diff_lo.shape[1])
        o_cert = oracle.certified_differences(o_dlo, o_dhi, y[sample])
        diff_bad = int((eb.diff_lo[sample] > o_dlo).sum() + (eb.diff_hi[sample] < o_dhi).sum())
    else:
        o_cert = oracle.certified(o_lo, o_hi, y[sample])
    layered_bad = 0
    if eb.fused:  # certify took the fused kernel: audit the layered path's bounds too
        layered_bad = int(
            (eb.layered_lo[sample] > o_lo).sum() + (eb.layered_hi[sample] < o_hi).sum()
        )
    with oracle.near:
        d_lo, d_hi = o_lo - s_lo, s_hi - o_hi
    slack_lo, slack_hi = oracle.ulps(d_lo, o_lo, dtype), oracle.ulps(d_hi, o_hi, dtype)
    slack = np.concatenate([slack_lo.ravel(), slack_hi.ravel()])
    finite = slack[np.isfinite(slack)]
    with oracle.near:  # the same slack as a fraction of the oracle's interval width
        o_width = np.array([float(v) for v in (o_hi - o_lo).ravel()])
        d_all = np.array([float(v) for v in np.concatenate([d_lo.ravel(), d_hi.ravel()])])
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = d_all / np.concatenate([o_width, o_width])
    rel = rel[np.isfinite(rel)]
    exact = {
        "points": int(sample.size),
        "checked": int(s_cert.sum()),
        "refuted": int((s_cert & ~o_cert).sum()),
        "violations": int(lo_bad.sum() + hi_bad.sum()) + layered_bad + diff_bad,
        "violations_certify_path": int(lo_bad.sum() + hi_bad.sum()),
        "violations_layered_path": layered_bad if eb.fused else None,
        "violations_differences": diff_bad if diffs else None,
        "certify_path": "fused" if eb.fused else "layered",
        "oracle_certified": int(o_cert.sum()),
        "lost_to_soundness": int((o_cert & ~s_cert).sum()),
        "max_slack_ulps": float(finite.max()) if finite.size else None,
        "median_slack_ulps": float(np.median(finite)) if finite.size else None,
        "max_slack_relative": float(rel.max()) if rel.size else None,
        "infinite_bounds": int(slack.size - finite.size),
    }

    # (b) falsification ---------------------------------------------------------
    fals = falsify(
        layers, xd, y, box_lo, box_hi, e_lo, e_hi, certified,
        models=models, inputs=inputs, pgd_steps=pgd_steps, seed=seed + 1, progress=tick,
        diff_bounds=(eb.diff_lo, eb.diff_hi) if diffs else None,
    )  # fmt: skip

    # (c) naive round-to-nearest --------------------------------------------------
    # Each naive method is set against the sound engine path of the same family:
    # endpoint products (the fused kernel) and midpoint-radius (the layered GEMM).
    sound = {"midrad": (eb.layered_lo, eb.layered_hi)}
    if eb.fused:
        sound["endpoint"] = (e_lo, e_hi)
    naive = {}
    for method in ("endpoint", "midrad"):
        bounds = naive_bounds(layers, xd, eps, domain, dtype, method, differences=diffs)
        n_lo, n_hi = bounds[0].astype(np.float64), bounds[1].astype(np.float64)
        if diffs:  # certificates from the naive difference bounds, as the engine's
            n_dlo, n_dhi = bounds[2].astype(np.float64), bounds[3].astype(np.float64)
            n_cert = _certify.difference_margins(n_dlo, n_dhi, y, model.out_features) > 0
        else:
            n_cert = _certify.margins(n_lo, n_hi, y) > 0
        v_lo, v_hi = (n_lo[sample] > o_lo).astype(bool), (n_hi[sample] < o_hi).astype(bool)
        row = {
            "violations": int(v_lo.sum() + v_hi.sum()),
            "bounds": int(v_lo.size + v_hi.size),
            "points_with_violations": int((v_lo | v_hi).any(axis=1).sum()),
            "refuted": int((n_cert[sample] & ~o_cert).sum()),
            "certified": int(n_cert.sum()),
            "certificates_differ": int((n_cert != certified).sum()),
            "only_naive_certifies": int((n_cert & ~certified).sum()),
            "compared_with": None,
            "extra_ulps_median": None,
            "extra_ulps_max": None,
        }
        if method in sound:
            r_lo, r_hi = sound[method]
            with np.errstate(invalid="ignore", over="ignore"):
                unit_lo = np.spacing(np.abs(n_lo).astype(dtype)).astype(np.float64)
                unit_hi = np.spacing(np.abs(n_hi).astype(dtype)).astype(np.float64)
                extra = np.concatenate(
                    [((n_lo - r_lo) / unit_lo).ravel(), ((r_hi - n_hi) / unit_hi).ravel()]
                )
            extra = extra[np.isfinite(extra)]
            row["compared_with"] = "fused endpoint kernel" if method == "endpoint" else "layered"
            if extra.size:
                row["extra_ulps_median"] = float(np.median(extra))
                row["extra_ulps_max"] = float(extra.max())
        naive[method] = row
    tick()

    report = {
        "n": int(n),
        "certified": int(certified.sum()),
        "certified_accuracy": float(certified.mean()) if n else 0.0,
        "epsilon": eps,
        "training_epsilon": threat.epsilon,
        "dtype": str(dtype),
        "precision_bits": precision,
        "seed": seed,
        "checked": exact["checked"],
        "refuted": exact["refuted"],
        "violations": exact["violations"],
        "counterexamples": fals["counterexamples"],
        "outside_bounds": fals["outside_bounds"],
        "inconsistent": inconsistent,
        "naive_violations": naive["endpoint"]["violations"],
        "naive_midrad_violations": naive["midrad"]["violations"],
        "max_slack_ulps": exact["max_slack_ulps"],
        "exact": exact,
        "falsification": fals,
        "naive": naive,
    }
    report["passed"] = not any(
        report[key]
        for key in ("refuted", "violations", "counterexamples", "outside_bounds", "inconsistent")
    )
    report["seconds"] = time.perf_counter() - t0
    return report
