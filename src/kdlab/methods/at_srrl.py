"""``at_srrl``: SRRL combined with AT (SRRL Table 10, "AT+Ours").

It adds AT's term to SRRL's, inside the one distillation term that ``alpha`` weighs:
``(1 - alpha) CE + alpha (w_fm L_FM + w_sr L_SR + w_at L_AT)``, with L_AT attention transfer
summed over every stage pair (or the last ``last_pairs``), as ``at``, with ``at``'s parameters.
The paper does not give the weights of the combination: AT's own reference weight (1000) is
the default.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.methods import register
from kdlab.methods.at import AT, at_term
from kdlab.methods.features import last_pairs
from kdlab.methods.srrl import SRRL


@register
class ATSRRL(SRRL):
    """SRRL plus attention transfer summed over the stage pairs (every pair, or the last
    ``last_pairs``, as :class:`~kdlab.methods.at.AT`)."""

    name = "at_srrl"
    description = "SRRL's terms + alpha w_at sum_pairs AT(F_s, F_t)"
    schema = {**SRRL.schema, **AT.schema}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at_pairs = last_pairs(self.pairs, self.params["last_pairs"], self.name)

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        terms = super().distill_terms(s, t, batch, epoch)
        return {**terms, "at": at_term(s, t, self.at_pairs, self.params)}
