"""``intervalnn plot``: decision barriers, training curves, certified accuracy against epsilon.

matplotlib is an optional extra (``pip install 'intervalnn[plot]'``) and is
imported inside the functions only.  Figures are drawn on matplotlib's
object-oriented ``Figure`` with the Agg canvas (no pyplot, no GUI, no global
backend switch) and written as PNG or PDF, chosen by the output suffix,
atomically and with a model file's permissions (:func:`intervalnn.io.write_atomic`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from intervalnn.certify import certify
from intervalnn.experiment import (
    UnavailableError,
    load_model_and_data,
    model_classes,
    read_results,
    saved_threat,
    summarize,
)
from intervalnn.experiment.results import latest
from intervalnn.experiment.tables import mean_std
from intervalnn.threat import ThreatModel

# colour-blind-safe class colours (Okabe-Ito)
CLASS_COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442"]
BARRIER = "#7f7f7f"


class MissingMatplotlib(UnavailableError):
    pass


def _require_matplotlib():
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError:
        raise MissingMatplotlib(
            "plotting needs matplotlib, which is not installed: pip install 'intervalnn[plot]'"
        ) from None


def _figure(size: tuple[int, int], dpi: int, **kw):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    w, h = size
    # a hair over the exact size: Agg truncates width * dpi / dpi to whole pixels
    fig = Figure(figsize=((w + 1e-6) / dpi, (h + 1e-6) / dpi), dpi=dpi, layout="constrained", **kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, output) -> Path:
    """Write ``fig`` to ``output`` (format by suffix) atomically, with a model file's
    permissions (:func:`intervalnn.io.write_atomic`: ``0666 & ~umask``, not ``0600``)."""
    from intervalnn.io import write_atomic

    output = Path(output)
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("png", "pdf"):
        raise ValueError(f"{output}: the figure must be a .png or .pdf file")
    if not output.parent.is_dir():
        raise OSError(f"cannot write {output}: directory {output.parent} does not exist")
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=fig.dpi)
    try:
        write_atomic(output, buffer.getvalue())
    except OSError as exc:
        raise OSError(f"cannot write {output}: {exc.strerror or exc}") from None
    return output


def _eps(v: float) -> str:
    return "0" if v == 0 else f"{v:.3g}"


# ------------------------------------------------------------------ decision barriers


def _grid_extent(x: np.ndarray, domain) -> tuple[float, float, float, float]:
    lo, hi = x.min(axis=0), x.max(axis=0)
    pad = 0.1 * np.maximum(hi - lo, 1e-3)
    lo, hi = lo - pad, hi + pad
    if domain is not None:
        lo, hi = np.maximum(lo, domain[0]), np.minimum(hi, domain[1])
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def barrier_maps(model, threat: ThreatModel, xs: np.ndarray, ys: np.ndarray):
    """On the grid ``xs`` x ``ys``: which class is certified (-1: none) and the nominal output.

    A grid point is certified for class ``c`` when every model in the
    parameter box gives ``c`` for every input in the threat model's test box
    around the point; the rest is the decision barrier.  Returns
    ``(certified_class, nominal)`` with shapes ``(len(ys), len(xs))`` and
    ``(len(ys), len(xs), outputs)``.
    """
    gx, gy = np.meshgrid(xs, ys)
    points = np.column_stack([gx.ravel(), gy.ravel()])
    cls = np.full(points.shape[0], -1, dtype=np.int64)
    for c in range(model_classes(model)):
        ok = certify(model, points, np.full(points.shape[0], c), threat, batch_size=8192).certified
        cls[ok] = c  # certificates of different classes are disjoint
    bk = model.backend
    nominal = bk.to_host(model.forward_nominal(bk.xp.asarray(points.astype(model.dtype))))
    for layer in model.layers:  # forward-only use keeps no caches
        if hasattr(layer, "_x_nominal"):
            layer._x_nominal = None
        if hasattr(layer, "_z_nominal"):
            layer._z_nominal = None
    return cls.reshape(gx.shape), np.asarray(nominal, dtype=np.float64).reshape(*gx.shape, -1)


def plot_barriers(
    model_paths, *, dataset, data_dir, epsilon, split, seed, grid, output, size, dpi
) -> dict:
    _require_matplotlib()
    from matplotlib.colors import to_rgba
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    loaded = []
    for path in model_paths:
        model, meta, name, splits = load_model_and_data(path, dataset, data_dir, seed)
        if model.in_features != 2:
            raise ValueError(
                f"{path}: decision barriers need a model with 2 input features, this one has "
                f"{model.in_features}; use 'intervalnn plot epsilon' or 'plot curves' instead"
            )
        loaded.append((path, model, meta, name, getattr(splits, split), splits.domain))

    fig = _figure(size, dpi)
    axes = fig.subplots(1, len(loaded), squeeze=False, sharex=True, sharey=True)[0]
    x_all = np.concatenate([d.x for *_, d, _ in loaded])
    x0, x1, y0, y1 = _grid_extent(x_all, loaded[0][5])
    xs, ys = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
    rows = []
    n_classes = max(model_classes(m) for _, m, *_ in loaded)
    for ax, (path, model, meta, _name, data, _) in zip(axes, loaded, strict=True):
        stored = meta["threat_model"]
        threat = saved_threat(meta, epsilon)
        cls, nominal = barrier_maps(model, threat, xs, ys)
        k = model_classes(model)
        rgba = np.zeros((*cls.shape, 4))
        for c in range(k):
            rgba[cls == c] = to_rgba(CLASS_COLOURS[c % len(CLASS_COLOURS)], 0.22)
        rgba[cls < 0] = to_rgba(BARRIER, 0.55)
        ax.imshow(
            rgba, extent=(x0, x1, y0, y1), origin="lower", interpolation="nearest", aspect="auto"
        )
        if nominal.shape[-1] == 1:
            z = nominal[..., 0]
            if z.min() < 0 < z.max():
                ax.contour(xs, ys, z, levels=[0.0], colors="k", linewidths=1.2)
        else:
            pred = nominal.argmax(axis=-1)
            levels = [c + 0.5 for c in range(k - 1)]
            if pred.min() != pred.max():
                ax.contour(xs, ys, pred, levels=levels, colors="k", linewidths=1.2)
        for c in range(k):
            pts = data.x[data.y == c]
            ax.scatter(
                pts[:, 0],
                pts[:, 1],
                s=10,
                color=CLASS_COLOURS[c % len(CLASS_COLOURS)],
                edgecolors="k",
                linewidths=0.3,
                zorder=3,
            )
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.set_xlabel("$x_1$")
        ax.set_title(
            f"{Path(path).name}\ntrain ε = {_eps(stored.epsilon)}, "
            f"test ε = {_eps(threat.inference_epsilon)}",
            fontsize="medium",
        )
        cert = certify(model, data.x, data.y, threat)
        rows.append(
            {
                "model": str(path),
                "training_epsilon": stored.epsilon,
                "test_epsilon": threat.inference_epsilon,
                "barrier_area": float((cls < 0).mean()),
                "certified_accuracy": cert.certified_accuracy,
                "accuracy": cert.nominal_accuracy,
            }
        )
    axes[0].set_ylabel("$x_2$")
    handles = [
        Patch(color=CLASS_COLOURS[c % len(CLASS_COLOURS)], alpha=0.35, label=f"certified {c}")
        for c in range(n_classes)
    ]
    handles.append(Patch(color=BARRIER, alpha=0.6, label="barrier: some model may disagree"))
    handles.append(Line2D([], [], color="k", label="nominal decision boundary"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize="small")
    fig.suptitle(f"{loaded[0][3]}, {split} split: decision barriers of the parameter family")
    _save(fig, output)
    out = {"output": str(output), "split": split, "n": int(len(loaded[0][4].y))}
    if len(rows) == 1:
        out.update(rows[0])
    else:
        out["models"] = rows
    return out


# ------------------------------------------------------------------ training curves


def plot_curves(model_path, *, output, size, dpi) -> dict:
    _require_matplotlib()
    from intervalnn.io import load_model

    _, meta = load_model(model_path)
    history = meta.get("history") or []
    if not history:
        raise ValueError(f"{model_path}: the model file holds no training history to plot")

    def col(key):
        return np.array(
            [np.nan if r.get(key) is None else float(r[key]) for r in history], dtype=float
        )

    by_step = meta.get("config", {}).get("validate_every", "step") == "step"
    xkey = "step" if by_step else "epoch"
    x = col(xkey)
    if np.isnan(x).all():
        x = np.arange(len(history), dtype=float)

    fig = _figure(size, dpi)
    ax_acc, ax_loss, ax_w = fig.subplots(3, 1, sharex=True)
    cert, nom = col("val_certified_accuracy"), col("val_accuracy")
    if not np.isnan(cert).all():
        ax_acc.plot(x, 100 * cert, color=CLASS_COLOURS[0], label="certified (val)")
    if not np.isnan(nom).all():
        ax_acc.plot(x, 100 * nom, color=CLASS_COLOURS[1], ls="--", label="nominal (val)")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(-2, 102)
    lo, hi = col("loss_lo"), col("loss_hi")
    ax_loss.fill_between(x, lo, hi, color=CLASS_COLOURS[2], alpha=0.3, lw=0, label="loss bounds")
    ax_loss.plot(x, lo, color=CLASS_COLOURS[2], lw=0.8)
    ax_loss.plot(x, hi, color=CLASS_COLOURS[2], lw=0.8)
    ax_loss.set_ylabel("training loss")
    _loss_ticks(ax_loss, np.concatenate([lo, hi]))
    mean_w, max_w = col("mean_width"), col("max_width")
    ax_w.plot(x, mean_w, color=CLASS_COLOURS[3], label="mean")
    ax_w.plot(x, max_w, color=CLASS_COLOURS[4], ls="--", label="max")
    if np.nanmax(np.concatenate([max_w, [0.0]])) > 0:
        ax_w.set_yscale("log")
    ax_w.set_ylabel("parameter width")
    ax_w.set_xlabel(xkey)
    best = meta.get("best") or {}
    if best.get(xkey) is not None:
        for ax in (ax_acc, ax_loss, ax_w):
            ax.axvline(float(best[xkey]), color="0.4", lw=0.8, ls=":")
        ax_acc.plot([], [], color="0.4", lw=0.8, ls=":", label=f"kept model ({xkey} {best[xkey]})")
    for ax in (ax_acc, ax_loss, ax_w):
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
        ax.grid(alpha=0.3)
    threat = meta["threat_model"]
    fig.suptitle(
        f"{Path(model_path).name}: {meta.get('dataset', {}).get('name', '?')}, "
        f"train ε = {_eps(threat.epsilon)}, test ε = {_eps(threat.inference_epsilon)}"
    )
    _save(fig, output)
    return {"output": str(output), "rows": len(history), "x": xkey, "best": best.get(xkey)}


_NICE = [1, 2, 3, 5] + [m * 10**e for e in range(1, 4) for m in (1, 2, 5)]


def _loss_ticks(ax, values, most: int = 5) -> None:
    """Linear loss axis, or symlog (logarithmic above 1) for diverging bounds; at most
    ``most`` labelled ticks either way, so that the labels never overlap."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator

    finite = values[np.isfinite(values)]
    if not (finite.size and np.abs(finite).max() > 100):
        ax.yaxis.set_major_locator(MaxNLocator(nbins=most - 1, min_n_ticks=2))
        return
    ax.set_yscale("symlog", linthresh=1.0)
    decades = [math.ceil(math.log10(v)) if v > 1 else 0 for v in (-finite.min(), finite.max())]
    per_side = max(1, (most - 1) // sum(d > 0 for d in decades))
    ticks = [0.0]
    for sign, top in zip((-1.0, 1.0), decades, strict=True):
        if top > 0:
            stride = next(n for n in _NICE if n * per_side >= top)
            first = 0 if stride == 1 else stride  # 0 and 1 are a decade apart: too close
            ticks += [sign * 10.0**k for k in range(first, top + 1, stride)]
    ax.yaxis.set_major_locator(FixedLocator(sorted(ticks)))
    ax.yaxis.set_minor_locator(NullLocator())


# ------------------------------------------------------------------ accuracy against epsilon


def plot_epsilon(model_paths, *, dataset, data_dir, epsilons, split, seed, output, size, dpi):
    _require_matplotlib()
    epsilons = sorted(float(e) for e in epsilons)
    results = []
    for path in model_paths:
        model, meta, name, splits = load_model_and_data(path, dataset, data_dir, seed)
        data = getattr(splits, split)
        stored = meta["threat_model"]
        accs, nominal = [], None
        for eps in epsilons:
            res = certify(model, data.x, data.y, saved_threat(meta, eps))
            accs.append(res.certified_accuracy)
            nominal = res.nominal_accuracy
        results.append(
            {
                "model": str(path),
                "dataset": name,
                "training_epsilon": stored.epsilon,
                "certified_accuracy": accs,
                "accuracy": nominal,
                "n": int(len(data.y)),
            }
        )

    fig = _figure(size, dpi)
    ax = fig.subplots()
    names = [Path(r["model"]).name for r in results]
    if len(set(names)) < len(names):  # a/moons.npz and b/moons.npz: tell them apart
        names = [r["model"] for r in results]
    for i, (r, name) in enumerate(zip(results, names, strict=True)):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        label = f"{name} (train ε = {_eps(r['training_epsilon'])})"
        ax.plot(
            epsilons, [100 * a for a in r["certified_accuracy"]], "o-", color=colour, label=label
        )
        # the model's nominal accuracy, dotted in its colour: no legend entry of its own
        ax.axhline(100 * r["accuracy"], color=colour, ls=":", lw=1)
    _scale_x(ax, epsilons)
    ax.set_xlabel("test-time radius ε (ℓ∞)")
    ax.set_ylabel(f"certified accuracy on {split} (%)")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")  # one entry per model
    ax.set_title(
        f"{results[0]['dataset']}: certified accuracy against ε (dotted: nominal accuracy)",
        fontsize="medium",
    )
    _save(fig, output)
    return {"output": str(output), "split": split, "epsilons": epsilons, "models": results}


def _scale_x(ax, values) -> None:
    """Logarithmic x axis for non-negative values spanning two decades or more."""
    positive = [v for v in values if v > 0]
    if positive and min(values) >= 0 and max(positive) / min(positive) >= 100:
        if len(positive) < len(values):
            ax.set_xscale("symlog", linthresh=min(positive))
        else:
            ax.set_xscale("log")


# ------------------------------------------------------------------ sweeps


def plot_sweep(results_path, *, x, output, size, dpi) -> dict:
    """Certified accuracy (mean ± std over seeds) against the swept option ``x``.

    One line per combination of the other swept options; the table is the
    one ``intervalnn sweep`` prints (with its validation-only search).
    """
    _require_matplotlib()
    if not Path(results_path).is_file():
        raise OSError(f"results file {results_path} does not exist")
    rows, _ = read_results(results_path)
    if not any(r["status"] == "ok" for r in rows):
        raise ValueError(f"{results_path} holds no finished sweep cells to plot")
    summary = summarize(rows)
    columns = summary["columns"]
    if x is None and len(columns) == 1:
        x = columns[0]
    x = None if x is None else x.replace("-", "_")
    if x not in columns:
        swept = ", ".join(columns) or "nothing but seeds"
        raise ValueError(f"choose --x from what {results_path} sweeps: {swept}")
    others = [c for c in columns if c != x]
    lines: dict[tuple, list] = {}
    for entry in summary["rows"]:
        if entry["certified_accuracy"] is not None:
            key = tuple(entry["cell"][c] for c in others)
            lines.setdefault(key, []).append(entry)
    xs = sorted({e["cell"][x] for line in lines.values() for e in line}, key=repr)
    numeric = all(isinstance(v, int | float) for v in xs)
    if numeric:
        xs = sorted(xs)
    position = (lambda v: v) if numeric else {v: i for i, v in enumerate(xs)}.__getitem__

    fig = _figure(size, dpi)
    ax = fig.subplots()
    for i, (key, line) in enumerate(sorted(lines.items(), key=lambda kv: repr(kv[0]))):
        line.sort(key=lambda e: position(e["cell"][x]))
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        label = ", ".join(
            f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}"
            for c, v in zip(others, key, strict=True)
        )
        pos = [position(e["cell"][x]) for e in line]
        mean = [100 * e["certified_accuracy"]["mean"] for e in line]
        std = [100 * e["certified_accuracy"]["std"] for e in line]
        # one line: it is the certified accuracy; several: each is named by its cell
        label = label or "certified accuracy (mean ± std)"
        ax.errorbar(pos, mean, yerr=std, fmt="o-", capsize=3, color=colour, label=label)
        nominal = [100 * e["accuracy"]["mean"] for e in line]
        ax.plot(pos, nominal, ":", color=colour, lw=1)
    if len(lines) > 1:  # the style key: solid certified, dotted nominal
        ax.plot([], [], "o-", color="0.3", label="certified accuracy (mean ± std)")
    ax.plot([], [], color="0.3", ls=":", lw=1, label="nominal accuracy")
    if numeric:
        _scale_x(ax, xs)
    else:
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
    ax.set_xlabel(x)
    ax.set_ylabel("certified test accuracy (%), mean ± std over seeds")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title(f"{Path(results_path).name}: certified accuracy against {x}", fontsize="medium")
    _save(fig, output)
    return {"output": str(output), "x": x, **summary}


