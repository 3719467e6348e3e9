"""Data-parallel training with PyTorch's own engine (DistributedDataParallel under torchrun).

A training stage keeps its dvc.yaml command: when ``distributed.nproc_per_node`` > 1 and the
process was not started by torchrun, :func:`maybe_relaunch` runs the same command line again
under ``python -m torch.distributed.run --standalone`` and exits with its status. Inside the
workers :func:`init` joins the process group (NCCL on CUDA, gloo on CPU), the loaders are
sharded by rank (``TensorLoader.shard``), :func:`wrap_objective` puts the objective behind DDP
(gradients all-reduced during backward) and only rank 0 writes (:func:`is_main`).

Multi-node is the same stage command under an explicit launcher on every node::

    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint host0:29500 --rdzv-id kd1 $(which kdlab) train teacher

(``init`` sees ``WORLD_SIZE`` set by torchrun and does not relaunch.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

BACKENDS = ("auto", "nccl", "gloo")


@dataclass(frozen=True)
class DistributedConfig:
    """``distributed:`` in params.yaml. The field defaults serve callers without a params file;
    they equal presets/default.yaml's (tests/test_defaults.py), which params.yaml always gives."""

    nproc_per_node: int = 1  # processes (GPUs) on this machine; 1: no DDP, today's behaviour
    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    sync_bn: bool = False  # convert BatchNorm to SyncBatchNorm (batch statistics over ranks)
    find_unused_parameters: bool = False  # DDP option for objectives that skip parameters

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> DistributedConfig:
        """Validate the ``distributed:`` block (unknown keys and bad values are errors)."""
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"distributed: unknown key(s) {unknown}; allowed: "
                f"{sorted(cls.__dataclass_fields__)}"
            )
        cfg = cls(**raw)
        n = cfg.nproc_per_node
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"distributed.nproc_per_node = {cfg.nproc_per_node!r}: must be an integer >= 1"
            )
        if cfg.backend not in BACKENDS:
            raise ValueError(f"distributed.backend = {cfg.backend!r}: allowed {BACKENDS}")
        for key in ("sync_bn", "find_unused_parameters"):
            if not isinstance(getattr(cfg, key), bool):
                raise ValueError(
                    f"distributed.{key} = {getattr(cfg, key)!r}: must be true or false"
                )
        return cfg


@dataclass(frozen=True)
class Context:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    """True inside a torchrun worker (it sets WORLD_SIZE, RANK, LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def relaunch_command(nproc: int, argv: list[str], module: str | None = None) -> list[str]:
    """``python -m torch.distributed.run --standalone ...`` running ``argv`` again; ``module``:
    the module ``python -m`` ran (dvc.yaml's ``python -m kdlab.stages.<stage>``), run again as
    that module, never its file as a script: the script's folder would go first on sys.path,
    where kdlab/io.py would shadow the standard library's io (stages/profile.py its profile)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={nproc}"]
    if module:
        return cmd + ["-m", module.removesuffix(".__main__")] + list(argv[1:])
    main = Path(argv[0])
    if main.name == "__main__.py":  # `python -m kdlab`: the package again as a module
        return cmd + ["-m", main.parent.name] + list(argv[1:])
    if not argv[0].endswith(".py"):
        cmd.append("--no-python")  # a console script such as `kdlab`
    return cmd + list(argv)


def maybe_relaunch(cfg: DistributedConfig, argv: list[str] | None = None) -> None:
    """Re-run this command under torchrun when ``nproc_per_node`` > 1; exits with its status.

    No-op with one process or inside a worker (which is how multi-node jobs start).
    """
    if cfg.nproc_per_node <= 1 or launched_by_torchrun():
        return
    module = None
    if argv is None:  # this process's own command: the module `python -m` ran, if any
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else None
    argv = list(sys.argv if argv is None else argv)
    sys.stdout.flush()
    rc = subprocess.call(relaunch_command(cfg.nproc_per_node, argv, module))
    sys.exit(rc)


def context() -> Context:
    """This process's rank, world size and local rank (0, 1, 0 outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return Context(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Context(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(cfg: DistributedConfig, device: torch.device) -> tuple[Context, torch.device]:
    """Join the process group when launched by torchrun; returns the context and the device.

    On CUDA each local rank takes its own GPU (``cuda:<local_rank>``).
    """
    ctx = context()
    if not ctx.enabled:
        return ctx, device
    if device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    backend = cfg.backend
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return context(), device


def shutdown() -> None:
    """Leave the process group (end of a worker)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    """Only rank 0 writes metrics, plots, checkpoints and outputs."""
    return context().is_main


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


class _TrainStep(nn.Module):
    """Routes DDP's forward to ``objective.forward_train`` so every objective works unchanged."""

    def __init__(self, objective: nn.Module) -> None:
        super().__init__()
        self.objective = objective

    def forward(self, batch, epoch: int):
        return self.objective.forward_train(batch, epoch)


def wrap_objective(objective: nn.Module, cfg: DistributedConfig, device: torch.device):
    """The callable the loop trains through: ``step(batch, epoch) -> (out, losses)``.

    One process: ``objective.forward_train``. Under torchrun: a DDP module around it (rank 0's
    weights are broadcast at construction, gradients averaged during backward), with BatchNorm
    converted to SyncBatchNorm first when ``sync_bn``. ``objective`` itself stays the module
    whose state_dict is saved (no ``module.`` prefixes).
    """
    if not context().enabled:
        return objective.forward_train
    if cfg.sync_bn:
        if device.type != "cuda":
            raise ValueError(
                "distributed.sync_bn = true needs CUDA: torch's SyncBatchNorm does not run on "
                f"{device.type}; set it false for CPU runs"
            )
        nn.SyncBatchNorm.convert_sync_batchnorm(objective)  # replaces children in place
    ddp = nn.parallel.DistributedDataParallel(
        _TrainStep(objective),
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=cfg.find_unused_parameters,
    )
    return ddp


def all_reduce_sums(values: dict[str, float]) -> dict[str, float]:
    """Sum per-rank running totals (loss x n, correct, seen) so rank 0 logs the global epoch."""
    if not context().enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return dict(zip(keys, t.cpu().tolist()))
