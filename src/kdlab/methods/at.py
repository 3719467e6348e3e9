"""``at``: Attention transfer (Zagoruyko & Komodakis 2017).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    at_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class AT(FeatureDistiller):
    """Attention transfer (Zagoruyko & Komodakis 2017) summed over all stage pairs.

    Reference: RepDistiller ``-b 1000``, p = 2 -> ``at_weight: 1000``, ``p: 2``.
    """

    name = "at"
    description = "(1-alpha) CE + alpha w sum_pairs ||Q_s/|Q_s| - Q_t/|Q_t|||^2, Q = mean_c |F|^p"
    schema = {"at_weight": (1000.0, 0.0, None), "p": (2.0, 1.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params["p"]
        p = int(p) if p == int(p) else p
        total = sum(at_loss(s["stages"][i], t["stages"][j], p) for i, j in self.pairs)
        return {"at": self.params["at_weight"] * total}
