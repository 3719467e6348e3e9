"""``kd_l2``: the L2 response loss of the SimKD study (paper 001): MSE between the student's and
the teacher's logits in place of KD's tempered KL (live or cached teacher logits, like ``kd``).
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import logit_l2_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller


@register
class KDL2(Distiller):
    """``(1 - alpha) CE + alpha l2_weight MSE(z_s, z_t)``; the temperature is not used."""

    name = "kd_l2"
    needs_teacher = True
    description = "(1-alpha) CE + alpha w ||z_s - z_t||^2 / (N K) (logit MSE; SimKD study)"
    schema = {"l2_weight": (float, 0.0, None)}

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        t_logits = self.teacher(batch)
        w = self.params["l2_weight"]
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "kd": self.alpha * w * logit_l2_loss(logits, t_logits),
        }
