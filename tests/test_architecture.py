"""The layering holds: no import cycles between kdlab's modules, short stage/loop functions."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

SRC = REPO / "src"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the kdlab modules it imports (at any depth of the file).

    A registry package importing its own sub-modules (``methods/__init__.py`` pulling in each
    method so that it registers) is the registry pattern, not a dependency, and is left out.
    """
    modules = {_module(p): p for p in (SRC / "kdlab").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlab"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                deps |= {t for t in targets if t in modules}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
        is_package = path.name == "__init__.py"
        graph[name] = {
            d for d in deps if d != name and not (is_package and d.startswith(f"{name}."))
        }
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(graph.get(n, ())):
            if state.get(d) == 1:
                return stack[stack.index(d) :] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (cycle := visit(n)):
            return cycle
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert "kdlab.methods" in graph["kdlab.config"]  # the graph sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_errors_and_schema_are_leaves():
    graph = import_graph()
    assert graph["kdlab.errors"] == set()
    assert graph["kdlab.schema"] == {"kdlab.errors"}
