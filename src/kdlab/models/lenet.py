"""LeNet-5 with BatchNorm, the ReffAKD Fashion-MNIST student (61,750 parameters at 10 classes)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import register
from kdlab.models.base import FeatureClassifier


class LeNet5(FeatureClassifier):
    """conv5(6)-BN-ReLU-pool, conv5(16)-BN-ReLU-pool, fc 120-84-classes.

    At 28x28 input the first convolution pads by 2 (LeCun's MNIST convention), so both 28x28 and
    32x32 inputs reach the 16x5x5 map and the parameter count is the same.
    """

    def __init__(self, num_classes: int, in_channels: int = 1, input_size: int = 32) -> None:
        super().__init__()
        if input_size not in (28, 32):
            raise ValueError(f"lenet5 takes input_size 28 or 32, not {input_size}")
        self.conv1 = nn.Conv2d(in_channels, 6, 5, padding=(32 - input_size) // 2)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.classifier = nn.Linear(84, num_classes)
        self.feature_dim = 84

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        s1 = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        s2 = F.max_pool2d(F.relu(self.bn2(self.conv2(s1))), 2)
        return [s1, s2]

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc2(F.relu(self.fc1(torch.flatten(last, 1)))))


@register(
    "lenet5",
    "reffakd",
    "LeNet-5 with BatchNorm (ReffAKD FMNIST student); input_size 28|32",
    default_in_channels=1,
)
def lenet5(num_classes: int, in_channels: int = 1, input_size: int = 32) -> LeNet5:
    return LeNet5(num_classes, in_channels, input_size)
