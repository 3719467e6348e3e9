"""Linear probe: a linear classifier trained on frozen features (SRRL Table 4, after CRD).

The features are computed once (no augmentation); the classifier is trained with SGD
(momentum 0.9, cosine schedule) on the probed data set's whole training split and its final
test top-1 is reported: nothing is selected, so no validation split is needed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.config import ProbeConfig


def linear_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    num_classes: int,
    cfg: ProbeConfig,
    seed: int,
) -> float:
    """Test top-1 (%) of a linear classifier fit on ``train_x`` (N x D) for ``cfg.epochs``."""
    g = torch.Generator().manual_seed(seed)
    layer = nn.Linear(train_x.shape[1], num_classes)
    with torch.no_grad():  # seeded initialisation, independent of the global RNG
        bound = 1.0 / math.sqrt(train_x.shape[1])
        layer.weight.uniform_(-bound, bound, generator=g)
        layer.bias.uniform_(-bound, bound, generator=g)
    opt = torch.optim.SGD(
        layer.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=cfg.weight_decay
    )
    steps_per_epoch = math.ceil(len(train_x) / cfg.batch_size)
    total = cfg.epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1.0 + math.cos(math.pi * s / total))
    )
    for _ in range(cfg.epochs):
        order = torch.randperm(len(train_x), generator=g)
        for k in range(steps_per_epoch):
            idx = order[k * cfg.batch_size : (k + 1) * cfg.batch_size]
            loss = F.cross_entropy(layer(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    with torch.no_grad():
        return 100.0 * float((layer(test_x).argmax(1) == test_y).double().mean())
