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
