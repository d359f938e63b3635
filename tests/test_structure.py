"""The house rules, checked on the source: no import circle, no private cross-module
import, CuPy only in the backend and the GPU kernels, directed rounding only in kernels/.

The package maps ``intervalnn/`` to ``intervalnn``, ``kernels/`` to
``intervalnn.kernels`` and ``cli/`` to ``intervalnn.cli`` (pyproject.toml).
Every import counts, also one inside a function (a lazy import hides a
circle, it does not remove it).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"intervalnn": "intervalnn", "kernels": "intervalnn.kernels", "cli": "intervalnn.cli"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = list(path.relative_to(ROOT / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _imports(name: str):
    """``(target module, imported names, line)`` for every import of module ``name``."""
    tree = ast.parse(MODULES[name].read_text(), str(MODULES[name]))
    here = name if _is_package(name) else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = here
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = ".".join(p for p in (base, node.module) if p) if node.level else node.module
            yield target, [a.name for a in node.names], node.lineno


def _edges() -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from p import m`` of a submodule: p.m)."""
    graph = {name: set() for name in MODULES}
    for name in MODULES:
        for target, names, _ in _imports(name):
            submodules = {f"{target}.{n}" for n in names} & MODULES.keys()
            graph[name] |= submodules
            if target in MODULES and target != name and len(submodules) < max(len(names), 1):
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_circle():
    assert _cycles(_edges()) == []


def test_the_circle_finder_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_module_imports_another_modules_private_names():
    offences = []
    for name in MODULES:
        for target, names, line in _imports(name):
            for imported in names:
                private = imported.startswith("_") and not imported.startswith("__")
                if private and target != name:
                    offences.append(f"{MODULES[name].relative_to(ROOT)}:{line} {target}.{imported}")
    assert offences == []


GPU_FILES = ("intervalnn.backend", "intervalnn.kernels.gpu")


def test_cupy_is_imported_only_by_the_backend_and_the_gpu_kernels():
    offences = [
        f"{MODULES[name].relative_to(ROOT)}:{line}"
        for name in MODULES
        if not name.startswith(GPU_FILES)
        for target, _, line in _imports(name)
        if target.split(".")[0] == "cupy" or target.startswith("cupyx")
    ]
    assert offences == []


ROUNDING = ("nextafter",)  # np.spacing measures ulps (the audit's reports); it rounds nothing


@pytest.mark.parametrize("folder", ["intervalnn", "cli"])
def test_directed_rounding_lives_only_in_kernels(folder):
    """No ``nextafter`` outside kernels/: only kernels/ rounds."""
    offences = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            name = getattr(node, "attr", None) or getattr(node, "id", None)
            if name in ROUNDING:
                offences.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert offences == []


def test_every_package_is_installed():
    """pyproject.toml lists its packages by name: a new subpackage must be listed too."""
    listed = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    )
    assert {name for name in MODULES if _is_package(name)} == listed
