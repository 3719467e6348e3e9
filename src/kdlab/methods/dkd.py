"""``dkd`` (Zhao et al. 2022) and ``reffakd_dkd`` (DKD on the soft labels, seed 000 Table 8).

The DKD term is ``tckd_weight * TCKD + nckd_weight * NCKD`` ramped in linearly over
``warmup_epochs`` (mdistiller's defaults: 1, 8, 20); the project's ``alpha`` then weighs the
whole term against cross-entropy, like every other method.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import dkd_loss, soft_target_dkd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller

_SCHEMA = {
    "tckd_weight": (1.0, 0.0, None),
    "nckd_weight": (8.0, 0.0, None),
    "warmup_epochs": (20.0, 0.0, None),
}


class _DKDBase(Distiller):
    schema = _SCHEMA

    def warmup(self, epoch: int) -> float:
        w = self.params["warmup_epochs"]
        return 1.0 if w <= 0 else min((epoch + 1) / w, 1.0)

    def term(self, logits, batch: Batch):
        raise NotImplementedError

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "dkd": self.alpha * self.warmup(epoch) * self.term(logits, batch),
        }


@register
class DKD(_DKDBase):
    name = "dkd"
    needs_teacher = True
    description = "(1-alpha) CE + alpha warmup (a TCKD + b NCKD) from teacher logits"

    def term(self, logits, batch: Batch):
        p = self.params
        return dkd_loss(
            logits,
            self.teacher(batch),
            batch.y,
            p["tckd_weight"],
            p["nckd_weight"],
            self.temperature,
        )


@register
class ReffAKDDKD(_DKDBase):
    name = "reffakd_dkd"
    needs_soft_labels = True
    description = "DKD with the autoencoder soft labels (untempered) in place of the teacher"

    def term(self, logits, batch: Batch):
        p = self.params
        return soft_target_dkd_loss(
            logits,
            self.soft_labels[batch.y],
            batch.y,
            p["tckd_weight"],
            p["nckd_weight"],
            self.temperature,
        )
