"""``teacher_logits`` stage: the teacher's logits of every training image, computed once."""

from __future__ import annotations

import sys
import time

import torch

from kdlab import paths
from kdlab.artifacts import EVAL_BATCH_SIZE, load_data, load_model
from kdlab.config import Config
from kdlab.data.pipeline import TensorLoader
from kdlab.io import torch_save
from kdlab.runtime import start
from kdlab.stages.common import run


def teacher_logits(cfg: Config) -> None:
    """Teacher logits of every training image of the split, as is and flipped, computed once.

    Students whose augmentation only flips see exactly these two views, so every
    teacher-based method can look its targets up instead of running the teacher. The tensor
    is indexed by position in the data set; images outside the training split (validation,
    or left out by ``data.subset``) are never looked up and hold NaN.
    """
    t0 = time.time()
    device = start(cfg, "teacher_logits")
    data = load_data(cfg)
    teacher, blob = load_model(paths.TEACHER, device)
    if blob.get("channels_last"):
        teacher = teacher.to(memory_format=torch.channels_last)
    train = data.split.train
    loader = TensorLoader(
        data.images,
        data.labels,
        train,
        EVAL_BATCH_SIZE,
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
    bad = ~torch.isfinite(logits[:, train]).all(dim=-1)
    if bad.any():  # refused here: DVC would cache and record what distill then refuses
        view, pos = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{paths.TEACHER}: non-finite logits for training image {int(train[pos])} (view "
            f"{view}); {paths.TEACHER_LOGITS} not written; retrain the teacher "
            "(`dvc repro -f train_teacher`)"
        )
    torch_save(paths.TEACHER_LOGITS, {"logits": logits, "views": ["identity", "hflip"]})
    acc = float((logits[0, train].argmax(1) == data.labels[train]).float().mean() * 100)
    print(
        f"[teacher_logits] {len(train):,} training images x 2 views in "
        f"{time.time() - t0:.1f}s; teacher accuracy on them {acc:.2f}% (their labels, "
        "noisy ones included)",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.teacher_logits``."""
    return run(
        "kdlab.stages.teacher_logits",
        "teacher-logits",
        argv,
        lambda cfg, args: teacher_logits(cfg),
    )


if __name__ == "__main__":
    sys.exit(main())
