"""Feature-map methods: ``fitnet``, ``at``, ``sp``, ``vid``, ``ab``, ``ft``, ``fsp``, ``nst``,
``kdsvd``.

Every method trains ``(1 - alpha) CE + alpha * w * L`` where ``w`` is the method's own weight
in ``method_params``. The reference code (RepDistiller, Tian et al. 2020) trains
``gamma CE + beta L`` with gamma = 1; its beta is our ``w`` (at alpha = 0.5 the two differ only
by a global factor 1/2 on the loss, i.e. on the learning rate). Stage pairs: see
:mod:`kdlab.methods.features`. Feature maps of different spatial sizes are brought to the
smaller size by adaptive average pooling.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    ab_loss,
    at_loss,
    fsp_loss,
    ft_loss,
    kdsvd_loss,
    match_spatial,
    nst_loss,
    sp_loss,
    vid_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller, conv_bn


def _need_pairs(d: FeatureDistiller, n: int) -> None:
    if len(d.pairs) < n:
        raise ValueError(
            f"method {d.name!r} needs {n} or more stage pairs; the student has "
            f"{len(d.s_shapes)} stages and the teacher {len(d.t_shapes)}"
        )


def _init_phase(d: FeatureDistiller, epoch: int) -> tuple[float, float]:
    """(CE factor, term factor) under RepDistiller's two-phase schedule ``init_epochs``: the
    feature term alone first, CE alone afterwards; ``init_epochs = 0``: both throughout."""
    n = int(d.params.get("init_epochs", 0))
    if n <= 0:
        return 1.0, 1.0
    return (0.0, 1.0) if epoch < n else (1.0, 0.0)


def _conv_chain(channels: list[int], bn: bool, conv: type = nn.Conv2d) -> nn.Sequential:
    """3x3 (transposed) conv (+ BN) + LeakyReLU(0.1) blocks through ``channels`` (FT)."""
    layers: list[nn.Module] = []
    for cin, cout in zip(channels[:-1], channels[1:]):
        layers.append(conv(cin, cout, 3, padding=1))
        layers += [nn.BatchNorm2d(cout)] if bn else []
        layers.append(nn.LeakyReLU(0.1))
    return nn.Sequential(*layers)


@register
class FitNet(FeatureDistiller):
    """FitNets (Romero et al. 2015): a hint from one stage of the teacher, regressed from the
    paired student stage by a ConvReg (3x3 conv + BN + ReLU), MSE.

    Reference weight: RepDistiller ``-b 100`` -> ``hint_weight: 100``. ``hint_layer`` indexes
    the stage pairs; -1 is the pair ``(k - 1) // 2``, RepDistiller's default ``--hint_layer 2``
    (train_student.py line 88), whose feature list starts with the stem: index 2 is the second
    stage's output for its 3-stage CIFAR ResNets/WRNs and 4-stage ResNets alike (pair 1 here;
    pair 0 of a 2-stage LeNet5). RepDistiller's optional hint pre-training stage is not run.
    """

    name = "fitnet"
    description = "(1-alpha) CE + alpha w ||ConvReg(F_s) - F_t||^2 at one hint stage"
    schema = {"hint_weight": (100.0, 0.0, None), "hint_layer": (-1.0, -1.0, None)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        layer, k = int(self.params["hint_layer"]), len(self.pairs)
        if layer >= k:
            raise ValueError(f"method 'fitnet': hint_layer {layer} but only {k} stage pairs")
        self.hint = self.pairs[(k - 1) // 2 if layer < 0 else layer]
        si, ti = self.hint
        self.regressor = conv_bn(self.s_shapes[si][0], self.t_shapes[ti][0], 3)

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        si, ti = self.hint
        fs, ft = match_spatial(self.regressor(s["stages"][si]), t["stages"][ti])
        return {"fitnet": self.params["hint_weight"] * F.mse_loss(fs, ft)}


@register
class AT(FeatureDistiller):
    """Attention transfer (Zagoruyko & Komodakis 2017) summed over all stage pairs.

    Reference: RepDistiller ``-b 1000``, p = 2 -> ``at_weight: 1000``, ``p: 2``.
    """

    name = "at"
    description = "(1-alpha) CE + alpha w sum_pairs ||Q_s/|Q_s| - Q_t/|Q_t|||^2, Q = mean_c |F|^p"
    schema = {"at_weight": (1000.0, 0.0, None), "p": (2.0, 1.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params["p"]
        p = int(p) if p == int(p) else p
        total = sum(at_loss(s["stages"][i], t["stages"][j], p) for i, j in self.pairs)
        return {"at": self.params["at_weight"] * total}


@register
class SP(FeatureDistiller):
    """Similarity-preserving KD (Tung & Mori 2019) on the last stage pair.

    Reference: RepDistiller ``-b 3000`` -> ``sp_weight: 3000``.
    """

    name = "sp"
    description = "(1-alpha) CE + alpha w ||norm(F_s F_s^T) - norm(F_t F_t^T)||_F^2 / b^2"
    schema = {"sp_weight": (3000.0, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        i, j = self.pairs[-1]
        return {"sp": self.params["sp_weight"] * sp_loss(s["stages"][i], t["stages"][j])}


@register
class VID(FeatureDistiller):
    """Variational information distillation (Ahn et al. 2019) at every stage pair: a mean
    regressor (1x1 conv, ReLU, 1x1, ReLU, 1x1; the teacher's channel count in the middle) and a
    learned per-channel variance ``softplus(log_scale) + 1e-5`` initialised to ``init_var``.

    Reference: RepDistiller ``-b 1``, initial variance 5 -> ``vid_weight: 1``, ``init_var: 5``.
    """

    name = "vid"
    description = "(1-alpha) CE + alpha w sum_pairs Gaussian NLL(F_t | mu(F_s), sigma^2)"
    schema = {"vid_weight": (1.0, 0.0, None), "init_var": (5.0, 1e-3, None)}
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


@register
class AB(FeatureDistiller):
    """Activation-boundary transfer (Heo et al. 2019): per stage pair a connector (1x1 conv +
    BN) maps the student's map to the teacher's channels; its pre-activations are pushed to the
    teacher's side of each neuron's activation boundary with ``margin``. Deeper pairs weigh more
    (``2^(i - k + 1)``, as the reference).

    Taps: RepDistiller (train_student.py, ``preact = opt.distill == 'abound'``) feeds the
    student's *pre-activation* stage outputs to the connectors. A model whose
    ``forward_features`` gives ``"preact_stages"`` (the stage outputs before their final ReLU)
    is tapped there; the zoo's models give only post-ReLU ``"stages"`` today, which are used
    instead (a documented deviation; the teacher side is unaffected: the sign of a post-ReLU
    map is the on/off state of its pre-activation).

    Reference: RepDistiller scales the summed loss by 3/1000 per sample and uses it only in a
    separate initialisation phase (then plain CE/KD). Here ``ab_weight: 0.003`` carries the
    3/1000 and the term is on throughout; ``init_epochs: n > 0`` reproduces the two phases
    (the AB term alone for n epochs, then CE alone).
    """

    name = "ab"
    description = "(1-alpha) CE + alpha w sum_pairs 2^(i-k+1) hinge^2(connector(F_s), sign F_t)"
    schema = {
        "ab_weight": (0.003, 0.0, None),
        "margin": (1.0, 0.0, None),
        "init_epochs": (0.0, 0.0, None),
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.connectors = nn.ModuleList(
            conv_bn(self.s_shapes[i][0], self.t_shapes[j][0], 1, relu=False) for i, j in self.pairs
        )

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        k = len(self.pairs)
        taps = s.get("preact_stages") or s["stages"]
        total = 0.0
        for n, ((i, j), conn) in enumerate(zip(self.pairs, self.connectors)):
            fs, ft = match_spatial(conn(taps[i]), t["stages"][j])
            total = total + 2.0 ** (n - k + 1) * ab_loss(fs, ft, self.params["margin"])
        return {"ab": self.params["ab_weight"] * total}

    def forward_train(self, batch: Batch, epoch: int):
        logits, losses = super().forward_train(batch, epoch)
        ce_on, term_on = _init_phase(self, epoch)
        return logits, {"ce": ce_on * losses["ce"], "ab": term_on * losses["ab"]}


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
    ``rate: 0.5``. Deviation: RepDistiller pre-trains the paraphraser for 30 epochs and
    freezes it; here it trains jointly from the start (the teacher factors are detached from
    the transfer term).
    """

    name = "ft"
    description = "(1-alpha) CE + alpha w |factor(T(F_s)) - factor(P(F_t))|_1 (+ paraphraser MSE)"
    schema = {"ft_weight": (200.0, 0.0, None), "rate": (0.5, 0.01, None)}

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
        rec = F.mse_loss(self.paraphraser_decoder(self.paraphraser_encoder(ft)), ft)
        terms = self.distill_terms(s, t, batch, epoch)
        return logits, {
            "ce": self.ce_term(logits, batch.y),
            "ft": self.alpha * terms["ft"],
            "ft_rec": rec,  # trains the paraphraser only: not part of the student's objective
        }


class _ConnectedPairs(FeatureDistiller):
    """Base of methods that compare consecutive stage pairs after mapping each student map to
    its teacher map's channels with a 1x1 conv + BN connector (FSP, KD-SVD)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _need_pairs(self, 2)
        self.connectors = nn.ModuleList(
            conv_bn(self.s_shapes[i][0], self.t_shapes[j][0], 1, relu=False) for i, j in self.pairs
        )

    def connected_stages(self, s, t) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """The paired student maps (through their connectors) and teacher maps."""
        fs = [conn(s["stages"][i]) for (i, _), conn in zip(self.pairs, self.connectors)]
        return fs, [t["stages"][j] for _, j in self.pairs]


@register
class FSP(_ConnectedPairs):
    """Flow of solution procedure (Yim et al. 2017): FSP matrices between consecutive stage
    pairs, student maps first mapped to the teacher's channels by 1x1 conv + BN connectors
    (the reference requires equal channel counts), MSE.

    Reference: RepDistiller uses FSP only in a separate initialisation phase; ``fsp_weight: 1``
    (the paper's equal per-pair weights) with the term on throughout, or ``init_epochs: n``
    for the two phases (the FSP term alone for n epochs, then CE alone).
    """

    name = "fsp"
    description = "(1-alpha) CE + alpha w sum_i ||G_s(i, i+1) - G_t(i, i+1)||^2"
    schema = {"fsp_weight": (1.0, 0.0, None), "init_epochs": (0.0, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        fs, ft = self.connected_stages(s, t)
        total = sum(fsp_loss(fs[n], fs[n + 1], ft[n], ft[n + 1]) for n in range(len(fs) - 1))
        return {"fsp": self.params["fsp_weight"] * total}

    def forward_train(self, batch: Batch, epoch: int):
        logits, losses = super().forward_train(batch, epoch)
        ce_on, term_on = _init_phase(self, epoch)
        return logits, {"ce": ce_on * losses["ce"], "fsp": term_on * losses["fsp"]}


@register
class NST(FeatureDistiller):
    """Neuron selectivity transfer (Huang & Wang 2017): polynomial-kernel MMD between the
    channel activation maps, summed over all stage pairs.

    Reference: RepDistiller ``-b 50`` -> ``nst_weight: 50``.
    """

    name = "nst"
    description = "(1-alpha) CE + alpha w sum_pairs MMD^2_poly(F_s, F_t)"
    schema = {"nst_weight": (50.0, 0.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        total = sum(nst_loss(s["stages"][i], t["stages"][j]) for i, j in self.pairs)
        return {"nst": self.params["nst_weight"] * total}


@register
class KDSVD(_ConnectedPairs):
    """KD-SVD (Lee et al. 2018): top-k singular vectors of each stage pair's maps (student maps
    mapped to the teacher's channels by 1x1 conv + BN connectors), related across consecutive
    stages by an RBF; the student's relations are pulled to the teacher's.

    Reference: mdistiller's KDSVD, K = 1, feature weight 1 -> ``kdsvd_weight: 1``, ``k: 1``.
    """

    name = "kdsvd"
    description = "(1-alpha) CE + alpha w sum_i ||RBF(V_s^i, V_s^{i-1}) - RBF(V_t^i, V_t^{i-1})||^2"
    schema = {"kdsvd_weight": (1.0, 0.0, None), "k": (1.0, 1.0, None)}

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        fs, ft = self.connected_stages(s, t)
        loss = kdsvd_loss(fs, ft, int(self.params["k"]))
        return {"kdsvd": self.params["kdsvd_weight"] * loss}
