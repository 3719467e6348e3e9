"""dvc.yaml's source deps are the import graph's (kdlab.depgraph), and DVC itself reruns only
what an edit touches: cli and report writers rerun no training, the training loop reruns only
the stages that train, a method's file reruns only its own distill stage (and the grid)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from kdlab import depgraph

TRAINING = {"train_teacher", "train_student", "train_cae", "distill", "distill_grid"}


def test_dvc_yaml_src_deps_are_the_generated_ones():
    """`python -m kdlab.depgraph --check`: rewrite them with `--write` after a code change."""
    assert depgraph.check(REPO) == []


@pytest.fixture(scope="module")
def generated() -> dict[str, list[str]]:
    return depgraph.generate(REPO)


def test_only_the_stages_that_train_run_the_training_loop(generated):
    runs_loop = {stage for stage, deps in generated.items() if "src/kdlab/train.py" in deps}
    assert runs_loop == TRAINING
    assert "src/kdlab/runtime.py" in generated["soft_labels"]  # its seeding and device helpers


def test_no_stage_runs_the_cli_or_a_report_writer(generated):
    reporting = ["cli", "__main__", "depgraph", "checks"]
    # every module of the reports package but the two the tables stage runs
    reports = sorted(p.stem for p in (REPO / "src/kdlab/reports").glob("*.py"))
    assert {"registry", "writer", "experiments", "runs", "catalogue", "records"} <= set(reports)
    reporting += [f"reports/{m}" for m in reports if m not in ("__init__", "tables", "papers")]
    for stage, deps in generated.items():
        if stage == "check":
            continue
        for name in reporting:
            assert f"src/kdlab/{name}.py" not in deps, (stage, name)
        if stage != "tables":  # no other stage runs a module of the reports package
            assert not any(d.startswith("src/kdlab/reports") for d in deps), (stage, deps)
    assert "src/kdlab/reports/tables.py" in generated["tables"]
    assert "src/kdlab/reports/papers.py" in generated["tables"]


def test_a_method_file_is_a_dep_of_its_own_distill_stage_and_of_the_grid_only(generated):
    distill = generated["distill"]
    assert distill[-1] == "src/kdlab/methods/${key}.py"
    assert "src/kdlab/methods/crd.py" not in distill and "src/kdlab/methods" not in distill
    # Parents of other methods (ReffAKD subclasses KD) are in every item's list.
    assert {"src/kdlab/methods/kd.py", "src/kdlab/methods/base.py"} <= set(distill)
    assert "src/kdlab/methods" in generated["distill_grid"]  # a cell may run any method
    assert generated["check"] == ["src/kdlab"]


def test_no_stage_module_imports_another():
    graph = depgraph.scan(REPO)
    shared = {"kdlab.stages", "kdlab.stages.common"}
    for name, mod in graph.items():
        if name.startswith("kdlab.stages."):
            others = {m for m in mod.imports if m.startswith("kdlab.stages")} - shared
            assert not others, f"{name} imports {sorted(others)}"
    assert not {m for m in graph["kdlab.stages.common"].imports if m.startswith("kdlab.stages.")}


def test_a_stage_entry_loads_no_module_outside_its_deps(generated):
    """What the generator derives statically against what Python loads: importing a stage's
    module (and the methods it runs) loads only files of its deps."""
    code = (
        "import importlib, json, sys\n"
        "importlib.import_module(sys.argv[1])\n"
        "for m in sys.argv[2:]:\n"
        "    importlib.import_module('kdlab.methods').get_method(m)\n"
        "print(json.dumps(sorted(n for n in sys.modules if n.split('.')[0] == 'kdlab')))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    for stage, entry, methods in (
        ("teacher_logits", "kdlab.stages.teacher_logits", []),
        ("distill", "kdlab.stages.distill", ["reffakd_uniform"]),
    ):
        r = subprocess.run(
            [sys.executable, "-c", code, entry, *methods], capture_output=True, text=True, env=env
        )
        assert r.returncode == 0, r.stderr
        deps = [d.replace("${key}", m) for d in generated[stage] for m in methods or [""]]
        for name in json.loads(r.stdout):
            rel = Path("src", *name.split("."))
            path = rel / "__init__.py" if (REPO / rel).is_dir() else rel.with_suffix(".py")
            assert any(path == Path(d) or Path(d) in path.parents for d in deps), (stage, path)


def _copy_source(dst: Path) -> Path:
    shutil.copytree(
        REPO / "src/kdlab", dst / "src/kdlab", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(REPO / "dvc.yaml", dst / "dvc.yaml")
    return dst


def test_a_misnamed_method_or_an_untracked_read_is_refused(tmp_path):
    root = _copy_source(tmp_path)
    init = root / "src/kdlab/methods/__init__.py"
    text = init.read_text()
    init.write_text(text.replace('    "vid",\n', '    "vid",\n    "nosuch",\n'))
    with pytest.raises(depgraph.DepgraphError, match="method 'nosuch' has no module"):
        depgraph.generate(root)
    init.write_text(text)
    (root / "src/kdlab/paths.py").write_text("HERE = __file__\n")
    with pytest.raises(depgraph.DepgraphError, match=r"paths\.py reads files through __file__"):
        depgraph.generate(root)


def test_rewrite_replaces_src_lines_only():
    text = (
        "stages:\n"
        "  a:\n"
        "    cmd: PYTHONPATH=src python -m kdlab.stages.a\n"
        "    deps:\n"
        "      - data/x   # kept\n"
        "      - src/kdlab/old.py\n"
        "      - src/kdlab/io.py   # why\n"
        "      # a comment line\n"
        "      - data/y\n"
        "    outs:\n"
        "      - src/kdlab/out.txt\n"
    )
    new = depgraph.rewrite(text, {"a": ["src/kdlab/io.py", "src/kdlab/new.py"]})
    assert new == text.replace(
        "      - src/kdlab/old.py\n      - src/kdlab/io.py   # why\n",
        "      - src/kdlab/io.py   # why\n      - src/kdlab/new.py\n",
    )


# --- What DVC itself reruns after one-line edits ----------------------------------------------


def _dvc(work: Path, *args: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    r = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=work, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, f"dvc {' '.join(args)}:\n{r.stdout}\n{r.stderr}"
    return r.stdout


def _placeholders(work: Path) -> None:
    """A file at every output of every stage (a folder's: one file inside it)."""
    from dvc.repo import Repo

    with Repo(str(work)) as repo:
        outs = [o.def_path for stage in repo.index.stages for o in stage.outs]
    for out in outs:
        path = work / out
        target = path if path.suffix else path / "placeholder"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{out}\n")


@pytest.fixture(scope="module")
def committed(tmp_path_factory) -> Path:
    """The pipeline with every stage's deps and outs recorded (`dvc commit`, nothing run):
    the default params plus `crd`, so that distill@crd exists."""
    work = _copy_source(tmp_path_factory.mktemp("deps"))
    shutil.copy(REPO / ".dvcignore", work / ".dvcignore")
    params = yaml.safe_load((REPO / "src/kdlab/presets/default.yaml").read_text())
    params["methods"]["crd"] = "teacher"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _dvc(work, "init", "--no-scm", "-q")
    _placeholders(work)
    _dvc(work, "commit", "-f", "-q")
    assert json.loads(_dvc(work, "status", "--json")) == {} == _status(work)
    return work


def _status(work: Path) -> dict:
    """`dvc status --json` through the API the command calls (``Repo.status``), in this
    process: each of the 11 edits below would otherwise pay a ``python -m dvc`` start."""
    from dvc.repo import Repo

    old = os.getcwd()
    os.chdir(work)  # stage names relative to the repository, as the command prints them
    try:
        with Repo(str(work)) as repo:
            return repo.status()
    finally:
        os.chdir(old)


def changed_by_editing(work: Path, source: str) -> set[str]:
    """The stages `dvc status` reports after one line is appended to ``source`` (restored)."""
    path = work / source
    text = path.read_text()
    path.write_text(text + "# an edit\n")
    try:
        return set(_status(work))
    finally:
        path.write_text(text)


DISTILL = {f"distill@{m}" for m in ("kd", "reffakd", "dkd", "reffakd_dkd", "crd")}
TRAIN = {"train_teacher", "train_student", "train_cae", "distill_grid"}


@pytest.mark.e2e
@pytest.mark.parametrize(
    "source, rerun",
    [
        ("src/kdlab/cli.py", set()),  # (a) the command line reruns nothing ...
        ("src/kdlab/reports/writer.py", set()),  # ... nor do the report writers
        ("src/kdlab/reports/registry.py", set()),
        ("src/kdlab/reports/runs.py", set()),
        ("src/kdlab/reports/experiments.py", set()),
        ("src/kdlab/reports/catalogue.py", set()),
        ("src/kdlab/reports/records.py", set()),
        ("src/kdlab/reports/hao.py", set()),
        ("src/kdlab/reports/tables.py", {"tables"}),  # the pipeline's paper tables: that stage only
        ("src/kdlab/train.py", TRAIN | DISTILL),  # (b) the training loop: what trains
        ("src/kdlab/methods/crd.py", {"distill@crd", "distill_grid"}),  # (c) its own stage
    ],
)
def test_dvc_status_after_a_one_line_edit(committed, source, rerun):
    """The stages DVC reports changed (`dvc status --json`) after one line is appended to
    ``source``; ``check`` depends on all of src/kdlab (it reads every registry)."""
    assert changed_by_editing(committed, source) == {"check", *rerun}
