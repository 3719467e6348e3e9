"""Pure loss functions: tensors in, a scalar tensor out (mean over the batch).

Conventions (../shared/DESIGN.md section 2): KL terms use ``batchmean`` on log-probabilities and
are scaled by T^2 so their gradients keep the same magnitude as T changes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _kl_from_log_probs(log_p_target: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """sum_j p_j (log p_j - log q_j), averaged over the batch; terms with p_j = 0 are 0."""
    p = log_p_target.exp()
    terms = torch.where(p > 0, p * (log_p_target - log_q), torch.zeros_like(p))
    return terms.sum(dim=1).mean()


def kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton's KD term: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, batchmean."""
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = F.log_softmax(teacher_logits / t, dim=1)
    return t * t * _kl_from_log_probs(log_pt, log_ps)


def soft_target_kd_loss(
    student_logits: torch.Tensor, target_probs: torch.Tensor, temperature: float
) -> torch.Tensor:
    """ReffAKD's term (seed 000 eq. 2): ``T^2 * KL(targets || softmax(s/T))``.

    The targets (autoencoder soft labels) are already probabilities and are not tempered.
    """
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = torch.log(target_probs.clamp_min(torch.finfo(target_probs.dtype).tiny))
    log_pt = torch.where(target_probs > 0, log_pt, torch.full_like(log_pt, -torch.inf))
    return t * t * _kl_from_log_probs(log_pt, log_ps)


def _dkd_from_log_probs(
    log_ps: torch.Tensor,
    log_pt: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """DKD on (tempered) log-probabilities: alpha * TCKD + beta * NCKD, both scaled by T^2."""
    gt = F.one_hot(labels, log_ps.shape[1]).bool()

    def binary(log_p: torch.Tensor) -> torch.Tensor:
        log_gt = log_p.gather(1, labels[:, None])
        p_gt = log_gt.exp().clamp(max=1 - 1e-7)
        return torch.cat([log_gt, torch.log1p(-p_gt)], dim=1)

    tckd = _kl_from_log_probs(binary(log_pt), binary(log_ps))
    # Non-target distributions: renormalise over the classes other than the label.
    neg_inf = torch.full_like(log_ps, -torch.inf)
    log_qs = F.log_softmax(torch.where(gt, neg_inf, log_ps), dim=1)
    log_qt = F.log_softmax(torch.where(gt, neg_inf, log_pt), dim=1)
    log_qs = torch.where(gt, torch.zeros_like(log_qs), log_qs)  # p_t = 0 there: no term
    nckd = _kl_from_log_probs(log_qt, log_qs)
    return temperature**2 * (alpha * tckd + beta * nckd)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): ``alpha * TCKD + beta * NCKD``, each times T^2.

    TCKD is the KL between the binary (target, rest) distributions; NCKD the KL between the
    distributions over the non-target classes. Here ``alpha``/``beta`` are DKD's own weights,
    not the project's ``alpha`` (which weighs the whole distillation term against CE).
    """
    t = temperature
    return _dkd_from_log_probs(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        labels,
        alpha,
        beta,
        t,
    )


def soft_target_dkd_loss(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
) -> torch.Tensor:
    """DKD with untempered target probabilities (ReffAKD+DKD, seed 000 Table 8)."""
    log_pt = torch.log(target_probs.clamp_min(torch.finfo(target_probs.dtype).tiny))
    return _dkd_from_log_probs(
        F.log_softmax(student_logits / temperature, dim=1),
        log_pt,
        labels,
        alpha,
        beta,
        temperature,
    )


def at_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor, p: int = 2):
    """Attention transfer (Zagoruyko & Komodakis): mean squared difference of the
    L2-normalised spatial attention maps ``mean_c |f|^p``. Maps of different sizes are
    brought to the smaller one by adaptive average pooling."""

    def attention(f: torch.Tensor) -> torch.Tensor:
        return F.normalize(f.pow(p).mean(1).flatten(1), dim=1)

    hs, ht = student_feature.shape[-1], teacher_feature.shape[-1]
    if hs != ht:
        size = min(hs, ht)
        student_feature = F.adaptive_avg_pool2d(student_feature, size)
        teacher_feature = F.adaptive_avg_pool2d(teacher_feature, size)
    return (attention(student_feature) - attention(teacher_feature)).pow(2).mean()


def pkt_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor, eps=1e-7):
    """Probabilistic knowledge transfer (Passalis & Tefas): cosine similarities shifted to
    [0, 1], each row normalised into a distribution, KL(teacher || student) averaged over all
    entries (the reference code's reduction)."""

    def cond_probs(f: torch.Tensor) -> torch.Tensor:
        f = F.normalize(f.flatten(1), dim=1)
        sim = (f @ f.t() + 1.0) / 2.0
        return sim / sim.sum(dim=1, keepdim=True)

    ps, pt = cond_probs(student_embedding), cond_probs(teacher_embedding)
    return (pt * torch.log((pt + eps) / (ps + eps))).mean()


def rkd_loss(
    student_embedding: torch.Tensor,
    teacher_embedding: torch.Tensor,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
) -> torch.Tensor:
    """Relational KD (Park et al.): Huber loss between pairwise distances (each normalised by
    its mean non-zero distance) and between the cosines of all triplet angles."""
    s, t = student_embedding.flatten(1), teacher_embedding.flatten(1)

    def distances(f: torch.Tensor) -> torch.Tensor:
        d = torch.cdist(f, f)
        off = ~torch.eye(len(f), dtype=torch.bool, device=f.device)
        return d / d[off].mean().clamp_min(1e-12)

    def angles(f: torch.Tensor) -> torch.Tensor:
        diff = F.normalize(f[None, :, :] - f[:, None, :], dim=2)  # e_ij = (f_j - f_i) normalised
        return torch.bmm(diff, diff.transpose(1, 2)).flatten()

    with torch.no_grad():
        dt, at = distances(t), angles(t)
    loss_d = F.smooth_l1_loss(distances(s), dt)
    loss_a = F.smooth_l1_loss(angles(s), at)
    return distance_weight * loss_d + angle_weight * loss_a
