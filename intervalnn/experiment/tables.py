"""The tables of a sweep: mean ± std over seeds per cell, with the paper's validation search."""

from __future__ import annotations

import statistics
from collections import Counter

from .results import latest
from .schema import FIELDS


def mean_std(xs: list[float]) -> dict:
    """``{"mean": ..., "std": ...}`` of ``xs`` (sample std; 0 for one value)."""
    return {"mean": statistics.mean(xs), "std": statistics.stdev(xs) if len(xs) > 1 else 0.0}


#: The metrics a table reads from a finished row: a number in [0, 1] (the validation
#: accuracy may be null: a run without a validation set).
METRICS = ("certified_accuracy", "accuracy", "val_certified_accuracy")


def invalid_metric(row: dict) -> str | None:
    """The first metric of a finished row that is not a number in [0, 1] (``"abc"``, NaN,
    missing: an edited or corrupted results file), as ``name=value``; None when all are."""
    if row.get("status") != "ok":
        return None
    for name in METRICS:
        value = row["metrics"].get(name)
        if value is None and name == "val_certified_accuracy":
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and 0 <= value <= 1):  # NaN fails the comparison
            return f"{name}={value!r}"
    return None


def _option(row: dict, name: str):
    """Option ``name`` of a row's cell; its default where the row predates the option."""
    config = row["config"]
    return config[name] if name in config else FIELDS[name].default


def summarize(rows: list[dict], search=None) -> dict:
    """Mean ± std over seeds per cell of the varying options other than seed and search.

    With ``search``, each seed contributes its cell with the best certified
    validation accuracy among the searched options (the first in grid order on
    ties), as the paper's protocol asks; test metrics feed no choice.  ``search``
    defaults to the one the rows were run with.
    """
    rows = sorted(latest(rows).values(), key=lambda r: r["index"])
    invalid = [(r, invalid_metric(r)) for r in rows]
    invalid = [(r, what) for r, what in invalid if what is not None]
    if invalid:  # skipped, and counted in the table's note
        skip = {id(r) for r, _ in invalid}
        rows = [r for r in rows if id(r) not in skip]
    if search is None:
        search = {s for r in rows for s in r.get("search", ())}
    search = sorted(search)
    vary = [n for n in FIELDS if len({repr(_option(r, n)) for r in rows}) > 1]
    columns = [n for n in vary if n != "seed" and n not in search]
    groups: dict[tuple, dict] = {}
    for r in rows:
        g = groups.setdefault(
            tuple(_option(r, n) for n in columns), {"best": {}, "failed": 0, "runs": 0}
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
            entry[metric] = mean_std(xs) if xs else None
        if search:
            chosen = Counter(", ".join(f"{n}={_option(r, n)}" for n in search) for r in picked)
            entry["chosen"] = dict(chosen.most_common())
        table.append(entry)
    summary = {"columns": columns, "search": search, "rows": table}
    if invalid:
        r, what = invalid[0]
        summary["invalid"] = {"rows": len(invalid), "example": f"cell {r['index']}: {what}"}
    return summary


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
    invalid = summary.get("invalid")
    if invalid:
        lines.append(
            f"\nSkipped {invalid['rows']} results rows whose metrics are not numbers in [0, 1] "
            f"(e.g. {invalid['example']}): an edited or corrupted results file?"
        )
    if summary["search"]:
        lines.append(
            f"\nPer seed, the cell with the best certified validation accuracy over "
            f"{', '.join(summary['search'])} (test accuracy chooses nothing)."
        )
    return "\n".join(lines)
