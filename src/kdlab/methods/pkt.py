"""``pkt``: Probabilistic knowledge transfer (Passalis & Tefas 2018).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    pkt_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class PKT(FeatureDistiller):
    """Probabilistic knowledge transfer (Passalis & Tefas 2018) on the penultimate features.

    Reference: RepDistiller ``-b 30000`` -> ``pkt_weight: 30000``.
    """

    name = "pkt"
    description = "(1-alpha) CE + alpha w KL(P_t || P_s), P = normalised cosine affinities"
    schema = {"pkt_weight": (float, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        return {"pkt": self.params["pkt_weight"] * pkt_loss(s["pooled"], t["pooled"])}
