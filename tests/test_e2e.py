"""End to end: the real DVC pipeline on a tiny Fashion-MNIST fixture in a temporary git repo."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import REPO
from fixtures import cli, copy_pipeline, init_repo, tiny_params, write_fashion_mnist

pytestmark = pytest.mark.e2e


def run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", KDLAB_PROGRESS="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("e2e")
    md5 = write_fashion_mnist(root / "fixture", n_train=600, n_test=200)
    work = root / "repo"
    work.mkdir()
    copy_pipeline(work)
    with open(REPO / "src/kdlab/presets/default.yaml", encoding="utf-8") as fh:
        params = tiny_params(yaml.safe_load(fh), root / "fixture", md5)
    # Table 6 as the assertions read it (its torchscan rows): fvcore's pass over the ResNet50s
    # would double the profile stage (~15 s); tests/test_profiling.py checks fvcore's counts.
    params["profile"]["count_modes"] = ["torchscan"]
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repo(work)
    out = run([sys.executable, "-m", "dvc", "repro"], work)
    run(["git", "add", "-A"], work)
    run(["git", "commit", "-qm", "tiny run"], work)
    (work / "first_repro.log").write_text(out)
    return work


def test_repro_runs_every_stage_and_writes_results(repo):
    ran = stages_run((repo / "first_repro.log").read_text())
    methods = ["kd", "reffakd", "dkd", "reffakd_dkd"]
    assert ran == {
        "check",
        "download",
        "split",
        "train_teacher",
        "train_student",
        "train_cae",
        "soft_labels",
        "teacher_logits",
        "analyse",
        "probe",
        "profile",
        "tables",
        "distill_grid",  # no cells by default: it writes an empty grid
        *(f"distill@{m}" for m in methods),
    }
    assert json.loads((repo / "metrics/grid_summary.json").read_text()) == {"cells": 0}
    for m in methods:
        record = json.loads((repo / f"metrics/distill/{m}.json").read_text())
        assert record["method"] == m
        # DVCLive's layout: the summary dvc exp show compares holds the record's scores and the
        # epoch reached; one step plot per logged value, one row per epoch.
        live = repo / f"metrics/distill/{m}"
        summary = json.loads((live / "metrics.json").read_text())
        assert summary == {
            m: {
                "epoch": record["epochs"],
                "val_acc": pytest.approx(record["val_acc"], abs=0.005),
                "test_acc": record["test_acc"],
                "best_val_acc": record["best_val_acc"],
            },
        }
        tsv = (live / "plots/metrics/val_acc.tsv").read_text().splitlines()
        assert tsv[0] == "step\tval_acc" and len(tsv) == 1 + record["epochs"]
        assert float(tsv[-1].split("\t")[1]) == pytest.approx(record["val_acc"], abs=0.005)
        best = max(float(r.split("\t")[1]) for r in tsv[1:])
        assert best == pytest.approx(record["best_val_acc"], abs=0.005)
        terms = {p.stem for p in (live / "plots/metrics").glob("*.tsv")}
        assert {"train_loss", "train_acc", "lr", "val_acc", "loss_ce"} <= terms
        assert "epoch_time_s" not in terms
    table4 = (repo / "tables/reffakd_table4.md").read_text()
    # model | paper's setting | our setting | paper | ours | difference (scales named)
    assert "| LeNet5 | baseline | lenet5, " in table4 and "| 92.14 |" in table4
    assert "| ReffAKD | T=20, alpha=0.6 | T=20, alpha=0.6, " in table4 and "| 92.37 |" in table4
    table6 = (repo / "tables/reffakd_table6.md").read_text()
    assert "| fashion_mnist | paper (published) | 154.0 | 155.0 | 239.0 | 237.0 |" in table6
    assert "| cifar100 | ours, torchscan | 354.3 | 356.8 | 500.6 | 501.7 |" in table6
    assert "| tiny_imagenet | ours, torchscan | 354.4 | 356.8 | 530.9 | 532.0 |" in table6
    # Teacher logits: exactly the training split's images, both views; NaN elsewhere.
    split = json.loads((repo / "data/split.json").read_text())
    logits = torch.load(repo / "data/teacher/logits.pt")["logits"]
    train = torch.tensor(split["train_indices"])
    assert logits.shape == (2, 600, 10)
    assert torch.isfinite(logits[:, train]).all()
    assert int(torch.isnan(logits[0, :, 0]).sum()) == 600 - len(train) == split["n_val"]
    soft = (repo / "data/soft_labels/matrix.csv").read_text().splitlines()
    assert len(soft) == 11 and soft[0].startswith("label,T-shirt/top,Trouser")
    assert (repo / "plots/png/soft_labels.png").stat().st_size > 1000
    check_analysis(repo, methods)
    check_probe(repo, methods)
    check_unique_metric_names(repo)
    status = run([sys.executable, "-m", "dvc", "status"], repo)
    assert "up to date" in status


def check_unique_metric_names(repo: Path) -> None:
    """Every metric name appears in one summary only: `dvc exp show` prefixes none with its
    file (issue 23: `step` in every summary, `kd.test_acc` from distill@kd and analyse)."""
    from kdlab.reports.runs import flatten

    where: dict[str, list[str]] = {}
    for path in sorted(repo.glob("metrics/**/metrics.json")):
        for name in flatten(json.loads(path.read_text())):
            where.setdefault(name, []).append(str(path.relative_to(repo)))
    assert where and {k: v for k, v in where.items() if len(v) > 1} == {}


def check_analysis(repo: Path, methods: list[str]) -> None:
    """The analyse stage against each model's own record and a numpy KL of the saved models'
    test logits."""
    from kdlab.data.idx import read_idx
    from kdlab.models import build_model

    rows = json.loads((repo / "metrics/analysis.json").read_text())["models"]
    assert set(rows) == {"teacher", "ce", *methods}
    shown = {m: {k: v for k, v in r.items() if k != "test_acc"} for m, r in rows.items()}
    assert json.loads((repo / "metrics/analysis/metrics.json").read_text()) == shown
    assert rows["teacher"]["kl_teacher"] == 0.0 and rows["teacher"]["l2_distance"] == 0.0
    for name, stage in (("teacher", "teacher"), ("ce", "student"), ("kd", "distill/kd")):
        record = json.loads((repo / f"metrics/{stage}.json").read_text())
        assert rows[name]["test_acc"] == pytest.approx(record["test_acc"], abs=0.005)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    fixture = Path(params["data"]["source_dir"])
    images = read_idx(fixture / "t10k-images-idx3-ubyte.gz").astype(np.float32) / 255
    x = (torch.from_numpy(images)[:, None] - 0.2860) / 0.3530  # the registry's mean/std

    def logits(path):
        blob = torch.load(path, weights_only=True)
        assert blob["input_size"] == 28  # no resizing to redo here
        m = build_model(blob["model"], 10, 1, input_size=28, **blob["options"])
        m.load_state_dict(blob["state_dict"])
        with torch.no_grad():
            return m.eval()(x).double().numpy()

    t, s = logits(repo / "data/teacher/model.pt"), logits(repo / "data/models/distill/kd.pt")
    pt = np.exp(t - t.max(1, keepdims=True))
    pt /= pt.sum(1, keepdims=True)
    ps = np.exp(s - s.max(1, keepdims=True))
    ps /= ps.sum(1, keepdims=True)
    kl = float(np.mean(np.sum(pt * np.log(pt / ps), axis=1)))
    assert rows["kd"]["kl_teacher"] == pytest.approx(kl, abs=2e-4)
    assert 0 < rows["kd"]["nmi"] <= 100


def check_probe(repo: Path, methods: list[str]) -> None:
    """The probe stage against scikit-learn's logistic regression on the same features."""
    from sklearn.linear_model import LogisticRegression

    from kdlab.artifacts import saved_model_outputs
    from kdlab.data import get_dataset, load

    rows = json.loads((repo / "metrics/probe.json").read_text())["models"]
    assert set(rows) == {"ce", *methods}
    assert json.loads((repo / "metrics/probe/metrics.json").read_text()) == rows
    spec = get_dataset("fashion_mnist")
    root = repo / "data/raw"
    (x, y), (xt, yt) = load("fashion_mnist", root, "train"), load("fashion_mnist", root, "test")
    cpu = torch.device("cpu")
    for name in ("ce", "kd"):
        path = repo / (
            "data/models/student.pt" if name == "ce" else f"data/models/distill/{name}.pt"
        )
        _, f = saved_model_outputs(path, x, y, spec.mean, spec.std, cpu)
        _, ft = saved_model_outputs(path, xt, yt, spec.mean, spec.std, cpu)
        lr = LogisticRegression(max_iter=3000).fit(f.numpy(), y.numpy())
        ref = 100.0 * float((lr.predict(ft.numpy()) == yt.numpy()).mean())
        assert rows[name]["probe_fashion_mnist"] == pytest.approx(ref, abs=6.0), name


