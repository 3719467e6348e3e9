"""``reffakd_uniform``: ReffAKD's loss on the structure-free version of its soft-label matrix.

The control ReffAKD's paper lacks: its autoencoder matrix is nearly flat (diagonal ~0.1 on
Fashion-MNIST), so it may act as label smoothing. Each row keeps its own-class probability
and spreads the remaining mass evenly (:func:`kdlab.softlabels.uniform_off_diagonal`): label
smoothing of exactly the same strength per class. ReffAKD minus this arm is what the
autoencoder's class structure adds.
"""

from __future__ import annotations

import torch
from torch import nn

from kdlab.methods import register
from kdlab.methods.reffakd import ReffAKD
from kdlab.softlabels import uniform_off_diagonal


@register
class ReffAKDUniform(ReffAKD):
    name = "reffakd_uniform"
    description = (
        "reffakd on the soft labels with each row's off-diagonal mass spread evenly "
        "(label smoothing of the same strength: the control for the matrix's structure)"
    )

    def __init__(
        self, student: nn.Module, *args, soft_labels: torch.Tensor | None = None, **kwargs
    ) -> None:
        flat = None if soft_labels is None else uniform_off_diagonal(soft_labels)
        super().__init__(student, *args, soft_labels=flat, **kwargs)
