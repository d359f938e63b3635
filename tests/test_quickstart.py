"""The README's Quickstart on a fresh checkout with a PEP 668 ("externally managed") Python.

``make demo`` must not install into the Python that runs it: a Debian/Ubuntu
system Python refuses (pip's "externally-managed-environment"), and elsewhere
it would write into the user's site-packages.  The test builds such a Python
(a copy of this interpreter's prefix, not a virtual environment, whose pip
refuses installs because of an ``EXTERNALLY-MANAGED`` marker in its stdlib
directory; pip ignores that marker inside a venv, so a venv cannot stand in),
then runs ``make demo PYTHON=<it>`` twice in a scratch copy of the working tree:
once with an empty Numba cache (the first run: it must say it is compiling)
and once warm (it must not, and must not reinstall).  It installs the
dependencies from pip's configured index (offline here: a local one), about
a minute or two in all.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: pip's words when it cannot reach an index (then the test skips, it does not fail).
NO_INDEX = (
    "NewConnectionError",
    "Temporary failure in name resolution",
    "No matching distribution",
)


def _tracked_files() -> list[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"needs a git checkout to copy the working tree: {exc}")
    return [p for p in out.decode().split("\0") if p]


def scratch_copy(dest: Path) -> Path:
    """The working tree's files (tracked and not ignored) copied to ``dest``: no .venv,
    no Numba cache, no egg-info."""
    for rel in _tracked_files():
        src = ROOT / rel
        if src.is_file():  # a tracked file being deleted by someone is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def externally_managed_python(prefix: Path) -> Path:
    """A non-venv Python at ``prefix`` (this interpreter's binary and stdlib) with pip
    available but refusing every install (PEP 668); its ``bin/python3``."""
    stdlib = Path(sysconfig.get_path("stdlib"))  # the base installation's, also in a venv
    binary = Path(os.path.realpath(getattr(sys, "_base_executable", sys.executable)))
    try:
        import pip
    except ImportError:
        pytest.skip("pip is not importable here, so no pip can be given to the fake Python")
    lib = prefix / "lib" / stdlib.name
    site = lib / "site-packages"
    site.mkdir(parents=True)
    (prefix / "bin").mkdir()
    exe = prefix / "bin" / "python3"
    shutil.copy2(binary, exe)  # a copy: its prefix is found from its own location
    for entry in stdlib.iterdir():
        if entry.name != "site-packages":
            (lib / entry.name).symlink_to(entry)
    for shared in stdlib.parent.glob("libpython*"):  # a relative rpath finds libpython
        (prefix / "lib" / shared.name).symlink_to(shared)
    (site / "pip").symlink_to(Path(pip.__file__).parent)
    (lib / "EXTERNALLY-MANAGED").write_text(
        "[externally-managed]\nError=This Python is managed by the system (a test's).\n"
    )
    return exe


def clean_env(numba_cache: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "MAKE", "MFLAGS"))}
    env.pop("VIRTUAL_ENV", None)
    env["NUMBA_CACHE_DIR"] = str(numba_cache)
    return env


def test_venv_is_ignored_by_git():
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    done = subprocess.run(["git", "check-ignore", "-q", ".venv/bin/python"], cwd=ROOT)
    assert done.returncode == 0, ".venv must be in .gitignore"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="builds a Linux Python prefix")
def test_make_demo_with_an_externally_managed_python(tmp_path):
    for tool in ("make", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    python = externally_managed_python(tmp_path / "system")
    env = clean_env(tmp_path / "numba-cache")
    (tmp_path / "numba-cache").mkdir()
    info = subprocess.run(
        [python, "-c", "import sys; print(sys.prefix == sys.base_prefix)"],
        capture_output=True,
        text=True,
        env=env,
    )
    if info.returncode or info.stdout.strip() != "True":
        pytest.skip(f"could not build a stand-alone copy of this Python: {info.stderr[-500:]}")
    refused = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "click"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert refused.returncode != 0 and "externally-managed-environment" in refused.stderr, (
        "the fake system Python must refuse pip installs, as Debian's does",
        refused.stderr[-2000:],
    )

    repo = scratch_copy(tmp_path / "repo")

    def make_demo():
        t0 = time.perf_counter()
        done = subprocess.run(
            ["make", "-C", str(repo), "demo", f"PYTHON={python}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        return done, time.perf_counter() - t0

    first, cold = make_demo()
    if first.returncode and any(s in first.stderr for s in NO_INDEX):
        pytest.skip(f"pip could not reach a package index: {first.stderr[-1000:]}")
    assert first.returncode == 0, (first.stdout[-3000:], first.stderr[-3000:])
    assert re.search(r"certified test accuracy: \d+\.\d% \(\d+ of 200 test points\)", first.stdout)
    assert "compiling kernels (first run only)..." in first.stderr
    assert (repo / ".venv" / "bin" / "python").exists()
    # nothing was installed into the "system" Python
    assert sorted(p.name for p in (tmp_path / "system" / "lib").glob("*/site-packages/*")) == [
        "pip"
    ]

    second, warm = make_demo()
    assert second.returncode == 0, (second.stdout[-3000:], second.stderr[-3000:])
    assert "compiling" not in second.stderr
    assert "pip install" not in second.stdout  # the install is stamped, not repeated
    assert re.search(r"trained 5 epochs in \d+\.\d+ s;", second.stdout)
    assert "certified test accuracy:" in second.stdout
    print(f"make demo: first run {cold:.1f} s (with venv and install), warm {warm:.1f} s")
