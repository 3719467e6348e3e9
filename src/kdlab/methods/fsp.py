"""``fsp``: Flow of solution procedure (Yim et al. 2017).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    fsp_loss,
)
from kdlab.methods import register
from kdlab.methods.features import ConnectedPairs, InitPhase, channel_connector


@register
class FSP(InitPhase, ConnectedPairs):
    """Flow of solution procedure (Yim et al. 2017): FSP matrices between consecutive maps of
    ``[stem, stage pairs...]`` (RepDistiller ``train_student.py`` line 255, ``feat[:-1]``: the
    stem's map first, where both models give a ``stem`` tap), MSE. The reference requires equal
    channel counts and has no connectors; where they differ, a 1x1 conv + BN connector maps the
    student's map to the teacher's channels.

    Reference: RepDistiller uses FSP only in a separate initialisation phase; ``fsp_weight: 1``
    (the paper's equal per-pair weights) with the term on throughout, or ``init_epochs: n``
    for the two phases (the FSP term alone for n epochs, then CE alone).
    """

    name = "fsp"
    description = "(1-alpha) CE + alpha w sum_i ||G_s(i, i+1) - G_t(i, i+1)||^2"
    schema = {"fsp_weight": (float, 0.0, None), "init_epochs": (int, 0, None)}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stem_connector = (
            channel_connector(self.stem_shapes[0][0], self.stem_shapes[1][0])
            if self.stem_shapes
            else None
        )

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        fs, ft = self.connected_stages(s, t)
        if self.stem_connector is not None:
            fs, ft = [self.stem_connector(s["stem"]), *fs], [t["stem"], *ft]
        total = sum(fsp_loss(fs[n], fs[n + 1], ft[n], ft[n + 1]) for n in range(len(fs) - 1))
        return {"fsp": self.params["fsp_weight"] * total}
