"""``srrl``: Softmax Regression Representation Learning (Yang et al., ICLR 2021; paper 003).

``L = (1 - alpha) CE + alpha (fm_weight L_FM + sr_weight L_SR)``:

- a connector (1x1 conv + BN + ReLU, KD_SRRL distiller_zoo/AIN.py ``transfer_conv``) maps the
  student's feature to the teacher's width. ``connector: map`` (default, the official code,
  train_imagenet_distillation.py lines 113-117): it runs on the student's last stage map
  (resized to the teacher's last map), ``h_S`` / ``h_T`` are the spatial means of the mapped
  student map and of the teacher's map (``statm_loss``), and ``q`` is the teacher's own head
  (``pool`` then ``classifier``) on the mapped map. ``connector: pooled``: a linear + BN +
  ReLU connector on the student's pooled feature, ``h_T`` the teacher's pooled feature and
  ``q = W_T connector(h_S)`` (what the public re-implementations do);
- ``L_FM = MSE(h_S, h_T)`` (eq. 3);
- ``L_SR`` compares the teacher's frozen head on the student feature, ``q`` (above), with the
  teacher's logits ``p``: ``sr_loss: l2`` is
  ``MSE(q, p)`` (eq. 7, the paper's choice), ``kl`` is ``T^2 KL(softmax(p/T) || softmax(q/T))``
  with the project's temperature, ``ce`` is ``CE(q, y)`` with the hard label (supplementary
  Table 9).

Ablations (SRRL's Table 1, first three rows): ``sr_weight: 0`` is L_FM alone,
``fm_weight: 0`` is L_SR alone. Mapping of the paper's eq. 8 ``CE + a L_FM + b L_SR``:
alpha = 0.5, ``fm_weight = a``, ``sr_weight = b`` (up to a global factor 1/2). The paper does not
print a and b; the official code (jingyang2017/KD_SRRL train_imagenet_distillation.py lines
113-120, ``--weight`` default 1 at line 23) trains ``CE + L_FM + 1 * L_SR``: ``fm_weight: 1``,
``sr_weight: 1``.

Position (Table 1, last three rows): ``stage: k`` applies both losses at stage pair ``k``
(0-based; ``pair_stages`` pairs the student's and teacher's stages; for WRN-16-4 -> WRN-40-4,
conv2 is 0 and conv3 is 1) instead of the end of the network; ``-1`` (default) or the last pair
is the end, the paper's method. ``all_stages: 1`` applies them at every pair and at the end
(the conv2+3+4 row); the terms are summed. At pair ``k`` a connector (1x1 conv + BN + ReLU)
maps the student map ``f_S`` to the teacher's channels (average-pooled to its size),
``L_FM = MSE(c(f_S), f_T)``, and for ``L_SR`` the teacher's own map at that stage is replaced by
``AdaIN(f_T, c(f_S))`` (each channel of ``f_T`` re-normalised to the student's per-channel mean
and std; Huang & Belongie 2017) and run through the rest of the frozen teacher to give ``q``.
The paper names AdaIN but gives no formula; we read "transferring the mean feature of the
student ... to the teacher" this way because at the last stage it reduces to the end-of-network
method: global average pooling of ``AdaIN(f_T, g)`` is the channel mean of ``g``, the
student's pooled feature. The teacher must expose that stage as one module's output
(``FeatureClassifier.stage_module``); this is checked at the start. Tables 2-3 are
measurements, not training variants.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import kd_loss, logit_l2_loss
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller, conv_bn, head_map, resize_map


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Adaptive instance normalisation: each channel of ``content`` (N x C x H x W) shifted and
    scaled to the per-sample, per-channel mean and standard deviation of ``style``."""
    dims = (2, 3)
    mu_c = content.mean(dims, keepdim=True)
    sd_c = (content.var(dims, keepdim=True, unbiased=False) + eps).sqrt()
    mu_s = style.mean(dims, keepdim=True)
    sd_s = (style.var(dims, keepdim=True, unbiased=False) + eps).sqrt()
    return (content - mu_c) / sd_c * sd_s + mu_s


