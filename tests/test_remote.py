"""Experiments travel between clones: clone A runs two queued experiments and pushes them to a
bare git remote and a local DVC remote; clone B pulls them, `kdlab seeds` reports them, and
their outputs come back from the remote cache without running a stage.

The pipeline is a one-stage fixture (a seeded least-squares fit, seconds) with kdlab's metric
layout: what is under test is DVC's experiment transport and kdlab's report, not training.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from fixtures import cli
from test_e2e import run

pytestmark = pytest.mark.e2e

STAGE = """import json, pathlib, numpy as np, yaml
p = yaml.safe_load(open("params.yaml"))
rng = np.random.default_rng(p["seed"])
x = rng.normal(size=(200, 5)); w = rng.normal(size=5); y = (x @ w > 0).astype(float)
fit = np.linalg.lstsq(x[:150], y[:150] - 0.5, rcond=None)[0] * p["alpha"]
acc = float(((x[150:] @ fit > 0) == (y[150:] > 0.5)).mean() * 100)
pathlib.Path("models").mkdir(exist_ok=True); np.save("models/student.npy", fit)
pathlib.Path("metrics/distill/kd").mkdir(parents=True, exist_ok=True)
json.dump({"kd": {"test_acc": acc}}, open("metrics/distill/kd/metrics.json", "w"))
"""

DVC_YAML = """stages:
  distill:
    cmd: python distill.py
    deps: [distill.py]
    params: [seed, alpha]
    outs: [models/student.npy]
    metrics:
      - metrics/distill/kd/metrics.json: {cache: false}
"""


def dvc(*args: str, cwd: Path) -> str:
    return run([sys.executable, "-m", "dvc", *args], cwd)


def git_identity(repo: Path) -> None:
    run(["git", "config", "user.email", "t@example.com"], repo)
    run(["git", "config", "user.name", "t"], repo)


def seeds(repo: Path, capsys, monkeypatch) -> str:
    """`kdlab seeds` in ``repo``, in this process (its `dvc exp show` runs are real)."""
    monkeypatch.chdir(repo)
    r = cli(["seeds"], capsys)
    assert r.returncode == 0, r.stderr
    return r.stdout + r.stderr


def test_experiments_travel_through_the_remotes(tmp_path, capsys, monkeypatch):
    origin, storage, a, b = (tmp_path / n for n in ("origin.git", "storage", "a", "b"))
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], tmp_path)
    a.mkdir()
    run(["git", "init", "-q", "-b", "main"], a)
    git_identity(a)
    dvc("init", "-q", cwd=a)
    dvc("remote", "add", "-d", "storage", str(storage), cwd=a)  # a local directory remote
    (a / "distill.py").write_text(STAGE)
    (a / "dvc.yaml").write_text(DVC_YAML)
    (a / "params.yaml").write_text("seed: 0\nalpha: 0.6\n")
    dvc("repro", "-q", cwd=a)
    baseline_model = (a / "models/student.npy").read_bytes()
    run(["git", "add", "-A"], a)
    run(["git", "commit", "-qm", "baseline"], a)
    dvc("push", "-q", cwd=a)
    run(["git", "remote", "add", "origin", str(origin)], a)
    run(["git", "push", "-q", "origin", "main"], a)

    # Clone A: two queued experiments (a seed sweep), run, then pushed with their outputs.
    for seed in (1, 2):
        dvc("exp", "run", "--queue", "-S", f"seed={seed}", "-n", f"seed{seed}", cwd=a)
    dvc("exp", "run", "--run-all", cwd=a)
    expected = {}
    for name in ("seed1", "seed2"):
        dvc("exp", "apply", name, cwd=a)
        expected[name] = {
            "model": (a / "models/student.npy").read_bytes(),
            "metrics": json.loads((a / "metrics/distill/kd/metrics.json").read_text()),
        }
    run(["git", "checkout", "-q", "--", "."], a)
    dvc("checkout", "-q", cwd=a)
    dvc("exp", "push", "origin", "seed1", "seed2", cwd=a)  # git refs -> origin, cache -> storage
    report_a = seeds(a, capsys, monkeypatch)

    # Clone B: a fresh clone with its own (empty) cache; only the remotes connect it to A.
    run(["git", "clone", "-q", str(origin), str(b)], tmp_path)
    git_identity(b)
    # The remote is the committed .dvc/config's (`dvc remote add -d`): `dvc pull` restores
    # HEAD's outputs in the clone without running a stage.
    assert "storage" in dvc("remote", "list", cwd=b)
    assert "Running stage" not in dvc("pull", cwd=b)
    assert (b / "models/student.npy").read_bytes() == baseline_model
    dvc("exp", "pull", "origin", "seed1", "seed2", cwd=b)
    shown = dvc("exp", "list", "origin", cwd=b)
    assert "seed1" in shown and "seed2" in shown
    report_b = seeds(b, capsys, monkeypatch)
    assert report_b == report_a
    head = json.loads(run(["git", "show", "HEAD:metrics/distill/kd/metrics.json"], b))
    accs = [head["kd"]["test_acc"]] + [
        expected[n]["metrics"]["kd"]["test_acc"] for n in ("seed1", "seed2")
    ]
    mean = sum(accs) / 3
    assert re.search(rf"\| all runs \| kd \| {mean:.2f} \+- [0-9.]+ \| 3 \| 0 1 2 \|", report_b)

    # The experiments' outputs come from the remote cache: apply + checkout/pull, no stage runs.
    for name in ("seed1", "seed2"):
        log = dvc("exp", "apply", name, cwd=b)
        log += dvc("pull", cwd=b)
        assert "Running stage" not in log
        assert (b / "models/student.npy").read_bytes() == expected[name]["model"]
        assert (
            json.loads((b / "metrics/distill/kd/metrics.json").read_text())
            == expected[name]["metrics"]
        )
        assert "up to date" in dvc("status", cwd=b)
