"""Pure loss functions: tensors in, a scalar tensor out (mean over the batch).

Conventions (../shared/DESIGN.md section 2): KL terms are scaled by T^2 so their gradients keep
the same magnitude as T changes. Their ``reduction`` is ``"batchmean"`` (sum over classes, mean
over the batch: Hinton's KD, mdistiller, RepDistiller) or ``"mean"`` (mean over every element,
i.e. batchmean / classes: ``nn.KLDivLoss()``'s default, which the official ReffAKD notebooks use;
docs/methods.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

KL_REDUCTIONS = ("batchmean", "mean")


def _kl_from_log_probs(
    log_p_target: torch.Tensor, log_q: torch.Tensor, reduction: str = "batchmean"
) -> torch.Tensor:
    """``p_j (log p_j - log q_j)`` summed over classes and averaged over the batch
    (``batchmean``) or averaged over every element (``mean``); terms with p_j = 0 are 0."""
    if reduction not in KL_REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not allowed; allowed: batchmean | mean")
    p = log_p_target.exp()
    terms = torch.where(p > 0, p * (log_p_target - log_q), torch.zeros_like(p))
    return terms.sum(dim=1).mean() if reduction == "batchmean" else terms.mean()


def _log_probs(probs: torch.Tensor) -> torch.Tensor:
    """``log p`` with exact ``-inf`` where ``p == 0`` (those KL terms are then 0)."""
    log_p = torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))
    return torch.where(probs > 0, log_p, torch.full_like(log_p, -torch.inf))


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Hinton's KD term: ``T^2 * KL(softmax(t/T) || softmax(s/T))``, reduced by ``reduction``
    (``"batchmean"`` or ``"mean"``, see the module docstring)."""
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    log_pt = F.log_softmax(teacher_logits / t, dim=1)
    return t * t * _kl_from_log_probs(log_pt, log_ps, reduction)


def patel_printed_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """The KD term as Patel & Obeid print it (paper 004, its ``train_with_KD``):
    ``-nn.KLDivLoss()(softmax(s/T), softmax(t/T)) * (T + 1)``, i.e.
    ``-(T + 1) mean_{b,c} p_t (log p_t - p_s)``: probabilities where ``KLDivLoss`` expects
    log-probabilities, a minus sign and ``T + 1`` for ``T^2``. Up to the teacher's entropy (a
    constant) it is ``(T + 1) mean(p_t p_s)``: minimising it pushes the student *away* from
    the teacher. Kept only to reproduce the printed code (``method_params.kd.form``)."""
    t = temperature
    p_s = F.softmax(student_logits / t, dim=1)
    p_t = F.softmax(teacher_logits / t, dim=1)
    # nn.KLDivLoss()(input=p_s, target=p_t): mean of p_t (log p_t - p_s), 0 where p_t = 0
    return -(torch.special.xlogy(p_t, p_t) - p_t * p_s).mean() * (t + 1)


