"""``train_teacher``, ``train_student`` (CE baseline) and ``train_cae`` stages."""

from __future__ import annotations

import time

from kdlab import paths
from kdlab.config import Config
from kdlab.live import EpochLog
from kdlab.methods.ce import CrossEntropy
from kdlab.models import build_model, check_input, count_params
from kdlab.objectives import Reconstruction
from kdlab.stages.common import (
    divergence_rule,
    end_training,
    finish_training_stage,
    fit_logged,
    load_data,
    loaders,
    make_model,
    save_model,
    start_training,
)
from kdlab.train import fingerprint

ROLES = ("teacher", "student")


def _parallel(cfg: Config) -> dict:
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
    train, val, test = loaders(cfg, data, mc, device)
    run_id = fingerprint([role, cfg.seed, cfg.data.__dict__, mc.__dict__, str(device)])
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
        **_parallel(cfg),
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
        **_parallel(cfg),
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
