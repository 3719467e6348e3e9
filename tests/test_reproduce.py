"""``kdlab reproduce``: the plan of a paper grid, its measured time estimate, and a tiny grid run
end to end in a temporary git + DVC repository (baseline once, grid, report, resume)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fixtures import (
    cli,
    copy_pipeline,
    init_repo,
    run_stages_in_process,
    tiny_params,
    write_fashion_mnist,
)
from kdlab import reproduce
from kdlab.reports import catalogue


def test_dry_run_plan_of_table10_trains_teacher_and_cae_once(capsys, monkeypatch):
    monkeypatch.setattr(
        reproduce, "finished_runs", lambda repo, branch, head=True: []
    )  # no dvc here
    r = cli(["reproduce", "reffakd_table10", "--dry-run", "--repo", REPO], capsys)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "preset paper, scale fashion_mnist/200ep, seeds 0" in out
    assert (
        "shared stages, trained once per seed in the baseline commit: "
        "train_teacher, teacher_logits, train_cae, soft_labels\n" in out
    )
    assert "cells: 16 settings x {kd, reffakd} x 1 seed(s) = 32; finished 0, to run 32" in out
    assert "one distill_grid per seed" in out and "epochs: teacher 200, cae 200" in out
    # every measured figure or "not measured", per device class of speeds.yaml
    assert "cpu_2core: not measured (cae, teacher of preset paper)" in out
    assert "gpu_h100: not measured (distill of preset paper)" in out
    cells = out.split("seed 0: ")[1].splitlines()[0].split(", ")
    assert len(cells) == len(set(cells)) == 32 and "kd_T20_a0p6" in cells
    assert "dvc exp run" not in out  # a dry run plans, it queues nothing


def test_cpu_plan_finds_the_committed_cells(monkeypatch):
    """The committed CPU Table 10 (records at fashion_mnist/12ep, seed 0) is finished: a rerun
    trains nothing; seed 1 would train all 32 cells and one more teacher and CAE."""
    monkeypatch.setattr(reproduce, "finished_runs", lambda repo, branch, head=True: [])
    plan = reproduce.make_plan("reffakd_table10", REPO, "cpu", [0, 1])
    assert plan.preset == "default" and plan.scale == "fashion_mnist/12ep"
    assert [c.seed for c in plan.todo] == [1] * 32
    text = reproduce.plan_text(plan)

    # seed 1 only: 3 teacher epochs, 3 CAE epochs, 32 cells x 12 student epochs, each priced
    # from the committed default-run record it names (seconds / epochs)
    def per_epoch(rel: str) -> float:
        rec = json.loads((REPO / rel).read_text())
        return rec["wall_time_s"] / rec["epochs"]

    expected = (
        3 * per_epoch("metrics/teacher.json")
        + 3 * per_epoch("metrics/cae.json")
        + 32 * 12 * per_epoch("metrics/distill/kd.json")
    )
    # printed as minutes under an hour, else hours to one decimal
    shown = f"{expected / 3600:.1f} h" if expected >= 3600 else f"{expected / 60:.0f} min"
    assert f"cpu_2core: {shown} (" in text


def test_rerun_plan_ignores_the_committed_cells(monkeypatch):
    """--rerun: the committed CPU grid counts for nothing (all 32 cells train again), HEAD's
    runs are not read, only the branch's own."""
    asked = []
    monkeypatch.setattr(
        reproduce, "finished_runs", lambda repo, branch, head=True: asked.append(head) or []
    )
    plan = reproduce.make_plan("reffakd_table10", REPO, "cpu", [0], rerun=True)
    assert asked == [False] and len(plan.todo) == 32
    assert "rerun: the committed records do not count" in reproduce.plan_text(plan)


