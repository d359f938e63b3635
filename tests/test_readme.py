"""The README's Python examples run as written (issue 12, item 16)."""

from __future__ import annotations

import json
import re
from pathlib import Path

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _python_block(section: str) -> str:
    """The first ```python block after the heading ``section``."""
    start = README.index(f"\n{section}\n")
    return re.search(r"```python\n(.*?)```", README[start:], re.S).group(1)


def test_the_library_in_15_lines_runs(capsys):
    exec(compile(_python_block("## The library in 15 lines"), "README", "exec"), {})
    out = capsys.readouterr().out
    assert "division by an interval containing 0" in out and "0.30000000000000004" in out


def test_certified_training_from_python_runs_and_its_model_works_with_the_cli(
    tmp_path, monkeypatch, capsys, run
):
    monkeypatch.chdir(tmp_path)
    exec(compile(_python_block("## Certified training from Python"), "README", "exec"), {})
    printed = capsys.readouterr().out
    accuracy = float(re.search(r"certified test accuracy: ([\d.]+)%", printed).group(1))
    assert accuracy > 70.0
    # the file carries what the command line's does: certify needs no --dataset
    again = json.loads(run("certify", "mymodel.npz", "--json").stdout)
    assert round(100 * again["certified_accuracy"], 1) == accuracy
    info = json.loads(run("info", "mymodel.npz", "--json").stdout)
    assert info["config"]["epochs"] == 5 and info["dataset"]["name"] == "mydata.npz"