def test_changing_alpha_marks_only_distill_and_downstream(repo):
    params = (repo / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("alpha: 0.6", "alpha: 0.8"))
    try:
        status = run([sys.executable, "-m", "dvc", "status"], repo)
    finally:
        (repo / "params.yaml").write_text(params)
    changed = set(re.findall(r"^(\S+):\s*$", status, flags=re.M))
    assert changed == {
        "check",  # validates every param first; its output stays the same
        "distill@kd",
        "distill@reffakd",
        "distill@dkd",
        "distill@reffakd_dkd",
        "distill_grid",  # a cell's alpha defaults to the top-level one
        "tables",
    }


def test_exp_run_alpha_reruns_distill_only_and_moves_metrics(repo):
    before = {
        m: json.loads((repo / f"metrics/distill/{m}.json").read_text()) for m in ("kd", "reffakd")
    }
    teacher_before = (repo / "metrics/teacher.json").read_text()
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-S", "alpha=0.8"], repo)
    assert stages_run(out) == {
        "check",
        "distill@kd",
        "distill@reffakd",
        "distill@dkd",
        "distill@reffakd_dkd",
        "distill_grid",
        "analyse",
        "probe",
        "tables",
    }
    for m, old in before.items():
        new = json.loads((repo / f"metrics/distill/{m}.json").read_text())
        assert old["alpha"] == 0.6 and new["alpha"] == 0.8
        assert new["train_loss"] != old["train_loss"]
    assert (repo / "metrics/teacher.json").read_text() == teacher_before
    shown = run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo)
    assert "0.8" in shown


