"""``soft_labels`` stage: CAE embeddings -> soft-label matrix (+ gamma search) and heatmap."""

from __future__ import annotations

import csv
import io
import time

import torch

from kdlab import paths
from kdlab.config import Config
from kdlab.data.pipeline import TensorLoader
from kdlab.io import write_text
from kdlab.live import write_summary
from kdlab.plots import heatmap_png
from kdlab.schema import AugmentConfig
from kdlab.softlabels import (
    check_soft_labels,
    class_similarity,
    sample_per_class,
    search_gamma,
    soft_labels_from_similarity,
)
from kdlab.stages.common import load_data, load_model, start, write_metrics


def write_matrix(matrix: torch.Tensor, names: list[str], path=paths.SOFT_LABELS) -> None:
    """The matrix as CSV: a header of class names, one row per class (its soft label)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", *names])
    for i, name in enumerate(names):
        w.writerow([name, *(f"{float(v):.8f}" for v in matrix[i])])
    write_text(path, buf.getvalue())


def embedding_loader(
    data, chosen: torch.Tensor, blob: dict, augment: bool, batch_size: int, seed: int, device
) -> TensorLoader:
    """The sampled images as the CAE is shown them: normalised if it was trained normalised
    and, with ``augment``, through its training augmentation (one view each, drawn from the
    loader's epoch-0 stream of ``seed``), as the notebooks embed their training-loader images.
    """
    aug = AugmentConfig(**blob["augment"]) if augment and blob.get("augment") else None
    return TensorLoader(
        data.images,
        data.labels,
        chosen,
        batch_size,
        blob["input_size"],
        data.spec.mean,
        data.spec.std,
        augment=aug,
        seed=seed,
        normalize=bool(blob.get("normalize", False)),
        device=device,
    )


def build_soft_labels(cfg: Config) -> None:
    """Embed ``samples_per_class`` seeded training images per class (augmented and normalised
    as the CAE trained, see ``soft_labels.augment``), build the matrix, pick gamma (or use the
    given one) and save matrix, metrics and heatmap."""
    t0 = time.time()
    sl = cfg.soft_labels
    device = start(cfg, "soft_labels")
    data = load_data(cfg)
    cae, blob = load_model(paths.CAE, device)
    c = data.spec.num_classes
    chosen = sample_per_class(data.labels, data.split.train, sl.samples_per_class, c, cfg.seed)
    loader = embedding_loader(data, chosen, blob, sl.augment, sl.batch_size, cfg.seed, device)
    with torch.no_grad():
        embeddings = torch.cat([cae.encode(b.x).cpu() for b in loader])
    labels = data.labels[chosen]
    z = class_similarity(embeddings, labels, c)
    gamma = search_gamma(z, sl.gamma_step, sl.gamma_max) if sl.gamma is None else sl.gamma
    matrix = soft_labels_from_similarity(z, gamma)
    names = list(data.spec.class_names) or [str(i) for i in range(c)]
    # A producer refuses what its consumers would refuse (a NaN CAE, a gamma that breaks the
    # rows): nothing is written, so DVC never caches and records it.
    check_soft_labels(matrix, c, f"soft_labels (gamma {gamma:g}, from {paths.CAE})")
    write_matrix(matrix, names)
    heatmap_png(
        matrix.numpy(),
        names,
        paths.PNG / "soft_labels.png",
        f"ReffAKD soft labels ({cfg.data.name}, gamma={gamma:g})",
    )
    diag_ok = int((matrix.argmax(1) == torch.arange(c)).sum())
    entropy = float(-(matrix * matrix.clamp_min(1e-12).log()).sum(1).mean())
    write_metrics(
        "soft_labels",
        {
            "gamma": gamma,
            "gamma_searched": sl.gamma is None,
            "rows_own_class_max": diag_ok,
            "num_classes": c,
            "embedding_dim": int(embeddings.shape[1]),
            "samples": len(chosen),
            "mean_diagonal_prob": round(float(matrix.diagonal().mean()), 6),
            "mean_row_entropy": round(entropy, 6),
            "embedded_views": "augmented" if loader.augment is not None else "plain",
            "embedded_normalized": loader.normalize,
        },
        t0,
    )
    write_summary("soft_labels", {"soft_labels": {"gamma": gamma, "rows_own_class_max": diag_ok}})
    print(
        f"[soft_labels] gamma {gamma:g} ({'searched' if sl.gamma is None else 'given'}); "
        f"{diag_ok}/{c} rows peak on their own class -> {paths.SOFT_LABELS}",
        flush=True,
    )


def read_soft_labels(num_classes: int, path=paths.SOFT_LABELS) -> torch.Tensor:
    """Read and validate the matrix written by :func:`build_soft_labels`."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro soft_labels` first")
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    try:
        values = [[float(v) for v in r[1:]] for r in rows]
        matrix = torch.tensor(values, dtype=torch.float32)
    except ValueError as err:  # a non-number, or rows of different lengths
        msg = f"{path}: not a numeric matrix ({err}); rerun `dvc repro -f soft_labels`"
        raise ValueError(msg) from None
    return check_soft_labels(matrix, num_classes, str(path))
