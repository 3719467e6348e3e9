"""``reffakd``: distillation from the autoencoder soft-label matrix; no teacher at all.

The forward is :class:`~kdlab.methods.kd.KD`'s; only the target distribution differs.
"""

from __future__ import annotations

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import soft_target_kd_loss
from kdlab.methods import register
from kdlab.methods.kd import KD, REDUCTION_CHOICE


@register
class ReffAKD(KD):
    name = "reffakd"
    needs_teacher = False
    needs_soft_labels = True
    choices = REDUCTION_CHOICE  # KD's printed-code ``form`` is not a ReffAKD option
    description = "(1-alpha) CE + alpha T^2 KL(soft_labels[y] || student_T) (ReffAKD eq. 2)"

    def distill_term(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        targets = self.soft_labels[batch.y]
        return soft_target_kd_loss(logits, targets, self.temperature, self.params["reduction"])
