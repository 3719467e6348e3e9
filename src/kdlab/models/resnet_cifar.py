"""CIFAR-style ResNets in the layout used by ReffAKD (a 3x3 stem, no max-pool, 4 stages).

The head average-pools with a fixed 4x4 window and flattens, as the reference code does, so a
64x64 input (Tiny ImageNet) keeps a 2x2 map and a 4x larger classifier: this is what makes the
published Tiny ImageNet parameter counts (11,578,632 / 25,138,952) come out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import register
from kdlab.models.base import FeatureClassifier


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        cout = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(FeatureClassifier):
    """ResNet with a 3x3 stem; ``width`` is the first stage's channel count (64 in the paper)."""

    stage_container = "layers"

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: list[int],
        num_classes: int,
        in_channels: int = 3,
        width: int = 64,
        input_size: int = 32,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        layers = []
        for i, n in enumerate(num_blocks):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(block(cin, planes, stride))
                cin = planes * block.expansion
            layers.append(nn.Sequential(*blocks))
        self.layers = nn.ModuleList(layers)
        # The last map is input_size / 8 wide; a fixed 4x4 average pool leaves (size/8 // 4)^2.
        last = -(-input_size // 8)
        pooled = max(last // 4, 1) ** 2
        self.feature_dim = cin * pooled
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = F.relu(self.bn1(self.conv1(x)))
        stages = []
        for layer in self.layers:
            out = layer(out)
            stages.append(out)
        return stages

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        k = min(4, last.shape[-1])
        return torch.flatten(F.avg_pool2d(last, k), 1)


def _make(block, blocks):
    def build(num_classes: int, in_channels: int = 3, width: int = 64, input_size: int = 32):
        return CifarResNet(block, blocks, num_classes, in_channels, width, input_size)

    return build


# SRRL Tables 6 and 10 name ResNet10 students by their size: width 64 gives its 4.95M
# (and ResNet34's 21.33M) exactly; the 0.34M / 1.39M pair is close to width 16 (0.32M / 1.35M).
register("resnet10", "reffakd", "CIFAR-style ResNet10, one block per stage; width, input_size")(
    _make(BasicBlock, [1, 1, 1, 1])
)
register(
    "resnet18", "reffakd", "CIFAR-style ResNet18 (ReffAKD teacher/student); width, input_size"
)(_make(BasicBlock, [2, 2, 2, 2]))
register("resnet34", "reffakd", "CIFAR-style ResNet34; width, input_size")(
    _make(BasicBlock, [3, 4, 6, 3])
)
register(
    "resnet50", "reffakd", "CIFAR-style ResNet50 (ReffAKD CIFAR/Tiny teacher); width, input_size"
)(_make(Bottleneck, [3, 4, 6, 3]))
