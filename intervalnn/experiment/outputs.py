"""Checks of an output path before any work: never overwrite an input, fail early and clearly.

Every command that writes a file (a model, a per-sample CSV, a results file,
a figure) calls :func:`check_output` on it before it trains, certifies or
plots anything:

* a path that is one of the command's inputs (the model, the data set, the
  grid file ...), an empty path, a directory, or an existing file of another
  kind than the one appended to is an :class:`OutputError` (a usage error:
  the option is wrong);
* a path whose directory cannot be written is an :class:`UnwritableOutput`
  (an ``OSError``), found by creating and removing a temporary file there.

Both messages are one line naming the option.  The file itself is then
written atomically (:func:`intervalnn.io.write_atomic`) or appended to.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

#: How every results row starts (``run_cell`` and the sweep build rows with ``key`` first):
#: a line cut off by a crash is a prefix of a row, so it starts with a prefix of this.
_ROW_START = b'{"key": '


class OutputError(ValueError):
    """An output path that must not be written: one of the inputs, a directory, empty, or
    an existing file of another kind.  ``option`` names the command-line option."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"{option}: {message}")


class UnwritableOutput(OSError):
    """An output path whose directory cannot be written (missing, read-only, not a
    directory, a file system that holds no files)."""


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b) if a.exists() else a.resolve() == b.resolve()
    except OSError:
        return False


def _writable_dir(path: Path, make_dirs: bool) -> str | None:
    """Why files cannot be created next to ``path`` (None: they can)."""
    parent = path.parent
    if not make_dirs and not parent.exists():
        return f"directory {parent} does not exist"
    probe = parent
    while not probe.exists():  # the directories write_atomic / mkdir would create
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a directory"
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_output(
    path,
    option: str,
    inputs: Iterable[tuple[str, object]] = (),
    *,
    what: str | None = None,
    make_dirs: bool = True,
    results: bool = False,
) -> Path:
    """Refuse ``path`` for ``option`` before any work; the path if it may be written.

    ``inputs`` are ``(name, path)`` pairs (``("model file", "moons.npz")``;
    a path that is None or not a file is skipped): the output may be none of
    them.  ``make_dirs``: missing directories will be created (else the
    directory must exist).  ``results``: the output is a sweep's JSON-lines
    results file, appended to: an existing file must be one
    (:func:`check_results_file`).  ``what`` names the file in the message
    (default: ``"<option> file"``).
    """
    what = what or f"{option} file"
    if path is None or not str(path).strip():
        raise OutputError(option, "the path is empty; name a file")
    p = Path(path)
    for name, other in inputs:
        if other is None or not str(other).strip():
            continue
        q = Path(other)
        if q.is_file() and _same(p, q):  # a name that is no file (``moons``) is no input
            raise OutputError(option, f"{path} is the {name} itself; choose another file")
    if p.is_dir():
        raise OutputError(option, f"{path} is a directory; name a file")
    if p.exists() and not p.is_file():
        raise OutputError(option, f"{path} is not a regular file; choose another file")
    reason = _writable_dir(p, make_dirs)
    if reason is not None:
        hint = "" if option in what else f" (check {option})"
        raise UnwritableOutput(f"cannot write {what} {path}: {reason}{hint}")
    if results:
        check_results_file(p, option)
    return p


def check_results_file(path, option: str = "--results") -> None:
    """An :class:`OutputError` unless ``path`` is missing, empty or a JSON-lines results
    file of this tool (lines cut off by a crash are allowed: resume skips them)."""
    path = Path(path)
    if not path.is_file():
        return
    with open(path, "rb") as f:
        data = f.read()
    for number, line in enumerate(data.split(b"\n"), 1):
        line = line.strip()
        if not line:
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            row = None
            if line.startswith(_ROW_START) or _ROW_START.startswith(line):
                continue  # a row cut off by a crash
        if not (isinstance(row, dict) and isinstance(row.get("key"), str) and "status" in row):
            raise OutputError(
                option,
                f"{path} is not a JSON-lines results file of intervalnn sweep (line {number} "
                "is not a results row); choose another file",
            )


@contextlib.contextmanager
def quiet_divergence():
    """Silence NumPy's overflow / invalid-value ``RuntimeWarning`` s of a diverging run:
    infinite bounds stay sound, and training reports the divergence in one line."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", category=RuntimeWarning, message=r".*(overflow|invalid value)"
        )
        yield
