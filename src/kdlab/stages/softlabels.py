"""``soft_labels`` stage: CAE embeddings -> soft-label matrix (+ gamma search) and heatmap."""

from __future__ import annotations

import sys
import time

import torch

from kdlab import paths
from kdlab.artifacts import load_data, load_model
from kdlab.config import Config
from kdlab.data.pipeline import TensorLoader
from kdlab.live import write_summary
from kdlab.plots import heatmap_png
from kdlab.runtime import start, write_metrics
from kdlab.schema import AugmentConfig
from kdlab.softlabels import (
    check_soft_labels,
    class_similarity,
    sample_per_class,
    search_gamma,
    soft_labels_from_similarity,
    write_matrix,
)
from kdlab.stages.common import run


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


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.softlabels`` (the soft_labels stage)."""
    return run(
        "kdlab.stages.softlabels", "soft-labels", argv, lambda cfg, a: build_soft_labels(cfg)
    )


if __name__ == "__main__":
    sys.exit(main())
