"""``simkd``: Knowledge Distillation with the Reused Teacher Classifier (Chen et al. 2022) and
the variants of the SimKD student study (paper 001).

The student's last feature map is brought to the teacher's last-stage size (adaptive average
pooling) and projected to the teacher's channels by a 1x1 - 3x3 - 1x1 conv-BN-ReLU projector
(bottleneck ``C_t / factor``, factor 2). Training pulls the projected map to the teacher's
(MSE); prediction, in training and at test time, is the teacher's own head (``pool`` then
``classifier``, frozen) on the projected map, so :meth:`SimKD.forward_test` does not use the
student's classifier at all. ``extra_state`` saves the projector(s) and ``teacher_head``: the
state of every teacher module that ``pool`` and ``classifier`` run (found by hooks on a dummy
pass: LeNet5's fc1/fc2, an MLP head, not only the last linear layer), which the deployed
student needs; :meth:`SimKD.load_extra_state` puts it back into a teacher of the same
architecture (rebuilt from the teacher's file), so the student file predicts as trained.

Project convention: ``(1 - alpha) CE(prediction, y) + alpha simkd_weight L``. The paper trains
on ``L`` alone: ``alpha = 1``, ``simkd_weight = 1`` reproduces it.

Variants (the SimKD study's):

- ``loss: l2`` (SimKD) or ``kl``: ``T^2 KL(teacher_T || prediction_T)`` on the reused
  classifier's logits in place of the feature MSE ("Loss functions: L2 vs KL");
- ``projectors: end`` (SimKD), ``two_thirds`` (one more projector after about 2/3 of the
  student's stages, paired with the teacher stage at 2/3 depth; "multiple projectors") or
  ``all`` (a projector at every stage pair; "all layer projectors"). Extra projectors add an
  MSE between the projected student map and the paired teacher map; only the end projector
  feeds the prediction;
- ``label_gated: 1``: learn only from the samples the teacher classifies correctly (the
  distillation terms average over those samples; CE still sees every sample).

Deviation: when the student's map is smaller than the teacher's, the reference pools the
teacher's map down; here the student's map is always resized to the teacher's, so that the
teacher's own pooling and classifier apply unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import gated_mse_loss, kd_loss
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller, conv_bn, resize_map


@register
class SimKD(FeatureDistiller):
    """SimKD: projector + reused (frozen) teacher classifier; optional study variants."""

    name = "simkd"
    description = "alpha w ||P(F_s) - F_t||^2 + (1-alpha) CE(W_t pool_t P(F_s), y); test: W_t"
    teacher_modules = ("classifier", "pool")
    schema = {
        "simkd_weight": (float, 0.0, None),
        "factor": (int, 1, None),
        "label_gated": (int, 0, 1),
    }
    choices = {"loss": ("l2", "kl"), "projectors": ("end", "two_thirds", "all")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.projector = self._make_projector(self.s_shapes[-1][0], self.t_shapes[-1][0])
        last = (len(self.s_shapes) - 1, len(self.t_shapes) - 1)
        mode = self.params["projectors"]
        extra: list[tuple[int, int]] = []
        if mode == "all":
            extra = [p for p in self.pairs if p != last]
        elif mode == "two_thirds":
            ns, nt = len(self.s_shapes), len(self.t_shapes)
            pair = (max(0, round(2 * ns / 3) - 1), max(0, round(2 * nt / 3) - 1))
            extra = [pair] if pair[0] < last[0] and pair[1] < last[1] else []
        self.extra_pairs = extra
        self.extra_projectors = nn.ModuleList(
            self._make_projector(self.s_shapes[i][0], self.t_shapes[j][0]) for i, j in extra
        )

    def _make_projector(self, cin: int, cout: int) -> nn.Sequential:
        mid = max(1, int(cout // self.params["factor"]))
        return nn.Sequential(conv_bn(cin, mid, 1), conv_bn(mid, mid, 3), conv_bn(mid, cout, 1))

    def project(self, student_last: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected student map (teacher's last-stage shape) and the teacher head's logits."""
        feat = self.projector(resize_map(student_last, self.t_shapes[-1][1:]))
        teacher = self.teacher_model
        return feat, teacher.classifier(teacher.pool(feat))

    def forward_train(
        self, batch: Batch, epoch: int
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        p = self.params
        s = self.student.forward_features(batch.x)
        t = self.teacher_features(batch)
        feat, logits = self.project(s["stages"][-1])
        if p["label_gated"] >= 0.5:
            mask = t["logits"].argmax(dim=1) == batch.y
        else:
            mask = torch.ones_like(batch.y, dtype=torch.bool)
        if p["loss"] == "l2":
            term = gated_mse_loss(feat, t["stages"][-1], mask)
        elif bool(mask.any()):
            term = kd_loss(logits[mask], t["logits"][mask], self.temperature)
        else:
            term = logits.sum() * 0.0
        for (i, j), proj in zip(self.extra_pairs, self.extra_projectors):
            target = t["stages"][j]
            f = proj(resize_map(s["stages"][i], target.shape[-2:]))
            term = term + gated_mse_loss(f, target, mask)
        return logits, {
            "ce": (1.0 - self.alpha) * F.cross_entropy(logits, batch.y),
            "simkd": self.alpha * p["simkd_weight"] * term,
        }

    def forward_test(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the teacher's classifier on the projected student feature."""
        return self.project(self.student.forward_features(x)["stages"][-1])[1]

    @torch.no_grad()
    def head_modules(self) -> list[str]:
        """Names of the teacher's leaf modules that ``pool`` then ``classifier`` run."""
        teacher = self.teacher_model
        fired: list[str] = []
        handles = [
            m.register_forward_hook(lambda _m, _i, _o, name=name: fired.append(name))
            for name, m in teacher.named_modules()
            if name and not any(True for _ in m.children())
        ]
        try:
            c, h, w = self.t_shapes[-1]
            x = torch.zeros(2, c, h, w, device=self.student_device())
            was_training = teacher.training
            teacher.eval()
            teacher.classifier(teacher.pool(x))
            teacher.train(was_training)
        finally:
            for handle in handles:
                handle.remove()
        return list(dict.fromkeys(fired))

    def extra_state(self) -> dict[str, Any]:
        """Projector(s) and the reused teacher head (needed to deploy the student)."""
        out = super().extra_state()
        modules = dict(self.teacher_model.named_modules())
        out["teacher_head"] = {
            f"{name}.{key}": value.detach().cpu()
            for name in self.head_modules()
            for key, value in modules[name].state_dict().items()
        }
        return out

    def load_extra_state(self, state: dict[str, Any]) -> None:
        """Load the projector(s) and put the saved head into the (rebuilt) teacher."""
        state = dict(state)
        head = state.pop("teacher_head", None)
        if head is None:
            raise ValueError("method 'simkd': the saved extra state has no 'teacher_head'")
        super().load_extra_state(state)
        own = self.teacher_model.state_dict()
        unknown = sorted(set(head) - set(own))
        if unknown:
            raise ValueError(f"method 'simkd': the teacher has no {unknown} (another model?)")
        for key, value in head.items():
            own[key].copy_(value)
