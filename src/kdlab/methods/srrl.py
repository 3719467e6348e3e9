"""``srrl``: Softmax Regression Representation Learning (Yang et al., ICLR 2021; seed 003).

``L = (1 - alpha) CE + alpha (fm_weight L_FM + sr_weight L_SR)``:

- a connector (1x1 conv + BN + ReLU) maps the student's penultimate feature ``h_S`` to the
  teacher's width. It is applied to the pooled feature (a 1x1 conv on the 1x1 pooled map, as
  the public re-implementations do), so it also serves students whose penultimate feature is
  not a pooled map (LeNet5);
- ``L_FM = MSE(connector(h_S), h_T)`` (eq. 3);
- ``L_SR`` compares the teacher's frozen classifier on the student feature,
  ``q = W_T connector(h_S)``, with the teacher's logits ``p = W_T h_T``: ``sr_loss: l2`` is
  ``MSE(q, p)`` (eq. 7, the paper's choice), ``kl`` is ``T^2 KL(softmax(p/T) || softmax(q/T))``
  with the project's temperature, ``ce`` is ``CE(q, y)`` with the hard label (supplementary
  Table 9).

Ablations (seed 003 Table 1, first three rows): ``sr_weight: 0`` is L_FM alone,
``fm_weight: 0`` is L_SR alone. Mapping of the paper's eq. 8 ``CE + a L_FM + b L_SR``:
alpha = 0.5, ``fm_weight = a``, ``sr_weight = b`` (up to a global factor 1/2). The paper does not
print a and b; ``fm_weight: 1``, ``sr_weight: 2`` are our defaults (L_SR is the stronger term
in its Table 1). Not implemented: distillation at earlier layers (Table 1, conv2/conv3 rows,
which need AdaIN). Tables 2-3 are measurements, not training variants.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import kd_loss, logit_l2_loss
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class SRRL(FeatureDistiller):
    """SRRL: feature matching plus softmax regression through the frozen teacher classifier."""

    name = "srrl"
    description = "(1-alpha) CE + alpha (w_fm ||c(h_s) - h_t||^2 + w_sr L_SR(W_t c(h_s), W_t h_t))"
    teacher_modules = ("classifier",)
    schema = {"fm_weight": (1.0, 0.0, None), "sr_weight": (2.0, 0.0, None)}
    choices = {"sr_loss": ("l2", "kl", "ce")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connector = nn.Sequential(
            nn.Linear(self.s_dim, self.t_dim, bias=False),
            nn.BatchNorm1d(self.t_dim),
            nn.ReLU(inplace=True),
        )

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params
        h = self.connector(s["pooled"])
        fm = F.mse_loss(h, t["pooled"])
        q = self.teacher_model.classifier(h)
        if p["sr_loss"] == "l2":
            sr = logit_l2_loss(q, t["logits"])
        elif p["sr_loss"] == "kl":
            sr = kd_loss(q, t["logits"], self.temperature)
        else:
            sr = F.cross_entropy(q, batch.y)
        return {"fm": p["fm_weight"] * fm, "sr": p["sr_weight"] * sr}
