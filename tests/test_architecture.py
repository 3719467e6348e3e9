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


# The stage module each dvc.yaml stage runs through ``kdlab <command>`` (cli.py's dispatch).
STAGE_MODULES = {
    "download": "kdlab.stages.data",
    "split": "kdlab.stages.data",
    "train_teacher": "kdlab.stages.train",
    "train_student": "kdlab.stages.train",
    "train_cae": "kdlab.stages.train",
    "soft_labels": "kdlab.stages.softlabels",
    "teacher_logits": "kdlab.stages.teacher_logits",
    "analyse": "kdlab.stages.analyse",
    "probe": "kdlab.stages.probe",
    "distill": "kdlab.stages.distill",
    "distill_grid": "kdlab.stages.grid",
    "profile": "kdlab.stages.profile",
    "tables": "kdlab.stages.tables",
}


def _top_level_imports(path: Path) -> set[str]:
    """kdlab modules a file imports at module level (cli.py imports each stage lazily)."""
    out: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlab"):
            out.add(node.module)
    return out


def runs(stage: str, graph: dict[str, set[str]], packages: list[str] = ()) -> set[str]:
    """Every kdlab module a stage's command imports: ``kdlab/__main__.py`` and cli's module-level
    imports, the stage
    module, every module of the registry ``packages`` it dispatches to (the method, model and
    data set registries: their members run when a stage looks one up), the packages above
    each, and everything they import in turn."""
    todo = _top_level_imports(SRC / "kdlab" / "cli.py") | {STAGE_MODULES[stage]}
    todo |= {m for m in graph for p in packages if m == p or m.startswith(f"{p}.")}
    # `python -m kdlab` runs __main__ -> cli; cli's other commands' lazy imports do not run.
    seen: set[str] = {"kdlab.__main__", "kdlab.cli"}
    while todo:
        m = todo.pop()
        if m in seen or m not in graph:
            continue
        seen.add(m)
        parts = m.split(".")
        todo |= {".".join(parts[:i]) for i in range(1, len(parts))}  # parent packages run too
        todo |= graph[m]
    return seen


def _file_of(module: str) -> str:
    rel = Path(*module.split("."))
    return f"src/{rel}/__init__.py" if (SRC / rel / "__init__.py").exists() else f"src/{rel}.py"


def test_every_stage_depends_on_exactly_the_source_it_runs():
    """Reproducible by construction: a stage's deps cover every kdlab file its command imports
    (so an edit reruns it), and every .py file it lists is one it imports (no stage reruns
    for code it never runs)."""
    import yaml

    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    graph = import_graph()
    assert set(STAGE_MODULES) == set(stages) - {"check"}  # every stage that runs kdlab code
    for stage in STAGE_MODULES:
        spec = stages[stage].get("do", stages[stage])
        deps = [d for d in spec["deps"] if d.startswith("src/")]
        packages = [d[4:].replace("/", ".") for d in deps if (REPO / d / "__init__.py").exists()]
        needed = {_file_of(m) for m in runs(stage, graph, packages)}
        missing = sorted(
            f for f in needed if not any(f == d or f.startswith(f"{d}/") for d in deps)
        )
        assert not missing, f"{stage} runs {missing} but does not depend on them"
        extra = sorted(d for d in deps if d.endswith(".py") and d not in needed)
        assert not extra, f"{stage} depends on {extra} but never imports them"


def test_stage_source_check_sees_a_missing_dep():
    graph = import_graph()
    distill = {_file_of(m) for m in runs("distill", graph, ["kdlab.methods"])}
    assert "src/kdlab/losses.py" in distill and "src/kdlab/methods/kd.py" in distill
    assert "src/kdlab/losses.py" not in {_file_of(m) for m in runs("train_cae", graph)}


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
