"""A real training stage under `dvc repro` with distributed.nproc_per_node = 2 (gloo, CPU):
the dvc.yaml command is unchanged, the stage relaunches itself under torchrun."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from conftest import REPO
from fixtures import (
    copy_pipeline,
    init_repo,
    run_stages_in_process,
    tiny_params,
    write_fashion_mnist,
)
from test_e2e import run, stages_run

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # dvc repro + torchrun


def test_train_student_under_torchrun_with_two_processes(tmp_path):
    md5 = write_fashion_mnist(tmp_path / "fixture", n_train=300, n_test=100)
    work = tmp_path / "repo"
    work.mkdir()
    copy_pipeline(work)
    with open(REPO / "src/kdlab/presets/default.yaml", encoding="utf-8") as fh:
        params = tiny_params(yaml.safe_load(fh), tmp_path / "fixture", md5)
    params["data"]["val_size"] = 60
    params["student"]["train"].update(epochs=2, batch_size=32)
    params["distributed"]["nproc_per_node"] = 2
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    init_repo(work)
    # Its upstream stages in this process (recorded by `dvc commit`): only the stage under
    # test starts processes.
    run_stages_in_process(work, ["check", "download", "split"])
    out = run([sys.executable, "-m", "dvc", "repro", "train_student"], work)
    assert stages_run(out) == {"train_student"}
    assert "[distributed] 2 processes (DDP), this is rank 0 on cpu" in out
    # Rank 0 alone logs (each epoch once) and writes; the other rank left after training.
    assert out.count("[train_student] epoch 1/2:") == 1
    assert out.count("[train_student] epoch 2/2:") == 1
    assert out.count("[train_student] test accuracy") == 1
    metrics = json.loads((work / "metrics/student.json").read_text())
    assert 0 <= metrics["test_acc"] <= 100 and metrics["epochs"] == 2
    tsv = work / "metrics/student/plots/metrics/val_acc.tsv"
    assert tsv.read_text().count("\n") == 3  # header + 2 epochs, logged once (rank 0)
    assert not (work / "data/checkpoints/student.pt").exists()
