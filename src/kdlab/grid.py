"""A grid's students trained together: one loader pass and one teacher pass per batch.

``fit_grid`` trains K objectives (Distillers) on the same batches: each batch is loaded and
augmented once, the frozen teacher runs once (``forward_features``: its logits and every
feature tap; handed to each cell as ``batch.teacher_out``), then each cell computes its own
method's loss and steps its own optimiser and schedule, exactly as :func:`kdlab.train.fit`
would (the same step and epoch code, :func:`kdlab.train.train_step`).

Isolation: a cell owns its objective, optimiser, schedule, accelerator (loss scaler), progress
(history, best epoch), checkpoint and RNG stream. Around its step a cell runs under its own
torch random state (CPU, and the CUDA device's), saved when its single run would start
training, so per-step randomness (dropout, CRD's negatives) draws what the single run draws.
The loader's shuffling and augmentation come from its own seeded generators, not from the
global state. Each cell resumes from its own per-epoch checkpoint (its RNG state included).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab.accel import AccelConfig, Accelerator
from kdlab.data.pipeline import Batch, TensorLoader, resize
from kdlab.schema import TrainConfig
from kdlab.train import (
    EpochStats,
    FitResult,
    _epoch_line,
    _evaluate,
    _Progress,
    _read_checkpoint,
    _resume,
    _save_checkpoint,
    lr_factor,
    make_optimizer,
    progress_bar,
    train_step,
)


def rng_state(device: torch.device) -> dict[str, Any]:
    """The global torch random state a step draws from: CPU, plus the CUDA device's."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"cpu": torch.get_rng_state(), "cuda": cuda}


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


class SharedTeacher:
    """The frozen teacher's one pass per batch: ``forward_features`` of the batch resized to
    the teacher's input size (as :class:`kdlab.methods.base.TeacherLogits` and
    :class:`kdlab.methods.features.FeatureDistiller` resize it), without gradients."""

    def __init__(self, model: nn.Module, input_size: int | None) -> None:
        self.model = model.eval()
        self.input_size = input_size

    @torch.no_grad()
    def __call__(self, batch: Batch) -> dict[str, Any]:
        x = resize(batch.x, self.input_size) if self.input_size else batch.x
        if callable(getattr(self.model, "forward_features", None)):
            return self.model.forward_features(x)
        return {"logits": self.model(x)}


@dataclass
class GridCell:
    """One cell: what a single ``fit`` call would get, plus the RNG state to train from."""

    name: str
    objective: nn.Module
    rng: dict[str, Any]
    checkpoint: Path | None = None
    run_id: str = ""
    on_epoch: Callable[[dict[str, float]], None] | None = None


@dataclass
class _CellRun:
    """A cell's training state inside the grid loop."""

    cell: GridCell
    acc: Accelerator
    step_fn: Callable
    opt: torch.optim.Optimizer
    sched: Any
    p: _Progress
    stats: EpochStats = field(default_factory=EpochStats)


@contextlib.contextmanager
def _own_rng(run: _CellRun, device: torch.device) -> Iterator[None]:
    """Run under the cell's random state; keep where it left it."""
    set_rng_state(run.cell.rng, device)
    try:
        yield
    finally:
        run.cell.rng = rng_state(device)


def _start(cell: GridCell, loader: TensorLoader, cfg: TrainConfig, accel, log) -> _CellRun:
    """The cell's optimiser, schedule and accelerator, resumed from its checkpoint if any."""
    obj = cell.objective
    acc = Accelerator(accel, loader.device)
    step_fn = acc.prepare(obj.forward_train)
    opt = make_optimizer([p for p in obj.parameters() if p.requires_grad], cfg)
    steps = len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, steps))
    state = _read_checkpoint(cell.checkpoint, cell.run_id, cell.name, log)
    if state:
        p = _resume(state, obj, opt, sched, acc)
        cell.rng = state["rng"]
        log(f"[{cell.name}] resuming from checkpoint {cell.checkpoint} after epoch {p.start_epoch}")
        for row in p.history:
            (cell.on_epoch or (lambda r: None))(row)
    else:
        p = _Progress(best_value=-math.inf)
    return _CellRun(cell, acc, step_fn, opt, sched, p)


