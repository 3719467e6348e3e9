"""``kd_srrl``: SRRL combined with KD (SRRL Table 10, "KD+Ours").

It adds KD's term to SRRL's, inside the one distillation term that ``alpha`` weighs:
``(1 - alpha) CE + alpha (w_fm L_FM + w_sr L_SR + w_kd L_KD)``. The KD term uses the teacher
logits of the same live teacher pass that SRRL makes (T^2 KL at the run's temperature). The
paper does not give the weights of the combination: KD's own reference weight (1) is the
default.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import KL_REDUCTIONS, kd_loss
from kdlab.methods import register
from kdlab.methods.srrl import SRRL


@register
class KDSRRL(SRRL):
    """SRRL plus vanilla KD from the live teacher's logits."""

    name = "kd_srrl"
    description = "SRRL's terms + alpha w_kd T^2 KL(teacher_T || student_T)"
    schema = {**SRRL.schema, "kd_weight": (float, 0.0, None)}
    choices = {**SRRL.choices, "reduction": KL_REDUCTIONS}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        terms = super().distill_terms(s, t, batch, epoch)
        kd = kd_loss(s["logits"], t["logits"], self.temperature, self.params["reduction"])
        return {**terms, "kd": self.params["kd_weight"] * kd}
