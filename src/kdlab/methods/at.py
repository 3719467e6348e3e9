"""``at``: Attention transfer (Zagoruyko & Komodakis 2017).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

import torch

from kdlab.data.pipeline import Batch
from kdlab.losses import at_loss
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller, last_pairs


@register
class AT(FeatureDistiller):
    """Attention transfer (Zagoruyko & Komodakis 2017) summed over the stage pairs: all
    (``last_pairs: 0``, RepDistiller's ``feat_s[1:-1]``) or the last ``n`` (``last_pairs: n``;
    SRRL's appendix: every group of a WRN, the last two of a ResNet).

    Reference: RepDistiller ``-b 1000``, p = 2 -> ``at_weight: 1000``, ``p: 2``.
    """

    name = "at"
    description = "(1-alpha) CE + alpha w sum_pairs ||Q_s/|Q_s| - Q_t/|Q_t|||^2, Q = mean_c |F|^p"
    schema = {
        "at_weight": (float, 0.0, None),
        "p": (float, 1.0, None),
        "last_pairs": (int, 0, None),
    }

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at_pairs = last_pairs(self.pairs, self.params["last_pairs"], self.name)

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        return {"at": at_term(s, t, self.at_pairs, self.params)}


def at_term(s: dict, t: dict, pairs: list, params: dict) -> torch.Tensor:
    """``at_weight`` x attention transfer summed over the stage ``pairs`` (AT's term, also
    :class:`~kdlab.methods.at_srrl.ATSRRL`'s)."""
    p = params["p"]
    p = int(p) if p == int(p) else p
    total = sum(at_loss(s["stages"][i], t["stages"][j], p) for i, j in pairs)
    return params["at_weight"] * total
