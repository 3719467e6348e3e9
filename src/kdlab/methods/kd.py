"""``kd``: Hinton et al.'s vanilla KD from live or cached teacher logits.

:class:`KD` is also the response-distillation base of ``reffakd`` (kdlab.methods.reffakd), which
only swaps the target distribution: one forward for both.
"""

from __future__ import annotations

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import KL_REDUCTIONS, kd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller

# ``reduction`` of the KL term: batchmean (the first, the default) | mean (nn.KLDivLoss()'s
# default, the official ReffAKD notebooks'; docs/methods.md).
REDUCTION_CHOICE = {"reduction": KL_REDUCTIONS}


@register
class KD(Distiller):
    name = "kd"
    needs_teacher = True
    choices = REDUCTION_CHOICE
    description = "(1-alpha) CE + alpha T^2 KL(teacher_T || student_T)"

    def distill_term(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The unweighted KD term of this batch."""
        return kd_loss(logits, self.teacher(batch), self.temperature, self.params["reduction"])

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "kd": self.alpha * self.distill_term(logits, batch),
        }
