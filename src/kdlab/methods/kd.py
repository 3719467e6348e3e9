"""``kd``: Hinton et al.'s vanilla KD from live or cached teacher logits.

:class:`KD` is also the response-distillation base of ``reffakd`` (kdlab.methods.reffakd), which
only swaps the target distribution: one forward for both.
"""

from __future__ import annotations

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import KL_REDUCTIONS, kd_loss, patel_printed_kd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller

# ``reduction`` of the KL term: batchmean (textbook) | mean (nn.KLDivLoss()'s default, the
# official ReffAKD notebooks'; docs/methods.md). Defaults: method_params in presets/default.yaml.
REDUCTION_CHOICE = {"reduction": KL_REDUCTIONS}


# ``form`` of the KD term: textbook (Hinton's T^2 KL) | patel_printed (the code
# printed by Patel & Obeid, not a KL divergence: kdlab.losses.patel_printed_kd_loss).
KD_FORMS = ("textbook", "patel_printed")


@register
class KD(Distiller):
    """Hinton et al.'s KD; ``form: patel_printed`` reproduces Patel & Obeid's printed code
    (``reduction`` does not apply to it: its ``nn.KLDivLoss()`` is ``mean``)."""

    name = "kd"
    needs_teacher = True
    choices = {**REDUCTION_CHOICE, "form": KD_FORMS}
    description = "(1-alpha) CE + alpha T^2 KL(teacher_T || student_T)"

    def distill_term(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The unweighted KD term of this batch."""
        if self.params.get("form") == "patel_printed":  # reffakd has no form
            return patel_printed_kd_loss(logits, self.teacher(batch), self.temperature)
        return kd_loss(logits, self.teacher(batch), self.temperature, self.params["reduction"])

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "kd": self.alpha * self.distill_term(logits, batch),
        }