# ------------------------------------------------------------------ accuracy against poison_count

#: How a row with ``poison_count`` None (every training point may be poisoned: FullCert's
#: threat model) is labelled on the x axis and in tables: the right-most point.
ALL = "all"


def _k_order(k):
    """Sort key of poison counts: 0, 1, 10 ... then None ("all")."""
    return (k is None, 0 if k is None else k)


def _k_text(k) -> str:
    return ALL if k is None else str(k)


def _is_count(k) -> bool:
    return isinstance(k, int) and not isinstance(k, bool) and k >= 0


def poison_count_rows(results_path) -> list[dict]:
    """The finished rows of a results file (the last of each cell), checked for a poison_count.

    A missing file, no finished cell, no row with a poison_count (a sweep
    without ``--poison-count``) and a poison_count that is not an integer
    ``>= 0`` are one-line errors.  A row without one means every point (None).
    """
    path = Path(results_path)
    if not path.is_file():
        what = "is a directory, not a results file" if path.is_dir() else "does not exist"
        raise OSError(f"results file {results_path} {what}")
    rows, _ = read_results(path)
    rows = sorted(
        (r for r in latest(rows).values() if r["status"] == "ok"), key=lambda r: r["index"]
    )
    if not rows:
        raise ValueError(f"{results_path} holds no finished sweep cells to plot")
    for r in rows:
        k = r["config"].get("poison_count")
        if k is not None and not _is_count(k):
            raise ValueError(
                f"{results_path}: cell {r['index']} has poison_count {k!r}, not an integer >= 0 "
                "(an edited or corrupted results file?)"
            )
    if all(r["config"].get("poison_count") is None for r in rows):
        raise ValueError(
            f"{results_path} holds no rows with a poison_count (every cell poisons all points): "
            "sweep it with --poison-count K,K,... (e.g. 1,10,100)"
        )
    return rows


