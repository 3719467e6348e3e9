"""Seed 002's Keras CNNs (the Keras knowledge-distillation tutorial) for 28x28 MNIST.

Teacher: Conv2D(256, 3x3, stride 2, "same") - LeakyReLU(0.2) - MaxPooling2D(2, stride 1, "same")
- Conv2D(512, 3x3, stride 2, "same") - Flatten - Dense(10); the student has 16/32 channels.
Keras "same" padding with an even input pads one pixel at the bottom/right only, so the padding
is applied explicitly here (max-pool padding is -inf, i.e. ignored, as in Keras). At 28x28 the
maps are 14x14 then 7x7: 1,433,610 parameters for the teacher, 20,490 for the student.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import register
from kdlab.models.base import FeatureClassifier


def same_pad(x: torch.Tensor, k: int, stride: int, value: float = 0.0) -> torch.Tensor:
    """Pad ``x`` like TensorFlow's ``padding="same"``: the extra pixel goes bottom/right."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):  # F.pad order: last dim first
        total = max((math.ceil(size / stride) - 1) * stride + k - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads, value=value)


class HaoCNN(FeatureClassifier):
    """Conv(c1, s2) - LeakyReLU(0.2) - MaxPool(2, s1) | Conv(c2, s2) | Flatten -> Dense.

    Stages: the max-pool output and the second convolution's output; ``pool`` flattens.
    """

    def __init__(
        self, c1: int, c2: int, num_classes: int = 10, in_channels: int = 1, input_size: int = 28
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, c1, 3, 2)
        self.act = nn.LeakyReLU(0.2)
        self.maxpool = nn.MaxPool2d(2, 1)
        self.conv2 = nn.Conv2d(c1, c2, 3, 2)
        side = math.ceil(math.ceil(input_size / 2) / 2)
        self.feature_dim = c2 * side * side
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def stage_module(self, k: int) -> nn.Module:
        return (self.maxpool, self.conv2)[k]

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s1 = self.act(self.conv1(same_pad(x, 3, 2)))
        s1 = self.maxpool(same_pad(s1, 2, 1, value=float("-inf")))
        s2 = self.conv2(same_pad(s1, 3, 2))
        return [s1, s2]

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        return torch.flatten(last, 1)


@register(
    "hao_teacher",
    "hao",
    "Keras CNN teacher of Hao et al. (256/512 channels); 28x28",
    default_in_channels=1,
)
def hao_teacher(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> HaoCNN:
    """Seed 002's teacher: 1,433,610 parameters at 10 classes, 1x28x28."""
    return HaoCNN(256, 512, num_classes, in_channels, input_size)


@register(
    "hao_student",
    "hao",
    "Keras CNN student of Hao et al. (16/32 channels); 28x28",
    default_in_channels=1,
)
def hao_student(num_classes: int = 10, in_channels: int = 1, input_size: int = 28) -> HaoCNN:
    """Seed 002's student: 20,490 parameters at 10 classes, 1x28x28."""
    return HaoCNN(16, 32, num_classes, in_channels, input_size)
