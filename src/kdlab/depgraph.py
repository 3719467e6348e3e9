"""dvc.yaml's source dependencies, computed from the import graph so they cannot drift.

A stage's command runs one entry module (``PYTHONPATH=src python -m kdlab.stages.<module>``);
the files it can execute are that module's closure: every ``kdlab`` import anywhere in a file
(a function's lazy import too), the packages above each module (their ``__init__.py`` runs
first) and the package data a module reads with ``importlib.resources.files("kdlab.<pkg>")``
(every data file of that package). A package whose every file is in the closure is listed as
its folder.

A method looked up by name (``methods.get_method``, which imports ``kdlab.methods.<name>``) is
an import no statement shows: a stage that looks one up depends on every method, except the
foreach stage ``distill@<method>``, which depends on ``src/kdlab/methods/${key}.py`` plus one
list common to all its items (DVC gives no item a list of its own): the stage's closure and
every module any method imports. ``check`` validates against every registry and key: it
depends on all of ``src/kdlab``.

    python -m kdlab.depgraph --check    # exit 1 when dvc.yaml's src deps are not the generated
    python -m kdlab.depgraph --write    # rewrite the src lines of each stage's deps
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGE = "kdlab"
METHODS = "kdlab.methods"  # the lazy registry: METHODS there, one module per name
LOOKUP = "get_method"  # the call that imports a method module by name
PER_METHOD_STAGE = "distill"  # foreach ${methods}: each item runs its own method
WHOLE_PACKAGE_STAGES = ("check",)  # every registry, every key: depends on all of src/kdlab
# Modules that read files through ``__file__``, and why those files are not dependencies.
UNTRACKED_READS = {
    "kdlab.train": "source_hash() hashes every .py to key resume checkpoints: a checkpoint "
    "of other code is dropped (costs time, never changes an output)",
    "kdlab.reproduce": "finds its own src/ to put first on the PYTHONPATH of the commands it "
    "starts; reads no file through it (and no stage imports it)",
}
_ENTRY = re.compile(r"python -m (kdlab(?:\.\w+)*)")


class DepgraphError(Exception):
    """The import graph cannot be turned into deps (an untracked read, a misnamed method)."""


@dataclass
class Module:
    """What one file imports, reads and looks up."""

    name: str
    path: Path  # relative to the repository root
    imports: set[str] = field(default_factory=set)
    data: set[Path] = field(default_factory=set)  # package data files it reads
    looks_up_methods: bool = False


def _module_name(rel: Path) -> str:
    parts = list(rel.with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package_files(root: Path, folder: Path) -> list[Path]:
    """Every file DVC hashes under ``folder`` (bytecode caches are .dvcignored)."""
    return sorted(
        p.relative_to(root)
        for p in (root / folder).rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    )


def _resolve(node: ast.ImportFrom, name: str, is_package: bool) -> str | None:
    """The absolute module of a ``from ... import`` (relative ones resolved)."""
    if node.level == 0:
        return node.module
    base = name.split(".")[: len(name.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


def _nodes(tree: ast.AST):
    """Every node of ``tree`` except those under ``if TYPE_CHECKING:`` (never executed)."""
    for node in ast.iter_child_nodes(tree):
        test = getattr(node, "test", None) if isinstance(node, ast.If) else None
        if isinstance(test, ast.Name | ast.Attribute) and "TYPE_CHECKING" in ast.unparse(test):
            yield from (n for child in node.orelse for n in [child, *_nodes(child)])
            continue
        yield node
        yield from _nodes(node)


def _scan(root: Path, mod: Module, modules: dict[str, Path]) -> None:
    """Fill ``mod`` from its syntax tree."""
    is_package = mod.path.name == "__init__.py"
    for node in _nodes(ast.parse((root / mod.path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            mod.imports |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, mod.name, is_package)
            if base and base.split(".")[0] == PACKAGE:
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
                mod.imports |= {t for t in targets if t in modules}
        elif isinstance(node, ast.Call):
            _scan_call(root, mod, node, modules)
        elif isinstance(node, ast.Name) and node.id == "__file__":
            _untracked(mod)
    mod.imports.discard(mod.name)


def _untracked(mod: Module) -> None:
    if mod.name not in UNTRACKED_READS:
        raise DepgraphError(
            f"{mod.path} reads files through __file__: read package data with "
            "importlib.resources.files (tracked), or add it to UNTRACKED_READS with why"
        )


def _scan_call(root: Path, mod: Module, node: ast.Call, modules: dict[str, Path]) -> None:
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    if called == LOOKUP and mod.name != METHODS:
        mod.looks_up_methods = True
    elif called == "import_module" and mod.name != METHODS:
        raise DepgraphError(f"{mod.path}: import_module is an import no graph can follow")
    elif called == "files" and node.args and isinstance(node.args[0], ast.Constant):
        package = node.args[0].value
        if package in modules:  # importlib.resources.files("kdlab.<pkg>")
            mod.imports.add(package)
            folder = modules[package].parent
            mod.data |= {p for p in _package_files(root, folder) if p.suffix != ".py"}


def scan(root: Path) -> dict[str, Module]:
    """Every module of ``src/kdlab`` under ``root`` with its imports, reads and look-ups."""
    src = root / "src"
    paths = {_module_name(p.relative_to(src)): p.relative_to(root) for p in _py_files(src)}
    graph = {name: Module(name, path) for name, path in paths.items()}
    for mod in graph.values():
        _scan(root, mod, paths)
    return graph


def _py_files(src: Path) -> list[Path]:
    return sorted(p for p in (src / PACKAGE).rglob("*.py") if "__pycache__" not in p.parts)


def closure(graph: dict[str, Module], entries: set[str]) -> tuple[set[str], set[Path], bool]:
    """The modules ``entries`` run (parent packages included), the data files they read, and
    whether any of them looks a method up by name."""
    seen: set[str] = set()
    todo = set(entries)
    data: set[Path] = set()
    looks_up = False
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in graph:
            raise DepgraphError(f"no module {name} under src/")
        seen.add(name)
        parts = name.split(".")
        todo |= {".".join(parts[:i]) for i in range(1, len(parts))}  # parents run first
        mod = graph[name]
        todo |= mod.imports
        data |= mod.data
        looks_up |= mod.looks_up_methods
    return seen, data, looks_up


def method_names(root: Path) -> tuple[str, ...]:
    """The registry's ``METHODS`` tuple, read from methods/__init__.py without importing it."""
    path = root / "src" / Path(*METHODS.split(".")) / "__init__.py"
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "METHODS" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise DepgraphError(f"{path} defines no METHODS tuple")