def test_compare_records_pairs_cells_by_setting_column_and_scale():
    def cell(setting, column, ours, scale="s/12ep"):
        return {
            "setting": setting,
            "column": column,
            "scale": scale,
            "scores": {f"{column} ours": ours},
        }

    before = {
        "cells": [
            cell("T=1", "kd", "90.10"),
            cell("T=1", "reffakd", "89.00"),
            cell("T=1", "kd", "50.00", scale="s/200ep"),
        ]
    }
    after = {
        "cells": [
            cell("T=1", "kd", "90.40 ± 0.10"),
            cell("T=1", "reffakd", "89.00"),
            cell("T=5", "kd", "91.00"),
            cell("T=1", "kd", "70.00", scale="s/200ep"),
        ]
    }
    lines = reproduce.compare_records(before, after, "s/12ep")
    assert "  T=1 | kd: 90.10 -> 90.40 (+0.30)" in lines
    assert "  T=1 | reffakd: 89.00 -> 89.00 (+0.00)" in lines
    assert "  T=5 | kd: new 91.0, old None (nothing to compare)" in lines
    assert lines[-1] == (
        "  2 cells: max |diff| 0.30, mean |diff| 0.15, mean diff +0.15, identical 1"
    )


def test_scales_and_names_refused_clearly():
    with pytest.raises(ValueError, match="no CPU preset"):
        reproduce.choose_preset("reffakd_table5", "cpu")
    assert reproduce.choose_preset("reffakd_table5", "paper") == "reffakd_cifar100"
    with pytest.raises(ValueError, match="unknown scale"):
        reproduce.choose_preset("reffakd_table10", "gpu")
    with pytest.raises(ValueError, match="runs the grids"):
        reproduce.make_plan("srrl_table6", REPO, runs=[])


def test_speed_table_numbers_are_their_records(tmp_path):
    """Every speed is its committed record's measured seconds over its epochs, read when the
    plan is made; a missing record leaves its role not measured."""
    table = reproduce.speeds(REPO)
    n = 0
    for preset, roles in table["speeds"].items():
        for role, per_device in roles.items():
            for dev, entry in per_device.items():
                assert dev in table["device_classes"]
                rec = json.loads((REPO / entry["source"]).read_text())
                want = rec[entry["key"]] / rec["epochs"]
                assert entry["s_per_epoch"] == pytest.approx(want, rel=1e-12), (preset, role)
                assert entry["s_per_epoch"] > 0
                n += 1
    assert n >= 8  # CPU default preset (4 roles), paper-scale CPU and GPU records
    # a repository without the records: nothing is measured, nothing is guessed
    empty = reproduce.speeds(tmp_path)
    assert all(not d for roles in empty["speeds"].values() for d in roles.values())


def test_catalogue_grids_are_one_reproduce_line():
    entries = {(e.paper, e.table): e for e in catalogue.catalogue(REPO)}
    for table in ("table5", "table9", "table10"):
        e = entries["reffakd", table]
        assert e.command.startswith(f"kdlab reproduce reffakd_{table}") and e.report_ready


def test_params_edit_keeps_comments():
    text = (REPO / "src/kdlab/presets/default.yaml").read_text()
    cell = reproduce.Cell("T=5, alpha=0.8", "kd", "vanilla_kd", 0.8, 5.0, 3)
    new = yaml.safe_load(reproduce.with_seed_and_cells(text, 3, [cell]))
    assert new["seed"] == 3
    assert new["grid"]["cells"] == {"kd_T5_a0p8": {"method": "kd", "alpha": 0.8, "temperature": 5}}
    assert new["alpha"] == yaml.safe_load(text)["alpha"]


