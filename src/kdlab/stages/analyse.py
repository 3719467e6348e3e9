"""``analyse`` stage: how close each trained student is to the teacher on the test set.

For the CE student and every distilled student of ``methods``: KL to the teacher's outputs,
cross-entropy to the labels, the feature distance and the NMI of a k-means clustering of the
features (:mod:`kdlab.analysis`; SRRL Tables 2 and 3). The teacher is the vanilla-KD teacher
of ``teacher:``; its own row holds its NMI and accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from kdlab import paths
from kdlab.analysis import closeness
from kdlab.config import Config
from kdlab.data.pipeline import TensorLoader
from kdlab.io import write_json
from kdlab.stages.common import EVAL_BATCH_SIZE, Data, load_data, load_model, start, write_metrics


def test_outputs(path: Path, data: Data, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and pooled penultimate features of the saved model ``path`` on the test set,
    validated (the expected shape, every value finite)."""
    model, blob = load_model(path, device)
    cl = bool(blob.get("channels_last"))  # as the stage that trained it evaluated it
    if cl:
        model = model.to(memory_format=torch.channels_last)
    loader = TensorLoader(
        data.test_images,
        data.test_labels,
        torch.arange(len(data.test_labels)),
        EVAL_BATCH_SIZE,
        blob["input_size"],
        data.spec.mean,
        data.spec.std,
        device=device,
        channels_last=cl,
    )
    logits, feats = [], []
    with torch.no_grad():
        for b in loader:
            out = model.forward_features(b.x)
            logits.append(out["logits"].float().cpu())
            feats.append(out["pooled"].float().cpu())
    z, h = torch.cat(logits), torch.cat(feats)
    n, c = len(data.test_labels), data.spec.num_classes
    if z.shape != (n, c) or h.shape[0] != n or not (z.isfinite().all() and h.isfinite().all()):
        raise ValueError(
            f"{path}: test outputs of shape {tuple(z.shape)} / features {tuple(h.shape)} "
            f"(expected ({n}, {c}) and {n} rows), all finite: "
            f"{bool(z.isfinite().all() and h.isfinite().all())}; retrain it"
        )
    return z, h


def analyse(cfg: Config) -> None:
    """Write ``metrics/analysis.json`` (plain record) and the ``dvc exp show`` summary
    ``metrics/analysis/metrics.json``, both ``{model: {kl_teacher, ce_label, nmi, ...}}``."""
    t0 = time.time()
    device = start(cfg, "analyse")
    data = load_data(cfg)
    labels = data.test_labels
    t_logits, t_feats = test_outputs(paths.TEACHER, data, device)
    models = {"teacher": paths.TEACHER, "ce": paths.STUDENT}
    models.update({m: paths.distilled(m) for m in cfg.methods})
    rows = {}
    for name, path in models.items():
        z, h = (t_logits, t_feats) if name == "teacher" else test_outputs(path, data, device)
        rows[name] = closeness(z, h, t_logits, t_feats, labels, cfg.seed)
        shown = ", ".join(f"{k} {v:g}" for k, v in rows[name].items())
        print(f"[analyse] {name}: {shown}", flush=True)
    write_json(paths.summary("analysis"), rows)
    write_metrics("analysis", {"models": rows, "test_images": len(labels)}, t0)
