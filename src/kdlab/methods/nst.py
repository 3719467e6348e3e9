"""``nst``: Neuron selectivity transfer (Huang & Wang 2017).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    nst_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class NST(FeatureDistiller):
    """Neuron selectivity transfer (Huang & Wang 2017): polynomial-kernel MMD between the
    channel activation maps, summed over all stage pairs.

    Reference: RepDistiller ``-b 50`` -> ``nst_weight: 50``.
    """

    name = "nst"
    description = "(1-alpha) CE + alpha w sum_pairs MMD^2_poly(F_s, F_t)"
    schema = {"nst_weight": (float, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        total = sum(nst_loss(s["stages"][i], t["stages"][j]) for i, j in self.pairs)
        return {"nst": self.params["nst_weight"] * total}
