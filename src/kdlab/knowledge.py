"""What a method learns from, loaded from the pipeline's files, and the method's Distiller
built around a student with it: cached teacher logits, the soft-label matrix, a live teacher
(its logits or its features). Shared by ``distill@<method>`` and ``distill_grid``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from kdlab import paths
from kdlab.artifacts import Data, load_model
from kdlab.io import torch_load
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits
from kdlab.softlabels import read_soft_labels

if TYPE_CHECKING:
    from kdlab.config import Config, ModelConfig


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
