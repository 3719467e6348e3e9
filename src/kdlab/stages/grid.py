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
import time
from dataclasses import replace
from typing import Any

import torch

from kdlab import paths
from kdlab.config import Config, GridCellConfig
from kdlab.grid import GridCell, SharedTeacher, fit_grid, rng_state
from kdlab.io import write_json
from kdlab.live import EpochLog
from kdlab.methods.base import TeacherLogits
from kdlab.models import count_params
from kdlab.plots import curve_png
from kdlab.stages.common import Data, load_data, loaders, make_model, save_model, start
from kdlab.stages.distill import build_distiller
from kdlab.stages.train import evaluate_final_and_best
from kdlab.train import fingerprint, peak_rss_mib, seed_everything


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
    seed_everything(cfg.seed + 10)  # SEED_STREAMS["distill"], as start(cfg, "distill")
    student = make_model(cfg.student, data.spec, device)
    distiller, source = build_distiller(cell_config(cfg, cell), cell.method, data, student, device)
    return distiller, source, rng_state(device)


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


def _write_cell(cfg, cell, distiller, result, test, log: EpochLog, data, t0) -> dict[str, Any]:
    """The cell's model, record, DVCLive summary and PNG, as distill@<method> writes them."""
    metrics = evaluate_final_and_best(distiller, result, test)
    metrics.update(
        method=cell.method,
        alpha=cell.alpha,
        temperature=cell.temperature,
        params=count_params(distiller.student),
        train_time_s=round(result.wall_time_s, 2),  # the whole grid's (shared) training time
    )
    extra = distiller.extra_state()
    save_model(
        paths.grid_model(cell.name), distiller.student, cfg.student, data.spec, extra_state=extra
    )
    curve_png(result.history, paths.GRID_PNG / f"{cell.name}.png", title=f"grid/{cell.name}")
    log.finish(metrics)
    metrics["wall_time_s"] = round(time.time() - t0 + result.elapsed_before_s, 2)
    metrics["peak_rss_mib"] = round(peak_rss_mib(), 1)
    write_json(paths.metrics(f"grid/{cell.name}"), metrics)
    print(f"[distill_grid] {cell.name}: test accuracy {metrics['test_acc']:.2f}%", flush=True)
    live = json.loads((log.dir / "metrics.json").read_text())
    return {k: v for k, v in live.items() if isinstance(v, dict)}


def distill_grid(cfg: Config) -> None:
    """Train every cell of ``grid.cells`` together; write each cell's single-run outputs."""
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
        + ", ".join(f"{c.name} ({c.method}, alpha {c.alpha}, T {c.temperature})" for c in cfg.grid),
        flush=True,
    )
    train, val, test = loaders(cfg, data, mc, device)
    logs = [EpochLog(f"grid/{c.name}", model_name(c.name)) for c in cfg.grid]
    cells = [
        GridCell(
            name=f"grid@{c.name}",
            objective=d,
            rng=rng,
            checkpoint=paths.CHECKPOINTS / f"grid_{c.name}.pt",
            # The single run's fingerprint, plus the grid: its checkpoints are its own.
            run_id=fingerprint(
                ["grid", c.method, cfg.seed, c.alpha, c.temperature, cfg.data.__dict__]
                + [mc.__dict__, c.params, str(device)]
            ),
            on_epoch=log.epoch,
        )
        for c, (d, _, rng), log in zip(cfg.grid, built, logs)
    ]
    results = fit_grid(
        cells, train, val, mc.train, "distill_grid", teacher, accel=cfg.accel, test_loader=test
    )
    for c, (d, _, _), result, log in zip(cfg.grid, built, results, logs):
        summary.update(_write_cell(cfg, c, d, result, test, log, data, t0))
    write_json(paths.GRID_SUMMARY, summary)