def soft_target_kd_loss(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    temperature: float,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """ReffAKD's term (its eq. 2): ``T^2 * KL(targets || softmax(s/T))``.

    The targets (autoencoder soft labels) are already probabilities and are not tempered.
    ``reduction``: ``"batchmean"`` or ``"mean"`` (see the module docstring).
    """
    t = temperature
    log_ps = F.log_softmax(student_logits / t, dim=1)
    return t * t * _kl_from_log_probs(_log_probs(target_probs), log_ps, reduction)


def _dkd_from_log_probs(
    log_ps: torch.Tensor,
    log_pt: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """DKD on (tempered) log-probabilities: alpha * TCKD + beta * NCKD, both scaled by T^2."""
    gt = F.one_hot(labels, log_ps.shape[1]).bool()
    neg_inf = torch.full_like(log_ps, -torch.inf)

    def binary(log_p: torch.Tensor) -> torch.Tensor:
        # (target, rest) log-masses. mdistiller (DKD.py cat_mask) sums the non-target
        # probabilities; their log-sum-exp is that sum without the cancellation (and without a
        # clamp) that log(1 - p_target) suffers for confident logits.
        log_gt = log_p.gather(1, labels[:, None])
        log_rest = torch.logsumexp(torch.where(gt, neg_inf, log_p), dim=1, keepdim=True)
        return torch.cat([log_gt, log_rest], dim=1)

    tckd = _kl_from_log_probs(binary(log_pt), binary(log_ps), reduction)
    # Non-target distributions: renormalise over the classes other than the label.
    log_qs = F.log_softmax(torch.where(gt, neg_inf, log_ps), dim=1)
    log_qt = F.log_softmax(torch.where(gt, neg_inf, log_pt), dim=1)
    log_qs = torch.where(gt, torch.zeros_like(log_qs), log_qs)  # p_t = 0 there: no term
    nckd = _kl_from_log_probs(log_qt, log_qs, reduction)
    return temperature**2 * (alpha * tckd + beta * nckd)


def dkd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """Decoupled KD (Zhao et al. 2022): ``alpha * TCKD + beta * NCKD``, each times T^2.

    TCKD is the KL between the binary (target, rest) distributions; NCKD the KL between the
    distributions over the non-target classes. Here ``alpha``/``beta`` are DKD's own weights,
    not the project's ``alpha`` (which weighs the whole distillation term against CE).
    ``reduction="batchmean"`` is mdistiller's (``size_average=False`` / batch); ``"mean"``
    averages each KL over all its elements (N x 2 for TCKD, N x C for NCKD).
    """
    t = temperature
    return _dkd_from_log_probs(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        labels,
        alpha,
        beta,
        t,
        reduction,
    )


def soft_target_dkd_loss(
    student_logits: torch.Tensor,
    target_probs: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    beta: float,
    temperature: float,
    reduction: str = "batchmean",
) -> torch.Tensor:
    """DKD with untempered target probabilities (ReffAKD+DKD, ReffAKD's Table 8)."""
    # A tiny floor, not -inf: the non-target renormalisation needs one finite entry.
    log_pt = torch.log(target_probs.clamp_min(torch.finfo(target_probs.dtype).tiny))
    return _dkd_from_log_probs(
        F.log_softmax(student_logits / temperature, dim=1),
        log_pt,
        labels,
        alpha,
        beta,
        temperature,
        reduction,
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


# --- Feature and relation losses (the feature-based Distillers in kdlab.methods) ------------


def match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring two feature maps to their common (smaller) height and width by adaptive average
    pooling; maps that already agree are returned as they are."""
    if a.shape[-2:] == b.shape[-2:]:
        return a, b
    size = (min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1]))
    return F.adaptive_avg_pool2d(a, size), F.adaptive_avg_pool2d(b, size)


def sp_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Similarity-preserving KD (Tung & Mori 2019): the batch's ``b x b`` Gram matrices of the
    flattened features, each row L2-normalised, compared by ``||G_s - G_t||_F^2 / b^2``."""
    b = student_feature.shape[0]

    def gram(f: torch.Tensor) -> torch.Tensor:
        f = f.reshape(b, -1)
        return F.normalize(f @ f.t(), dim=1)

    return (gram(student_feature) - gram(teacher_feature)).pow(2).sum() / (b * b)


def cc_loss(
    student_embedding: torch.Tensor,
    teacher_embedding: torch.Tensor,
    gamma: float = 0.4,
    order: int = 2,
) -> torch.Tensor:
    """Correlation congruence (Peng et al. 2019): the batch's correlation matrices under a
    Gaussian RBF kernel ``exp(-gamma ||a - b||^2)`` of the L2-normalised embeddings, expanded
    by Taylor series to ``order`` (``sum_p e^{-2 gamma} (2 gamma)^p / p! (a.b)^p``), compared by
    the mean squared difference."""

    import math

    def corr(f: torch.Tensor) -> torch.Tensor:
        f = F.normalize(f.flatten(1), dim=1)
        sim = f @ f.t()
        out = torch.zeros_like(sim)
        for p in range(order + 1):
            out = out + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
        return out

    return F.mse_loss(corr(student_embedding), corr(teacher_embedding))


def cc_repdistiller_loss(
    student_embedding: torch.Tensor, teacher_embedding: torch.Tensor
) -> torch.Tensor:
    """RepDistiller's ``Correlation`` (``distiller_zoo/CC.py`` lines 7-17, the code CC's authors
    shared): ``d = |e_s - e_t|``, the mean over consecutive batch pairs of ``sum_c d_i d_{i+1}``.
    """
    delta = (student_embedding - teacher_embedding).abs()
    return (delta[:-1] * delta[1:]).sum(1).mean()


def vid_loss(
    pred_mean: torch.Tensor,
    target: torch.Tensor,
    log_scale: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Variational information distillation (Ahn et al. 2019): the Gaussian negative
    log-likelihood (without the constant) of the teacher feature under a mean predicted from
    the student and a per-channel variance ``softplus(log_scale) + eps``, averaged over all
    entries: ``mean(0.5 * ((mu - t)^2 / var + log var))``."""
    shape = [1, -1] + [1] * (target.dim() - 2)
    var = (F.softplus(log_scale) + eps).view(shape)
    return (0.5 * ((pred_mean - target).pow(2) / var + torch.log(var))).mean()


def ab_loss(source: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Activation-boundary transfer (Heo et al. 2019), the hinge-squared alternative loss:
    where the teacher neuron is inactive (``target <= 0``) the student's pre-activation is
    pushed below ``-margin``, where it is active above ``margin``; summed over neurons and
    averaged over the batch."""
    off = (source > -margin) & (target <= 0)
    on = (source <= margin) & (target > 0)
    loss = (source + margin).pow(2) * off + (source - margin).pow(2) * on
    return loss.sum() / source.shape[0]


def ft_factor(feature: torch.Tensor, p1: int = 2) -> torch.Tensor:
    """Factor transfer's normalised factor: the spatial map ``mean_c f^p1`` of each sample,
    flattened and L2-normalised over space (RepDistiller distiller_zoo/FT.py ``factor``)."""
    return F.normalize(feature.pow(p1).mean(1).flatten(1), dim=1)


def ft_loss(
    student_factor: torch.Tensor, teacher_factor: torch.Tensor, p: int = 1, p1: int = 2
) -> torch.Tensor:
    """Factor transfer (Kim et al. 2018) as RepDistiller's ``FactorTransfer(p1=2, p2=1)``:
    the factors' spatial maps :func:`ft_factor` compared by the mean of ``|a - b|^p``
    (p = 1 in the paper). Maps of different sizes are pooled to the smaller one."""
    student_factor, teacher_factor = match_spatial(student_factor, teacher_factor)
    diff = ft_factor(student_factor, p1) - ft_factor(teacher_factor, p1)
    return diff.abs().pow(p).mean()


def fsp_matrix(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Flow of solution procedure (Yim et al. 2017): ``G_ij = sum_hw F1_i F2_j / (h w)``, an
    ``N x C1 x C2`` matrix; the larger map is pooled to the smaller one first."""
    first, second = match_spatial(first, second)
    h, w = first.shape[-2:]
    return first.flatten(2) @ second.flatten(2).transpose(1, 2) / (h * w)


def fsp_loss(
    student_first: torch.Tensor,
    student_second: torch.Tensor,
    teacher_first: torch.Tensor,
    teacher_second: torch.Tensor,
) -> torch.Tensor:
    """Mean squared difference between the student's and the teacher's FSP matrices of one
    pair of layers (channel counts must agree: the FSP Distiller adds 1x1 connectors)."""
    return (
        (fsp_matrix(student_first, student_second) - fsp_matrix(teacher_first, teacher_second))
        .pow(2)
        .mean()
    )


def nst_loss(student_feature: torch.Tensor, teacher_feature: torch.Tensor) -> torch.Tensor:
    """Neuron selectivity transfer (Huang & Wang 2017): squared MMD with the polynomial kernel
    ``k(a, b) = (a.b)^2`` between the sets of channel activation maps (each flattened and
    L2-normalised over space): ``mean K_tt + mean K_ss - 2 mean K_st``. Channel counts may
    differ; maps of different sizes are pooled to the smaller one."""
    s, t = match_spatial(student_feature, teacher_feature)
    s = F.normalize(s.flatten(2), dim=2)
    t = F.normalize(t.flatten(2), dim=2)

    def poly(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a @ b.transpose(1, 2)).pow(2)

    return poly(t, t).mean() + poly(s, s).mean() - 2 * poly(s, t).mean()


def _finite(x: torch.Tensor) -> torch.Tensor:
    return torch.where(torch.isfinite(x), x, torch.zeros_like(x))


def _svd_knowledge(feature: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``n`` singular values (L2-normalised) and right singular vectors (``N x C x n``,
    over channels) of each sample's ``HW x C`` feature matrix."""
    x = feature.flatten(2).transpose(1, 2)
    if x.requires_grad:  # SVD gradients are infinite at repeated singular values: drop those
        x.register_hook(lambda g: None if g is None else _finite(g))
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    s, v = _finite(s[:, :n]), _finite(vh.transpose(1, 2)[:, :, :n])
    return F.normalize(s, dim=1), F.normalize(v, dim=1)


def kdsvd_loss(
    student_features: list[torch.Tensor],
    teacher_features: list[torch.Tensor],
    k: int = 1,
) -> torch.Tensor:
    """KD-SVD (Lee et al. 2018): each layer's knowledge is its top-``k`` right singular vectors
    (student: the best-matching, sign-aligned of its top ``k + 3``), scaled by the teacher's
    normalised singular values; consecutive layers are related by the element-wise RBF
    ``exp(-(v_i - v_{i-1})^2 / 8)`` and the student's relations are pulled to the teacher's
    (squared error summed, averaged over the batch). Needs two or more layer pairs, with equal
    channel counts and spatial sizes per pair."""
    prev: tuple[torch.Tensor, torch.Tensor] | None = None
    total = student_features[0].new_zeros(())
    for fs, ft in zip(student_features, teacher_features):
        with torch.no_grad():
            s_t, v_t = _svd_knowledge(ft, k)
        _, v_s = _svd_knowledge(fs, k + 3)
        cos = v_s.transpose(1, 2) @ v_t  # N x (k+3) x k
        pick = cos.abs().argmax(dim=1, keepdim=True)  # N x 1 x k
        sign = torch.sign(cos.gather(1, pick)).detach()
        v_s = v_s.gather(2, pick.expand(-1, v_s.shape[1], -1)) * sign
        v_t, v_s = v_t * s_t[:, None, :], v_s * s_t[:, None, :]
        if prev is not None:
            rbf_s = torch.exp(-(v_s[:, :, None, :] - prev[0][:, None, :, :]).pow(2) / 8)
            rbf_t = torch.exp(-(v_t[:, :, None, :] - prev[1][:, None, :, :]).pow(2) / 8)
            total = total + _finite((rbf_s - rbf_t.detach()).pow(2)).sum()
        prev = (v_s, v_t)
    return total / student_features[0].shape[0]


def crd_nce_loss(probs: torch.Tensor, num_data: int, eps: float = 1e-7) -> torch.Tensor:
    """CRD's NCE objective (Tian et al. 2020). ``probs`` is ``N x (1 + K)``: the normalised
    scores ``exp(f.m / T) / Z`` of the positive (column 0) and K negatives drawn uniformly from
    ``num_data`` memory entries (noise probability ``1 / num_data``). Returns
    ``-(sum log h(pos) + sum log(1 - h(neg))) / N`` with ``h(x) = x / (x + K / num_data)``."""
    k = probs.shape[1] - 1
    noise = k / num_data
    pos, neg = probs[:, 0], probs[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + eps))
    log_d0 = torch.log(noise / (neg + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / probs.shape[0]


def logit_l2_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between logits (the L2 response loss of the SimKD study, paper 001;
    SRRL's ``L_SR-L2``)."""
    return F.mse_loss(student_logits, teacher_logits)


def gated_mse_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-sample mean squared error averaged over the samples where ``mask`` is true (0, still
    attached to the graph, when none is): SimKD's label-gated learning (the SimKD study)."""
    per_sample = (pred - target).pow(2).flatten(1).mean(dim=1)
    m = mask.to(per_sample.dtype)
    return (per_sample * m).sum() / m.sum().clamp_min(1.0)