def _train_epoch(runs: list[_CellRun], teacher, loader, epoch: int, name: str, epochs: int):
    """One pass over the batches: the teacher once per batch, then every cell's step."""
    for r in runs:
        r.cell.objective.train()
        r.stats = EpochStats()
    loader.set_epoch(epoch)
    bar = progress_bar(loader, name, epoch, epochs)
    for batch in bar:
        if teacher is not None:
            with runs[0].acc.autocast():  # the cells share one precision
                batch.teacher_out = teacher(batch)
        for r in runs:
            with _own_rng(r, loader.device):
                args = (r.step_fn, r.acc, batch, r.opt, r.sched, epoch, r.cell.name)
                train_step(*args, "the lr", r.stats)  # fit's default divergence hint
    bar.close()


def _end_epoch(r: _CellRun, epoch: int, cfg: TrainConfig, evals, t_epoch, t0, log) -> None:
    """The cell's history row (as ``fit`` writes it), best epoch, report and checkpoint."""
    cell = r.cell
    row = {"epoch": epoch + 1, "lr": 0.0} | r.stats.row()
    row["lr"] = r.opt.param_groups[0]["lr"]
    val, test = evals
    row.update(_evaluate(cell.objective, val, test, epoch + 1 in cfg.test_epochs))
    row["epoch_time_s"] = time.time() - t_epoch  # the shared epoch's time so far
    r.p.history.append(row)
    r.p.update_best(row, "val_acc", True, cell.objective)
    eta = (time.time() - t0) / (epoch + 1 - r.p.start_epoch) * (cfg.epochs - epoch - 1)
    log(_epoch_line(cell.name, row, cfg.epochs, eta))
    (cell.on_epoch or (lambda x: None))(row)
    if cell.checkpoint is not None and epoch + 1 < cfg.epochs:
        args = (cell.checkpoint, cell.run_id, epoch, cell.objective, r.opt, r.sched, r.acc)
        _save_checkpoint(*args, r.p, t0, log, rng=dict(cell.rng))


def fit_grid(
    cells: list[GridCell],
    train_loader: TensorLoader,
    val_loader: TensorLoader,
    cfg: TrainConfig,
    name: str = "grid",
    teacher: Callable[[Batch], dict[str, Any]] | None = None,
    log: Callable[[str], None] | None = None,
    accel: AccelConfig | None = None,
    test_loader: TensorLoader | None = None,
) -> list[FitResult]:
    """Train every cell for ``cfg.epochs`` epochs on the same batches; one FitResult each.

    ``teacher`` (e.g. :class:`SharedTeacher`) runs once per batch and its output is handed to
    every cell as ``batch.teacher_out``; None when no cell reads a live teacher (cached
    logits, soft labels, labels only). Cells select on ``val_acc`` like the distill stages.
    One process only (no DDP). Checkpoints are per cell and removed when the grid completes.
    """
    log = log or (lambda msg: print(msg, flush=True))
    runs = [_start(c, train_loader, cfg, accel, log) for c in cells]
    t0 = time.time()
    first = min((r.p.start_epoch for r in runs), default=cfg.epochs)
    for epoch in range(first, cfg.epochs):
        active = [r for r in runs if r.p.start_epoch <= epoch]  # a cell may be one ahead
        t_epoch = time.time()
        _train_epoch(active, teacher, train_loader, epoch, name, cfg.epochs)
        for r in active:
            _end_epoch(r, epoch, cfg, (val_loader, test_loader), t_epoch, t0, log)
    for r in runs:
        if r.cell.checkpoint is not None and r.cell.checkpoint.exists():
            r.cell.checkpoint.unlink()
    wall = time.time() - t0
    return [
        FitResult(
            history=r.p.history,
            final=r.p.history[-1] if r.p.history else {},
            best_state=r.p.best_state,
            best_epoch=r.p.best_epoch,
            best_value=r.p.best_value,
            wall_time_s=r.p.elapsed_before + wall,
            resumed_from_epoch=r.p.start_epoch,
            elapsed_before_s=r.p.elapsed_before,
        )
        for r in runs
    ]
