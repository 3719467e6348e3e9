"""PNG figures (seaborn) for readers without DVC's HTML plots (which need a CDN)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402

from kdlab.io import save_figure  # noqa: E402


def curve_png(history: list[dict[str, float]], path: Path, title: str) -> Path:
    """Loss and accuracy per epoch, side by side."""
    epochs = [r["epoch"] for r in history]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in [k for k in history[0] if k == "train_loss" or k.startswith("loss_")]:
        ax1.plot(epochs, [r.get(key) for r in history], marker="o", label=key)
    for key in ("val_loss", "val_mse"):
        if key in history[0]:
            ax1.plot(epochs, [r[key] for r in history], marker="s", label=key)
    ax1.set(xlabel="epoch", ylabel="loss", title=f"{title}: losses")
    ax1.legend(fontsize=7)
    for key in ("train_acc", "val_acc"):
        if key in history[0]:
            ax2.plot(epochs, [r[key] for r in history], marker="o", label=key)
    ax2.set(xlabel="epoch", ylabel="accuracy (%)", title=f"{title}: accuracy")
    if ax2.lines:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    out = save_figure(path, fig)
    plt.close(fig)
    return out


def heatmap_png(matrix, labels: list[str], path: Path, title: str) -> Path:
    """The soft-label matrix as an annotated heatmap."""
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.6 * n + 3, 0.5 * n + 2))
    sns.heatmap(
        matrix,
        annot=n <= 12,
        fmt=".3f",
        cmap="viridis",
        xticklabels=labels,
        yticklabels=labels,
        ax=ax,
        cbar_kws={"label": "soft-label probability"},
    )
    ax.set(xlabel="class", ylabel="label", title=title)
    out = save_figure(path, fig)
    plt.close(fig)
    return out
