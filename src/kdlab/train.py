"""The one training loop: seeding, optimiser and schedule, checkpoint/resume, progress output,
per-epoch history (for DVC plots) and honest evaluation.

Model selection only ever looks at the validation split; the test split is evaluated once, at
the end, for the final-epoch model (and the best-on-validation model, reported separately).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from kdlab import distributed
from kdlab.accel import AccelConfig, Accelerator
from kdlab.data.pipeline import TensorLoader
from kdlab.errors import DivergenceError
from kdlab.io import torch_load, torch_save
from kdlab.schema import TrainConfig


def fingerprint(obj: Any) -> str:
    """Stable hash of a JSON-able description of a run (to refuse a mismatched checkpoint)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@cache
def source_hash() -> str:
    """Hash of every ``.py`` file of the kdlab package this process runs: a checkpoint written
    by other code (an edited ``losses.py``, say) is never resumed into this code."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# The chance-level rule (docs/architecture.md, "Divergence"): from epoch max(warm-up +
# CHANCE_EPOCHS, CHANCE_START) on, a classifier whose validation accuracy was at most chance
# (100 / C %) plus a margin of max(CHANCE_MARGIN, 20% of chance) points in each of its last
# CHANCE_EPOCHS epochs, and did not improve over them, has diverged.
CHANCE_EPOCHS = 3
CHANCE_START = 5
CHANCE_MARGIN = 2.0


@dataclass(frozen=True)
class Divergence:
    """What :func:`fit` watches besides non-finite losses: ``chance`` is the chance-level
    validation accuracy in % (100 / classes; None: not a classifier), ``warmup`` the method's
    warm-up epochs, ``hint`` the params.yaml knobs most likely to blame."""

    chance: float | None = None
    warmup: int = 0
    hint: str = "the lr"


def check_divergence(history: list[dict[str, float]], rule: Divergence, name: str) -> None:
    """Raise :class:`DivergenceError` when the chance-level rule holds after the last epoch."""
    epoch = len(history)
    if rule.chance is None or epoch < max(rule.warmup + CHANCE_EPOCHS, CHANCE_START):
        return
    last = [row.get("val_acc", math.inf) for row in history[-CHANCE_EPOCHS:]]
    limit = rule.chance + max(CHANCE_MARGIN, 0.2 * rule.chance)
    if max(last) <= limit and last[-1] <= last[0]:
        raise DivergenceError(
            f"[{name}] diverged: validation accuracy {last[-1]:.2f}% at epoch {epoch} stayed "
            f"at chance level (<= {limit:.2f}% for {CHANCE_EPOCHS} epochs after a warm-up of "
            f"{rule.warmup}); likely knob: {rule.hint}. No output was written",
            epoch,
        )


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
    elapsed_before_s: float = 0.0  # training time of the interrupted processes it resumed


@dataclass
class _Progress:
    """The loop's resumable state besides the weights, optimiser and schedule."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_value: float = -math.inf
    best_epoch: int = -1
    best_state: dict[str, Any] | None = None
    start_epoch: int = 0
    elapsed_before: float = 0.0

    def result(self, t0: float) -> FitResult:
        """The finished run; ``t0``: when this process started training."""
        return FitResult(
            history=self.history,
            final=self.history[-1] if self.history else {},
            best_state=self.best_state,
            best_epoch=self.best_epoch,
            best_value=self.best_value,
            wall_time_s=self.elapsed_before + time.time() - t0,
            resumed_from_epoch=self.start_epoch,
            elapsed_before_s=self.elapsed_before,
        )

    def update_best(self, row: dict[str, float], select: str, maximize: bool, objective) -> None:
        """Keep a copy of the weights of the best epoch on the validation split."""
        value = row[select]
        if (value > self.best_value) if maximize else (value < self.best_value):
            self.best_value, self.best_epoch = value, int(row["epoch"])
            self.best_state = copy.deepcopy(objective.state_dict())