def _files(graph: dict[str, Module], modules: set[str], data: set[Path]) -> set[Path]:
    return {graph[m].path for m in modules} | data


def collapse(root: Path, files: set[Path]) -> list[str]:
    """``files`` as dvc.yaml deps: a folder stands for its files when it holds no other."""
    out = set(files)
    top = Path("src", PACKAGE)
    folders = {a for f in files for a in f.parents if a == top or top in a.parents}
    for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):  # deepest first
        inside = _package_files(root, folder)
        if inside and all(f in out or any(a in out for a in f.parents) for f in inside):
            out = {f for f in out if folder not in f.parents} | {folder}
    return sorted(p.as_posix() for p in out)


def stage_entries(root: Path) -> dict[str, str]:
    """Each stage of dvc.yaml -> the module its command runs (``python -m <module>``)."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    out = {}
    for name, spec in stages.items():
        match = _ENTRY.search(spec.get("do", spec)["cmd"])
        if not match:
            raise DepgraphError(f"dvc.yaml stage {name}: its cmd runs no `python -m kdlab...`")
        if name == PER_METHOD_STAGE and spec.get("foreach") != "${methods}":
            raise DepgraphError(f"dvc.yaml stage {name}: not a foreach over ${{methods}}")
        out[name] = match.group(1)
    return out


def _method_closures(root: Path, graph: dict[str, Module]) -> dict[str, set[Path]]:
    out = {}
    for m in method_names(root):
        name = f"{METHODS}.{m}"
        if name not in graph:
            raise DepgraphError(f"method {m!r} has no module {name} (one file per method)")
        mods, data, _ = closure(graph, {name})
        out[m] = _files(graph, mods, data)
    return out


def generate(root: Path) -> dict[str, list[str]]:
    """Stage name -> its generated src deps (dvc.yaml paths, sorted)."""
    graph = scan(root)
    methods = _method_closures(root, graph)
    every_method = set().union(*methods.values())
    out: dict[str, list[str]] = {}
    for stage, entry in stage_entries(root).items():
        if stage in WHOLE_PACKAGE_STAGES:
            out[stage] = [f"src/{PACKAGE}"]
            continue
        mods, data, looks_up = closure(graph, {entry})
        files = _files(graph, mods, data)
        if looks_up and stage == PER_METHOD_STAGE:
            own = {m: graph[f"{METHODS}.{m}"].path for m in methods}
            common = files | {f for m, fs in methods.items() for f in fs - {own[m]}}
            # Each item runs its method's closure: common + its own file, nothing else (true by
            # construction today; a guard should `common` ever be narrowed).
            for m, fs in methods.items():
                if not fs <= common | {own[m]}:
                    extra = sorted(str(f) for f in fs - common - {own[m]})
                    raise DepgraphError(f"distill@{m} runs {extra}, outside its deps")
            key = f"src/{METHODS.replace('.', '/')}/${{key}}.py"
            out[stage] = collapse(root, common) + [key]
        else:
            out[stage] = collapse(root, files | every_method if looks_up else files)
    return out


# --- dvc.yaml: rewrite the src lines of each stage's deps, nothing else --------------------

_STAGE = re.compile(r"^  (\w+):\s*(#.*)?$")
_KEY = re.compile(r"^(\s+)(\w+):")
_ITEM = re.compile(r"^(\s+)- (\S+)(\s+#.*)?$")


def rewrite(text: str, deps: dict[str, list[str]]) -> str:
    """dvc.yaml ``text`` with each stage's ``src/`` deps replaced by ``deps[stage]`` (where its
    first src line was); other deps, params, outs and comments are kept, and so is the
    trailing comment of a src line whose path stays."""
    lines = text.splitlines(keepends=True)
    out: list[str] = []
    stage = None
    i = 0
    while i < len(lines):
        line = lines[i]
        if m := _STAGE.match(line):
            stage = m.group(1)
        key = _KEY.match(line)
        if stage in deps and key and key.group(2) == "deps" and line.rstrip().endswith("deps:"):
            out.append(line)
            i, block = _deps_block(lines, i + 1)
            out += _rewrite_block(block, deps[stage], stage)
            continue
        out.append(line)
        i += 1
    return "".join(out)


def _deps_block(lines: list[str], i: int) -> tuple[int, list[str]]:
    """The lines of a deps list starting at ``i`` (items and comment lines)."""
    block = []
    while i < len(lines) and (_ITEM.match(lines[i]) or lines[i].strip().startswith("#")):
        block.append(lines[i])
        i += 1
    return i, block


def _rewrite_block(block: list[str], src: list[str], stage: str) -> list[str]:
    items = [(_ITEM.match(line), line) for line in block]
    indent = next((m.group(1) for m, _ in items if m), None)
    if indent is None:
        raise DepgraphError(f"dvc.yaml stage {stage}: deps is not a list of items")
    comments = {m.group(2): m.group(3) or "" for m, _ in items if m and m.group(3)}
    new = [f"{indent}- {p}{comments.get(p, '')}\n" for p in src]
    out: list[str] = []
    for m, line in items:
        if m and m.group(2).startswith("src/"):
            out += new
            new = []
        else:
            out.append(line)
    return out + new


def current(root: Path) -> dict[str, list[str]]:
    """Stage name -> the src deps dvc.yaml lists now."""
    stages = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    return {
        name: [d for d in spec.get("do", spec).get("deps", []) if str(d).startswith("src/")]
        for name, spec in stages.items()
    }


def check(root: Path) -> list[str]:
    """One line per stage whose src deps in dvc.yaml differ from the generated ones."""
    want, have = generate(root), current(root)
    problems = []
    for stage in sorted(want):
        missing = sorted(set(want[stage]) - set(have.get(stage, [])))
        extra = sorted(set(have.get(stage, [])) - set(want[stage]))
        if missing or extra or have.get(stage) != want[stage]:
            problems.append(f"{stage}: missing {missing or '-'}, extra {extra or '-'}")
    return problems


def write(root: Path) -> bool:
    """Rewrite dvc.yaml's src deps; True when it changed."""
    path = root / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    new = rewrite(text, generate(root))
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.depgraph --check | --write`` (also ``kdlab deps``)."""
    p = argparse.ArgumentParser(prog="kdlab deps", description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=".", help="repository root (default .)")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs")
    mode.add_argument("--write", action="store_true", help="rewrite dvc.yaml's src deps")
    args = p.parse_args(argv)
    root = Path(args.root)
    try:
        if args.write:
            print(f"dvc.yaml: src deps {'rewritten' if write(root) else 'already generated'}")
            return 0
        problems = check(root)
    except DepgraphError as err:
        print(f"kdlab deps: error: {err}", file=sys.stderr)
        return 2
    for line in problems:
        print(f"dvc.yaml: {line}", file=sys.stderr)
    if problems:
        print("run `python -m kdlab.depgraph --write`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
