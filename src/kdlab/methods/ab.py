"""``ab``: Activation-boundary transfer (Heo et al. 2019).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    ab_loss,
    match_spatial,
)
from kdlab.methods import register
from kdlab.methods.features import ConvReg, FeatureDistiller, InitPhase


@register
class AB(InitPhase, FeatureDistiller):
    """Activation-boundary transfer (Heo et al. 2019): per stage pair a connector maps the
    student's map to the teacher's shape (RepDistiller ``models/util.py`` ``Connector``, line
    65: none where channels and size are equal, else ``ConvReg`` without ReLU: a conv with
    bias + BN); its pre-activations are pushed to the
    teacher's side of each neuron's activation boundary with ``margin``. Deeper pairs weigh more
    (``2^(i - k + 1)``, as the reference).

    Taps: RepDistiller (train_student.py, ``preact = opt.distill == 'abound'``) feeds the
    student's *pre-activation* stage outputs to the connectors. A model whose
    ``forward_features`` gives ``"preact_stages"`` (the stage outputs before their final ReLU)
    is tapped there (the zoo's WRNs: each tap through the BN that follows it, as RepDistiller's
    ``wrn.py``); other models give only their ``"stages"``, which are used instead (a
    documented deviation; the sign of a post-ReLU map is still the on/off state of its
    pre-activation). The teacher is tapped the same way (``helper/pretrain.py``: ``preact``
    for both models).

    Reference: RepDistiller scales the summed loss by 3/1000 per sample and uses it only in a
    separate initialisation phase (then plain CE/KD). Here ``ab_weight: 0.003`` carries the
    3/1000 and the term is on throughout; ``init_epochs: n > 0`` reproduces the two phases
    (the AB term alone for n epochs, then CE alone).
    """

    name = "ab"
    description = "(1-alpha) CE + alpha w sum_pairs 2^(i-k+1) hinge^2(connector(F_s), sign F_t)"
    schema = {
        "ab_weight": (float, 0.0, None),
        "margin": (float, 0.0, None),
        "init_epochs": (int, 0, None),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connectors = nn.ModuleList(
            nn.Identity()
            if self.s_shapes[i][:2] == self.t_shapes[j][:2]
            else ConvReg(self.s_shapes[i], self.t_shapes[j], relu=False)
            for i, j in self.pairs
        )

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        k = len(self.pairs)
        # Both sides pre-activation (helper/pretrain.py: preact for student and teacher).
        taps = s.get("preact_stages") or s["stages"]
        t_taps = t.get("preact_stages") or t["stages"]
        total = 0.0
        for n, ((i, j), conn) in enumerate(zip(self.pairs, self.connectors)):
            fs, ft = match_spatial(conn(taps[i]), t_taps[j])
            total = total + 2.0 ** (n - k + 1) * ab_loss(fs, ft, self.params["margin"])
        return {"ab": self.params["ab_weight"] * total}
