"""``distill@<method>`` stages: a student trained with one method's knowledge."""

from __future__ import annotations

import time
from typing import Any

import torch

from kdlab import paths
from kdlab.config import Config, ConfigError, ModelConfig
from kdlab.data import get_dataset
from kdlab.io import torch_load
from kdlab.live import EpochLog
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits
from kdlab.models import count_params
from kdlab.stages.common import (
    Data,
    divergence_rule,
    end_training,
    finish_training_stage,
    fit_logged,
    load_data,
    load_model,
    loaders,
    make_model,
    save_model,
    start_training,
)
from kdlab.stages.softlabels import read_soft_labels
from kdlab.stages.train import _parallel, evaluate_final_and_best
from kdlab.train import fingerprint


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


def _teacher_outputs(data: Data, mc: ModelConfig, device: torch.device) -> tuple[dict, str]:
    """Teacher logits: looked up in the cache when augmentation has finite views (flips)."""
    if mc.train.augment.finite_views:
        cached = read_teacher_logits(data).to(device)
        return {
            "teacher": TeacherLogits(cached=cached)
        }, f"cached teacher logits ({paths.TEACHER_LOGITS})"
    t_model, blob = load_model(paths.TEACHER, device)
    teacher = TeacherLogits(model=t_model, input_size=blob["input_size"])
    return {"teacher": teacher}, "live teacher (augmentation has unbounded views)"


def _soft_labels(data: Data, mc: ModelConfig, device: torch.device) -> tuple[dict, str]:
    soft = read_soft_labels(data.spec.num_classes).to(device)
    return {"soft_labels": soft}, f"soft-label matrix ({paths.SOFT_LABELS}); no teacher"


def _teacher_features(data: Data, mc: ModelConfig, device: torch.device) -> tuple[dict, str]:
    """A live, frozen teacher whose features the method taps (never trained or saved)."""
    t_model, blob = load_model(paths.TEACHER, device)
    kwargs = dict(
        teacher_model=t_model.eval(),
        input_shape=(data.spec.shape[0], mc.input_size, mc.input_size),
        teacher_input_size=blob["input_size"],
        num_data=len(data.labels),
        # CRD draws negatives from the training positions of other classes only.
        train_labels=torch.full_like(data.labels, -1).index_copy_(
            0, data.split.train, data.labels[data.split.train]
        ),
    )
    return kwargs, f"live teacher features ({paths.TEACHER})"


# What a method declares -> how its knowledge is loaded (constructor keyword arguments).
KNOWLEDGE_LOADERS = (
    ("needs_teacher", _teacher_outputs),
    ("needs_soft_labels", _soft_labels),
    ("needs_teacher_features", _teacher_features),
)


def build_distiller(cfg: Config, method: str, data: Data, student, device) -> tuple[Any, str]:
    """The method's Distiller around ``student`` with the knowledge it declares it needs."""
    cls = get_method(method)
    kwargs: dict[str, Any] = {}
    sources = []
    for flag, load in KNOWLEDGE_LOADERS:
        if getattr(cls, flag):
            extra, text = load(data, cfg.student, device)
            kwargs.update(extra)
            sources.append(text)
    distiller = cls(
        student,
        cfg.method_params[method],
        cfg.alpha,
        cfg.temperature,
        epochs=cfg.student.train.epochs,
        **kwargs,
    ).to(device)
    return distiller, "; ".join(sources) or "hard labels only"


def check_models(cfg: Config) -> None:
    """``kdlab check``: build the teacher, the student and the CAE from their params on the CPU,
    so a typo under ``<role>.options`` fails here, naming the key, not in its stage after DVC
    deleted the outputs."""
    from kdlab.models import build_model, check_input

    spec = get_dataset(cfg.data.name)
    cpu = torch.device("cpu")
    for role in ("teacher", "student", "cae"):
        mc = getattr(cfg, role)
        try:
            if role == "cae":
                model = build_model(mc.model, 0, spec.shape[0], **mc.options)
                check_input(model, mc.model, (spec.shape[0], mc.input_size, mc.input_size))
            else:
                make_model(mc, spec, cpu)
        except (TypeError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"params.yaml: {role}.options = {mc.options!r} (model {mc.model}, input "
                f"{mc.input_size}): {first}"
            ) from None


