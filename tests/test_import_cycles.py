"""No import cycles among `lab`, `services` and `ui` modules: the import graph is a DAG.

The graph is read from the source with `ast`: every import that runs when a module is imported (module level,
class bodies, top-level `try`/`if` blocks) is an edge; imports under `if TYPE_CHECKING:` and inside functions are
not (they run later, if ever). `from pkg import name` is an edge to `pkg.name` when that is a module, else to
`pkg`. Importing a submodule of another package runs that package's `__init__` first, so that is an edge too (to
each package on the way down that is not the importer's own ancestor: a package whose `__init__` re-exports its
own submodules is not a cycle, one that pulls in a third package importing back would be). The fault registry's
discovery (`lab.faults.registry`, pkgutil over `lab.faults.kinds`) is an import `ast` cannot see, so its edges
are added by hand from the package's files.

A second check imports the entry points in fresh interpreters, each first: a cycle that only bites in one import
order (a partially initialised module) fails there.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lab", "services", "ui")
# Modules that import lab.faults.kinds.* at import time through the registry's discovery.
DISCOVERERS = ("lab.scenario.faults",)
KINDS_PACKAGE = "lab.faults.kinds"


def module_files() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(body: list[ast.stmt]) -> list[ast.Import | ast.ImportFrom]:
    found: list[ast.Import | ast.ImportFrom] = []
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            found.append(node)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                found += _import_time_nodes(node.body)
            found += _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                found += _import_time_nodes(block)
        elif isinstance(node, ast.With | ast.ClassDef):  # a class body runs at import time too
            found += _import_time_nodes(node.body)
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest known module `name` is or is inside of (None: not ours)."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _import_time_nodes(ast.parse(path.read_text(encoding="utf-8")).body):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, *([base] if base else [])])
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                found = _resolve(target, modules)
                if found is None or found == mod:
                    continue
                graph[mod].add(found)
                parts = found.split(".")
                for depth in range(1, len(parts)):
                    parent = ".".join(parts[:depth])
                    if parent in modules and not (mod == parent or mod.startswith(parent + ".")):
                        graph[mod].add(parent)
    kinds = [m for m in modules if m.startswith(KINDS_PACKAGE + ".")]
    for mod in DISCOVERERS:
        graph[mod].update(kinds)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_module_level_imports_only() -> None:
    graph = import_graph()
    assert "lab.faults.base" in graph["lab.faults.context"]
    assert "lab.scenario.checks" in graph["lab.scenario.models"]
    assert "lab.scenario.models" not in graph["lab.scenario.checks"]  # TYPE_CHECKING only
    assert any(m.startswith(KINDS_PACKAGE + ".") for m in graph["lab.scenario.faults"])


def test_no_import_cycles_among_lab_services_and_ui() -> None:
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


ENTRY_POINTS = ["lab.scenario.faults", "lab.scenario", "lab.faults", "lab.faults.kinds.network_toxic",
                "lab.faults.registry", "lab.faults.base", "lab.scenario.checks", "lab.scenario.models",
                "services.registry.variants"]


@pytest.mark.parametrize("first", ENTRY_POINTS)
def test_each_entry_point_imports_first_in_a_fresh_interpreter(first: str) -> None:
    code = f"import {first}; import lab.scenario.faults as f; assert f.FAULT_KINDS and f.ACTIONS"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def _imports_anywhere(path: Path) -> set[str]:
    """Every module an `import` in the file names, wherever it is (functions too), TYPE_CHECKING blocks aside."""
    names: set[str] = set()
    checked: set[int] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            checked.update(id(n) for sub in node.body for n in ast.walk(sub))
        if id(node) in checked:
            continue
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.update([node.module, *(f"{node.module}.{a.name}" for a in node.names)])
    return names


@pytest.mark.parametrize("importer,imported", [
    ("lab/scenario/checks.py", "lab.scenario.models"),  # the cross check's one owner is checks.py
    ("services/registry/store.py", "services.registry.variants"),  # variants builds on the store
])
def test_the_old_back_edges_are_gone_even_inside_functions(importer: str, imported: str) -> None:
    assert imported not in _imports_anywhere(ROOT / importer)
