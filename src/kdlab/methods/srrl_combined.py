"""``kd_srrl`` and ``at_srrl``: SRRL combined with KD or AT (SRRL Table 10, "KD+Ours", "AT+Ours").

Each adds the other method's term to SRRL's, inside the one distillation term that ``alpha``
weighs: ``(1 - alpha) CE + alpha (w_fm L_FM + w_sr L_SR + w L_other)``. The KD term uses the
teacher logits of the same live teacher pass that SRRL makes (T^2 KL at the run's temperature);
the AT term sums attention transfer over every stage pair, as ``at``. The paper does not give
the weights of the combination: KD's and AT's own reference weights (1 and 1000) are defaults.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import KL_REDUCTIONS, at_loss, kd_loss
from kdlab.methods import register
from kdlab.methods.features import last_pairs
from kdlab.methods.srrl import SRRL


@register
class KDSRRL(SRRL):
    """SRRL plus vanilla KD from the live teacher's logits."""

    name = "kd_srrl"
    description = "SRRL's terms + alpha w_kd T^2 KL(teacher_T || student_T)"
    schema = {**SRRL.schema, "kd_weight": (1.0, 0.0, None)}
    choices = {**SRRL.choices, "reduction": KL_REDUCTIONS}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        terms = super().distill_terms(s, t, batch, epoch)
        kd = kd_loss(s["logits"], t["logits"], self.temperature, self.params["reduction"])
        return {**terms, "kd": self.params["kd_weight"] * kd}


@register
class ATSRRL(SRRL):
    """SRRL plus attention transfer summed over the stage pairs (every pair, or the last
    ``last_pairs``, as :class:`~kdlab.methods.at.AT`)."""

    name = "at_srrl"
    description = "SRRL's terms + alpha w_at sum_pairs AT(F_s, F_t)"
    schema = {
        **SRRL.schema,
        "at_weight": (1000.0, 0.0, None),
        "p": (2.0, 1.0, None),
        "last_pairs": (0.0, 0.0, None),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at_pairs = last_pairs(self.pairs, self.params["last_pairs"], self.name)

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        terms = super().distill_terms(s, t, batch, epoch)
        p = self.params["p"]
        p = int(p) if p == int(p) else p
        at = sum(at_loss(s["stages"][i], t["stages"][j], p) for i, j in self.at_pairs)
        return {**terms, "at": self.params["at_weight"] * at}