def test_seeds_summary_reads_the_experiments(repo, capsys, monkeypatch):
    """`kdlab seeds` groups the baseline (alpha 0.6) and the experiment (alpha 0.8)."""
    committed = json.loads(run(["git", "show", "HEAD:metrics/distill/kd.json"], repo))
    applied = json.loads((repo / "metrics/distill/kd.json").read_text())  # the exp's result
    monkeypatch.chdir(repo)
    r = cli(["seeds", "--out", "seeds.md"], capsys)  # in process: its dvc runs are real
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = r.stdout
    assert f"| alpha=0.6 | kd | {committed['test_acc']:.2f} +- - | 1 | 0 |" in out
    assert f"| alpha=0.8 | kd | {applied['test_acc']:.2f} +- - | 1 | 0 |" in out
    assert (repo / "seeds.md").read_text() == out
    assert "config,model,n,seeds,mean,std" in (repo / "seeds.csv").read_text()


def test_same_params_same_metrics(repo):
    """Rerunning a stage with the same params on the same machine reproduces its metrics."""
    run(["git", "checkout", "-q", "--", "."], repo)
    run([sys.executable, "-m", "dvc", "checkout", "-q"], repo)
    before = json.loads((repo / "metrics/student.json").read_text())
    model_before = (repo / "data/models/student.pt").read_bytes()
    run([sys.executable, "-m", "dvc", "repro", "-f", "-s", "train_student"], repo)
    after = json.loads((repo / "metrics/student.json").read_text())
    # An identical retrain writes a byte-identical model file: the same DVC output hash.
    assert (repo / "data/models/student.pt").read_bytes() == model_before
    keys = ("test_acc", "test_acc_at_best_val", "val_acc", "train_loss", "best_val_epoch")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}


def changed_stages(repo: Path) -> set[str]:
    """Stages `dvc status` reports as changed."""
    status = run([sys.executable, "-m", "dvc", "status"], repo)
    return set(re.findall(r"^(\S+):\s*$", status, flags=re.M))


def stages_changed_by_editing(repo: Path, source: str) -> set[str]:
    """Stages `dvc status` newly reports after a comment is appended to ``source``; the file
    is restored afterwards and the workspace must then be as before."""
    base = changed_stages(repo)  # what earlier tests left changed (none expected to matter)
    path = repo / source
    text = path.read_text()
    path.write_text(text + "\n# an edit\n")
    try:
        changed = changed_stages(repo) - base
    finally:
        path.write_text(text)
    assert changed_stages(repo) == base
    return changed


def test_editing_a_loss_invalidates_exactly_the_distill_stages(repo):
    changed = stages_changed_by_editing(repo, "src/kdlab/losses.py")
    distill = {f"distill@{m}" for m in ("kd", "reffakd", "dkd", "reffakd_dkd")}
    assert changed == {"check", "distill_grid", *distill}


def test_editing_a_model_file_invalidates_the_stages_that_build_models(repo):
    changed = stages_changed_by_editing(repo, "src/kdlab/models/lenet.py")
    assert (
        "check" in changed
        and "download" not in changed
        and "split" not in changed
        and "tables" not in changed
    )
    assert {"train_teacher", "train_student", "distill@kd", "profile"} <= changed


def upstream(repo: Path, stage: str) -> set[str]:
    """Every stage `stage` depends on, from `dvc dag --dot` (edges point downstream)."""
    dot = run([sys.executable, "-m", "dvc", "dag", "--dot", stage], repo)
    return set(re.findall(r'"([^"]+)"', dot)) - {stage}


