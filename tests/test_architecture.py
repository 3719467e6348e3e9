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

    A registry package importing its own sub-modules (``models/__init__.py`` pulling in each
    model family so that it registers) is the registry pattern, not a dependency, and is left
    out. Imports under ``if TYPE_CHECKING:`` (annotations only) are listed too.
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
    assert "kdlab.errors" in graph["kdlab.config"]  # the graph sees real edges
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_errors_and_schema_are_leaves():
    graph = import_graph()
    assert graph["kdlab.errors"] == set()
    assert graph["kdlab.schema"] == {"kdlab.errors"}


# Each stage's deps in dvc.yaml are generated from this graph's imports: tests/test_depgraph.py.


def _function_lengths(path: Path, root: Path = SRC) -> dict[str, int]:
    """Every function's length in lines, signature included, its docstring left out."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            doc = node.body[0]
            if isinstance(doc, ast.Expr) and isinstance(getattr(doc, "value", None), ast.Constant):
                n -= doc.end_lineno - doc.lineno + 1
            out[f"{path.relative_to(root)}:{node.name}"] = n
    return out


def test_stage_and_loop_functions_stay_short():
    files = [*sorted((SRC / "kdlab/stages").glob("*.py")), SRC / "kdlab/train.py"]
    lengths = {k: v for f in files for k, v in _function_lengths(f).items()}
    assert "kdlab/train.py:fit" in lengths
    long = {k: v for k, v in lengths.items() if v > 60}
    assert not long, f"split these functions (over 60 lines): {long}"


def test_function_length_counts_code_not_docstrings(tmp_path):
    src = tmp_path / "probe.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(61))
    src.write_text(f'def f():\n    """Doc.\n\n    More.\n    """\n{body}\n')
    assert _function_lengths(src, tmp_path) == {"probe.py:f": 62}


def render_imports(graph: dict[str, set[str]]) -> str:
    """The import listing of docs/architecture.md: one line per module, ``kdlab.`` dropped."""

    def short(m: str) -> str:
        return m.removeprefix("kdlab.") if m != "kdlab" else "kdlab (package)"

    return "\n".join(
        f"{short(m)} -> {', '.join(sorted(short(d) for d in graph[m])) or '(nothing)'}"
        for m in sorted(graph)
    )


def test_architecture_doc_lists_the_imports_as_they_are():
    """docs/architecture.md's import listing is the code's (rewrite it with
    ``python tests/test_architecture.py``)."""
    doc = (REPO / "docs/architecture.md").read_text()
    block = doc.split("<!-- imports:begin -->\n```text\n", 1)[1].split("```\n<!-- imports:end", 1)
    assert block[0].strip() == render_imports(import_graph())


def write_architecture_doc() -> None:
    """Replace the import listing of docs/architecture.md with the code's."""
    path = REPO / "docs/architecture.md"
    head, rest = path.read_text().split("<!-- imports:begin -->\n", 1)
    tail = rest.split("<!-- imports:end -->", 1)[1]
    block = f"```text\n{render_imports(import_graph())}\n```\n"
    path.write_text(f"{head}<!-- imports:begin -->\n{block}<!-- imports:end -->{tail}")


if __name__ == "__main__":
    write_architecture_doc()
