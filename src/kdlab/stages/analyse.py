"""``analyse`` stage: how close each trained student is to the teacher on the test set.

For the CE student and every distilled student of ``methods``: KL to the teacher's outputs,
cross-entropy to the labels, the feature distance and the NMI of a k-means clustering of the
features (:mod:`kdlab.analysis`; SRRL Tables 2 and 3). The teacher is the vanilla-KD teacher
of ``teacher:``; its own row holds its NMI and accuracy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from kdlab import paths
from kdlab.analysis import closeness
from kdlab.artifacts import load_data, saved_model_outputs
from kdlab.config import Config
from kdlab.live import write_summary
from kdlab.runtime import start, write_metrics
from kdlab.stages.common import run


def analyse(cfg: Config) -> None:
    """Write ``metrics/analysis.json`` (plain record) and the ``dvc exp show`` summary
    ``metrics/analysis/metrics.json``, both ``{model: {kl_teacher, ce_label, nmi, ...}}`` (the
    record also holds each model's ``test_acc``)."""
    t0 = time.time()
    device = start(cfg, "analyse")
    data = load_data(cfg)
    labels = data.test_labels
    spec = data.spec

    def test_outputs(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
        return saved_model_outputs(path, data.test_images, labels, spec.mean, spec.std, device)

    t_logits, t_feats = test_outputs(paths.TEACHER)
    models = {"teacher": paths.TEACHER, "ce": paths.STUDENT}
    models.update({m: paths.distilled(m) for m in cfg.methods})
    rows = {}
    for name, path in models.items():
        z, h = (t_logits, t_feats) if name == "teacher" else test_outputs(path)
        rows[name] = closeness(z, h, t_logits, t_feats, labels, cfg.seed)
        shown = ", ".join(f"{k} {v:g}" for k, v in rows[name].items())
        print(f"[analyse] {name}: {shown}", flush=True)
    # The summary leaves out test_acc: each model's training stage already reports it under the
    # same name (``kd.test_acc``), and one name in two files makes `dvc exp show` prefix both.
    write_summary(
        "analysis", {m: {k: v for k, v in r.items() if k != "test_acc"} for m, r in rows.items()}
    )
    write_metrics("analysis", {"models": rows, "test_images": len(labels)}, t0)


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.analyse``."""
    return run("kdlab.stages.analyse", "analyse", argv, lambda cfg, args: analyse(cfg))


if __name__ == "__main__":
    sys.exit(main())
