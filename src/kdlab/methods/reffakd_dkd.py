"""``reffakd_dkd``: DKD with the autoencoder soft labels in place of teacher logits
(ReffAKD's Table 8). The forward, the warm-up and the method's own ``temperature`` are
:class:`~kdlab.methods.dkd.DKD`'s."""

from __future__ import annotations

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import soft_target_dkd_loss
from kdlab.methods import register
from kdlab.methods.dkd import DKD


@register
class ReffAKDDKD(DKD):
    name = "reffakd_dkd"
    needs_teacher = False
    needs_soft_labels = True
    description = "DKD with the autoencoder soft labels (untempered) in place of the teacher"

    def distill_term(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        p = self.params
        return soft_target_dkd_loss(
            logits,
            self.soft_labels[batch.y],
            batch.y,
            p["tckd_weight"],
            p["nckd_weight"],
            p["temperature"],
            p["reduction"],
        )