def accuracy_against_poison_count(rows: list[dict], metric: str = "certified_accuracy") -> dict:
    """``metric`` (mean ± std over seeds, as ``intervalnn sweep``'s table) against poison_count.

    One line per combination of the other swept options (``columns``); each
    line's points are sorted by poison_count with None ("all") last.  Returns
    ``{"columns", "lines": [{"cell", "points": [{"poison_count", "seeds",
    metric, "accuracy"}]}], "invalid"?}`` (statistics as ``{"mean", "std"}``).
    """
    summary = summarize(rows)
    columns = summary["columns"]
    others = [c for c in columns if c != "poison_count"]
    constant = rows[0]["config"].get("poison_count")  # when only one value is swept
    lines: dict[tuple, list] = {}
    for entry in summary["rows"]:
        if entry.get(metric) is None:
            continue
        key = tuple(entry["cell"][c] for c in others)
        k = entry["cell"].get("poison_count", constant)
        lines.setdefault(key, []).append(
            {
                "poison_count": k,
                "seeds": entry["seeds"],
                metric: entry[metric],
                "accuracy": entry["accuracy"],
            }
        )
    if not lines:
        raise ValueError(f"no finished cell has a {metric} to plot")
    out = {
        "columns": others,
        "lines": [
            {
                "cell": dict(zip(others, key, strict=True)),
                "points": sorted(points, key=lambda p: _k_order(p["poison_count"])),
            }
            for key, points in sorted(lines.items(), key=lambda kv: repr(kv[0]))
        ],
    }
    if summary.get("invalid"):
        out["invalid"] = summary["invalid"]
    return out


