"""``fitnet``: FitNets (Romero et al. 2015).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    match_spatial,
)
from kdlab.methods import register
from kdlab.methods.features import ConvReg, FeatureDistiller


@register
class FitNet(FeatureDistiller):
    """FitNets (Romero et al. 2015): a hint from one stage of the teacher, regressed from the
    paired student stage by RepDistiller's ConvReg (at equal sizes a 1x1 conv with bias + BN +
    ReLU; :class:`~kdlab.methods.features.ConvReg`), MSE.

    Reference weight: RepDistiller ``-b 100`` -> ``hint_weight: 100``. ``hint_layer`` indexes
    the stage pairs; -1 is the pair ``(k - 1) // 2``, RepDistiller's default ``--hint_layer 2``
    (train_student.py line 88), whose feature list starts with the stem: index 2 is the second
    stage's output for its 3-stage CIFAR ResNets/WRNs and 4-stage ResNets alike (pair 1 here;
    pair 0 of a 2-stage LeNet5). RepDistiller's optional hint pre-training stage is not run.
    """

    name = "fitnet"
    description = "(1-alpha) CE + alpha w ||ConvReg(F_s) - F_t||^2 at one hint stage"
    schema = {"hint_weight": (float, 0.0, None), "hint_layer": (int, -1, None)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        layer, k = int(self.params["hint_layer"]), len(self.pairs)
        if layer >= k:
            raise ValueError(f"method 'fitnet': hint_layer {layer} but only {k} stage pairs")
        self.hint = self.pairs[(k - 1) // 2 if layer < 0 else layer]
        si, ti = self.hint
        self.regressor = ConvReg(self.s_shapes[si], self.t_shapes[ti])

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        si, ti = self.hint
        fs, ft = match_spatial(self.regressor(s["stages"][si]), t["stages"][ti])
        return {"fitnet": self.params["hint_weight"] * F.mse_loss(fs, ft)}
