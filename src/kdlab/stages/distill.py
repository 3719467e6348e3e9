"""``teacher_logits`` and ``distill@<method>`` stages."""

from __future__ import annotations

import time

import torch

from kdlab import paths
from kdlab.config import Config
from kdlab.io import torch_load
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits
from kdlab.models import count_params
from kdlab.stages.common import (
    Data,
    load_data,
    load_model,
    loaders,
    make_model,
    save_model,
    start,
    write_curve,
    write_metrics,
)
from kdlab.stages.softlabels import read_soft_labels
from kdlab.stages.train import evaluate_final_and_best
from kdlab.train import fingerprint, fit


def read_teacher_logits(data: Data) -> torch.Tensor:
    """The cached teacher logits, validated where they will be read (the training split)."""
    path = paths.TEACHER_LOGITS
    blob = torch_load(path)
    logits = blob.get("logits") if isinstance(blob, dict) else None
    want = (2, len(data.labels), data.spec.num_classes)
    if not isinstance(logits, torch.Tensor) or tuple(logits.shape) != want:
        got = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(
            f"{path}: logits {got}; allowed: a tensor of shape {want} (views x images x "
            "classes); rerun `dvc repro -f teacher_logits`"
        )
    bad = ~torch.isfinite(logits[:, data.split.train]).all(dim=-1)
    if bad.any():
        view, pos = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{path}: non-finite logits for training image {int(data.split.train[pos])} "
            f"(view {view}); allowed: finite numbers; rerun `dvc repro -f teacher_logits`"
        )
    return logits


def distill(cfg: Config, method: str) -> None:
    """Train the student with ``method``; save weights, metrics and per-term loss curves."""
    t0 = time.time()
    if method not in cfg.methods:
        raise ValueError(f"method {method!r} is not in params.yaml methods {list(cfg.methods)}")
    cls = get_method(method)
    mc = cfg.student
    device = start(cfg, offset=10)
    data = load_data(cfg)
    student = make_model(mc, data.spec, device)
    teacher = None
    if cls.needs_teacher:
        if mc.train.augment.finite_views:
            cached = read_teacher_logits(data)
            teacher = TeacherLogits(cached=cached.to(device))
            source = f"cached teacher logits ({paths.TEACHER_LOGITS})"
        else:
            t_model, blob = load_model(paths.TEACHER, device)
            teacher = TeacherLogits(model=t_model, input_size=blob["input_size"])
            source = "live teacher (augmentation has unbounded views)"
    soft = read_soft_labels(data.spec.num_classes).to(device) if cls.needs_soft_labels else None
    feature_kwargs: dict = {}
    if getattr(cls, "needs_teacher_features", False):
        # Feature methods tap a live, frozen teacher (never trained, never saved with them).
        t_model, blob = load_model(paths.TEACHER, device)
        feature_kwargs = dict(
            teacher_model=t_model.eval(),
            input_shape=(data.spec.shape[0], mc.input_size, mc.input_size),
            teacher_input_size=blob["input_size"],
            num_data=len(data.labels),
        )
        source = f"live teacher features ({paths.TEACHER})"
    if cls.needs_soft_labels:
        source = f"soft-label matrix ({paths.SOFT_LABELS}); no teacher"
    elif not cls.needs_teacher and not feature_kwargs:
        source = "hard labels only"
    distiller = cls(
        student,
        cfg.method_params[method],
        cfg.alpha,
        cfg.temperature,
        teacher=teacher,
        soft_labels=soft,
        epochs=mc.train.epochs,
        **feature_kwargs,
    ).to(device)
    print(
        f"[distill@{method}] {mc.model} student from {source}; alpha {cfg.alpha}, "
        f"T {cfg.temperature}, {mc.train.epochs} epochs on {device}",
        flush=True,
    )
    train, val, test = loaders(cfg, data, mc, device)
    run_id = fingerprint(
        [
            method,
            cfg.seed,
            cfg.alpha,
            cfg.temperature,
            cfg.data.__dict__,
            mc.__dict__,
            cfg.method_params[method],
            str(device),
        ]
    )
    result = fit(
        distiller,
        train,
        val,
        mc.train,
        f"distill@{method}",
        paths.CHECKPOINTS / f"distill_{method}.pt",
        run_id,
    )
    metrics = evaluate_final_and_best(distiller, result, test)
    metrics.update(
        method=method,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        params=count_params(student),
        train_time_s=round(result.wall_time_s, 2),
    )
    save_model(
        paths.distilled(method),
        student,
        mc,
        data.spec,
        extra_state=distiller.extra_state(),
    )
    write_curve(f"distill/{method}", result.history)
    write_metrics(f"distill/{method}", metrics, t0)
    print(f"[distill@{method}] test accuracy {metrics['test_acc']:.2f}%", flush=True)
