"""The interface every classifier in the zoo exposes to distillation methods."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class FeatureClassifier(nn.Module):
    """A classifier whose intermediate features can be tapped.

    Subclasses implement :meth:`stem_and_stages`; the stage outputs are the feature taps
    (FitNet, AT, ...), ``pool`` turns the last stage into the penultimate feature and
    ``classifier`` maps it to logits (SimKD and SRRL reuse the classifier on other features).
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

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        """Turn the last stage's output into the flat penultimate feature.

        Default: global average pooling.
        """
        return torch.flatten(F.adaptive_avg_pool2d(last, 1), 1)

    def forward_features(self, x: torch.Tensor) -> dict[str, object]:
        """Logits plus every feature tap: ``{"stages": [...], "pooled": f, "logits": z}``."""
        stages = self.stages_forward(x)
        pooled = self.pool(stages[-1])
        return {"stages": stages, "pooled": pooled, "logits": self.classifier(pooled)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages_forward(x)[-1]))

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
