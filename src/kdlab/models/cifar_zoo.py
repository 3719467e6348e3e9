"""The CIFAR-100 model family of RepDistiller, SRRL (paper 003) and SimKD (paper 001), plus two
torchvision ImageNet ResNets.

Layouts follow the RepDistiller code base that SRRL and SimKD reuse, so the parameter counts match
the published ones (DESIGN.md section 3; docs/zoo.md has the table):

* ``resnet{8,14,20,32,44,56,110}``: 3 stages of basic blocks with 16/32/64 channels (x4 variants
  32/64/128/256 after a 32-channel stem), ``(depth - 2) / 6`` blocks per stage.
* ``wrn_{depth}_{width}``: pre-activation wide ResNets, ``(depth - 4) / 6`` blocks per stage.
* ``vgg{8,11,13,16,19}``: five 3x3-conv + BatchNorm blocks, max-pools between them (the fourth
  pool only for inputs of 64 pixels and more), global average pool, one linear layer.
* ``mobilenetv2`` (x1.0, SimKD) / ``mobilenetv2_half`` (x0.5, RepDistiller ``mobile_half``):
  stride-2 stem, expansion 6, the 1x1 expansion is kept even where the ratio is 1.
* ``shufflev1`` (groups 3, 240/480/960) and ``shufflev2`` (x1, 116/232/464, 1024 head).

Stage outputs are the ends of each resolution stage (what FitNet/AT/SRRL tap), in RepDistiller's
places (``models/wrn.py``, ``mobilenetv2.py``, ``ShuffleNetv2.py`` ``forward(is_feat=True)``): the
WRNs' last tap is before the final BN-ReLU, MobileNetV2's and ShuffleNetV2's before the 1x1 head
convolution; ``head_map`` applies those layers. The ResNets' and WRNs' stem output is the
``stem`` tap (RepDistiller's ``f0``, FSP's first matrix). ``pool`` is a global average pool;
``classifier`` is the last linear layer (SimKD/SRRL reuse it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.models import register
from kdlab.models.base import FeatureClassifier


def _bn_conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias) followed by BatchNorm; ``padding = k // 2``."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)
    )


# --------------------------------------------------------------------------------------------
# ResNet (CIFAR, He et al. 2016 option B shortcuts as in RepDistiller)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = _bn_conv(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(out + identity)


class CifarResNetRD(FeatureClassifier):
    """RepDistiller ``resnet{depth}``: stem conv -> 3 stages -> global average pool -> fc."""

    def __init__(
        self, depth: int, filters: list[int], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"resnet depth must be 6n + 2, not {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, filters[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters[0])
        cin = filters[0]
        stages = []
        for i, cout in enumerate(filters[1:]):
            blocks = []
            for j in range(n):
                blocks.append(_Basic(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def stem_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stem = out = F.relu(self.bn1(self.conv1(x)))
        feats = []
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return stem, feats

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.stem_and_stages(x)[1]


def _resnet(depth: int, filters: list[int]):
    def build(num_classes: int, in_channels: int = 3, input_size: int = 32) -> CifarResNetRD:
        return CifarResNetRD(depth, filters, num_classes, in_channels)

    build.__doc__ = f"RepDistiller resnet{depth} with channels {filters}."
    return build


# 26: OFD's CIFAR-10 teacher (SRRL Table 5), the same 6n + 2 layout with n = 4.
for _d in (8, 14, 20, 26, 32, 44, 56, 110):
    register(f"resnet{_d}", "cifar", f"RepDistiller CIFAR ResNet-{_d} (16/32/64 channels)")(
        _resnet(_d, [16, 16, 32, 64])
    )
for _d in (8, 32):
    register(f"resnet{_d}x4", "cifar", f"RepDistiller CIFAR ResNet-{_d}x4 (64/128/256 channels)")(
        _resnet(_d, [32, 64, 128, 256])
    )


# --------------------------------------------------------------------------------------------
# Wide ResNet (Zagoruyko & Komodakis; pre-activation blocks, no dropout)


class _WideBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None if cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        # Equal widths add the raw input; a projection takes the pre-activated input.
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(FeatureClassifier):
    """``wrn_{depth}_{width}``. As RepDistiller's ``models/wrn.py`` (``forward``, ``f3 = out``
    before ``self.relu(self.bn1(out))``), the last stage tap is the last block's output before
    the final BN-ReLU, which :meth:`head_map` applies."""

    def __init__(self, depth: int, width: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"wide resnet depth must be 6n + 4, not {depth}")
        n = (depth - 4) // 6
        widths = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        cin = 16
        stages = []
        for i, cout in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(_WideBlock(cin, cout, 2 if (i > 0 and j == 0) else 1))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.bn = nn.BatchNorm2d(cin)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def stem_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        stem = out = self.conv1(x)
        feats = []
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return stem, feats

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.stem_and_stages(x)[1]

    def head_map(self, last: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(last))

    def preact_stages(self, stages: list[torch.Tensor]) -> list[torch.Tensor]:
        """RepDistiller ``preact=True``: each tap through the BN that follows it (the next
        stage's first BN, the final BN), without the ReLU."""
        bns = [stage[0].bn1 for stage in self.stages[1:]] + [self.bn]
        return [bn(f) for bn, f in zip(bns, stages, strict=True)]


# RepDistiller's four, then SRRL's (its Tables 1 and 6: 16-4, 40-4, 10-10, 16-10).
for _d, _w in ((16, 1), (16, 2), (40, 1), (40, 2), (16, 4), (40, 4), (10, 10), (16, 10)):

    def _wrn(num_classes: int, in_channels: int = 3, input_size: int = 32, _d=_d, _w=_w):
        return WideResNet(_d, _w, num_classes, in_channels)

    _src = "RepDistiller" if _w <= 2 else "SRRL"
    register(f"wrn_{_d}_{_w}", "cifar", f"Wide ResNet {_d}-{_w} ({_src})")(_wrn)


# --------------------------------------------------------------------------------------------
# VGG with BatchNorm (RepDistiller layout)

VGG_CFG = {
    8: [[64], [128], [256], [512], [512]],
    11: [[64], [128], [256, 256], [512, 512], [512, 512]],
    13: [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]],
    16: [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]],
    19: [[64, 64], [128, 128], [256] * 4, [512] * 4, [512] * 4],
}


