"""``train_teacher``, ``train_student`` (CE baseline) and ``train_cae`` stages."""

from __future__ import annotations

import argparse
import sys
import time

from kdlab import paths
from kdlab.artifacts import load_data, loaders, make_model, save_model
from kdlab.config import Config
from kdlab.fitting import (
    divergence_rule,
    end_training,
    evaluate_final_and_best,
    finish_training_stage,
    fit_logged,
    parallel,
    start_training,
)
from kdlab.live import EpochLog
from kdlab.methods.ce import CrossEntropy
from kdlab.models import build_model, check_input, count_params
from kdlab.objectives import Reconstruction
from kdlab.stages.common import run
from kdlab.train import fingerprint

ROLES = ("teacher", "student")


def train_classifier(cfg: Config, role: str) -> None:
    """Train the teacher or the CE-only student; save weights, metrics and curves."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; allowed: {', '.join(ROLES)}")
    t0 = time.time()
    mc = cfg.teacher if role == "teacher" else cfg.student
    device = start_training(cfg, f"train_{role}")
    data = load_data(cfg)
    model = make_model(mc, data.spec, device)
    n_params = count_params(model)
    print(
        f"[train_{role}] {mc.model} ({n_params:,} params) on {device}, "
        f"{len(data.split.train)} images, {mc.train.epochs} epochs",
        flush=True,
    )
    distiller = CrossEntropy(model).to(device)
    # The CE student is a student: its shuffling and fingerprint follow ``student_seed``.
    seed = cfg.seed if role == "teacher" else cfg.students_seed
    train, val, test = loaders(cfg, data, mc, device, seed=seed)
    run_id = fingerprint([role, seed, cfg.data.__dict__, mc.__dict__, str(device)])
    ckpt = paths.CHECKPOINTS / f"{role}.pt"
    log = EpochLog(role, "teacher" if role == "teacher" else "ce")
    result = fit_logged(
        log,
        distiller,
        train,
        val,
        mc.train,
        f"train_{role}",
        ckpt,
        run_id,
        test_loader=test,
        divergence=divergence_rule(data.spec, f"{role}.train.lr (now {mc.train.lr:g})"),
        **parallel(cfg),
    )
    end_training()
    metrics = evaluate_final_and_best(distiller, result, test)
    metrics.update(model=mc.model, params=n_params, train_time_s=round(result.wall_time_s, 2))
    target = paths.TEACHER if role == "teacher" else paths.STUDENT
    save_model(target, model, mc, data.spec)
    finish_training_stage(role, log, result, metrics, t0)
    print(f"[train_{role}] test accuracy {metrics['test_acc']:.2f}% -> {target}", flush=True)


def _keep_cae_epoch(objective, result, test_loader, mc) -> dict:
    """Load the weights ``cae.keep`` names into ``objective``; return the CAE's scores: the
    final epoch's test MSE and the kept weights' (selected on validation, never on test)."""
    final_test = objective.evaluate(test_loader)["val_mse"]
    if mc.keep == "best_val" and result.best_state is not None:
        objective.load_state_dict(result.best_state)
    return {
        "val_mse": round(result.final["val_mse"], 6),
        "test_mse": round(final_test, 6),  # the final epoch's
        "best_val_mse": round(result.best_value, 6),
        "best_val_epoch": result.best_epoch,
        "kept_epoch": result.best_epoch if mc.keep == "best_val" else len(result.history),
        "kept_test_mse": round(objective.evaluate(test_loader)["val_mse"], 6),
        "normalized": mc.normalize,
        "epochs": len(result.history),
    }


def train_cae(cfg: Config) -> None:
    """Train ReffAKD's autoencoder (MSE between input and reconstruction; both normalised
    with the data set's mean/std when ``cae.normalize``, as the official notebooks do) and save
    the epoch ``cae.keep`` names: lowest validation MSE, or the last."""
    t0 = time.time()
    mc = cfg.cae
    device = start_training(cfg, "train_cae")
    data = load_data(cfg)
    channels = data.spec.shape[0]
    model = build_model(mc.model, 0, channels, **mc.options).to(device)
    check_input(model, mc.model, (channels, mc.input_size, mc.input_size))
    n_params = count_params(model)
    print(
        f"[train_cae] {mc.model} ({n_params:,} params) on {device}, {mc.input_size}x"
        f"{mc.input_size} input, {mc.train.epochs} epochs",
        flush=True,
    )
    objective = Reconstruction(model)
    train, val, test = loaders(cfg, data, mc, device, normalize=mc.normalize)
    run_id = fingerprint(["cae", cfg.seed, cfg.data.__dict__, mc.__dict__, str(device)])
    log = EpochLog("cae", "cae")
    result = fit_logged(
        log,
        objective,
        train,
        val,
        mc.train,
        "train_cae",
        paths.CHECKPOINTS / "cae.pt",
        run_id,
        select="val_mse",
        maximize=False,
        test_loader=test,
        divergence=divergence_rule(None, f"cae.train.lr (now {mc.train.lr:g})"),
        **parallel(cfg),
    )
    end_training()
    metrics = _keep_cae_epoch(objective, result, test, mc)
    metrics.update(params=n_params, train_time_s=round(result.wall_time_s, 2))
    # How it saw its images travels with it: the soft-label stage embeds images the same way.
    save_model(
        paths.CAE,
        model,
        mc,
        data.spec,
        normalize=mc.normalize,
        augment=dict(mc.train.augment.__dict__),
        kept_epoch=metrics["kept_epoch"],
    )
    finish_training_stage("cae", log, result, metrics, t0)
    print(f"[train_cae] test MSE {metrics['test_mse']:.5f} -> {paths.CAE}", flush=True)


def train_role(cfg: Config, role: str) -> None:
    """Train ``role``: the teacher, the CE student or the CAE."""
    if role == "cae":
        train_cae(cfg)
    else:
        train_classifier(cfg, role)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("role", choices=[*ROLES, "cae"])


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.train teacher|student|cae``."""
    return run("kdlab.stages.train", "train", argv, lambda c, a: train_role(c, a.role), _arguments)


if __name__ == "__main__":
    sys.exit(main())
