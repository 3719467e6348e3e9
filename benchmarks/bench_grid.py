"""A grid's cells trained together (``kdlab.grid.fit_grid``) against the same cells as single
runs (``kdlab.train.fit`` once per cell), measured side by side in one process.

Synthetic Fashion-MNIST-sized data (uint8 1x28x28, 10 classes) through the project's
TensorLoader, LeNet5 students, the default ResNet18 width-16 teacher, batch 128. A "single run"
is what a ``distill@<method>`` stage does after loading its inputs: seed, build the student and
its distiller (a live teacher: rebuilt from its weights), build its loaders, ``fit``. The grid
does the same once for all its cells: one loader, one teacher (one pass per batch).

Two grids:

- ``live``: KD at 8 (T, alpha) settings with rotation augmentation (unbounded views, so the
  teacher runs live every batch); the issue's target is >= 3x on a 2-core CPU.
- ``cached``: the default Table 10 shape, T x alpha x {KD, ReffAKD} with flips only, KD on
  cached teacher logits; the target is no slower than single runs (ratio >= 1).

Single runs and grid alternate over ``--repeats`` rounds; each keeps its best round, so a slow
moment of the (shared) machine does not land on one side only. The final weights of every grid
cell are compared with its single run (max abs difference: 0 expected on one CPU).

    PYTHONPATH=src python benchmarks/bench_grid.py --threads 2
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kdlab import presets
from kdlab.config import AugmentConfig, TrainConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.grid import GridCell, SharedTeacher, fit_grid, rng_state
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits
from kdlab.models import build_model
from kdlab.runtime import seed_everything
from kdlab.train import fit

MEAN, STD = (0.2860,), (0.3530,)
LIVE = [("kd", t, a) for t in (2.0, 4.0, 8.0, 16.0) for a in (0.5, 0.9)]
CACHED = [(m, t, a) for m in ("kd", "reffakd") for t in (4.0, 20.0) for a in (0.6,)]
TABLE10 = [
    (m, t, a)
    for t in (20.0, 10.0, 5.0, 1.0)
    for a in (0.6, 0.7, 0.8, 0.9)
    for m in ("kd", "reffakd")
]


def data(n: int):
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    return images, torch.randint(0, 10, (n,), generator=g)


def loaders(images, labels, n_train: int, batch: int, augment: AugmentConfig):
    common = dict(input_size=28, mean=MEAN, std=STD)
    train = TensorLoader(
        images, labels, torch.arange(n_train), batch, augment=augment, shuffle=True, **common
    )
    val = TensorLoader(images, labels, torch.arange(n_train, len(labels)), 1024, **common)
    return train, val


def knowledge(kind: str, teacher_sd, cached, soft) -> dict:
    """The constructor arguments a stage would load for one cell (a live teacher rebuilt)."""
    if kind == "reffakd":
        return {"soft_labels": soft}
    if cached is not None:
        return {"teacher": TeacherLogits(cached=cached)}
    t = build_model("resnet18", 10, 1, width=16, input_size=28)
    t.load_state_dict(teacher_sd)
    return {"teacher": TeacherLogits(model=t.eval(), input_size=28)}


def build_cell(cell, teacher_sd, cached, soft, epochs: int):
    method, temperature, alpha = cell
    seed_everything(10)
    student = build_model("lenet5", 10, 1, input_size=28)
    extra = knowledge(method, teacher_sd, cached, soft)
    cls = get_method(method)
    params = presets.method_params(method, reduction="mean")
    return cls(student, params, alpha, temperature, epochs=epochs, **extra)


def run_single(cells, setup, cfg) -> tuple[float, list]:
    t0 = time.perf_counter()
    weights = []
    for cell in cells:
        d = build_cell(cell, *setup["knowledge"], cfg.epochs)
        train, val = loaders(*setup["data"], cfg.batch_size, cfg.augment)
        fit(d, train, val, cfg, "single", log=lambda _: None)
        weights.append(d.student.state_dict())
    return time.perf_counter() - t0, weights


def run_grid(cells, setup, cfg) -> tuple[float, list]:
    t0 = time.perf_counter()
    built = []
    for cell in cells:
        d = build_cell(cell, *setup["knowledge"], cfg.epochs)
        built.append(GridCell(f"{cell}", d, rng_state(torch.device("cpu"))))
    teacher = None
    live = [c.objective.teacher for c in built if getattr(c.objective, "teacher", None)]
    live = [t for t in live if t.live]
    if live:
        teacher = SharedTeacher(live[0].model, 28)
        for t in live:
            t.model = teacher.model
    train, val = loaders(*setup["data"], cfg.batch_size, cfg.augment)
    fit_grid(built, train, val, cfg, "grid", teacher, log=lambda _: None)
    return time.perf_counter() - t0, [c.objective.student.state_dict() for c in built]


def compare(name: str, cells, setup, cfg, repeats: int) -> dict:
    best = {"single": float("inf"), "grid": float("inf")}
    for _ in range(repeats):
        ts, ws = run_single(cells, setup, cfg)
        tg, wg = run_grid(cells, setup, cfg)
        best["single"], best["grid"] = min(best["single"], ts), min(best["grid"], tg)
    diff = max(float((a[k] - b[k]).abs().max()) for a, b in zip(ws, wg) for k in a)
    out = {
        "grid": name,
        "cells": len(cells),
        "single_s": round(best["single"], 2),
        "grid_s": round(best["grid"], 2),
        "speedup": round(best["single"] / best["grid"], 2),
        "max_abs_weight_diff": diff,
    }
    print(json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=512, help="training images (batch 128)")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", choices=["live", "cached"], help="run one of the two grids")
    ap.add_argument(
        "--cached-cells",
        type=int,
        default=len(CACHED),
        help="cells of the cached grid: T x alpha x {KD, ReffAKD} from Table 10's 16 settings "
        f"(default {len(CACHED)}; 32: the whole table)",
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    images, labels = data(args.train + 256)
    torch.manual_seed(0)
    teacher = build_model("resnet18", 10, 1, width=16, input_size=28).eval()
    with torch.no_grad():  # a cache of both views, as the teacher_logits stage writes it
        x = (images.float() / 255 - MEAN[0]) / STD[0]
        cached = torch.stack([teacher(x), teacher(x.flip(-1))])
    soft = torch.softmax(torch.randn(10, 10) + 4 * torch.eye(10), dim=1)
    base = dict(
        epochs=args.epochs,
        batch_size=128,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        schedule="onecycle",
        milestones=(),
        lr_decay=0.2,
    )
    setup = {"data": (images, labels, args.train), "knowledge": (teacher.state_dict(), None, soft)}
    results = []
    if args.only != "cached":
        rot = TrainConfig(**base, augment=AugmentConfig(hflip=True, rotation=15.0, crop_padding=0))
        results.append(compare("live teacher, KD x 8 (rotation)", LIVE, setup, rot, args.repeats))
    if args.only != "live":
        setup["knowledge"] = (teacher.state_dict(), cached, soft)
        flip = TrainConfig(**base, augment=AugmentConfig(hflip=True, rotation=0.0, crop_padding=0))
        cells = CACHED if args.cached_cells == len(CACHED) else TABLE10[: args.cached_cells]
        name = f"cached logits, {{KD, ReffAKD}}, {len(cells)} cells"
        results.append(compare(name, cells, setup, flip, args.repeats))
    ratios = ", ".join(f"{r['grid']}: {r['speedup']}x" for r in results)
    print(f"threads {args.threads}; best of {args.repeats} rounds; single/grid time: {ratios}")


if __name__ == "__main__":
    main()