def largest_certified_k(poison_counts, certified) -> np.ndarray:
    """Per test point, the largest poison_count whose model certifies it.

    ``certified`` has one row of per-point flags per entry of
    ``poison_counts`` (each a separately trained model; None: every point,
    ranked above any count).  Returns floats: the count, ``inf`` for None,
    ``nan`` where no model certifies the point.  The models differ, so a
    point certified at k need not be certified at a smaller k.
    """
    values = np.array([math.inf if k is None else float(k) for k in poison_counts])
    certified = np.asarray(certified, dtype=bool)
    if certified.ndim != 2 or certified.shape[0] != values.size or values.size == 0:
        raise ValueError(
            f"need one row of certified flags per poison_count ({values.size}), "
            f"got shape {certified.shape}"
        )
    best = np.where(certified, values[:, None], -math.inf).max(axis=0)
    return np.where(best == -math.inf, math.nan, best)


def certified_at_least(largest: np.ndarray, poison_counts) -> list[float]:
    """For each count k (None: all), the fraction of points whose largest certified
    count (:func:`largest_certified_k`) is ``>= k``: some model trained for k or
    more poisoned points certifies them."""
    largest = np.asarray(largest, dtype=np.float64)
    return [
        float(np.count_nonzero(largest >= (math.inf if k is None else k)) / largest.size)
        for k in poison_counts
    ]


