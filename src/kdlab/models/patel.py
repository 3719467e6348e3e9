"""Seed 004 (Patel & Obeid): CIFAR-10 VGG16, ResNet18, DenseNet121 and half-width students.

The paper applies "a 0.5 width multiplier in every convolutional/FC layer" to make the students.
Its Table 1 parameter counts are exactly the number of convolution and linear *weights* (biases and
BatchNorm parameters left out), which pins the layouts down:

* VGG16: the CIFAR VGG16 with BatchNorm and a 512-512-10 classifier (two hidden linear layers, as
  in the common pytorch-vgg-cifar10 code): 15,239,872 weights (half: 3,811,680).
* ResNet18: the kuangliu CIFAR ResNet18 (3x3 stem, no max-pool): 11,164,352 (half: 2,792,800).
* DenseNet121: torchvision's ImageNet DenseNet121 (growth 32, 6/12/24/16 bottleneck layers,
  compression 0.5) with its 7x7 stride-2 stem and max-pool, applied to 32x32 images: only the
  7x7 stem (3*64*49 weights instead of a CIFAR 3x3 stem's 3*64*9) gives 6,880,448; the half
  model has growth 16 and a 32-channel stem: 1,725,024. The 4x early downsampling also fits the
  paper's much lower DenseNet accuracy (88.4% vs 94.5% for ResNet18).

:func:`count_weights` reproduces the published numbers exactly; the full parameter counts
(``count_params``, what ``kdlab models`` lists) are higher because they include biases and
BatchNorm affine parameters: +0.1-0.2% for VGG16/ResNet18, +1.2%/+2.3% for DenseNet121 and its
half (DenseNet has a BatchNorm before every convolution; docs/zoo.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import register
from kdlab.models.base import FeatureClassifier
from kdlab.models.resnet_cifar import BasicBlock, CifarResNet


def count_weights(model: nn.Module) -> int:
    """Convolution and linear weights only: the counting behind Patel & Obeid's Table 1."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear))


VGG16_CFG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


class PatelVGG16(FeatureClassifier):
    """VGG16-BN: five blocks of 3x3 conv-BN-ReLU, each ending in a 2x2 max-pool; the pooled
    feature goes through two hidden linear layers (with dropout) before the classifier."""

    stage_container = "blocks"

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        cin = in_channels
        blocks = []
        for widths in VGG16_CFG:
            layers: list[nn.Module] = []
            for c in widths:
                cout = int(c * width)
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            layers.append(nn.MaxPool2d(2))
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        hidden = int(512 * width)
        self.head = nn.Sequential(
            nn.Dropout(),
            nn.Linear(cin, hidden),
            nn.ReLU(),
            nn.Dropout(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.feature_dim = hidden
        self.classifier = nn.Linear(hidden, num_classes)

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats

    def pool(self, last: torch.Tensor) -> torch.Tensor:
        # A 32x32 input leaves 1x1; average larger maps so other sizes still reach 512 features.
        return self.head(torch.flatten(F.adaptive_avg_pool2d(last, 1), 1))


class PatelDenseNet(FeatureClassifier):
    """torchvision's DenseNet-BC (ImageNet layout: 7x7 stride-2 stem and a 3x3 max-pool, so a
    32x32 image is 8x8 after the stem and 1x1 in the last block) behind the FeatureClassifier
    interface. Stages: dense blocks 1-3 each with its transition, block 4 with the final BN-ReLU.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        growth: int = 32,
        blocks: tuple[int, int, int, int] = (6, 12, 24, 16),
    ) -> None:
        super().__init__()
        from torchvision.models import DenseNet

        init = 2 * growth
        net = DenseNet(growth, blocks, init, num_classes=num_classes)
        f = net.features
        if in_channels != 3:
            f.conv0 = nn.Conv2d(in_channels, init, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(f.conv0, f.norm0, f.relu0, f.pool0)
        self.stages = nn.ModuleList(
            [
                nn.Sequential(f.denseblock1, f.transition1),
                nn.Sequential(f.denseblock2, f.transition2),
                nn.Sequential(f.denseblock3, f.transition3),
                nn.Sequential(f.denseblock4, f.norm5, nn.ReLU()),
            ]
        )
        self.feature_dim = net.classifier.in_features
        self.classifier = net.classifier


@register("p_vgg16", "patel_obeid", "Patel & Obeid VGG16-BN, 512-512 FC head (CIFAR-10 teacher)")
def p_vgg16(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """VGG16 teacher: 15,239,872 conv/linear weights at 10 classes."""
    return PatelVGG16(num_classes, in_channels, 1.0)


@register("p_vgg16_half", "patel_obeid", "Patel & Obeid VGG16 at half width (student)")
def p_vgg16_half(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """VGG16 student: 3,811,680 conv/linear weights at 10 classes."""
    return PatelVGG16(num_classes, in_channels, 0.5)


@register("p_resnet18", "patel_obeid", "Patel & Obeid ResNet18 (kuangliu CIFAR layout)")
def p_resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """ResNet18 teacher: 11,164,352 conv/linear weights at 10 classes."""
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, 64, input_size)


@register("p_resnet18_half", "patel_obeid", "Patel & Obeid ResNet18 at half width (student)")
def p_resnet18_half(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """ResNet18 student (widths 32-256): 2,792,800 conv/linear weights at 10 classes."""
    return CifarResNet(BasicBlock, [2, 2, 2, 2], num_classes, in_channels, 32, input_size)


@register(
    "p_densenet121", "patel_obeid", "Patel & Obeid DenseNet121 (torchvision layout, growth 32)"
)
def p_densenet121(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> nn.Module:
    """DenseNet121 teacher: 6,880,448 conv/linear weights at 10 classes."""
    return PatelDenseNet(num_classes, in_channels, growth=32)


@register("p_densenet121_half", "patel_obeid", "Patel & Obeid DenseNet121, growth 16 (student)")
def p_densenet121_half(
    num_classes: int = 10, in_channels: int = 3, input_size: int = 32
) -> nn.Module:
    """DenseNet121 student (growth 16): 1,725,024 conv/linear weights at 10 classes."""
    return PatelDenseNet(num_classes, in_channels, growth=16)
