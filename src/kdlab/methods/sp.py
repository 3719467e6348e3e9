"""``sp``: Similarity-preserving KD (Tung & Mori 2019).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    sp_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class SP(FeatureDistiller):
    """Similarity-preserving KD (Tung & Mori 2019) on the last stage pair.

    Reference: RepDistiller ``-b 3000`` -> ``sp_weight: 3000``.
    """

    name = "sp"
    description = "(1-alpha) CE + alpha w ||norm(F_s F_s^T) - norm(F_t F_t^T)||_F^2 / b^2"
    schema = {"sp_weight": (float, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        i, j = self.pairs[-1]
        return {"sp": self.params["sp_weight"] * sp_loss(s["stages"][i], t["stages"][j])}
