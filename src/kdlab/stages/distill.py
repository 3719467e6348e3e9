"""``teacher_logits`` and ``distill@<method>`` stages."""

from __future__ import annotations

import time

import torch

from kdlab import paths
from kdlab.config import Config
from kdlab.data.pipeline import TensorLoader
from kdlab.io import torch_load, torch_save
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits
from kdlab.models import count_params
from kdlab.stages.common import (
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


def teacher_logits(cfg: Config) -> None:
    """Teacher logits of every training image of the split, as is and flipped, computed once.

    Students whose augmentation only flips see exactly these two views, so every
    teacher-based method can look its targets up instead of running the teacher. The tensor
    is indexed by position in the data set; images outside the training split (validation,
    or left out by ``data.subset``) are never looked up and hold NaN.
    """
    t0 = time.time()
    device = start(cfg, offset=4)
    data = load_data(cfg)
    teacher, blob = load_model(paths.TEACHER, device)
    if blob.get("channels_last"):
        teacher = teacher.to(memory_format=torch.channels_last)
    train = data.split.train
    loader = TensorLoader(
        data.images,
        data.labels,
        train,
        1024,
        blob["input_size"],
        data.spec.mean,
        data.spec.std,
        device=device,
        channels_last=bool(blob.get("channels_last")),
    )
    logits = torch.full((2, len(data.labels), data.spec.num_classes), float("nan"))
    with torch.no_grad():
        for view, flip in enumerate((False, True)):
            for b in loader:
                x = b.x.flip(-1) if flip else b.x
                logits[view, b.index.cpu()] = teacher(x).float().cpu()
    torch_save(paths.TEACHER_LOGITS, {"logits": logits, "views": ["identity", "hflip"]})
    acc = float((logits[0, train].argmax(1) == data.labels[train]).float().mean() * 100)
    print(
        f"[teacher_logits] {len(train):,} training images x 2 views in "
        f"{time.time() - t0:.1f}s; teacher accuracy on them {acc:.2f}% (their labels, "
        "noisy ones included)",
        flush=True,
    )


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
            cached = torch_load(paths.TEACHER_LOGITS)["logits"]
            teacher = TeacherLogits(cached=cached.to(device))
            source = f"cached teacher logits ({paths.TEACHER_LOGITS})"
        else:
            t_model, blob = load_model(paths.TEACHER, device)
            teacher = TeacherLogits(model=t_model, input_size=blob["input_size"])
            source = "live teacher (augmentation has unbounded views)"
    soft = read_soft_labels().to(device) if cls.needs_soft_labels else None
    feature_kwargs: dict = {}
    if getattr(cls, "needs_teacher_features", False):
        # Feature methods tap a live, frozen teacher (never trained, never saved with them).
        t_model, blob = load_model(paths.TEACHER, device)
        feature_kwargs = dict(
            teacher_model=t_model.eval(),
            input_shape=(data.spec.shape[0], mc.input_size, mc.input_size),
            teacher_input_size=blob["input_size"],
            num_data=len(data.labels),
            # CRD draws negatives from the training positions of other classes only.
            train_labels=torch.full_like(data.labels, -1).index_copy_(
                0, data.split.train, data.labels[data.split.train]
            ),
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
        metrics=metrics,
        extra_state=distiller.extra_state(),
    )
    write_curve(f"distill/{method}", result.history)
    write_metrics(f"distill/{method}", metrics, t0)
    print(f"[distill@{method}] test accuracy {metrics['test_acc']:.2f}%", flush=True)
