"""The interface every classifier in the zoo exposes to distillation methods."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class FeatureClassifier(nn.Module):
    """A classifier whose intermediate features can be tapped.

    Subclasses implement :meth:`stages_forward` (or :meth:`stem_and_stages` when the stem's
    map is a tap too); the stage outputs are the feature taps (FitNet, AT, ...), in
    RepDistiller's places: a Wide ResNet's last tap is taken before its final BN-ReLU, a
    MobileNetV2's / ShuffleNetV2's before its 1x1 head convolution. :meth:`head_map` turns the
    last tap into the map the head reads (the penultimate map, SRRL's), ``pool`` turns that
    into the penultimate feature and ``classifier`` maps it to logits (SimKD and SRRL reuse
    the classifier on other features).
    """

    classifier: nn.Module
    #: What follows the last stage module inside the last stage map (e.g. "BN + ReLU"), if
    #: anything: that map is then not one module's output and cannot be replaced.
    last_stage_followed_by: str | None = None
    #: Attribute holding one module per stage, in order (stage ``k``'s map is module ``k``'s
    #: output), for :meth:`stage_module`.
    stage_container: str = "stages"

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the output of every stage, in order.

        Default: ``self.stem`` followed by each module of ``self.stages``; models with another
        layout override this.
        """
        out = self.stem(x)
        feats = []
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return feats

    def stem_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor | None, list[torch.Tensor]]:
        """The stem's output map (None where the model has no separate stem tap) and every
        stage's output. Default: no stem tap, :meth:`stages_forward`."""
        return None, self.stages_forward(x)

    def head_map(self, last: torch.Tensor) -> torch.Tensor:
        """The map the head pools, from the last stage tap. Default: the tap itself; models
        with layers between their last tap and the pool (a final BN-ReLU, a 1x1 head
        convolution) apply them here."""
        return last

    def preact_stages(self, stages: list[torch.Tensor]) -> list[torch.Tensor] | None:
        """The stage taps before their last activation (RepDistiller's ``preact=True``, what AB
        reads), or None where the model does not give them."""
        return None

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        """Turn the last stage's output into the flat penultimate feature.

        Default: global average pooling.
        """
        return torch.flatten(F.adaptive_avg_pool2d(last, 1), 1)

    def forward_features(self, x: torch.Tensor) -> dict[str, object]:
        """Logits plus every feature tap: ``{"stages": [...], "head_map": m, "pooled": f,
        "logits": z}``, plus ``"stem"`` and ``"preact_stages"`` where the model gives them."""
        stem, stages = self.stem_and_stages(x)
        head = self.head_map(stages[-1])
        pooled = self.pool(head)
        out: dict[str, object] = {
            "stages": stages,
            "head_map": head,
            "pooled": pooled,
            "logits": self.classifier(pooled),
        }
        if stem is not None:
            out["stem"] = stem
        preact = self.preact_stages(stages)
        if preact is not None:
            out["preact_stages"] = preact
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.head_map(self.stages_forward(x)[-1])))

    def stage_module(self, k: int) -> nn.Module:
        """The module whose output is stage ``k``'s feature map.

        Default: module ``k`` of the ``stage_container`` attribute. Models whose stage maps are
        not one module's output (functional pooling, a head applied after the last stage) raise
        or override this.
        """
        stages = getattr(self, self.stage_container, None)
        if not isinstance(stages, (nn.ModuleList, nn.Sequential)):
            raise ValueError(
                f"{type(self).__name__} computes its stage maps without one module per stage, "
                "so a stage's map cannot be replaced"
            )
        if self.last_stage_followed_by and k % len(stages) == len(stages) - 1:
            raise ValueError(
                f"{type(self).__name__}'s last stage map is its last stage followed by "
                f"{self.last_stage_followed_by}, not one module's output; allowed stages: "
                f"0..{len(stages) - 2}"
            )
        return stages[k]

    def forward_replacing_stage(
        self, x: torch.Tensor, k: int, replace: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Logits of ``x`` with stage ``k``'s map ``f`` replaced by ``replace(f)``: the rest of
        the network runs on the replacement (SRRL's softmax regression at earlier layers)."""
        handle = self.stage_module(k).register_forward_hook(lambda _m, _i, out: replace(out))
        try:
            return self(x)
        finally:
            handle.remove()
