"""The one training loop: seeding, optimiser and schedule, checkpoint/resume, progress output,
per-epoch history (for DVC plots) and honest evaluation.

Model selection only ever looks at the validation split; the test split is evaluated once, at
the end, for the final-epoch model (and the best-on-validation model, reported separately).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kdlab import distributed
from kdlab.accel import AccelConfig, Accelerator
from kdlab.config import TrainConfig
from kdlab.data.pipeline import Batch, TensorLoader
from kdlab.io import torch_load, torch_save


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"params.yaml: device = {name!r} but CUDA is not available here")
    return dev


def setup_threads(threads: int) -> None:
    """Use ``threads`` CPU threads (0: torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able description of a run (to refuse a mismatched checkpoint)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Objective(Protocol):
    """What the loop trains: a Distiller, or the autoencoder's reconstruction objective."""

    def forward_train(
        self, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def evaluate(self, loader: TensorLoader) -> dict[str, float]: ...

    def parameters(self): ...

    def state_dict(self): ...

    def load_state_dict(self, state): ...

    def train(self, mode: bool = True): ...


@torch.no_grad()
def accuracy(forward: Callable[[torch.Tensor], torch.Tensor], loader: TensorLoader) -> float:
    """Top-1 accuracy in percent."""
    correct = total = 0
    for batch in loader:
        correct += int((forward(batch.x).argmax(1) == batch.y).sum())
        total += len(batch.y)
    return 100.0 * correct / max(total, 1)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at iteration ``step``.

    step: x lr_decay at each milestone epoch; cosine: half-cosine to 0 over the run;
    onecycle: linear warm-up from lr/25 over the first ``warmup_frac`` (0.25) of the run,
    then half-cosine down to 0; constant: 1.
    """
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule == "step":
        epoch = step // steps_per_epoch
        return cfg.lr_decay ** sum(epoch >= m for m in cfg.milestones)
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * step / total))
    warm = max(int(0.25 * total), 1)
    if step < warm:
        return 1 / 25 + (1 - 1 / 25) * step / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam, as params.yaml says."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


@dataclass
class FitResult:
    """What a finished run reports."""

    history: list[dict[str, float]]
    final: dict[str, float]
    best_state: dict[str, Any] | None
    best_epoch: int
    best_value: float
    wall_time_s: float
    resumed_from_epoch: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def fit(
    objective: nn.Module,
    train_loader: TensorLoader,
    val_loader: TensorLoader,
    cfg: TrainConfig,
    name: str,
    checkpoint: str | Path | None = None,
    run_id: str = "",
    select: str = "val_acc",
    maximize: bool = True,
    log: Callable[[str], None] | None = None,
    accel: AccelConfig | None = None,
    dist_cfg: distributed.DistributedConfig | None = None,
) -> FitResult:
    """Train ``objective`` for ``cfg.epochs`` epochs, checkpointing after every epoch.

    If ``checkpoint`` exists and was written by a run with the same ``run_id`` it is resumed;
    a checkpoint of another run is ignored (and overwritten). The checkpoint is removed once
    the run completes (its outputs are the stage's DVC outputs).
    """
    log = log or (lambda msg: print(msg, flush=True))
    ctx = distributed.context()
    if not ctx.is_main:  # rank 0 alone logs and writes
        log = lambda msg: None  # noqa: E731
    if ctx.enabled:
        train_loader.shard(ctx.rank, ctx.world_size)
    acc = Accelerator(accel, train_loader.device)
    step_fn = acc.prepare(
        distributed.wrap_objective(
            objective, dist_cfg or distributed.DistributedConfig(), train_loader.device
        )
    )
    params = [p for p in objective.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg)
    steps = len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, steps))
    history: list[dict[str, float]] = []
    best_value, best_epoch, best_state = (-math.inf if maximize else math.inf), -1, None
    start_epoch, elapsed_before = 0, 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt is not None and ckpt.exists():
        state = torch_load(ckpt)
        if state.get("run_id") == run_id:
            objective.load_state_dict(state["objective"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            acc.load_state_dict(state.get("scaler"))
            history = state["history"]
            best_value, best_epoch = state["best_value"], state["best_epoch"]
            best_state = state["best_state"]
            start_epoch, elapsed_before = state["epoch"] + 1, state["elapsed"]
            log(f"[{name}] resuming from checkpoint {ckpt} after epoch {start_epoch}")
        else:
            log(f"[{name}] ignoring checkpoint {ckpt}: written by a run with other settings")

    t0 = time.time()
    tty = sys.stderr.isatty()
    for epoch in range(start_epoch, cfg.epochs):
        objective.train()
        train_loader.set_epoch(epoch)
        sums: dict[str, float] = {}
        correct = seen = 0
        t_epoch = time.time()
        bar = tqdm(
            train_loader,
            desc=f"[{name}] epoch {epoch + 1}/{cfg.epochs}",
            unit="batch",
            leave=False,
            dynamic_ncols=True,
            mininterval=0.5 if tty else 30.0,
            disable=os.environ.get("KDLAB_PROGRESS", "1") == "0",
        )
        for batch in bar:
            with acc.autocast():
                out, losses = step_fn(batch, epoch)
                loss = sum(losses.values())
            if not torch.isfinite(loss):
                value = float(loss.detach())
                raise FloatingPointError(
                    f"[{name}] loss became {value} at epoch {epoch + 1}; lower the lr"
                )
            opt.zero_grad(set_to_none=True)
            acc.backward_step(loss, opt)
            sched.step()
            n = len(batch.y)
            seen += n
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * n
            if out.ndim == 2:
                correct += int((out.detach().argmax(1) == batch.y).sum())
            bar.set_postfix(loss=f"{sums['loss'] / seen:.4f}", refresh=False)
        bar.close()
        if ctx.enabled:  # every rank's totals, so the logged epoch is the global one
            tot = distributed.all_reduce_sums({**sums, "_correct": correct, "_seen": seen})
            correct, seen = int(tot.pop("_correct")), int(tot.pop("_seen"))
            sums = tot
        objective.eval()
        row: dict[str, float] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]}
        row.update(
            {("train_loss" if k == "loss" else f"loss_{k}"): v / seen for k, v in sums.items()}
        )
        if correct:
            row["train_acc"] = 100.0 * correct / seen
        row.update(objective.evaluate(val_loader))
        row["epoch_time_s"] = time.time() - t_epoch
        history.append(row)
        value = row[select]
        if (value > best_value) if maximize else (value < best_value):
            best_value, best_epoch = value, epoch + 1
            best_state = copy.deepcopy(objective.state_dict())
        done = epoch + 1 - start_epoch
        eta = (time.time() - t0) / done * (cfg.epochs - epoch - 1)
        shown = ", ".join(
            f"{k} {v:.4f}" if "loss" in k or "mse" in k else f"{k} {v:.2f}"
            for k, v in row.items()
            if k not in ("epoch", "lr", "epoch_time_s")
        )
        log(
            f"[{name}] epoch {epoch + 1}/{cfg.epochs}: {shown}, lr {row['lr']:.4g}, "
            f"{row['epoch_time_s']:.1f}s, ETA {eta:.0f}s"
        )
        if ckpt is not None and epoch + 1 < cfg.epochs and ctx.is_main:
            torch_save(
                ckpt,
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "objective": objective.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "scaler": acc.state_dict(),
                    "history": history,
                    "best_value": best_value,
                    "best_epoch": best_epoch,
                    "best_state": best_state,
                    "elapsed": elapsed_before + time.time() - t0,
                },
            )
    distributed.barrier()  # no rank may still be reading the checkpoint
    if ckpt is not None and ckpt.exists() and ctx.is_main:
        ckpt.unlink()
    return FitResult(
        history=history,
        final=history[-1] if history else {},
        best_state=best_state,
        best_epoch=best_epoch,
        best_value=best_value,
        wall_time_s=elapsed_before + time.time() - t0,
        resumed_from_epoch=start_epoch,
    )