def test_teacher_free_methods_never_depend_on_the_teacher(repo):
    for m in ("reffakd", "reffakd_dkd"):
        up = upstream(repo, f"distill@{m}")
        assert {"train_cae", "soft_labels", "split", "check"} <= up
        assert not up & {"train_teacher", "teacher_logits"}, up
    for m in ("kd", "dkd"):
        up = upstream(repo, f"distill@{m}")
        assert {"train_teacher", "teacher_logits"} <= up
        assert not up & {"train_cae", "soft_labels"}, up


def test_bad_params_fail_before_any_output_is_touched(repo):
    """`dvc exp run -S alpha=1.5` fails in the check stage; models, metrics, plots intact."""
    import hashlib

    def snapshot() -> dict[str, str]:
        files = [
            p
            for d in ("data/models", "data/teacher", "data/soft_labels", "metrics", "plots")
            for p in sorted((repo / d).rglob("*"))
            if p.is_file()
        ]
        return {str(p): hashlib.md5(p.read_bytes()).hexdigest() for p in files}

    before = snapshot()
    assert len(before) > 20
    params = (repo / "params.yaml").read_text()
    env = dict(os.environ, DVC_NO_ANALYTICS="1", KDLAB_PROGRESS="0")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    try:
        r = subprocess.run(
            [sys.executable, "-m", "dvc", "exp", "run", "-S", "alpha=1.5"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
        )
    finally:
        (repo / "params.yaml").write_text(params)
    assert r.returncode != 0
    assert "alpha = 1.5 is not allowed; allowed: a number in [0, 1]" in r.stdout + r.stderr
    assert set(stages_run(r.stdout + r.stderr)) == {"check"}
    assert snapshot() == before


def test_a_stage_runs_the_source_of_its_own_working_tree(repo):
    """`PYTHONPATH=src python -m kdlab`: the stage executes the repository's src/ (the files
    DVC hashed), not the installed package (a queued experiment runs its own copy)."""
    path = repo / "src/kdlab/stages/tables.py"
    text = path.read_text()
    marker = 'print("[tables] ran from this working tree", flush=True)\n'
    path.write_text(
        text.replace(
            "def tables(cfg: Config) -> None:\n",
            "def tables(cfg: Config) -> None:\n    " + marker,
            1,
        )
    )
    try:
        out = run([sys.executable, "-m", "dvc", "repro", "tables"], repo)
        assert stages_run(out) == {"check", "tables"}
        assert "[tables] ran from this working tree" in out
    finally:
        path.write_text(text)
    out = run([sys.executable, "-m", "dvc", "repro", "tables"], repo)
    assert "ran from this working tree" not in out and "up to date" in run(
        [sys.executable, "-m", "dvc", "status"], repo
    )


def test_a_grid_is_an_experiment_whose_cells_show_in_exp_show_and_plots(repo):
    """`dvc exp run -S +grid.cells.<name>=...` runs the grid stage alone (its inputs are
    cached); each cell's scores are columns of `dvc exp show` (read as models grid_<cell>, as
    `kdlab report` reads them) and its DVCLive step plots render with `dvc plots show`."""
    from kdlab.reports.runs import runs_from_exp_show

    kd4, ce = "+grid.cells.kd4={method:kd,temperature:4.0}", "+grid.cells.ce={method:ce}"
    cells = ["-S", kd4, "-S", ce]
    out = run([sys.executable, "-m", "dvc", "exp", "run", "-n", "grid2", *cells], repo)
    ran = stages_run(out)
    assert "distill_grid" in ran and not ran & {"train_teacher", "train_cae", "split"}, ran
    for cell, method in (("kd4", "kd"), ("ce", "ce")):
        record = json.loads((repo / f"metrics/grid/{cell}.json").read_text())
        single = json.loads((repo / "metrics/distill/kd.json").read_text())
        assert record["method"] == method and record.keys() == single.keys()
        assert (repo / f"data/models/grid/{cell}.pt").exists()
    shown = json.loads(run([sys.executable, "-m", "dvc", "exp", "show", "--json"], repo))
    (grid,) = [r for r in runs_from_exp_show(shown, repo) if r["name"] == "grid2"]
    kd4 = json.loads((repo / "metrics/grid/kd4.json").read_text())
    assert grid["scores"]["grid_kd4"]["test_acc"] == kd4["test_acc"]
    assert "grid_ce" in grid["scores"] and "kd" in grid["scores"]  # cells beside single runs
    plots = run(
        [sys.executable, "-m", "dvc", "plots", "show", "--json", "metrics/grid/kd4/plots/metrics"],
        repo,
    )
    assert "loss_kd" in plots and "val_acc" in plots
