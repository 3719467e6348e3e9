"""``cc``: Correlation congruence (Peng et al. 2019).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import cc_loss, cc_repdistiller_loss
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class CC(FeatureDistiller):
    """Correlation congruence (Peng et al. 2019).

    ``form: paper`` (default): the batch correlation matrices of the L2-normalised penultimate
    features under a Gaussian RBF kernel (Taylor expansion to ``order``, ``gamma``), MSE; the
    paper's gamma 0.4 and order 2, ``cc_weight: 1`` our (untuned) default.
    ``form: repdistiller``: RepDistiller's code (``train_student.py`` lines 210-217,
    ``distiller_zoo/CC.py``): both pooled features through a trained linear embedding (with
    bias) to ``feat_dim`` (128), then :func:`kdlab.losses.cc_repdistiller_loss`; its weight is
    ``-b 0.02`` (the srrl_crd preset). ``gamma``/``order`` apply to the paper form only.
    """

    name = "cc"
    description = "(1-alpha) CE + alpha w ||C(f_s) - C(f_t)||^2, C = Taylor-RBF correlation"
    schema = {
        "cc_weight": (float, 0.0, None),
        "gamma": (float, 0.0, None),
        "order": (int, 0, 10),
        "feat_dim": (int, 1, None),
    }
    choices = {"form": ("paper", "repdistiller")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.params["form"] == "repdistiller":
            dim = int(self.params["feat_dim"])
            self.embed_s = nn.Linear(self.s_dim, dim)
            self.embed_t = nn.Linear(self.t_dim, dim)

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params
        if p["form"] == "repdistiller":
            loss = cc_repdistiller_loss(self.embed_s(s["pooled"]), self.embed_t(t["pooled"]))
        else:
            loss = cc_loss(s["pooled"], t["pooled"], p["gamma"], int(p["order"]))
        return {"cc": p["cc_weight"] * loss}
