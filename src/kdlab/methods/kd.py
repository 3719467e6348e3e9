"""``kd``: Hinton et al.'s vanilla KD from live or cached teacher logits."""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import kd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller


@register
class KD(Distiller):
    name = "kd"
    needs_teacher = True
    description = "(1-alpha) CE + alpha T^2 KL(teacher_T || student_T)"

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        t_logits = self.teacher(batch)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "kd": self.alpha * kd_loss(logits, t_logits, self.temperature),
        }