def _model_file(row: dict, results_path) -> Path | None:
    """The model file of a results row: its path as written (relative to where the sweep
    ran), else relative to the results file, else in the default models directory."""
    from intervalnn.experiment.sweep import default_models_dir

    stored = Path(row["model"])
    tries = [stored]
    if not stored.is_absolute():
        tries.append(Path(results_path).parent / stored)
    tries.append(default_models_dir(results_path) / stored.name)
    return next((p for p in tries if p.is_file()), None)


def _check_digest(row: dict, path: Path) -> None:
    from intervalnn.io import file_digest

    want = row.get("model_sha256")
    if not isinstance(want, str):
        return
    try:
        got = file_digest(path.read_bytes())
    except (OSError, ValueError, KeyError):
        got = None
    if got != want:
        raise ValueError(
            f"{path} is not the model file cell {row['index']} saved (its SHA-256 differs): "
            "was it overwritten by another sweep?"
        )


def per_point_poison_count(rows: list[dict], results_path, data_dir=None) -> dict:
    """Per test point, the largest poison_count whose model certifies it.

    Cells that differ only in poison_count (same seed and every other
    option) form a group; each cell's saved model certifies the test split
    (:func:`~intervalnn.experiment.certify_saved`, as ``intervalnn certify
    --per-sample``: the data set and seed in the model file, ``data_dir``
    or the cell's).  A group with a cell whose model was not saved or cannot
    be found is skipped and counted.  ``columns`` are the options that
    vary across groups other than the seed; one line per combination, the
    fractions (:func:`certified_at_least`) as mean ± std over its groups.
    """
    from intervalnn.experiment import certify_saved
    from intervalnn.experiment.schema import FIELDS

    names = {n for r in rows for n in r["config"]}
    vary = {n for n in names if len({repr(r["config"].get(n)) for r in rows}) > 1}
    columns = [n for n in FIELDS if n in vary] + sorted(vary - set(FIELDS))
    columns = [c for c in columns if c not in ("poison_count", "seed")]
    groups: dict[tuple, list] = {}
    for r in rows:
        key = tuple(sorted((n, repr(v)) for n, v in r["config"].items() if n != "poison_count"))
        groups.setdefault(key, []).append(r)
    done, skipped = [], {"groups": 0, "unsaved": 0, "missing": []}
    for cells in groups.values():
        cells.sort(key=lambda r: _k_order(r["config"].get("poison_count")))
        paths = []
        for r in cells:
            path = _model_file(r, results_path) if isinstance(r.get("model"), str) else None
            if path is None:
                if isinstance(r.get("model"), str):
                    skipped["missing"].append(r["model"])
                else:
                    skipped["unsaved"] += 1
            paths.append(path)
        if any(p is None for p in paths):
            skipped["groups"] += 1
            continue
        flags, labels = [], None
        for r, path in zip(cells, paths, strict=True):
            _check_digest(r, path)
            config = r["config"]
            done_ = certify_saved(path, data_dir=data_dir or config.get("data_dir"))
            if labels is not None and not np.array_equal(labels, done_.labels):
                raise ValueError(
                    f"{path}: its test split differs from the one of the group's other cells "
                    "(cells that differ only in poison_count must share the data)"
                )
            labels = done_.labels
            flags.append(done_.result.certified)
        ks = [r["config"].get("poison_count") for r in cells]
        config = cells[0]["config"]
        done.append(
            {
                "cell": {c: config.get(c) for c in columns},
                "seed": config.get("seed"),
                "poison_counts": ks,
                "labels": labels,
                "certified": np.array(flags),
                "largest": largest_certified_k(ks, flags),
            }
        )
    lines: dict[tuple, list] = {}
    for g in done:
        lines.setdefault(tuple(g["cell"][c] for c in columns), []).append(g)
    out_lines = []
    for key, line in sorted(lines.items(), key=lambda kv: repr(kv[0])):
        ks = sorted({k for g in line for k in g["poison_counts"]}, key=_k_order)
        fractions = [certified_at_least(g["largest"], ks) for g in line]
        out_lines.append(
            {
                "cell": dict(zip(columns, key, strict=True)),
                "poison_counts": ks,
                "groups": len(line),
                "certified_at_least": [mean_std([f[i] for f in fractions]) for i in range(len(ks))],
            }
        )
    return {"columns": columns, "lines": out_lines, "groups": done, "skipped": skipped}


