"""``kdsvd``: KD-SVD (Lee et al. 2018).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    kdsvd_loss,
)
from kdlab.methods import register
from kdlab.methods.features import ConnectedPairs


@register
class KDSVD(ConnectedPairs):
    """KD-SVD (Lee et al. 2018): top-k singular vectors of each stage pair's maps (student maps
    mapped to the teacher's channels by 1x1 conv + BN connectors), related across consecutive
    stages by an RBF; the student's relations are pulled to the teacher's.

    Reference: mdistiller's KDSVD, K = 1, feature weight 1 -> ``kdsvd_weight: 1``, ``k: 1``.
    """

    name = "kdsvd"
    description = "(1-alpha) CE + alpha w sum_i ||RBF(V_s^i, V_s^{i-1}) - RBF(V_t^i, V_t^{i-1})||^2"
    schema = {"kdsvd_weight": (float, 0.0, None), "k": (int, 1, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        fs, ft = self.connected_stages(s, t)
        loss = kdsvd_loss(fs, ft, int(self.params["k"]))
        return {"kdsvd": self.params["kdsvd_weight"] * loss}
