"""``vid``: Variational information distillation (Ahn et al. 2019).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    match_spatial,
    vid_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class VID(FeatureDistiller):
    """Variational information distillation (Ahn et al. 2019) at every stage pair: a mean
    regressor (1x1 conv, ReLU, 1x1, ReLU, 1x1; the teacher's channel count in the middle) and a
    learned per-channel variance ``softplus(log_scale) + 1e-5`` initialised to ``init_var``.

    Reference: RepDistiller ``-b 1``, initial variance 5 -> ``vid_weight: 1``, ``init_var: 5``.
    """

    name = "vid"
    description = "(1-alpha) CE + alpha w sum_pairs Gaussian NLL(F_t | mu(F_s), sigma^2)"
    schema = {"vid_weight": (float, 0.0, None), "init_var": (float, 1e-3, None)}
    eps = 1e-5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.regressors = nn.ModuleList()
        self.log_scales = nn.ParameterList()
        start = math.log(math.expm1(self.params["init_var"] - self.eps))
        for i, j in self.pairs:
            cs, ct = self.s_shapes[i][0], self.t_shapes[j][0]
            self.regressors.append(
                nn.Sequential(
                    nn.Conv2d(cs, ct, 1, bias=False),
                    nn.ReLU(),
                    nn.Conv2d(ct, ct, 1, bias=False),
                    nn.ReLU(),
                    nn.Conv2d(ct, ct, 1, bias=False),
                )
            )
            self.log_scales.append(nn.Parameter(torch.full((ct,), start)))

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        total = 0.0
        for (i, j), reg, log_scale in zip(self.pairs, self.regressors, self.log_scales):
            fs, ft = match_spatial(s["stages"][i], t["stages"][j])
            total = total + vid_loss(reg(fs), ft, log_scale, self.eps)
        return {"vid": self.params["vid_weight"] * total}
