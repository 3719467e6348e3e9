"""``distill_grid``: the cells of ``grid.cells`` trained together (kdlab.grid).

Each cell is built exactly as its single ``distill@<method>`` run builds its student: the
``distill`` seed stream is seeded, the student made and the method's knowledge loaded in the
same order (so a live teacher's construction draws the same random numbers), and the cell
trains from the random state that run would train from. The cells then share one loader, one
teacher (one copy in memory, one pass per batch) and one cached-logit table; each writes the
single run's outputs under its own name: ``data/models/grid/<cell>.pt``,
``metrics/grid/<cell>.json`` (the record, with the same keys as ``metrics/distill/<m>.json``)
and the DVCLive folder ``metrics/grid/<cell>/`` (scores nested under ``grid_<cell>``), plus one
summary of every cell, ``metrics/grid_summary.json``, for ``dvc exp show``.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import replace
from typing import Any

import torch

from kdlab import paths
from kdlab.artifacts import Data, load_data, loaders, make_model, save_model
from kdlab.config import Config, GridCellConfig
from kdlab.errors import DivergenceError
from kdlab.fitting import divergence_rule, evaluate_final_and_best
from kdlab.grid import GridCell, SharedTeacher, fit_grid, rng_state
from kdlab.io import write_json
from kdlab.knowledge import build_distiller
from kdlab.live import EpochLog
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits
from kdlab.models import count_params
from kdlab.plots import curve_png
from kdlab.runtime import seed_everything, start, stream_seed, write_metrics
from kdlab.stages.common import run
from kdlab.train import FitResult, fingerprint


def model_name(cell: str) -> str:
    """The name a cell's scores nest under (``dvc exp show`` column ``grid_<cell>.test_acc``):
    never a method's name, so grid cells and distill stages never collide."""
    return f"grid_{cell}"


def cell_config(cfg: Config, cell: GridCellConfig) -> Config:
    """The params of the single ``distill@<method>`` run this cell reproduces."""
    mp = {**cfg.method_params, cell.method: dict(cell.params)}
    return replace(cfg, alpha=cell.alpha, temperature=cell.temperature, method_params=mp)


def build_cell(cfg: Config, cell: GridCellConfig, data: Data, device: torch.device):
    """The cell's distiller, built from the ``distill`` seed stream as its single run builds
    it, and the random state that run starts training from."""
    seed_everything(stream_seed(cfg, "distill"))  # as start_training(cfg, "distill")
    student = make_model(cfg.student, data.spec, device)
    distiller, source = build_distiller(cell_config(cfg, cell), cell.method, data, student, device)
    return distiller, source, rng_state(device)


def cell_hint(cell: GridCellConfig, distiller) -> str:
    """The params.yaml knobs a diverging cell most likely needs changed (as
    :func:`kdlab.stages.distill.distill_hint` names a single run's)."""
    key = f"grid.cells.{cell.name}"
    own = "temperature" in distiller.params  # DKD's own T (method_params.dkd.temperature)
    temp = f"{key}.params.temperature" if own else f"{key}.temperature"
    return f"student.train.lr, {key}.alpha or {temp} (now {distiller.term_temperature:g})"


def share_teacher(distillers: list[Any]) -> SharedTeacher | None:
    """Point every cell at one teacher (and one cached-logit table); the shared pass, or None
    when no cell reads a live teacher."""
    live = cached = None
    for d in distillers:
        t = getattr(d, "teacher", None)
        if isinstance(t, TeacherLogits) and t.cached is not None:
            cached = t.cached if cached is None else cached
            t.cached = cached
        elif isinstance(t, TeacherLogits):
            live = live or SharedTeacher(t.model, t.input_size)
            t.model = live.model
        if hasattr(d, "_teacher_box"):  # a feature method (kdlab.methods.features)
            live = live or SharedTeacher(d.teacher_model, d.teacher_input_size)
            d._teacher_box = (live.model,)
    return live


def _clear_outputs() -> None:
    for folder in (paths.GRID_MODELS, paths.GRID_METRICS, paths.GRID_PNG):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)


def _scores(log: EpochLog) -> dict[str, Any]:
    """The cell's DVCLive summary (``{"grid_<cell>": {...}}``), empty before its first epoch."""
    if not log.metrics_file.exists():
        return {}
    live = json.loads(log.metrics_file.read_text())
    return {k: v for k, v in live.items() if isinstance(v, dict)}


