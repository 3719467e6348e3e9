"""``ft``: Factor transfer (Kim et al. 2018).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    ft_loss,
    match_spatial,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller, with_init_epochs


def _conv_chain(channels: list[int], bn: bool, conv: type = nn.Conv2d) -> nn.Sequential:
    """3x3 (transposed) conv (+ BN) + LeakyReLU(0.1) blocks through ``channels`` (FT)."""
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers.append(conv(cin, cout, 3, padding=1))
        layers += [nn.BatchNorm2d(cout)] if bn else []
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


@register
class FT(FeatureDistiller):
    """Factor transfer (Kim et al. 2018) on the last stage pair, RepDistiller's modules
    (models/util.py ``Paraphraser``, ``Translator``): the paraphraser encoder is three 3x3
    conv-LeakyReLU(0.1) blocks ``C_t -> C_t -> int(rate C_t) -> int(rate C_t)`` (no BN, its
    ``use_bn=False`` default), the decoder three 3x3 transposed conv-LeakyReLU blocks back to
    ``C_t``; it is trained to reconstruct the teacher's map (term ``ft_rec``, MSE; it reaches
    only the paraphraser). The translator is three conv-BN-LeakyReLU blocks
    ``C_s -> C_s -> int(rate C_t) -> int(rate C_t)``. The transfer term is
    :func:`kdlab.losses.ft_loss` (RepDistiller's ``FactorTransfer``: L1 between the
    L2-normalised spatial maps ``mean_c f^2``).

    Reference: RepDistiller ``-b 200``, rate 0.5, p1 = 2, p2 = 1 -> ``ft_weight: 200``,
    ``rate: 0.5``. ``init_epochs: n > 0`` is RepDistiller's two phases (``train_student.py``
    ``factor`` branch, ``helper/pretrain.py``): ``n`` epochs put before the recipe train the
    paraphraser alone on ``ft_rec`` (the student untouched), then it is frozen and the student
    trains on CE + the transfer term. ``0``: the paraphraser trains jointly from the start (the
    teacher factors are detached from the transfer term). Deviation: the init phase runs at
    the student's lr (the reference: 0.01 for its CIFAR ResNets/WRNs).
    """

    name = "ft"
    description = "(1-alpha) CE + alpha w |factor(T(F_s)) - factor(P(F_t))|_1 (+ paraphraser MSE)"
    schema = {
        "ft_weight": (float, 0.0, None),
        "rate": (float, 0.01, None),
        "init_epochs": (int, 0, None),
    }

    @classmethod
    def train_config(cls, train: Any, params: dict[str, Any]) -> Any:
        return with_init_epochs(train, cls.resolve_params(params)["init_epochs"])

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        i, j = self.pairs[-1]
        cs, ct = self.s_shapes[i][0], self.t_shapes[j][0]
        k = max(1, int(ct * self.params["rate"]))
        self.paraphraser_encoder = _conv_chain([ct, ct, k, k], bn=False)
        self.paraphraser_decoder = _conv_chain([k, k, ct, ct], bn=False, conv=nn.ConvTranspose2d)
        self.translator = _conv_chain([cs, cs, k, k], bn=True)

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        i, j = self.pairs[-1]
        ft = t["stages"][j]
        factor_t = self.paraphraser_encoder(ft)
        fs, _ = match_spatial(s["stages"][i], ft)
        transfer = ft_loss(self.translator(fs), factor_t.detach(), p=1)
        return {"ft": self.params["ft_weight"] * transfer}

    def forward_train(self, batch: Batch, epoch: int):
        s = self.student.forward_features(batch.x)
        t = self.teacher_features(batch)
        logits = s["logits"]
        ft = t["stages"][self.pairs[-1][1]]
        n = self.params["init_epochs"]
        if n > 0 and epoch >= n:  # the paraphraser is frozen after its pre-training
            zero = logits.new_zeros(())
            with torch.no_grad():
                factor_t = self.paraphraser_encoder(ft)
            fs, _ = match_spatial(s["stages"][self.pairs[-1][0]], ft)
            transfer = ft_loss(self.translator(fs), factor_t, p=1)
            return logits, {
                "ce": self.ce_term(logits, batch.y),
                "ft": self.alpha * self.params["ft_weight"] * transfer,
                "ft_rec": zero,
            }
        rec = F.mse_loss(self.paraphraser_decoder(self.paraphraser_encoder(ft)), ft)
        if n > 0:  # pre-training: the paraphraser alone; no student gradient (nor decay step)
            zero = logits.new_zeros(())
            return logits, {"ce": zero, "ft": zero, "ft_rec": rec}
        terms = self.distill_terms(s, t, batch, epoch)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "ft": self.alpha * terms["ft"],
            "ft_rec": rec,  # trains the paraphraser only: not part of the student's objective
        }
