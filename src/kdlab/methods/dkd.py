"""``dkd``: Decoupled KD (Zhao et al. 2022), mdistiller's DKD.py.

The DKD term is ``tckd_weight * TCKD + nckd_weight * NCKD`` ramped in linearly over
``warmup_epochs`` (mdistiller's defaults: 1, 8, 20); the project's ``alpha`` then weighs the
whole term against cross-entropy, like every other method. The term scales with T^2, so DKD
takes its own ``temperature`` (mdistiller's 4), not the global one of KD/ReffAKD (20 in the
default preset, at which DKD's term grows ~25x and the student diverges to chance).
:class:`DKD` is also the base of ``reffakd_dkd`` (kdlab.methods.reffakd_dkd), which only swaps
the target distribution.
"""

from __future__ import annotations

import math

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import dkd_loss
from kdlab.methods import register
from kdlab.methods.base import Distiller
from kdlab.methods.kd import REDUCTION_CHOICE


@register
class DKD(Distiller):
    name = "dkd"
    needs_teacher = True
    schema = {
        "tckd_weight": (float, 0.0, None),
        "nckd_weight": (float, 0.0, None),
        "warmup_epochs": (int, 0, None),
        "temperature": (float, 0.01, None),  # mdistiller's DKD.T (cfg.DKD.T = 4.0)
    }
    choices = REDUCTION_CHOICE  # batchmean: mdistiller's (kl_div sum / batch)
    description = "(1-alpha) CE + alpha warmup (a TCKD + b NCKD) from teacher logits"

    def warmup(self, epoch: int) -> float:
        """mdistiller's ``min(epoch / warmup, 1)`` with its 1-based epochs."""
        w = self.params["warmup_epochs"]
        return 1.0 if w <= 0 else min((epoch + 1) / w, 1.0)

    @property
    def warmup_epochs(self) -> int:
        return math.ceil(self.params["warmup_epochs"])

    @property
    def term_temperature(self) -> float:
        return self.params["temperature"]

    def distill_term(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        """The unweighted, un-ramped DKD term of this batch."""
        p = self.params
        return dkd_loss(
            logits,
            self.teacher(batch),
            batch.y,
            p["tckd_weight"],
            p["nckd_weight"],
            p["temperature"],
            p["reduction"],
        )

    def forward_train(self, batch: Batch, epoch: int):
        logits = self.student(batch.x)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "dkd": self.alpha * self.warmup(epoch) * self.distill_term(logits, batch),
        }
