"""A grid's students trained together: one loader pass and one teacher pass per batch.

``fit_grid`` trains K objectives (Distillers) on the same batches: each batch is loaded and
augmented once, the frozen teacher runs once (``forward_features``: its logits and every
feature tap; handed to each cell as ``batch.teacher_out``), then each cell computes its own
method's loss and steps its own optimiser and schedule, exactly as :func:`kdlab.train.fit`
would (the same step, epoch-row and checkpoint code: :func:`kdlab.train.train_step`,
:func:`kdlab.train.epoch_row`, :func:`kdlab.train.check_divergence`).

Isolation: a cell owns its objective, optimiser, schedule, accelerator (loss scaler), progress
(history, best epoch), training config (a method with an initialisation phase trains more
epochs), divergence rule, checkpoint and RNG stream. Around its step a cell runs under its own
torch random state (CPU, and the CUDA device's), saved when its single run would start
training, so per-step randomness (dropout, CRD's negatives) draws what the single run draws.
The loader's shuffling and augmentation come from its own seeded generators, not from the
global state. Each cell resumes from its own per-epoch checkpoint (its RNG state included).

A cell that diverges (a non-finite loss, or the chance-level rule after an epoch) ends the grid
as its single run would end its stage: it stops, its checkpoint is removed and ``on_diverged``
told; the other cells finish the epoch and checkpoint it (a rerun with the cell fixed resumes
them), then the first cell's :class:`DivergenceError` is raised.
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
from kdlab.errors import DivergenceError
from kdlab.schema import TrainConfig
from kdlab.train import (
    Divergence,
    EpochStats,
    FitResult,
    _epoch_line,
    _prepare,
    _Progress,
    _read_checkpoint,
    _resume,
    _save_checkpoint,
    check_divergence,
    epoch_row,
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
    """One cell: what a single ``fit`` call would get, plus the RNG state to train from.

    ``train``: the cell's training config (None: the grid's); ``divergence``: its rule
    (None: non-finite losses only, as ``fit``'s default); ``on_diverged`` receives the epoch
    it diverged at (e.g. :meth:`kdlab.live.EpochLog.diverged`)."""

    name: str
    objective: nn.Module
    rng: dict[str, Any]
    checkpoint: Path | None = None
    run_id: str = ""
    on_epoch: Callable[[dict[str, float]], None] | None = None
    train: TrainConfig | None = None
    divergence: Divergence | None = None
    on_diverged: Callable[[int], None] | None = None


@dataclass
class _CellRun:
    """A cell's training state inside the grid loop."""

    cell: GridCell
    cfg: TrainConfig
    rule: Divergence
    acc: Accelerator
    step_fn: Callable
    opt: torch.optim.Optimizer
    sched: Any
    p: _Progress
    stats: EpochStats = field(default_factory=EpochStats)
    diverged: DivergenceError | None = None


@contextlib.contextmanager
def _own_rng(run: _CellRun, device: torch.device) -> Iterator[None]:
    """Run under the cell's random state; keep where it left it."""
    set_rng_state(run.cell.rng, device)
    try:
        yield
    finally:
        run.cell.rng = rng_state(device)


@contextlib.contextmanager
def _stops_on_divergence(run: _CellRun, log) -> Iterator[None]:
    """A :class:`DivergenceError` of the cell stops it: kept in ``run.diverged``, its
    checkpoint removed (resuming would only diverge again), ``on_diverged`` told."""
    try:
        yield
    except DivergenceError as err:
        log(str(err))
        run.diverged = err
        if run.cell.checkpoint is not None:
            run.cell.checkpoint.unlink(missing_ok=True)
        if run.cell.on_diverged is not None:
            run.cell.on_diverged(err.epoch)


def _start(cell: GridCell, loader: TensorLoader, cfg: TrainConfig, accel, log) -> _CellRun:
    """The cell's optimiser, schedule and accelerator (``fit``'s, one process), resumed from
    its checkpoint if any."""
    obj, cfg = cell.objective, cell.train or cfg
    acc, step_fn, opt, sched = _prepare(obj, loader, cfg, accel, None)
    state = _read_checkpoint(cell.checkpoint, cell.run_id, cell.name, log)
    if state:
        p = _resume(state, obj, opt, sched, acc)
        cell.rng = state["rng"]
        log(f"[{cell.name}] resuming from checkpoint {cell.checkpoint} after epoch {p.start_epoch}")
        for row in p.history:
            (cell.on_epoch or (lambda r: None))(row)
    else:
        p = _Progress(best_value=-math.inf)
    return _CellRun(cell, cfg, cell.divergence or Divergence(), acc, step_fn, opt, sched, p)


def _train_epoch(runs: list[_CellRun], teacher, loader, epoch: int, name: str, epochs: int, log):
    """One pass over the batches: the teacher once per batch, then every live cell's step."""
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
            if r.diverged is None:
                with _stops_on_divergence(r, log), _own_rng(r, loader.device):
                    args = (r.step_fn, r.acc, batch, r.opt, r.sched, epoch, r.cell.name)
                    train_step(*args, r.rule.hint, r.stats)
    bar.close()


def _end_epoch(r: _CellRun, epoch: int, evals, t_epoch: float, t0: float, log) -> None:
    """The cell's history row (``fit``'s), best epoch, report, divergence check and
    checkpoint. ``epoch_time_s`` is the shared epoch's time so far."""
    cell, cfg = r.cell, r.cfg
    row = epoch_row(epoch, r.stats.row(), cell.objective, r.opt, evals, cfg, t_epoch)
    r.p.history.append(row)
    r.p.update_best(row, "val_acc", True, cell.objective)
    eta = (time.time() - t0) / (epoch + 1 - r.p.start_epoch) * (cfg.epochs - epoch - 1)
    log(_epoch_line(cell.name, row, cfg.epochs, eta))
    (cell.on_epoch or (lambda x: None))(row)
    with _stops_on_divergence(r, log):
        check_divergence(r.p.history, r.rule, cell.name)
    if r.diverged is None and cell.checkpoint is not None and epoch + 1 < cfg.epochs:
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
    """Train every cell for its epochs (``cell.train`` or ``cfg``) on the same batches; one
    FitResult each.

    ``teacher`` (e.g. :class:`SharedTeacher`) runs once per batch and its output is handed to
    every cell as ``batch.teacher_out``; None when no cell reads a live teacher (cached
    logits, soft labels, labels only). Cells select on ``val_acc`` like the distill stages.
    Epoch ``e`` of every cell trains on the loader's epoch ``e``, as in its single run; a cell
    with fewer epochs stops early. One process only (no DDP). Checkpoints are per cell and
    removed when the grid completes. A diverged cell raises (module docstring).
    """
    log = log or (lambda msg: print(msg, flush=True))
    runs = [_start(c, train_loader, cfg, accel, log) for c in cells]
    t0 = time.time()
    last = max((r.cfg.epochs for r in runs), default=0)
    first = min((r.p.start_epoch for r in runs), default=last)
    for epoch in range(first, last):
        # A resumed cell may be one epoch ahead; a cell with fewer epochs has finished.
        active = [r for r in runs if r.p.start_epoch <= epoch < r.cfg.epochs]
        t_epoch = time.time()
        _train_epoch(active, teacher, train_loader, epoch, name, last, log)
        for r in active:
            if r.diverged is None:
                _end_epoch(r, epoch, (val_loader, test_loader), t_epoch, t0, log)
        diverged = [r.diverged for r in active if r.diverged is not None]
        if diverged:
            raise diverged[0]
    for r in runs:
        if r.cell.checkpoint is not None:
            r.cell.checkpoint.unlink(missing_ok=True)
    return [r.p.result(t0) for r in runs]
