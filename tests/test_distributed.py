"""Data-parallel training on CPU: gloo, 2 processes, launched the way a stage relaunches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kdlab import distributed
from kdlab.data.pipeline import TensorLoader

WORKER = Path(__file__).parent / "ddp_worker.py"


def test_shards_are_disjoint_and_union_is_the_one_process_batch():
    images = torch.zeros(37, 1, 4, 4, dtype=torch.uint8)
    labels = torch.zeros(37, dtype=torch.int64)
    idx = torch.arange(3, 40) % 37
    one = TensorLoader(images, labels, idx, 8, 4, (0.0,), (1.0,), shuffle=True, seed=5)
    ranks = [
        TensorLoader(images, labels, idx, 8, 4, (0.0,), (1.0,), shuffle=True, seed=5).shard(r, 2)
        for r in range(2)
    ]
    for epoch in (0, 3):
        for loader in (one, *ranks):
            loader.set_epoch(epoch)
        ref = [b.index.tolist() for b in one]
        per_rank = [[b.index.tolist() for b in r] for r in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(ref) == len(one) == len(ranks[0]) == 5
        for k, batch in enumerate(ref):
            a, b = per_rank[0][k], per_rank[1][k]
            assert not set(a) & set(b) and sorted(a + b) == sorted(batch)
            assert len(a) == len(b) or len(a) == len(b) + 1  # 4 + 4, last step 3 + 2
    with pytest.raises(ValueError, match="batch_size 8 is not divisible by 3 processes"):
        TensorLoader(images, labels, idx, 8, 4, (0.0,), (1.0,)).shard(0, 3)


def test_config_rejects_bad_values():
    assert distributed.DistributedConfig.parse(None) == distributed.DistributedConfig()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['nprocs'\]"):
        distributed.DistributedConfig.parse({"nprocs": 2})
    with pytest.raises(ValueError, match="nproc_per_node = 0"):
        distributed.DistributedConfig.parse({"nproc_per_node": 0})
    with pytest.raises(ValueError, match="backend = 'mpi'"):
        distributed.DistributedConfig.parse({"backend": "mpi"})


def test_relaunch_command_keeps_the_stage_command():
    cmd = distributed.relaunch_command(2, ["/venv/bin/kdlab", "train", "teacher"])
    assert cmd[1:] == [
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "--no-python",
        "/venv/bin/kdlab",
        "train",
        "teacher",
    ]
    assert "--no-python" not in distributed.relaunch_command(2, ["w.py", "x"])
    # `python -m kdlab` (dvc.yaml's commands): the package again as a module, never its
    # __main__.py as a script (kdlab/io.py would shadow the standard library's io).
    cmd = distributed.relaunch_command(2, ["/repo/src/kdlab/__main__.py", "distill", "kd"])
    assert cmd[4:] == ["--nproc-per-node=2", "-m", "kdlab", "distill", "kd"]
    # dvc.yaml's `python -m kdlab.stages.distill kd`: that module again, not its file.
    argv = ["/repo/src/kdlab/stages/distill.py", "kd"]
    cmd = distributed.relaunch_command(2, argv, "kdlab.stages.distill")
    assert cmd[4:] == ["--nproc-per-node=2", "-m", "kdlab.stages.distill", "kd"]


def _run(out: Path, nproc: int, *extra: str, ok: bool = True) -> None:
    out.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).parents[1] / "src"), env.get("PYTHONPATH", "")]
    )
    r = subprocess.run(
        [sys.executable, str(WORKER), str(out), str(nproc), *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert (r.returncode == 0) == ok, r.stdout + r.stderr


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> Path:
    """One uninterrupted two-process run, shared by the tests below (a torchrun launch costs
    ~20 s): the reference of the one-process comparison and of the resumed run."""
    out = tmp_path_factory.mktemp("ddp") / "two"
    _run(out, 2)
    return out


@pytest.mark.slow  # torchrun: two gloo processes, ~20 s
def test_two_processes_match_one_process_and_only_rank0_writes(tmp_path, two_process_run):
    _run(tmp_path / "one", 1)
    one = json.loads((tmp_path / "one/result.json").read_text())["history"]
    two = json.loads((two_process_run / "result.json").read_text())["history"]
    r0, r1 = (json.loads((two_process_run / f"rank{r}.json").read_text()) for r in range(2))
    ref = json.loads((tmp_path / "one/rank0.json").read_text())
    assert r0["world"] == r1["world"] == 2 and ref["world"] == 1
    # Disjoint shards whose union is, step by step, the one-process batch.
    for epoch, batches in ref["batches"].items():
        for k, batch in enumerate(batches):
            a, b = r0["batches"][epoch][k], r1["batches"][epoch][k]
            assert not set(a) & set(b) and sorted(a + b) == sorted(batch)
    # DDP kept the replicas identical. Gradients averaged over 2 x 8 are the mean over 16; what
    # differs from one process is LeNet5's BatchNorm, whose batch statistics are per rank
    # (8 samples, not 16; sync_bn fixes that on CUDA). Stated tolerance: 1% on the weights'
    # sum, 2% (or 1e-3) on each epoch's training loss, a few images of accuracy (2 of the 32
    # validation images, 4 of the 128 training images: an image near the boundary may fall
    # either way on another CPU).
    assert r0["checksum"] == pytest.approx(r1["checksum"], rel=1e-9)
    assert r0["checksum"] == pytest.approx(ref["checksum"], rel=1e-2)
    for h1, h2 in zip(one, two, strict=True):
        assert h2["train_loss"] == pytest.approx(h1["train_loss"], rel=2e-2, abs=1e-3)
        assert abs(h2["val_acc"] - h1["val_acc"]) <= 2 * 100 / 32
        assert abs(h2["train_acc"] - h1["train_acc"]) <= 4 * 100 / 128
    assert two[-1]["val_acc"] >= 75.0  # it learned (chance: 25%)
    # Rank 0 alone wrote: one result, one log with every epoch, no checkpoint left behind.
    assert sorted(p.name for p in two_process_run.iterdir()) == [
        "log.txt",
        "rank0.json",
        "rank1.json",
        "result.json",
    ]
    assert (two_process_run / "log.txt").read_text().count("[ddp] epoch") == 3


@pytest.mark.slow  # torchrun, two runs (the reference is the shared uninterrupted run)
def test_interrupted_two_process_run_resumes_to_the_same_result(tmp_path, two_process_run):
    _run(tmp_path / "run", 2, "crash", ok=False)
    assert (tmp_path / "run/ckpt.pt").exists() and not (tmp_path / "run/result.json").exists()
    _run(tmp_path / "run", 2)
    log = (tmp_path / "run/log.txt").read_text()
    assert "resuming from checkpoint" in log and "after epoch 2" in log
    ref = json.loads((two_process_run / "result.json").read_text())["history"]
    got = json.loads((tmp_path / "run/result.json").read_text())["history"]
    for a, b in zip(ref, got, strict=True):
        assert b["train_loss"] == pytest.approx(a["train_loss"], abs=1e-6)
        assert b["val_acc"] == a["val_acc"]
    assert not (tmp_path / "run/ckpt.pt").exists()
