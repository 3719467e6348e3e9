"""ReffAKD's convolutional autoencoder (its paper, section 3.1).

Encoder: three 4x4, stride-2, padding-1 convolutions to 12, 24, 48 channels with ReLU; the
decoder mirrors it with transposed convolutions and ends in a Sigmoid (inputs are in [0, 1]).
47,355 parameters for 3 channels, 46,585 for 1. The bottleneck is 48 x H/8 x W/8
(768-d at 32x32, 3072-d at 64x64), so H and W must be multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab.models import register


class ConvAutoencoder(nn.Module):
    """CAE: ``forward`` reconstructs, ``encode`` returns the flattened bottleneck embedding."""

    def __init__(self, in_channels: int = 3, out_channels: int | None = None) -> None:
        super().__init__()
        out_channels = in_channels if out_channels is None else out_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, 12, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(12, 24, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(24, 48, 4, 2, 1),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(48, 24, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(24, 12, 4, 2, 1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(12, out_channels, 4, 2, 1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened bottleneck embedding, ``N x 48*(H/8)*(W/8)``."""
        return torch.flatten(self.encoder(x), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"cae needs H and W divisible by 8, got {tuple(x.shape[-2:])}")
        return self.decoder(self.encoder(x))


@register("cae", "reffakd", "ReffAKD convolutional autoencoder; in_channels 1|3")
def cae(
    num_classes: int = 0,
    in_channels: int = 3,
    out_channels: int | None = None,
    input_size: int | None = None,
) -> nn.Module:
    """``num_classes`` is ignored (the CAE has no classifier); ``input_size`` is checked."""
    if input_size is not None and input_size % 8:
        raise ValueError(f"cae needs input_size divisible by 8, got {input_size}")
    return ConvAutoencoder(in_channels, out_channels)
