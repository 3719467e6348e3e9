"""Training objectives that are not distillation: the autoencoder's reconstruction."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch


class Reconstruction(nn.Module):
    """Mean squared reconstruction error of an autoencoder: the target is its own input batch,
    raw [0, 1] or normalised as the loader made it (ReffAKD's section 3.2; the official notebooks
    normalise both)."""

    def __init__(self, autoencoder: nn.Module) -> None:
        super().__init__()
        self.autoencoder = autoencoder

    def forward_train(self, batch: Batch, epoch: int):
        recon = self.autoencoder(batch.x)
        return recon, {"mse": F.mse_loss(recon, batch.x)}

    @torch.no_grad()
    def evaluate(self, loader) -> dict[str, float]:
        total, n = 0.0, 0
        for batch in loader:
            total += float(F.mse_loss(self.autoencoder(batch.x), batch.x, reduction="sum"))
            n += batch.x.numel()
        return {"val_mse": total / max(n, 1)}
