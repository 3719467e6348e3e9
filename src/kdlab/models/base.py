"""The interface every classifier in the zoo exposes to distillation methods."""

from __future__ import annotations

import torch
from torch import nn


class FeatureClassifier(nn.Module):
    """A classifier whose intermediate features can be tapped.

    Subclasses implement :meth:`stem_and_stages`; the stage outputs are the feature taps
    (FitNet, AT, ...), ``pool`` turns the last stage into the penultimate feature and
    ``classifier`` maps it to logits (SimKD and SRRL reuse the classifier on other features).
    """

    classifier: nn.Module

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the output of every stage, in order."""
        raise NotImplementedError

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        """Turn the last stage's output into the flat penultimate feature."""
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> dict[str, object]:
        """Logits plus every feature tap: ``{"stages": [...], "pooled": f, "logits": z}``."""
        stages = self.stages_forward(x)
        pooled = self.pool(stages[-1])
        return {"stages": stages, "pooled": pooled, "logits": self.classifier(pooled)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages_forward(x)[-1]))
