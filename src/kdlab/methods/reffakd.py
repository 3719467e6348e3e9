"""``reffakd``: distillation from the autoencoder soft-label matrix; no teacher at all."""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import soft_target_kd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller


@register
class ReffAKD(Distiller):
    name = "reffakd"
    needs_soft_labels = True
    description = "(1-alpha) CE + alpha T^2 KL(soft_labels[y] || student_T) (seed 000 eq. 2)"

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        targets = self.soft_labels[batch.y]
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "kd": self.alpha * soft_target_kd_loss(logits, targets, self.temperature),
        }