class CifarVGG(FeatureClassifier):
    """Five conv blocks (3x3 conv with bias, BN, ReLU); 2x2 max-pools after blocks 0-2, after
    block 3 only when that map is wider than 4 (64-pixel inputs), global average pool, fc."""

    stage_container = "blocks"

    def __init__(self, depth: int, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        cin = in_channels
        blocks = []
        for widths in VGG_CFG[depth]:
            layers: list[nn.Module] = []
            for cout in widths:
                layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
                cin = cout
            blocks.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(blocks)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        out = x
        for i, block in enumerate(self.blocks):
            if i in (1, 2, 3) or (i == 4 and out.shape[-1] > 4):
                out = F.max_pool2d(out, 2)
            out = block(out)
            feats.append(out)
        return feats


for _d in VGG_CFG:

    def _vgg(num_classes: int, in_channels: int = 3, input_size: int = 32, _d=_d):
        return CifarVGG(_d, num_classes, in_channels)

    register(f"vgg{_d}", "cifar", f"VGG{_d} with BatchNorm (RepDistiller CIFAR layout)")(_vgg)


# --------------------------------------------------------------------------------------------
# MobileNetV2 (RepDistiller/SimKD CIFAR variant)


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _bn_conv(cin, hidden, 1),  # kept even for expand == 1 (RepDistiller layout)
            nn.ReLU(inplace=True),
            _bn_conv(hidden, hidden, 3, stride, groups=hidden),
            nn.ReLU(inplace=True),
            _bn_conv(hidden, cout, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


class MobileNetV2(FeatureClassifier):
    """MobileNetV2 for 32x32 inputs: stride-2 stem, 17 inverted residuals, 1x1 conv to 1280.

    Stages: after the blocks with 16, 24, 32, 96 and 320 channels (RepDistiller's and SimKD's
    last tap ``feat[-2]`` is the 320-channel block); :meth:`head_map` applies the 1x1 head conv.
    """

    SETTING = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1)]
    SETTING += [(6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int, in_channels: int = 3, width: float = 1.0) -> None:
        super().__init__()
        cin = int(32 * width)
        self.stem = nn.Sequential(_bn_conv(in_channels, cin, 3, 2), nn.ReLU(inplace=True))
        groups = []
        for t, c, n, s in self.SETTING:
            cout = int(c * width)
            layers = []
            for j in range(n):
                layers.append(_InvertedResidual(cin, cout, s if j == 0 else 1, t))
                cin = cout
            groups.append(nn.Sequential(*layers))
        self.blocks = nn.ModuleList(groups)
        last = int(1280 * width) if width > 1.0 else 1280
        self.head = nn.Sequential(_bn_conv(cin, last, 1), nn.ReLU(inplace=True))
        self.feature_dim = last
        self.classifier = nn.Linear(last, num_classes)

    # Stage maps: the outputs of blocks 0, 1, 2, 4 and 6.
    _STAGE_BLOCKS = (0, 1, 2, 4, 6)

    def stage_module(self, k: int) -> nn.Module:
        return self.blocks[self._STAGE_BLOCKS[k % len(self._STAGE_BLOCKS)]]

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.stem(x)
        feats = []
        for i, block in enumerate(self.blocks):
            out = block(out)
            if i in self._STAGE_BLOCKS:
                feats.append(out)
        return feats

    def head_map(self, last: torch.Tensor) -> torch.Tensor:
        return self.head(last)


@register("mobilenetv2", "cifar", "MobileNetV2 x1.0 for CIFAR (SimKD student)")
def mobilenetv2(num_classes: int, in_channels: int = 3, input_size: int = 32) -> MobileNetV2:
    """MobileNetV2, width 1.0 (2.353M parameters at 100 classes)."""
    return MobileNetV2(num_classes, in_channels, 1.0)


@register("mobilenetv2_half", "cifar", "MobileNetV2 x0.5 for CIFAR (RepDistiller mobile_half)")
def mobilenetv2_half(num_classes: int, in_channels: int = 3, input_size: int = 32) -> MobileNetV2:
    """MobileNetV2, width 0.5 (head stays 1280 channels)."""
    return MobileNetV2(num_classes, in_channels, 0.5)


# --------------------------------------------------------------------------------------------
# ShuffleNet V1 / V2 (RepDistiller CIFAR variants)


def _channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class _ShuffleV1Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = cout // 4
        self.g1 = 1 if cin == 24 else groups  # the first block sees the 24-channel stem
        self.stride = stride
        self.conv1 = _bn_conv(cin, mid, 1, groups=self.g1)
        self.conv2 = _bn_conv(mid, mid, 3, stride, groups=mid)
        self.conv3 = _bn_conv(mid, cout, 1, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _channel_shuffle(F.relu(self.conv1(x)), self.g1)
        out = self.conv3(F.relu(self.conv2(out)))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1))
        return F.relu(out + x)


