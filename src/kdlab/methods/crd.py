"""``crd``: Contrastive representation distillation (Tian et al. 2020).

Reference code, line numbers and remaining deviations: docs/methods.md.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kdlab.data.pipeline import Batch
from kdlab.losses import (
    crd_nce_loss,
)
from kdlab.methods import register
from kdlab.methods.features import FeatureDistiller


@register
class CRD(FeatureDistiller):
    """Contrastive representation distillation (Tian et al. 2020), the NCE form.

    Linear embeddings (student and teacher, both trained) to ``feat_dim`` on the unit sphere;
    two memory banks of every data-set position's embedding (updated with momentum ``nce_m``,
    only ever read at training positions); per anchor ``nce_k`` negatives drawn uniformly,
    from the training positions of the other classes (RepDistiller
    dataset/cifar100.py ``CIFAR100InstanceSample``, mode ``exact``: never the anchor, its
    class, or a validation image); scores ``exp(v . m / nce_t) / Z`` with Z fixed on the first
    batch; the NCE loss (noise probability ``1 / n_train``, crd/criterion.py) of the student
    anchor against the teacher memory plus the teacher anchor against the student memory.

    Reference: RepDistiller ``-b 0.8``, 128-d, 16384 negatives, T = 0.07, momentum 0.5 ->
    ``crd_weight: 0.8``, ``feat_dim: 128``, ``nce_k: 16384``, ``nce_t: 0.07``, ``nce_m: 0.5``.
    Needs ``num_data`` and ``train_labels`` (see :class:`FeatureDistiller`). ``negatives:
    exact`` draws as the reference (without replacement when ``nce_k`` does not exceed any
    anchor's negatives); ``with_replacement`` is a cheaper option (~0.3 s less per batch of
    128 at 16384 of 45,000 on a CPU).
    """

    name = "crd"
    description = "(1-alpha) CE + alpha w (NCE(s -> memory_t) + NCE(t -> memory_s))"
    schema = {
        "crd_weight": (float, 0.0, None),
        "feat_dim": (int, 1, None),
        "nce_k": (int, 1, None),
        "nce_t": (float, 1e-4, None),
        "nce_m": (float, 0.0, 1.0),
    }
    choices = {"negatives": ("exact", "with_replacement")}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        labels = self.train_labels
        if not self.num_data or labels is None or labels.shape != (self.num_data,):
            raise ValueError(
                "method 'crd' needs num_data (the number of data-set positions) and "
                "train_labels (one label per position, -1 outside the training split) to size "
                "its memory banks and draw its negatives"
            )
        labels = labels.long()
        train = torch.nonzero(labels >= 0).squeeze(1)
        # Training positions sorted by class: class c's block is order[start[c]:start[c + 1]].
        order = train[torch.argsort(labels[train], stable=True)]
        counts = torch.bincount(labels[train], minlength=int(labels.max()) + 1)
        if len(train) < 2 or int((counts > 0).sum()) < 2:
            raise ValueError("method 'crd' needs training images of two or more classes")
        self.n_train = len(train)
        d = int(self.params["feat_dim"])
        self.embed_s = nn.Linear(self.s_dim, d)
        self.embed_t = nn.Linear(self.t_dim, d)
        stdv = 1.0 / math.sqrt(d / 3)
        device = self.embed_s.weight.device
        for key in ("memory_s", "memory_t"):
            bank = torch.rand(self.num_data, d, device=device).mul_(2 * stdv).sub_(stdv)
            self.register_buffer(key, bank)
        self.register_buffer("z_s", torch.tensor(-1.0))
        self.register_buffer("z_t", torch.tensor(-1.0))
        # Sampling tables: not state (rebuilt from the labels), so not in extra_state().
        self.register_buffer("_label_of", labels.to(device), persistent=False)
        self.register_buffer("_order", order.to(device), persistent=False)
        self.register_buffer("_start", (torch.cumsum(counts, 0) - counts).to(device), False)
        self.register_buffer("_count", counts.to(device), persistent=False)

    def sample_negatives(self, index: torch.Tensor, k: int) -> torch.Tensor:
        """``len(index) x k`` training positions drawn uniformly from the classes other than
        each anchor's. ``negatives: exact`` (RepDistiller ``np.random.choice(cls_negative,
        k, replace=k > len(cls_negative))``): without replacement when every anchor has ``k``
        or more negatives, else with; ``with_replacement``: always with (cheaper on a CPU)."""
        y = self._label_of[index]
        if bool((y < 0).any()):
            raise ValueError("method 'crd': a batch holds a position outside the training split")
        count = self._count[y][:, None]
        n_other = self.n_train - count
        if self.params["negatives"] == "exact" and k <= int(n_other.min()):
            # A uniform k-subset of the other classes: the k largest of random keys, with
            # the anchor's class keyed below every other.
            keys = torch.rand(len(index), self.n_train, device=index.device)
            keys = keys.masked_fill(self._label_of[self._order][None, :] == y[:, None], -1.0)
            return self._order[keys.topk(k, dim=1).indices]
        # With replacement: a uniform draw over the class-sorted training positions with the
        # anchor's class block skipped.
        start = self._start[y][:, None]
        u = (torch.rand(len(index), k, device=index.device) * n_other).long()
        u = u.clamp_max(n_other - 1)
        u = u + count * (u >= start)
        return self._order[u]

    def distill_terms(self, s, t, batch: Batch, epoch: int):
        p = self.params
        v_s = F.normalize(self.embed_s(s["pooled"]), dim=1)
        v_t = F.normalize(self.embed_t(t["pooled"]), dim=1)
        idx = batch.index.to(v_s.device)
        rows = torch.cat([idx[:, None], self.sample_negatives(idx, int(p["nce_k"]))], dim=1)
        out_s = torch.exp(torch.bmm(self.memory_t[rows], v_s[:, :, None]).squeeze(2) / p["nce_t"])
        out_t = torch.exp(torch.bmm(self.memory_s[rows], v_t[:, :, None]).squeeze(2) / p["nce_t"])
        with torch.no_grad():
            if self.z_s < 0:  # the normalisation constants, estimated once (as the reference)
                self.z_s.fill_(float(out_s.mean() * self.n_train))
                self.z_t.fill_(float(out_t.mean() * self.n_train))
        loss = crd_nce_loss(out_s / self.z_s, self.n_train) + crd_nce_loss(
            out_t / self.z_t, self.n_train
        )
        if self.training:
            with torch.no_grad():
                m = p["nce_m"]
                for bank, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                    bank[idx] = F.normalize(bank[idx] * m + v.detach() * (1 - m), dim=1)
        return {"crd": p["crd_weight"] * loss}