def _read_checkpoint(
    ckpt: Path | None, run_id: str, name: str, log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The resume state in ``ckpt`` if it was written by this very run, else None.

    A checkpoint of a run with other settings (``run_id`` fingerprints every param that
    shapes the run) or a corrupt one is reported and ignored: training starts over and the
    next epoch overwrites it. Losing a checkpoint costs time, never results.
    """
    if ckpt is None or not ckpt.exists():
        return None
    try:
        state = torch_load(ckpt)
        if not isinstance(state, dict) or "run_id" not in state:
            raise ValueError(f"{ckpt}: not a kdlab checkpoint")
    except (ValueError, FileNotFoundError) as err:
        log(f"[{name}] ignoring unreadable checkpoint ({err}); starting over")
        return None
    if state["run_id"] != run_id:
        log(f"[{name}] ignoring checkpoint {ckpt}: written by a run with other settings")
        return None
    if state.get("source") != source_hash():
        log(f"[{name}] ignoring checkpoint {ckpt}: written by other kdlab source code")
        return None
    return state


def _resume(state: dict[str, Any], objective, opt, sched, acc: Accelerator) -> _Progress:
    objective.load_state_dict(state["objective"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    acc.load_state_dict(state.get("scaler"))
    return _Progress(
        history=state["history"],
        best_value=state["best_value"],
        best_epoch=state["best_epoch"],
        best_state=state["best_state"],
        start_epoch=state["epoch"] + 1,
        elapsed_before=state["elapsed"],
    )


def _save_checkpoint(
    ckpt: Path, run_id: str, epoch: int, objective, opt, sched, acc, p, t0, log, **extra: Any
) -> None:
    """Write the resume state (``extra``: more of it, e.g. a grid cell's random state); a
    failed write (a full disk) costs the checkpoint, not the run."""
    try:
        _write_checkpoint(ckpt, run_id, epoch, objective, opt, sched, acc, p, t0, **extra)
    except OSError as err:
        ckpt.unlink(missing_ok=True)
        log(f"[{ckpt.stem}] could not write checkpoint {ckpt} ({err}); training goes on without")


def _write_checkpoint(
    ckpt: Path, run_id: str, epoch: int, objective, opt, sched, acc, p, t0, **extra: Any
) -> None:
    torch_save(
        ckpt,
        {
            "run_id": run_id,
            "source": source_hash(),
            "epoch": epoch,
            "objective": objective.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "scaler": acc.state_dict(),
            "history": p.history,
            "best_value": p.best_value,
            "best_epoch": p.best_epoch,
            "best_state": p.best_state,
            "elapsed": p.elapsed_before + time.time() - t0,
            **extra,
        },
    )


@dataclass
class EpochStats:
    """One epoch's running sums of the loss terms, the loss and the correct predictions."""

    sums: dict[str, float] = field(default_factory=dict)
    correct: int = 0
    seen: int = 0

    def add(self, batch, out: torch.Tensor, losses: dict[str, torch.Tensor], loss) -> None:
        n = len(batch.y)
        self.seen += n
        for k, v in losses.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v.detach()) * n
        self.sums["loss"] = self.sums.get("loss", 0.0) + float(loss.detach()) * n
        if out.ndim == 2:
            self.correct += int((out.detach().argmax(1) == batch.y).sum())

    def row(self) -> dict[str, float]:
        """The epoch's mean loss terms (``loss_<term>``, ``train_loss``) and accuracy
        (summed over every DDP rank, so the logged epoch is the global one)."""
        sums, correct, seen = self.sums, self.correct, self.seen
        if distributed.context().enabled:
            tot = distributed.all_reduce_sums({**sums, "_correct": correct, "_seen": seen})
            correct, seen = int(tot.pop("_correct")), int(tot.pop("_seen"))
            sums = tot
        row = {("train_loss" if k == "loss" else f"loss_{k}"): v / seen for k, v in sums.items()}
        if correct:
            row["train_acc"] = 100.0 * correct / seen
        return row


def train_step(
    step_fn, acc: Accelerator, batch, opt, sched, epoch: int, name: str, hint: str, stats
) -> None:
    """One optimisation step on ``batch``: forward and loss (in ``acc``'s precision), backward,
    the optimiser and schedule steps; adds to ``stats``. A non-finite loss raises
    :class:`DivergenceError` naming ``hint``, the params.yaml knobs most likely to blame."""
    with acc.autocast():
        out, losses = step_fn(batch, epoch)
        loss = sum(losses.values())
    if not torch.isfinite(loss):
        raise DivergenceError(
            f"[{name}] diverged: loss became {float(loss.detach())} at epoch {epoch + 1}; "
            f"likely knob: {hint}. No output was written",
            epoch + 1,
        )
    opt.zero_grad(set_to_none=True)
    acc.backward_step(loss, opt)
    sched.step()
    stats.add(batch, out, losses, loss)


def progress_bar(loader, name: str, epoch: int, epochs: int):
    """The tqdm bar of one training epoch (off with ``KDLAB_PROGRESS=0``)."""
    return tqdm(
        loader,
        desc=f"[{name}] epoch {epoch + 1}/{epochs}",
        unit="batch",
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 30.0,
        disable=os.environ.get("KDLAB_PROGRESS", "1") == "0",
    )


def _train_epoch(
    objective, step_fn, acc, loader, opt, sched, epoch: int, name: str, epochs: int, hint: str
) -> dict[str, float]:
    """One pass over the training data; returns the epoch's mean loss terms and accuracy."""
    objective.train()
    loader.set_epoch(epoch)
    stats = EpochStats()
    bar = progress_bar(loader, name, epoch, epochs)
    for batch in bar:
        train_step(step_fn, acc, batch, opt, sched, epoch, name, hint, stats)
        bar.set_postfix(loss=f"{stats.sums['loss'] / stats.seen:.4f}", refresh=False)
    bar.close()
    return stats.row()


def _prepare(objective, train_loader: TensorLoader, cfg: TrainConfig, accel, dist_cfg):
    """Mixed precision, the (DDP-wrapped) step function, the optimiser and the schedule."""
    acc = Accelerator(accel, train_loader.device)
    dcfg = dist_cfg or distributed.DistributedConfig()
    step_fn = acc.prepare(distributed.wrap_objective(objective, dcfg, train_loader.device))
    opt = make_optimizer([p for p in objective.parameters() if p.requires_grad], cfg)
    steps = len(train_loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(cfg, s, steps))
    return acc, step_fn, opt, sched


def _evaluate(objective: nn.Module, val_loader, test_loader, with_test: bool) -> dict[str, float]:
    """The epoch's validation scores; with ``with_test``, the test scores too (``test_*``)."""
    objective.eval()
    out = objective.evaluate(val_loader)
    if with_test and test_loader is not None:
        out.update({f"test_{k[4:]}": v for k, v in objective.evaluate(test_loader).items()})
    return out


def epoch_row(
    epoch: int, train_row: dict[str, float], objective, opt, evals, cfg: TrainConfig, t_epoch
) -> dict[str, float]:
    """The history row of a trained epoch: its number, the lr after its schedule steps, the
    training means, the validation scores (``evals``: the validation and test loaders; the
    test scores after the epochs in ``cfg.test_epochs``) and its wall time."""
    row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"]} | train_row
    val_loader, test_loader = evals
    row.update(_evaluate(objective, val_loader, test_loader, epoch + 1 in cfg.test_epochs))
    row["epoch_time_s"] = time.time() - t_epoch
    return row


def _epoch_line(name: str, row: dict[str, float], epochs: int, eta: float) -> str:
    shown = ", ".join(
        f"{k} {v:.4f}" if "loss" in k or "mse" in k else f"{k} {v:.2f}"
        for k, v in row.items()
        if k not in ("epoch", "lr", "epoch_time_s")
    )
    return (
        f"[{name}] epoch {int(row['epoch'])}/{epochs}: {shown}, lr {row['lr']:.4g}, "
        f"{row['epoch_time_s']:.1f}s, ETA {eta:.0f}s"
    )


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
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    test_loader: TensorLoader | None = None,
    divergence: Divergence | None = None,
) -> FitResult:
    """Train ``objective`` for ``cfg.epochs`` epochs, checkpointing after every epoch.

    If ``checkpoint`` exists and was written by a run with the same ``run_id`` it is resumed;
    a checkpoint of another run, or a corrupt one, is ignored (and overwritten). The checkpoint
    is removed once the run completes (its outputs are the stage's DVC outputs). The model
    selected on the validation split (``select``) is kept as ``best_state``; the final-epoch
    weights stay in ``objective``. ``accel`` picks mixed precision / compile; under torchrun
    the loader is sharded by rank, the objective wrapped in DDP, and rank 0 alone logs and
    writes the checkpoint. ``on_epoch`` receives each epoch's history row on rank 0 (the
    rows restored from a checkpoint first), e.g. :meth:`kdlab.live.EpochLog.epoch`. After the
    epochs in ``cfg.test_epochs`` the row also holds ``test_loader``'s scores (``test_acc``...):
    reported only, never selected on. A non-finite loss, or a validation accuracy at chance
    level after the warm-up (``divergence``, :func:`check_divergence`), raises
    :class:`DivergenceError` (the checkpoint is removed: resuming would diverge again).
    """
    ctx = distributed.context()
    log = (log or (lambda msg: print(msg, flush=True))) if ctx.is_main else (lambda msg: None)
    report = (on_epoch or (lambda row: None)) if ctx.is_main else (lambda row: None)
    if ctx.enabled:
        train_loader.shard(ctx.rank, ctx.world_size)
    acc, step_fn, opt, sched = _prepare(objective, train_loader, cfg, accel, dist_cfg)
    ckpt = Path(checkpoint) if checkpoint else None
    state = _read_checkpoint(ckpt, run_id, name, log)
    p = _Progress(best_value=-math.inf if maximize else math.inf)
    if state:
        p = _resume(state, objective, opt, sched, acc)
        log(f"[{name}] resuming from checkpoint {ckpt} after epoch {p.start_epoch}")
        list(map(report, p.history))
    rule = divergence or Divergence()
    train_one = functools.partial(
        _train_epoch, objective, step_fn, acc, train_loader, opt, sched,
        name=name, epochs=cfg.epochs, hint=rule.hint,
    )  # fmt: skip
    t0 = time.time()
    try:
        for epoch in range(p.start_epoch, cfg.epochs):
            t_epoch = time.time()
            trained = train_one(epoch=epoch)
            evals = (val_loader, test_loader)
            row = epoch_row(epoch, trained, objective, opt, evals, cfg, t_epoch)
            p.history.append(row)
            p.update_best(row, select, maximize, objective)
            eta = (time.time() - t0) / (epoch + 1 - p.start_epoch) * (cfg.epochs - epoch - 1)
            log(_epoch_line(name, row, cfg.epochs, eta))
            report(row)
            check_divergence(p.history, rule, name)
            if ckpt is not None and epoch + 1 < cfg.epochs and ctx.is_main:
                _save_checkpoint(ckpt, run_id, epoch, objective, opt, sched, acc, p, t0, log)
    except DivergenceError:
        if ckpt is not None and ctx.is_main:
            ckpt.unlink(missing_ok=True)  # resuming would only diverge again
        raise
    distributed.barrier()  # no rank may still be reading the checkpoint
    if ckpt is not None and ckpt.exists() and ctx.is_main:
        ckpt.unlink()
    return p.result(t0)