def check_method_models(cfg: Config) -> None:
    """Method params that depend on the models (SRRL's stage index, FitNet's hint stage, ...).

    Builds each feature method's distiller (of ``methods`` and of every ``grid.cells`` cell)
    around untrained student and teacher models on the CPU, so that ``kdlab check`` (the
    pipeline's first stage) reports what the method's constructor would reject hours later,
    naming the params.yaml key.
    """
    spec = get_dataset(cfg.data.name)
    runs = [(m, cfg.method_params[m], f"methods.{m}") for m in cfg.methods]
    runs += [(c.method, c.params, f"grid.cells.{c.name}") for c in cfg.grid]
    for method, params, where in runs:
        cls = get_method(method)
        if not cls.needs_teacher_features:
            continue
        cpu = torch.device("cpu")
        student = make_model(cfg.student, spec, cpu)
        teacher = make_model(cfg.teacher, spec, cpu).eval()
        try:
            cls(
                student,
                params,
                cfg.alpha,
                cfg.temperature,
                epochs=cfg.student.train.epochs,
                teacher_model=teacher,
                input_shape=(spec.shape[0], cfg.student.input_size, cfg.student.input_size),
                teacher_input_size=cfg.teacher.input_size,
                num_data=2,  # memory banks sized for two images: only the shapes matter here
                train_labels=torch.tensor([0, 1 % spec.num_classes]),
            )
        except ValueError as err:
            raise ConfigError(
                f"params.yaml: {err} ({where}; teacher {cfg.teacher.model}, student "
                f"{cfg.student.model})"
            ) from None


def distill_hint(method: str, distiller) -> str:
    """The params.yaml knobs a diverging ``distill@<method>`` most likely needs changed."""
    own = "temperature" in distiller.params
    temp = f"method_params.{method}.temperature" if own else "temperature"
    return f"student.train.lr, alpha or {temp} (now {distiller.term_temperature:g})"


def distill(cfg: Config, method: str) -> None:
    """Train the student with ``method``; save weights, metrics and per-term loss curves."""
    t0 = time.time()
    if method not in cfg.methods:
        raise ValueError(f"method {method!r} is not in params.yaml methods {list(cfg.methods)}")
    mc = cfg.student
    device = start_training(cfg, "distill")
    data = load_data(cfg)
    student = make_model(mc, data.spec, device)
    distiller, source = build_distiller(cfg, method, data, student, device)
    print(
        f"[distill@{method}] {mc.model} student from {source}; alpha {cfg.alpha}, "
        f"T {distiller.term_temperature}, {mc.train.epochs} epochs on {device}",
        flush=True,
    )
    # Methods with an initialisation phase (init_epochs) train that many epochs more.
    train_cfg = get_method(method).train_config(mc.train, cfg.method_params[method])
    train, val, test = loaders(cfg, data, mc, device)
    # Every param that shapes this run: a checkpoint written under others is never resumed.
    run_id = fingerprint(
        [method, cfg.seed, cfg.alpha, cfg.temperature, cfg.data.__dict__, mc.__dict__]
        + [cfg.method_params[method], str(device)]
    )
    ckpt = paths.CHECKPOINTS / f"distill_{method}.pt"
    log = EpochLog(f"distill/{method}", method)
    result = fit_logged(
        log,
        distiller,
        train,
        val,
        train_cfg,
        f"distill@{method}",
        ckpt,
        run_id,
        test_loader=test,
        divergence=divergence_rule(data.spec, distill_hint(method, distiller), distiller),
        **_parallel(cfg),
    )
    end_training()
    metrics = evaluate_final_and_best(distiller, result, test)
    metrics.update(
        method=method,
        alpha=cfg.alpha,
        temperature=distiller.term_temperature,
        params=count_params(student),
        train_time_s=round(result.wall_time_s, 2),
    )
    extra = distiller.extra_state()
    save_model(paths.distilled(method), student, mc, data.spec, extra_state=extra)
    finish_training_stage(f"distill/{method}", log, result, metrics, t0)
    print(f"[distill@{method}] test accuracy {metrics['test_acc']:.2f}%", flush=True)
