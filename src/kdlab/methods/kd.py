"""``kd``: Hinton et al.'s vanilla KD from live or cached teacher logits."""

from __future__ import annotations

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import REDUCTIONS, kd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller


@register
class KD(Distiller):
    """Response KD; subclasses change only where the soft targets come from."""

    name = "kd"
    needs_teacher = True
    # batchmean: the textbook KL; mean: nn.KLDivLoss()'s default, as the ReffAKD notebooks use.
    choices = {"reduction": REDUCTIONS}
    description = "(1-alpha) CE + alpha T^2 KL(teacher_T || student_T)"

    def distill_term(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The unweighted distillation term of this batch."""
        return kd_loss(logits, self.teacher(batch), self.temperature, self.params["reduction"])

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "kd": self.alpha * self.distill_term(logits, batch),
        }
