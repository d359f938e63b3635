"""Fixtures shared by the test files.

Each helper fixture returns a function (the tests call it like a plain helper; a
conftest is not imported by the test modules).  The exact oracles are a module,
``tests/oracle.py`` (``from oracle import ...``).

* ``invoke``, ``run``, ``error``: the ``intervalnn`` command line, in-process;
* ``npz``: a user ``.npz`` data file in ``tmp_path``;
* ``record_steps``: a ``train(..., on_step=...)`` callback keeping every step's boxes.
"""

from __future__ import annotations

import numpy as np
import pytest


def _invoke(*args):
    # imported on first use: most test files need no CLI
    from click.testing import CliRunner

    from intervalnn.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def _run(*args, code: int = 0, system_exit: bool = True):
    result = _invoke(*args)
    assert result.exit_code == code, (result.output, result.exception)
    assert "Traceback" not in result.output
    if code and system_exit:
        assert isinstance(result.exception, SystemExit), result.exception
    return result


def _error(*args, code: int = 1) -> str:
    result = _run(*args, code=code)
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("Error")]
    assert len(lines) == 1, result.stderr
    if code == 1:  # data and model errors: the error line is all there is
        assert result.stderr.strip().splitlines()[-1] == lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def invoke():
    """``invoke(*args)``: the CLI on ``str(arg)`` for each arg; click's ``Result``, unchecked."""
    return _invoke


@pytest.fixture(scope="session")
def run():
    """``run(*args, code=0, system_exit=True)``: invoke the CLI and check the exit code and
    that nothing leaked a traceback; a failing exit (``code`` not 0) must be a ``SystemExit``
    unless ``system_exit`` is false.  Returns click's ``Result``."""
    return _run


@pytest.fixture(scope="session")
def error():
    """``error(*args, code=1)``: the CLI's single ``Error`` line for a failing invocation
    (checked by ``run``); for data and model errors (code 1) it is the last line."""
    return _error


@pytest.fixture
def npz(tmp_path):
    """``npz(name="d.npz", **arrays)``: ``np.savez`` the arrays to ``tmp_path / name``; the path."""

    def write(name="d.npz", /, **arrays):
        path = tmp_path / name
        np.savez(path, **arrays)
        return path

    return write


@pytest.fixture(scope="session")
def record_steps():
    """``record_steps(steps, check_nominal=True)``: an ``on_step`` callback for ``train`` that
    stores ``steps[step] = {name: (lo, hi)}`` (float64 copies of the parameter boxes) after
    every step and, with ``check_nominal``, asserts that the nominal parameters lie in them."""

    def make(steps: dict, check_nominal: bool = True):
        def on_step(step, params, nominal):
            if check_nominal:
                for name, box in params.items():
                    assert bool(box.contains(nominal[name]).all()), (step, name)
            steps[step] = {
                k: (v.lo.astype(np.float64), v.hi.astype(np.float64)) for k, v in params.items()
            }

        return on_step

    return make
