"""``cc``: Correlation congruence (Peng et al. 2019).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    cc_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class CC(FeatureDistiller):
    """Correlation congruence (Peng et al. 2019), the paper's form: the batch correlation
    matrices of the L2-normalised penultimate features under a Gaussian RBF kernel (Taylor
    expansion to ``order``, ``gamma``), MSE.

    Weights: the paper's gamma 0.4 and order 2. RepDistiller's ``-b 0.02`` belongs to its
    different element-wise variant on 128-d embeddings and does not transfer; ``cc_weight: 1``
    is our (untuned) default.
    """

    name = "cc"
    description = "(1-alpha) CE + alpha w ||C(f_s) - C(f_t)||^2, C = Taylor-RBF correlation"
    schema = {
        "cc_weight": (1.0, 0.0, None),
        "gamma": (0.4, 0.0, None),
        "order": (2.0, 0.0, 10.0),
    }

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params
        loss = cc_loss(s["pooled"], t["pooled"], p["gamma"], int(p["order"]))
        return {"cc": p["cc_weight"] * loss}
