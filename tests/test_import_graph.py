"""The package's import graph: no circle, no upward import (docs/architecture.md), lazy imports included."""

from __future__ import annotations

import ast
from pathlib import Path

import litefocus_export

ROOT = Path(litefocus_export.__file__).parent
PACKAGE = "litefocus_export"
# data flows one way: a module imports its own layer and the layers below it (0: the torch-free core)
LAYERS = {"core": 0, "artifacts": 1, "attention": 2, "models": 2, "export": 3, "graphs": 3, "backends": 4,
          "runtime": 5, "pytorch": 6, "serve": 6, "report": 6, "devicecheck": 6, "cli": 7}


def modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = [PACKAGE, *path.relative_to(ROOT).with_suffix("").parts]
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The package modules ``name`` imports anywhere in its body (each resolved to the deepest known module),
    less its own parent packages (Python imports those first whatever the module says)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}" if base else anchor
            candidates = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
    return targets


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imported(name, path, known) for name, path in known.items()}


def layer(name: str) -> int:
    parts = name.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else max(LAYERS.values()) + 1


def test_no_import_circle():
    edges = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles = []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while (member := stack.pop()) != node:
                component.append(member)
            if component:
                circles.append(sorted([node, *component]))

    for node in edges:
        if node not in index:
            visit(node)
    assert circles == []


def test_no_upward_import():
    upward = [f"{name} -> {target}" for name, targets in graph().items() for target in targets
              if layer(target) > layer(name)]
    assert upward == []


def test_the_graph_sees_lazy_imports():
    """The walk finds imports inside functions (what a circle through lazy imports needs)."""
    edges = graph()
    assert "litefocus_export.backends.openvino.runner" in edges["litefocus_export.backends"]
    assert layer("litefocus_export.runtime.sampler") > layer("litefocus_export.backends.build")


def test_long_modules_say_why():
    """A module over ~400 lines says at its top why it is one module (docs/architecture.md)."""
    unexplained = [str(path.relative_to(ROOT)) for path in ROOT.rglob("*.py")
                   if len(path.read_text().splitlines()) > 420
                   and "Why one module over ~400 lines" not in "\n".join(path.read_text().splitlines()[:20])]
    assert unexplained == []
