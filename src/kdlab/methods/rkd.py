"""``rkd``: Relational KD (Park et al. 2019).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    rkd_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class RKD(FeatureDistiller):
    """Relational KD (Park et al. 2019): distance and angle relations of the penultimate
    features (the existing :func:`kdlab.losses.rkd_loss`).

    Reference: RepDistiller ``-b 1`` with distance 25 and angle 50 ->
    ``distance_weight: 25``, ``angle_weight: 50``.
    """

    name = "rkd"
    description = "(1-alpha) CE + alpha (w_d Huber(psi_D) + w_a Huber(psi_A))"
    schema = {"distance_weight": (float, 0.0, None), "angle_weight": (float, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params
        loss = rkd_loss(s["pooled"], t["pooled"], p["distance_weight"], p["angle_weight"])
        return {"rkd": loss}