def test_grid_cells_read_as_single_runs():
    """A distill_grid run's cells become single runs for the reports and the finished-cell
    search: the method's scores at the cell's alpha and T, its record the cell's."""
    from kdlab.reports import experiments, runs

    run = {
        "name": "main",
        "rev": "abc",
        "params": {
            "seed": 0,
            "alpha": 0.6,
            "temperature": 20.0,
            "methods": {"kd": "teacher", "dkd": "teacher"},
            "method_params": {"kd": {"reduction": "batchmean"}},
            "grid": {"cells": {"kd_T5_a0p8": {"method": "kd", "alpha": 0.8, "temperature": 5.0}}},
        },
        "scores": {"grid_kd_T5_a0p8": {"test_acc": 88.0}, "dkd": {"test_acc": 80.0}},
    }
    (cell,) = runs.grid_cell_runs(run)
    assert cell["scores"] == {"kd": {"test_acc": 88.0}}
    assert cell["params"]["alpha"] == 0.8 and cell["params"]["methods"] == {"kd": "teacher"}
    assert cell["params"]["grid"] == {"cells": {}} and runs.model_stage("kd", cell) == (
        "grid/kd_T5_a0p8"
    )
    spec = experiments.GRIDS["reffakd_table10"]
    cells = experiments.collect([run, cell], spec)
    assert cells["T=5, alpha=0.8"] == {"kd": {0: 88.0}} and "kd" not in cells["T=20, alpha=0.6"]


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> Path:
    """A git + DVC repository of the pipeline on the tiny fixture whose commit already holds
    the teacher and its logits (run in this process, recorded by `dvc commit`: ~5 stage
    processes fewer); the CAE and the soft labels are left to `kdlab reproduce`."""
    root = tmp_path_factory.mktemp("reproduce")
    md5 = write_fashion_mnist(root / "fixture", n_train=300, n_test=100)
    work = root / "repo"
    work.mkdir()
    copy_pipeline(work)
    default = yaml.safe_load((REPO / "src/kdlab/presets/default.yaml").read_text())
    params = tiny_params(default, root / "fixture", md5)
    params["student"]["train"]["epochs"] = 1
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repo(work)
    run_stages_in_process(work, TEACHER_DONE)
    git(work, "add", "-A")
    git(work, "commit", "-qm", "teacher")
    return work


TEACHER_DONE = ["check", "download", "split", "train_teacher", "teacher_logits"]


FIRST = ["T=20, alpha=0.6", "T=5, alpha=0.8"]


def git(repo: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=repo, check=True, capture_output=True, text=True
    ).stdout


# The real DVC pipeline: ~8 stage processes (each imports torch) take 2-3 min on 2 loaded cores.
@pytest.mark.e2e
@pytest.mark.slow
def test_tiny_grid_runs_once_then_resumes_only_missing_cells(tiny_repo, capsys):
    repo = tiny_repo
    plan = reproduce.make_plan("reffakd_table10", repo, "current", only=FIRST)
    assert len(plan.todo) == 4 and plan.shared == [
        "train_teacher",
        "teacher_logits",
        "train_cae",
        "soft_labels",
    ]
    ran = reproduce.execute(plan, repo)
    # Each shared stage at most once: the committed teacher and its logits never retrain, the
    # CAE and soft labels (not yet run) train exactly once, in the baseline; one grid.
    assert not {"train_teacher", "teacher_logits"} & set(ran), ran
    for stage in ("train_cae", "soft_labels", "distill_grid"):
        assert ran.count(stage) == 1, (stage, ran)
    assert ran.index("soft_labels") < ran.index("distill_grid"), ran
    assert not any(s.startswith("distill@") for s in ran), ran
    assert git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    summary = json.loads(git(repo, "show", f"{plan.branch}:metrics/grid_summary.json"))
    assert summary["cells"] == 4 and "grid_kd_T20_a0p6" in summary

    # A rerun with one more setting, resumed where a stopped run leaves it (on the branch, its
    # params.yaml holding the grid's cells): the four finished cells are found (grid cells read
    # as single runs), only the two new ones train, and no shared stage retrains.
    more = reproduce.make_plan("reffakd_table10", repo, "current", only=[*FIRST, "T=1, alpha=0.9"])
    assert [c.name for c in more.todo] == ["reffakd_T1_a0p9", "kd_T1_a0p9"]
    git(repo, "checkout", "-q", plan.branch)
    params = repo / "params.yaml"
    params.write_text(reproduce.with_seed_and_cells(params.read_text(), 0, more.todo))
    ran = reproduce.execute(more, repo)
    assert ran.count("distill_grid") == 1, ran
    assert not {"train_teacher", "train_cae", "teacher_logits", "soft_labels"} & set(ran), ran
    summary = json.loads(git(repo, "show", f"{plan.branch}:metrics/grid_summary.json"))
    assert summary["cells"] == 2 and "grid_kd_T1_a0p9" in summary

    # The report reads the cells of both grid commits; nothing is left to run.
    report = git(repo, "show", f"{plan.branch}:results/records/reffakd_table10.json")
    filled = {(c["setting"], c["column"]) for c in json.loads(report)["cells"]}
    assert len(filled) == 6
    done = reproduce.make_plan("reffakd_table10", repo, "current", only=[*FIRST, "T=1, alpha=0.9"])
    assert done.todo == []