def _write_cell(cfg: Config, cell, distiller, result: FitResult, test, log, data, t0) -> None:
    """The cell's model, record, DVCLive summary and PNG, as distill@<method> writes them."""
    metrics = evaluate_final_and_best(distiller, result, test)
    metrics.update(
        method=cell.method,
        alpha=cell.alpha,
        temperature=distiller.term_temperature,
        params=count_params(distiller.student),
        train_time_s=round(result.wall_time_s, 2),  # the whole grid's (shared) training time
    )
    extra = distiller.extra_state()
    save_model(
        paths.grid_model(cell.name), distiller.student, cfg.student, data.spec, extra_state=extra
    )
    curve_png(result.history, paths.GRID_PNG / f"{cell.name}.png", title=f"grid/{cell.name}")
    log.finish(metrics)
    write_metrics(f"grid/{cell.name}", metrics, t0 - result.elapsed_before_s)
    print(f"[distill_grid] {cell.name}: test accuracy {metrics['test_acc']:.2f}%", flush=True)


def _grid_cells(cfg: Config, built, logs: list[EpochLog], data: Data, device) -> list[GridCell]:
    """What ``fit_grid`` trains: per cell its distiller, random state, training config (an
    init phase adds epochs), divergence rule, checkpoint and logging."""
    mc, cells = cfg.student, []
    for c, (d, _, rng), log in zip(cfg.grid, built, logs, strict=True):
        # The single run's fingerprint, plus the grid: its checkpoints are its own.
        run_id = fingerprint(
            ["grid", c.method, cfg.students_seed, c.alpha, c.temperature, cfg.data.__dict__]
            + [mc.__dict__, c.params, str(device)]
        )
        cells.append(
            GridCell(
                name=f"grid@{c.name}",
                objective=d,
                rng=rng,
                checkpoint=paths.CHECKPOINTS / f"grid_{c.name}.pt",
                run_id=run_id,
                on_epoch=log.epoch,
                train=get_method(c.method).train_config(mc.train, c.params),
                divergence=divergence_rule(data.spec, cell_hint(c, d), d),
                on_diverged=log.diverged,
            )
        )
    return cells


def distill_grid(cfg: Config) -> None:
    """Train every cell of ``grid.cells`` together; write each cell's single-run outputs.

    A cell that diverges fails the stage (:class:`DivergenceError`, as its single run would),
    after ``metrics/grid_summary.json`` marks it ``diverged``; no model or record is written.
    """
    t0 = time.time()
    _clear_outputs()
    summary: dict[str, Any] = {"cells": len(cfg.grid)}
    if not cfg.grid:
        write_json(paths.GRID_SUMMARY, summary)
        print("[distill_grid] no cells in params.yaml grid.cells: nothing to train", flush=True)
        return
    if cfg.distributed.nproc_per_node > 1:
        print("[distill_grid] distributed.nproc_per_node ignored: a grid trains in one process")
    device = start(cfg, "distill")  # one process: the grid does not run under DDP
    data = load_data(cfg)
    built = [build_cell(cfg, c, data, device) for c in cfg.grid]
    teacher = share_teacher([b[0] for b in built])
    mc = cfg.student
    print(
        f"[distill_grid] {len(cfg.grid)} {mc.model} students, {mc.train.epochs} epochs on "
        f"{device}, {'one shared teacher pass per batch' if teacher else 'no live teacher'}: "
        + ", ".join(
            f"{c.name} ({c.method}, alpha {c.alpha}, T {b[0].term_temperature:g})"
            for c, b in zip(cfg.grid, built, strict=True)
        ),
        flush=True,
    )
    train, val, test = loaders(cfg, data, mc, device, seed=cfg.students_seed)
    logs = [EpochLog(f"grid/{c.name}", model_name(c.name)) for c in cfg.grid]
    cells = _grid_cells(cfg, built, logs, data, device)
    try:
        results = fit_grid(
            cells, train, val, mc.train, "distill_grid", teacher, accel=cfg.accel, test_loader=test
        )
    except DivergenceError:
        for log in logs:  # every cell's progress, the diverged ones marked
            summary.update(_scores(log))
        write_json(paths.GRID_SUMMARY, summary)
        raise
    for c, (d, _, _), result, log in zip(cfg.grid, built, results, logs, strict=True):
        _write_cell(cfg, c, d, result, test, log, data, t0)
        summary.update(_scores(log))
    write_json(paths.GRID_SUMMARY, summary)


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.grid`` (the distill_grid stage)."""
    return run("kdlab.stages.grid", "grid", argv, lambda cfg, args: distill_grid(cfg))


if __name__ == "__main__":
    sys.exit(main())