def per_point_csv(per_point: dict) -> bytes:
    """The per-point table as CSV: the group (line columns, seed), ``index``, ``label``,
    ``certified_k=K`` (1/0; empty where the group has no cell with that K) per count, and
    ``largest_k`` (a count, ``all``, or empty when no model certifies the point)."""
    import csv

    ks = sorted({k for g in per_point["groups"] for k in g["poison_counts"]}, key=_k_order)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(
        [*per_point["columns"], "seed", "index", "label"]
        + [f"certified_k={_k_text(k)}" for k in ks]
        + ["largest_k"]
    )
    for g in per_point["groups"]:
        row_of = {k: i for i, k in enumerate(g["poison_counts"])}
        head = [g["cell"][c] for c in per_point["columns"]] + [g["seed"]]
        for i, (label, largest) in enumerate(zip(g["labels"], g["largest"], strict=True)):
            flags = ["" if k not in row_of else int(g["certified"][row_of[k], i]) for k in ks]
            best = "" if math.isnan(largest) else ALL if math.isinf(largest) else int(largest)
            writer.writerow([*head, i, int(label), *flags, best])
    return text.getvalue().encode()


def _k_axis(poison_counts) -> tuple[dict, bool]:
    """x positions of poison counts: the count itself, and None ("all") right of the largest
    (a decade further on a log axis, one mean step further on a linear one); and whether
    the axis is logarithmic (positive counts spanning two decades or more)."""
    finite = sorted(k for k in set(poison_counts) if k is not None)
    positive = [k for k in finite if k > 0]
    log = bool(positive) and positive[-1] / positive[0] >= 100
    pos = {k: float(k) for k in finite}
    if None in poison_counts:
        top = finite[-1] if finite else 0
        if log:
            pos[None] = 10.0 * top
        else:
            step = (top - finite[0]) / (len(finite) - 1) if len(finite) > 1 else 1.0
            pos[None] = top + max(step, 1.0)
    return pos, log


