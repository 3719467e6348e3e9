"""Metrics the seed tables report and the stages do not compute yet (pure functions).

- top-k accuracy (SRRL Tables 1, 7, 9: top-5),
- KL(teacher || student) and CE(student, labels) on the test set (SRRL Table 2),
- mean squared L2 distance ||h_T - h_S||^2 of penultimate features and the NMI of a k-means
  clustering of the student's features against the labels (SRRL Table 3),
- accuracy gain over the CE baseline and compression rate = student params / teacher params
  (Patel Tables 2-3: e.g. 3,811,680 / 15,239,872 = .25).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """Percentage of rows whose label is among the ``k`` largest logits."""
    if not 1 <= k <= logits.shape[1]:
        raise ValueError(f"k={k} must be in 1..{logits.shape[1]} (the number of classes)")
    top = logits.topk(k, dim=1).indices
    return 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean over samples of KL(p_teacher || p_student) at temperature 1 (nats)."""
    log_s = F.log_softmax(student_logits.float(), dim=1)
    log_t = F.log_softmax(teacher_logits.float(), dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean").item()


def ce_to_labels(student_logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of the student's predictions with the ground truth (nats)."""
    return F.cross_entropy(student_logits.float(), labels).item()


def feature_l2(h_teacher: torch.Tensor, h_student: torch.Tensor) -> float:
    """Mean over samples of ||h_T - h_S||^2 (features flattened; same width required)."""
    if h_teacher.shape != h_student.shape:
        raise ValueError(
            f"feature shapes differ: {tuple(h_teacher.shape)} vs {tuple(h_student.shape)}"
        )
    d = (h_teacher.flatten(1).float() - h_student.flatten(1).float()).pow(2).sum(dim=1)
    return d.mean().item()


def nmi(a: torch.Tensor, b: torch.Tensor) -> float:
    """Normalized mutual information of two labelings, I(a;b) / sqrt(H(a) H(b)) (geometric
    normalisation); 1.0 when both are constant."""
    a, b = a.long(), b.long()
    _, ai = torch.unique(a, return_inverse=True)
    _, bi = torch.unique(b, return_inverse=True)
    n = a.numel()
    joint = torch.zeros(int(ai.max()) + 1, int(bi.max()) + 1, dtype=torch.float64)
    joint.index_put_((ai, bi), torch.ones(n, dtype=torch.float64), accumulate=True)
    p = joint / n
    pa, pb = p.sum(1), p.sum(0)
    nz = p > 0
    mi = (p[nz] * (p[nz] / (pa[:, None] * pb[None, :])[nz]).log()).sum().item()
    ha = -(pa[pa > 0] * pa[pa > 0].log()).sum().item()
    hb = -(pb[pb > 0] * pb[pb > 0].log()).sum().item()
    if ha == 0.0 or hb == 0.0:
        return 1.0 if ha == hb else 0.0
    return mi / math.sqrt(ha * hb)


def kmeans(x: torch.Tensor, k: int, iters: int = 50, seed: int = 0) -> torch.Tensor:
    """Cluster ids of Lloyd's k-means with k-means++ initialisation (seeded)."""
    g = torch.Generator().manual_seed(seed)
    x = x.flatten(1).double()
    centers = x[torch.randint(len(x), (1,), generator=g)]
    for _ in range(1, k):
        d = torch.cdist(x, centers).min(dim=1).values.pow(2)
        centers = torch.cat([centers, x[torch.multinomial(d / d.sum(), 1, generator=g)]])
    for _ in range(iters):
        ids = torch.cdist(x, centers).argmin(dim=1)
        new = torch.stack(
            [x[ids == c].mean(0) if (ids == c).any() else centers[c] for c in range(k)]
        )
        if torch.allclose(new, centers):
            break
        centers = new
    return torch.cdist(x, centers).argmin(dim=1)


def feature_nmi(features: torch.Tensor, labels: torch.Tensor, seed: int = 0) -> float:
    """NMI (%) between a k-means clustering of ``features`` (k = number of classes) and labels."""
    k = int(labels.unique().numel())
    return 100.0 * nmi(kmeans(features, k, seed=seed), labels)


def accuracy_gain(kd_acc: float, baseline_acc: float) -> float:
    """Patel's accuracy gain: the distilled student's accuracy minus its CE baseline's."""
    return kd_acc - baseline_acc


def compression_rate(student_params: int, teacher_params: int) -> float:
    """Patel's compression rate: student parameters / teacher parameters."""
    if teacher_params <= 0:
        raise ValueError(f"teacher_params must be positive, got {teacher_params}")
    return student_params / teacher_params