@register
class SRRL(FeatureDistiller):
    """SRRL: feature matching plus softmax regression through the frozen teacher classifier."""

    name = "srrl"
    description = "(1-alpha) CE + alpha (w_fm ||c(h_s) - h_t||^2 + w_sr L_SR(W_t c(h_s), W_t h_t))"
    teacher_modules = ("classifier", "pool")
    schema = {
        "fm_weight": (float, 0.0, None),
        "sr_weight": (float, 0.0, None),
        "stage": (int, -1, None),
        "all_stages": (int, 0, 1),
    }
    choices = {"sr_loss": ("l2", "kl", "ce"), "connector": ("map", "pooled")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        p = self.params
        last = len(self.pairs) - 1
        stage = p["stage"]  # an int >= -1 (resolve_params); all_stages: 0 | 1
        if stage > last:
            raise ValueError(
                f"method_params.srrl.stage = {stage} is not allowed; allowed: -1 (the end "
                f"of the network) or a stage pair index 0..{last} (student/teacher stage pairs "
                f"{self.pairs})"
            )
        # Earlier stage pairs that get their own losses (the last pair is the end of the
        # network, served by the pooled feature), and whether the end gets them too.
        if p["all_stages"]:
            self.positions, self.at_end = list(range(last)), True
        else:
            self.positions = [stage] if 0 <= stage < last else []
            self.at_end = not self.positions
        if p["connector"] == "map":
            # On the penultimate maps (what the heads pool), not the last taps: a WRN's last
            # tap is before its final BN-ReLU, MobileNetV2's before its 1x1 head conv.
            self.connector = conv_bn(self.s_head_shape[0], self.t_head_shape[0])
        else:
            self.connector = nn.Sequential(
                nn.Linear(self.s_dim, self.t_dim, bias=False),
                nn.BatchNorm1d(self.t_dim),
                nn.ReLU(inplace=True),
            )
        self.stage_connectors = nn.ModuleDict(
            {
                str(k): conv_bn(
                    self.s_shapes[self.pairs[k][0]][0], self.t_shapes[self.pairs[k][1]][0]
                )
                for k in self.positions
            }
        )
        self._check_teacher_stages()

    @torch.no_grad()
    def _check_teacher_stages(self) -> None:
        """Every teacher stage L_SR replaces must be one module's output (fail at the start)."""
        teacher = self.teacher_model
        x = self._teacher_input(torch.zeros(2, *self.input_shape, device=self.student_device()))
        maps = teacher.forward_features(x)["stages"]
        for k in self.positions:
            j = self.pairs[k][1]
            seen: list[torch.Tensor] = []

            def record(f: torch.Tensor, seen: list[torch.Tensor] = seen) -> torch.Tensor:
                seen.append(f)
                return f

            try:
                teacher.forward_replacing_stage(x, j, record)
            except (AttributeError, ValueError, IndexError) as err:
                raise ValueError(
                    f"method 'srrl' at stage pair {k} needs the teacher's stage {j} map to be one "
                    f"module's output (stage_module); {type(teacher).__name__}: {err}"
                ) from err
            if len(seen) != 1 or not torch.equal(seen[0], maps[j]):
                raise ValueError(
                    f"method 'srrl' at stage pair {k}: {type(teacher).__name__}.stage_module({j}) "
                    "does not produce its stage map; it cannot be replaced"
                )

    def _sr(self, q: torch.Tensor, t_logits: torch.Tensor, batch: Batch) -> torch.Tensor:
        kind = self.params["sr_loss"]
        if kind == "l2":
            return logit_l2_loss(q, t_logits)
        if kind == "kl":
            return kd_loss(q, t_logits, self.temperature)
        return F.cross_entropy(q, batch.y)

    def _end(self, s, t) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At the end of the network: the student's and teacher's features compared by L_FM
        and the teacher head's logits ``q`` on the student's (connected) feature."""
        teacher = self.teacher_model
        if self.params["connector"] == "pooled":
            h = self.connector(s["pooled"])
            return h, t["pooled"], teacher.classifier(h)
        f_t = head_map(t)
        g = self.connector(resize_map(head_map(s), f_t.shape[-2:]))
        return g.mean((2, 3)), f_t.mean((2, 3)), teacher.classifier(teacher.pool(g))

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params
        fm = sr = s["logits"].new_zeros(())
        if self.at_end:
            h, h_t, q = self._end(s, t)
            fm = fm + F.mse_loss(h, h_t)
            sr = sr + self._sr(q, t["logits"], batch)
        x_t = self._teacher_input(batch.x)
        for k in self.positions:
            i, j = self.pairs[k]
            f_t = t["stages"][j]
            g = self.stage_connectors[str(k)](resize_map(s["stages"][i], f_t.shape[-2:]))
            fm = fm + F.mse_loss(g, f_t)
            q = self.teacher_model.forward_replacing_stage(x_t, j, lambda f, g=g: adain(f, g))
            sr = sr + self._sr(q, t["logits"], batch)
        return {"fm": p["fm_weight"] * fm, "sr": p["sr_weight"] * sr}