class ShuffleNetV1(FeatureClassifier):
    """ShuffleNet V1, groups 3: 1x1 stem to 24, stages of 4/8/4 blocks (240/480/960)."""

    def __init__(self, num_classes: int, in_channels: int = 3, groups: int = 3) -> None:
        super().__init__()
        widths, blocks = (240, 480, 960), (4, 8, 4)
        self.stem = _bn_conv(in_channels, 24, 1)
        cin = 24
        stages = []
        for cout, n in zip(widths, blocks, strict=True):
            layers = []
            for j in range(n):
                # A stride-2 block concatenates its pooled input, so it adds cout - cin maps.
                layers.append(
                    _ShuffleV1Block(cin, cout - cin if j == 0 else cout, 2 if j == 0 else 1, groups)
                )
                cin = cout
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        self.feature_dim = cin
        self.classifier = nn.Linear(cin, num_classes)

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = F.relu(self.stem(x))
        feats = []
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return feats


class _ShuffleV2Basic(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            _bn_conv(half, half, 1),
            nn.ReLU(inplace=True),
            _bn_conv(half, half, 3, groups=half),
            _bn_conv(half, half, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        keep, work = x.chunk(2, dim=1)
        return _channel_shuffle(torch.cat([keep, self.branch(work)], 1), 2)


class _ShuffleV2Down(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(
            _bn_conv(cin, cin, 3, 2, groups=cin), _bn_conv(cin, mid, 1), nn.ReLU(inplace=True)
        )
        self.right = nn.Sequential(
            _bn_conv(cin, mid, 1),
            nn.ReLU(inplace=True),
            _bn_conv(mid, mid, 3, 2, groups=mid),
            _bn_conv(mid, mid, 1),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _channel_shuffle(torch.cat([self.left(x), self.right(x)], 1), 2)


class ShuffleNetV2(FeatureClassifier):
    """ShuffleNet V2 x1: 1x1 stem to 24, stages 116/232/464 (a down block + 3/7/3 basic blocks),
    1x1 head conv to 1024, applied by :meth:`head_map` (the last tap is before it, as
    RepDistiller's ``feat[-2]``)."""

    def __init__(self, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        widths, blocks = (116, 232, 464), (3, 7, 3)
        self.stem = _bn_conv(in_channels, 24, 1)
        cin = 24
        stages = []
        for cout, n in zip(widths, blocks, strict=True):
            stages.append(
                nn.Sequential(_ShuffleV2Down(cin, cout), *[_ShuffleV2Basic(cout) for _ in range(n)])
            )
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = nn.Sequential(_bn_conv(cin, 1024, 1), nn.ReLU(inplace=True))
        self.feature_dim = 1024
        self.classifier = nn.Linear(1024, num_classes)

    def stages_forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = F.relu(self.stem(x))
        feats = []
        for stage in self.stages:
            out = stage(out)
            feats.append(out)
        return feats

    def head_map(self, last: torch.Tensor) -> torch.Tensor:
        return self.head(last)


@register("shufflev1", "cifar", "ShuffleNet V1, groups 3 (RepDistiller ShuffleV1)")
def shufflev1(num_classes: int, in_channels: int = 3, input_size: int = 32) -> ShuffleNetV1:
    """ShuffleNet V1 (0.949M parameters at 100 classes)."""
    return ShuffleNetV1(num_classes, in_channels)


@register("shufflev2", "cifar", "ShuffleNet V2 x1 (RepDistiller ShuffleV2)")
def shufflev2(num_classes: int, in_channels: int = 3, input_size: int = 32) -> ShuffleNetV2:
    """ShuffleNet V2 (1.356M parameters at 100 classes)."""
    return ShuffleNetV2(num_classes, in_channels)


# --------------------------------------------------------------------------------------------
# torchvision ImageNet ResNets behind the FeatureClassifier interface


class TorchvisionResNet(FeatureClassifier):
    """A ``torchvision.models.resnet*`` (random init, never downloaded) with stage taps.

    Stages are ``layer1`` .. ``layer4`` (the 7x7 stem and max-pool run before ``layer1``).
    """

    def __init__(self, arch: str, num_classes: int, in_channels: int = 3) -> None:
        super().__init__()
        import torchvision

        net = getattr(torchvision.models, arch)(weights=None, num_classes=num_classes)
        if in_channels != 3:
            net.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.stem = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool)
        self.stages = nn.ModuleList([net.layer1, net.layer2, net.layer3, net.layer4])
        self.feature_dim = net.fc.in_features
        self.classifier = net.fc


@register("tv_resnet18", "imagenet", "torchvision ResNet-18 (ImageNet layout, random init)")
def tv_resnet18(num_classes: int, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    """torchvision ResNet-18 (11,689,512 parameters at 1000 classes)."""
    return TorchvisionResNet("resnet18", num_classes, in_channels)


@register("tv_resnet34", "imagenet", "torchvision ResNet-34 (ImageNet layout, random init)")
def tv_resnet34(num_classes: int, in_channels: int = 3, input_size: int = 224) -> nn.Module:
    """torchvision ResNet-34 (21,797,672 parameters at 1000 classes)."""
    return TorchvisionResNet("resnet34", num_classes, in_channels)
