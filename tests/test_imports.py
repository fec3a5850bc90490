"""ise_core has no import cycle, and every module imports on its own.

The graph counts every ``import`` of an ise_core module anywhere in a module: at the top,
inside a function (a lazy import is still a dependency) and under ``TYPE_CHECKING``.
``from package import name`` is an edge to ``package.name`` when that is a module, else to
the package. A package is not counted as imported by its own submodules: Python runs a
package's ``__init__`` before any of its modules, which is no cycle.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import ise_core

PACKAGE = Path(ise_core.__file__).resolve().parent
ROOT = PACKAGE.parent


def module_of(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_of(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _absolute(node: ast.ImportFrom, importer: str) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[importer].name == "__init__.py"
    base = importer.split(".")
    base = base if is_package else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(importer: str) -> set[str]:
    tree = ast.parse(MODULES[importer].read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(node, importer)
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                found.add(candidate if candidate in MODULES else source)
    parents = {".".join(importer.split(".")[:n]) for n in range(1, importer.count(".") + 1)}
    return {name for name in found if name in MODULES and name not in parents | {importer}}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_imports_of_every_kind() -> None:
    graph = {name: imports_of(name) for name in MODULES}
    assert "ise_core.config" in graph["ise_core.stages"]  # a top-level import
    assert "ise_core.workspace" in graph["ise_core.simulate.stage"]  # a lazy one
    assert "ise_core.quality.runner" in graph["ise_core.stages"]  # a TYPE_CHECKING one
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_ise_core_has_no_import_cycle() -> None:
    graph = {name: imports_of(name) for name in MODULES}
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_module_imports_on_its_own() -> None:
    # Each module first, in a fresh set of ise_core modules: a cycle that only breaks when a
    # module is the first one imported shows up here.
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        f"for name in {sorted(MODULES)!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'ise_core']:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == ""
