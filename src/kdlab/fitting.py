"""A training stage around :func:`kdlab.train.fit`: start (relaunched under torchrun for
DDP), the divergence rule, per-epoch logging, the final and best-on-validation test scores,
and the outputs besides the model (curves PNG, DVCLive summary, plain record).

Only the stages that train import this module (and so :mod:`kdlab.train`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import torch

from kdlab import distributed, paths
from kdlab.errors import DivergenceError
from kdlab.live import EpochLog
from kdlab.runtime import device_name, ran_on, start, write_metrics
from kdlab.train import Divergence, FitResult, fit

if TYPE_CHECKING:
    from pathlib import Path

    from kdlab.config import Config
    from kdlab.data import DatasetSpec


def start_training(cfg: Config, stream: str) -> torch.device:
    """:func:`start` for a training stage: relaunched under torchrun when
    ``distributed.nproc_per_node`` > 1 (the dvc.yaml command is unchanged); each worker joins
    the process group and returns its device (``cuda:<local_rank>`` on GPUs)."""
    distributed.maybe_relaunch(cfg.distributed)
    device = start(cfg, stream)
    ctx, device = distributed.init(cfg.distributed, device)
    if ctx.enabled:
        ran_on(f"{device_name(device)}, {ctx.world_size} processes (DDP)")
        if ctx.is_main:
            print(f"[distributed] {ctx.world_size} processes (DDP), this is rank 0 on {device}")
    return device


def end_training() -> None:
    """After ``fit``: every rank but 0 leaves, so rank 0 alone evaluates and writes outputs."""
    ctx = distributed.context()
    distributed.shutdown()
    if not ctx.is_main:
        sys.exit(0)


def divergence_rule(spec: DatasetSpec | None, hint: str, objective=None) -> Divergence:
    """What ``fit`` treats as divergence for a stage: a non-finite loss always; a classifier
    (``spec`` given) also at chance level, 100 / classes %, after the objective's warm-up."""
    chance = 100.0 / spec.num_classes if spec is not None else None
    warmup = getattr(objective, "warmup_epochs", 0) if objective is not None else 0
    return Divergence(chance=chance, warmup=int(warmup), hint=hint)


def fit_logged(log: EpochLog, *args, **kwargs) -> FitResult:
    """:func:`kdlab.train.fit` logging every epoch to ``log``; a diverged run marks the stage's
    summary (``diverged``) before the error ends the stage, which then writes nothing else."""
    try:
        return fit(*args, on_epoch=log.epoch, **kwargs)
    except DivergenceError as err:
        if distributed.context().is_main:
            log.diverged(err.epoch)
        raise


def parallel(cfg: Config) -> dict:
    """fit()'s keyword arguments for mixed precision and DDP (kdlab.accel, kdlab.distributed)."""
    return {"accel": cfg.accel, "dist_cfg": cfg.distributed}


def evaluate_final_and_best(distiller, result, test_loader) -> dict[str, float]:
    """Test accuracy of the final-epoch model and of the best-on-validation model."""
    final = distiller.evaluate(test_loader)
    out = {"test_acc": round(final["val_acc"], 2)}
    if "val_top5" in final:
        out["test_top5"] = round(final["val_top5"], 2)
    if result.best_state is not None:
        final_state = {k: v.clone() for k, v in distiller.state_dict().items()}
        distiller.load_state_dict(result.best_state)
        out["test_acc_at_best_val"] = round(distiller.evaluate(test_loader)["val_acc"], 2)
        distiller.load_state_dict(final_state)
    out.update(
        best_val_acc=round(result.best_value, 2),
        best_val_epoch=result.best_epoch,
        val_acc=round(result.final["val_acc"], 2),
        train_loss=round(result.final["train_loss"], 5),
        epochs=len(result.history),
    )
    return out


def write_curve_png(stage: str, history: list[dict[str, float]]) -> Path:
    """A PNG of the stage's per-epoch losses and accuracy (DVCLive holds the step plots)."""
    from kdlab.plots import curve_png

    return curve_png(history, paths.PNG / f"{stage.replace('/', '_')}.png", title=stage)


def finish_training_stage(
    stage: str, log: EpochLog, result: FitResult, record: dict[str, Any], t0: float
) -> None:
    """A training stage's outputs besides its model: the PNG of its curves, the final scores
    in its DVCLive summary and its plain record.

    The record's ``wall_time_s`` counts the training time of the interrupted processes this
    one resumed (from the checkpoint) on top of this process's own: what the stage cost.
    """
    write_curve_png(stage, result.history)
    log.finish(record)
    write_metrics(stage, record, t0 - result.elapsed_before_s)
