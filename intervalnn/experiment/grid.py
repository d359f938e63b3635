"""The grid language of sweeps: TOML grid files and option lists, expanded into cells.

A grid names options of a run (the schema's names: :data:`FIELDS`) with one
value or a list of values; a cell is one combination, a complete flat
options dictionary that :meth:`RunSpec.from_options` accepts.  TOML grid
files::

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
certified *validation* accuracy among the searched options is reported
(:func:`~intervalnn.experiment.tables.summarize`).
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

from intervalnn.architecture import split_outside

from .errors import SpecError
from .schema import FIELDS, Field, defaults
from .spec import RunSpec

#: Limits that turn a typo (``seed = "0-100000000"``) into an error instead of a hang.
MAX_VALUES = 100_000
MAX_CELLS = 1_000_000
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class GridError(ValueError):
    """A grid that cannot run: an unknown key, a bad value, an empty list."""


def _unknown(name: str, known, what: str) -> GridError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(known)}"
    return GridError(f"unknown {what} {name!r}{hint}")


def _field(name: str) -> Field:
    key = name.replace("-", "_")
    if key not in FIELDS:
        raise _unknown(name, FIELDS, "option")
    return FIELDS[key]


def convert(name: str, value):
    """One value of option ``name``, checked and converted by the schema."""
    try:
        return _field(name).parse(value)
    except SpecError as exc:
        raise GridError(str(exc)) from None


def values(name: str, raw, split: bool = False) -> list:
    """The values of ``name`` from a TOML value, or a command-line string with ``split``.

    A list sweeps its elements; with ``split`` a string is split at commas (not those
    inside parentheses: ``--arch "linear(8)-relu-linear(1),conv(8,5)-..."``);
    integer options also take ranges ``A-B`` (both ends included).
    Duplicates are an error.
    """
    f = _field(name)
    items = list(raw) if isinstance(raw, list | tuple) else [raw]
    if split and isinstance(raw, str):
        items = [s.strip() for s in split_outside(raw, ",")]
    out = []
    for item in items:
        m = _RANGE.match(item) if isinstance(item, str) else None
        if m and f.is_int:
            lo, hi = int(m[1]), int(m[2])
            if hi < lo:
                raise GridError(f"{f.name}: empty range {item!r}")
            if hi - lo >= MAX_VALUES:
                raise GridError(f"{f.name}: range {item!r} has over {MAX_VALUES:,} values")
            out.extend(convert(name, v) for v in range(lo, hi + 1))
        elif item == "":
            raise GridError(f"{f.name}: empty value in {raw!r}")
        else:
            out.append(convert(name, item))
    if not out:
        raise GridError(f"{f.name}: give at least one value")
    dupes = [v for v, n in Counter(out).items() if n > 1]
    if dupes:
        raise GridError(f"{f.name}: {dupes[0]!r} is given twice")
    return out


#: Options that came after results files did (issue 13): a cell's key leaves them out at
#: their defaults, so that a results file written before them still resumes.
LATER_OPTIONS = (
    "poison_count", "label_flips", "label_target", "paired", "trusted", "steps", "clip",
    "clip_method", "weight_decay", "momentum", "nesterov", "lr_decay", "lr_min",
    "arch", "freeze", "weights", "pretrain_batch_size",  # issue 14
)  # fmt: skip


def cell_key(cell: dict) -> str:
    """A cell's identity in results files: a hash of its complete configuration (the
    :data:`LATER_OPTIONS` only where they differ from their defaults)."""
    cell = {
        k: v for k, v in cell.items() if not (k in LATER_OPTIONS and _same(v, FIELDS[k].default))
    }
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
        except UnicodeDecodeError as exc:  # TOML files are UTF-8
            raise GridError(
                f"{path} is not valid TOML: not UTF-8 text (byte {exc.start}: {exc.reason})"
            ) from None
        except RecursionError:
            raise GridError(f"{path} is not valid TOML: nested too deeply") from None
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
                    [{_field(k).name: convert(k, v) for k, v in c.items()} for c in group]
                )
        grid.set_search(doc.get("search", []))
        return grid

    @classmethod
    def from_sources(cls, grid_file=None, lists: dict | None = None, search=None) -> Grid:
        """A grid from an optional TOML file, replaced in part by comma-separated option
        ``lists`` (``{"epsilon": "0.1,0.01"}``; None: not given) and ``search``
        (``"loss,learning_rate"``), as the command line gives them; their relative
        paths are taken from the working directory (the file's from the file's)."""
        grid = cls.from_toml(grid_file) if grid_file else cls()
        for name, raw in (lists or {}).items():
            if raw is not None:
                grid.set(name, raw, split=True)
        if search is not None:
            grid.set_search(search)
        grid.resolve(Path.cwd())  # the command line's paths (the file's are absolute by now)
        return grid

    def resolve(self, base: Path) -> None:
        """Make relative paths absolute, from ``base``: the grid file's directory, or the
        working directory for the command line (workers elsewhere need them, and
        ``a.npz`` and ``./a.npz`` must be the same cell)."""

        def absolute(name, value):
            is_path = name in ("data_dir", "weights") or (
                name == "dataset" and value.endswith(".npz")
            )
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
        self.axes[_field(name).name] = values(name, raw, split)

    def set_search(self, names) -> None:
        if isinstance(names, str):
            names = [n.strip() for n in names.split(",") if n.strip()]
        if not isinstance(names, list | tuple):
            raise GridError("search must be a list of option names")
        self.search = tuple(_field(n).name for n in names)

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
        base = defaults()
        names = list(self.axes)
        out = []
        # cases outermost, then [grid] in file order: with search, ties go to the first
        for cases in itertools.product(*self.cases):
            for combo in itertools.product(*(self.axes[n] for n in names)):
                cell = {**base, **dict(zip(names, combo, strict=True))}
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
                    default = FIELDS[name].default
                    seen.setdefault(name, set()).add(repr(case.get(name, default)))
        return [n for n in FIELDS if len(seen.get(n, ())) > 1]


def _same(value, default) -> bool:
    """``value`` is ``default`` (``0`` is not ``False``: the types must match too)."""
    return type(value) is type(default) and value == default


def _no_twice(table: dict, where: str) -> None:
    """``learning-rate`` and ``learning_rate`` in one table are the same option, twice."""
    seen: dict[str, str] = {}
    for key in table:
        name = key.replace("-", "_")
        if name in seen:
            raise GridError(f"{where} sets {name} twice ({seen[name]!r} and {key!r})")
        seen[name] = key


def _check_cell(cell: dict) -> None:
    """A cell's options fit together (a data set named; pretraining data for pretraining)."""
    try:
        RunSpec.from_options(cell)
    except SpecError as exc:
        raise GridError(str(exc)) from None