def _k_ticks(ax, pos: dict, log: bool) -> None:
    finite = sorted(k for k in pos if k is not None)
    if log:
        if finite[0] == 0:
            ax.set_xscale("symlog", linthresh=min(k for k in finite if k > 0))
        else:
            ax.set_xscale("log")
    shown = finite[:: max(1, math.ceil(len(finite) / 10))]
    if finite and finite[-1] not in shown:
        shown.append(finite[-1])
    if None in pos:
        shown.append(None)
    ax.set_xticks([pos[k] for k in shown], [_k_text(k) for k in shown])
    ax.xaxis.set_minor_locator(_null_locator())


def _null_locator():
    from matplotlib.ticker import NullLocator

    return NullLocator()


def _line_label(cell: dict) -> str:
    return ", ".join(f"{c}={v:g}" if isinstance(v, float) else f"{c}={v}" for c, v in cell.items())


def plot_poison_count(
    results_path, *, metric, per_point, data_dir, output, table, size, dpi
) -> dict:
    """Certified accuracy against poison_count and, from the saved models, per test point
    the largest poison_count whose model certifies it (see ``intervalnn plot poison-count``)."""
    _require_matplotlib()
    rows = poison_count_rows(results_path)
    curves = accuracy_against_poison_count(rows, metric)
    points = None
    if per_point:
        points = per_point_poison_count(rows, results_path, data_dir)
        if table is not None:
            if not points["groups"]:
                raise ValueError(
                    f"--table: no group of cells in {results_path} has all its model files "
                    "(run the sweep with --models DIR, not --no-models)"
                )
            from intervalnn.io import write_atomic

            try:
                write_atomic(table, per_point_csv(points))
            except OSError as exc:
                raise OSError(f"cannot write --table file {table}: {exc.strerror or exc}") from None

    drawn = bool(points and points["lines"])
    fig = _figure(size, dpi)
    axes = fig.subplots(1, 2 if drawn else 1, squeeze=False)[0]
    ax = axes[0]
    all_ks = [p["poison_count"] for line in curves["lines"] for p in line["points"]]
    pos, log = _k_axis(all_ks)
    several = len(curves["lines"]) > 1
    for i, line in enumerate(curves["lines"]):
        colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
        label = _line_label(line["cell"]) or "certified (mean ± std)"
        for part, fmt in ((False, "o-"), (True, "s")):  # the counts joined; "all" on its own
            pts = [p for p in line["points"] if (p["poison_count"] is None) == part]
            if pts:
                ax.errorbar(
                    [pos[p["poison_count"]] for p in pts],
                    [100 * p[metric]["mean"] for p in pts],
                    yerr=[100 * p[metric]["std"] for p in pts],
                    fmt=fmt,
                    capsize=3,
                    color=colour,
                    label=None if part else label,
                )
        xs = [pos[p["poison_count"]] for p in line["points"]]
        ax.plot(xs, [100 * p["accuracy"]["mean"] for p in line["points"]], ":", color=colour, lw=1)
    if several:
        ax.plot([], [], "o-", color="0.3", label="certified (mean ± std)")
    ax.plot([], [], ":", color="0.3", lw=1, label="nominal test accuracy")
    _k_ticks(ax, pos, log)
    ax.set_xlabel("poisoned training points k (all: every point, FullCert)")
    what = "certified test" if metric == "certified_accuracy" else "certified validation"
    ax.set_ylabel(f"{what} accuracy (%), mean ± std over seeds")
    ax.set_ylim(-2, 102)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    ax.set_title("accuracy against k", fontsize="medium")
    if drawn:
        ax = axes[1]
        ks = [k for line in points["lines"] for k in line["poison_counts"]]
        pos, log = _k_axis(ks)
        for i, line in enumerate(points["lines"]):
            colour = CLASS_COLOURS[i % len(CLASS_COLOURS)]
            label = _line_label(line["cell"]) or None
            ax.errorbar(
                [pos[k] for k in line["poison_counts"]],
                [100 * s["mean"] for s in line["certified_at_least"]],
                yerr=[100 * s["std"] for s in line["certified_at_least"]],
                fmt="o-",
                drawstyle="steps-pre",
                capsize=3,
                color=colour,
                label=label,
            )
        _k_ticks(ax, pos, log)
        ax.set_xlabel("k")
        ax.set_ylabel("test points certified by a model for ≥ k (%)")
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize="small")
        ax.set_title("per test point: largest certified k", fontsize="medium")
    fig.suptitle(f"{Path(results_path).name}: certified accuracy against poisoned points k")
    _save(fig, output)
    out = {"output": str(output), "metric": metric, **curves}
    if points is not None:
        out["per_point"] = {
            "columns": points["columns"],
            "lines": points["lines"],
            "groups": len(points["groups"]),
            "skipped": points["skipped"],
        }
    if table is not None and points is not None:
        out["table"] = str(table)
    return out
