"""One input pipeline for every stage: the data set lives in memory as uint8 tensors (on the
training device); batches are sliced, augmented and normalised as tensors, seeded per epoch.

Per-epoch seeds (seed, epoch) make a resumed run see exactly the batches it would have seen.
Under data-parallel training (``shard``) every rank draws the same seeded permutation and
takes a disjoint, interleaved share of each global batch, so the union over ranks of step k is
exactly the one-process batch k (global batch = ranks x local batch).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from kdlab.schema import AugmentConfig


@dataclass
class Batch:
    """A training or evaluation batch."""

    x: torch.Tensor  # float N x C x H x W, normalised
    y: torch.Tensor  # int64 labels
    index: torch.Tensor  # int64 positions into the full split (for cached teacher outputs)
    flipped: torch.Tensor  # bool: horizontally flipped view
    # The frozen teacher's forward_features on this batch, when a grid computed it once for
    # every cell (kdlab.grid); None: each method runs its own teacher.
    teacher_out: dict | None = None


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of a float batch to ``size x size`` (no-op if already that size)."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def random_crop(x: torch.Tensor, padding: int, g: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take a random crop of the original size, per image."""
    if padding == 0:
        return x
    n, c, h, w = x.shape
    wp = w + 2 * padding
    xp = F.pad(x, (padding,) * 4)
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=g).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)  # n x h
    cols = ox[:, None] + torch.arange(w, device=x.device)  # n x w
    # One gather over each padded image flattened to a row (3x faster than 2-D indexing).
    flat = (rows[:, :, None] * wp + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    return torch.gather(xp.reshape(n, c, -1), 2, flat).view(n, c, h, w)


def rotate(x: torch.Tensor, max_degrees: float, g: torch.Generator) -> torch.Tensor:
    """Rotate each image by an angle uniform in [-max, max] degrees (bilinear, zero fill)."""
    if max_degrees == 0:
        return x
    n = x.shape[0]
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(max_degrees)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


class TensorLoader:
    """Iterate over ``images[indices]`` in batches, augmenting on the fly.

    Args:
        images: uint8 ``N x C x H x W`` (the whole split; moved to ``device`` once).
        labels: int64 ``N``.
        indices: which positions to iterate over (e.g. the training part of a split).
        augment: ``None`` for evaluation.
        normalize: subtract ``mean`` and divide by ``std`` (off for the autoencoder).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        indices: torch.Tensor,
        batch_size: int,
        input_size: int,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        augment: AugmentConfig | None = None,
        shuffle: bool = False,
        seed: int = 0,
        normalize: bool = True,
        device: torch.device | str = "cpu",
        channels_last: bool = False,
    ) -> None:
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device)
        self.indices = indices.to(torch.int64)
        self.batch_size = batch_size
        self.input_size = input_size
        self.augment = augment
        self.shuffle = shuffle
        self.seed = seed
        self.normalize = normalize
        self.channels_last = channels_last
        c = images.shape[1]
        self.mean = torch.tensor(mean, device=self.device).view(1, c, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, c, 1, 1)
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def shard(self, rank: int, world_size: int) -> TensorLoader:
        """Iterate only over this rank's share of every epoch; ``batch_size`` stays global.

        Each rank's batches hold ``batch_size / world_size`` samples (it must divide), so the
        learning rate and schedule of params.yaml keep their meaning. Global step k covers
        ``order[k*B:(k+1)*B]``;
        rank r takes positions r, r + world_size, ... of it. Every rank runs the same number
        of steps (DDP needs it); when the last global batch has fewer samples than ranks, the
        ranks left without one repeat its first sample (as torch's DistributedSampler pads).
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in [0, world_size={world_size})")
        if self.batch_size % world_size:
            raise ValueError(
                f"batch_size {self.batch_size} is not divisible by {world_size} processes; "
                "choose a batch size that is a multiple of distributed.nproc_per_node"
            )
        self.batch_size //= world_size
        self.rank, self.world_size = rank, world_size
        return self

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / (self.batch_size * self.world_size))

    def epoch_order(self) -> torch.Tensor:
        """The (unsharded) order of this epoch's samples: the seeded permutation if shuffling."""
        return self._order(self._generator())

    def _generator(self) -> torch.Generator:
        return torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)

    def _order(self, g: torch.Generator) -> torch.Tensor:
        if self.shuffle:
            return self.indices[torch.randperm(len(self.indices), generator=g)]
        return self.indices

    def _batches(self, order: torch.Tensor) -> Iterator[torch.Tensor]:
        step = self.batch_size * self.world_size
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            mine = chunk[self.rank :: self.world_size]
            yield mine if len(mine) else chunk[:1]

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffling and augmentation to replay."""
        self.epoch = epoch

    def transform(
        self, raw: torch.Tensor, g: torch.Generator | None, flip: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 batch -> float, resized, augmented (if ``g``), normalised; also the flip mask."""
        x = raw.to(torch.float32).div_(255.0)
        x = resize(x, self.input_size)
        n = x.shape[0]
        if flip is None:
            flip = torch.zeros(n, dtype=torch.bool)
            if self.augment is not None and g is not None:
                x = random_crop(x, self.augment.crop_padding, g)
                if self.augment.hflip:
                    flip = torch.rand(n, generator=g) < 0.5
        flip = flip.to(self.device)
        if flip.any():
            x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
        if self.augment is not None and g is not None:
            x = rotate(x, self.augment.rotation, g)
        if self.normalize:
            x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, flip

    def __iter__(self) -> Iterator[Batch]:
        g = self._generator()
        order = self._order(g)
        aug_g = g if self.augment is not None else None
        if self.world_size > 1 and aug_g is not None:
            # Each rank augments its own samples: a per-rank stream, still seeded per epoch.
            aug_g = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.epoch) * 1_009 + self.rank + 1
            )
        for idx in self._batches(order):
            idx_dev = idx.to(self.device)
            x, flip = self.transform(self.images[idx_dev], aug_g)
            yield Batch(x=x, y=self.labels[idx_dev], index=idx, flipped=flip.cpu())
