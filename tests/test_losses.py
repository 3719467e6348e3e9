"""Each loss against an independent computation (numpy, explicit loops), gradients, edges."""

import numpy as np
import pytest
import torch

from kdlab.losses import (
    at_loss,
    dkd_loss,
    kd_loss,
    pkt_loss,
    rkd_loss,
    soft_target_dkd_loss,
    soft_target_kd_loss,
)


def np_softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(p, q):
    return sum(pi * np.log(pi / qi) for pi, qi in zip(p, q) if pi > 0)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return torch.randn(6, 5, generator=g) * 3, torch.randn(6, 5, generator=g) * 3


def test_kd_loss_matches_loops(logits):
    s, t = logits
    for T in (1.0, 4.0, 20.0):
        ps, pt = np_softmax(s.numpy() / T), np_softmax(t.numpy() / T)
        expected = T * T * np.mean([np_kl(pt[i], ps[i]) for i in range(len(s))])
        assert float(kd_loss(s, t, T)) == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_soft_target_kd_targets_not_tempered(logits):
    s, _ = logits
    targets = torch.softmax(torch.randn(6, 5), dim=1)
    T = 5.0
    ps = np_softmax(s.numpy() / T)
    expected = T * T * np.mean([np_kl(targets[i].numpy(), ps[i]) for i in range(6)])
    assert float(soft_target_kd_loss(s, targets, T)) == pytest.approx(expected, rel=1e-5)
    # A target with zeros is fine (0 log 0 = 0).
    onehot = torch.eye(5)[[0, 1, 2, 3, 4, 0]]
    ce = torch.nn.functional.cross_entropy(s, onehot.argmax(1))
    assert float(soft_target_kd_loss(s, onehot, 1.0)) == pytest.approx(float(ce), rel=1e-5)


def np_dkd(s, t, y, a, b, T):
    """DKD written from the paper's definitions, sample by sample."""
    total = 0.0
    for i in range(len(s)):
        ps, pt = np_softmax(s[i] / T), np_softmax(t[i] / T)
        bs, bt = [ps[y[i]], 1 - ps[y[i]]], [pt[y[i]], 1 - pt[y[i]]]
        others = [j for j in range(len(ps)) if j != y[i]]
        qs = np.array([ps[j] for j in others]) / (1 - ps[y[i]])
        qt = np.array([pt[j] for j in others]) / (1 - pt[y[i]])
        total += a * np_kl(bt, bs) + b * np_kl(qt, qs)
    return T * T * total / len(s)


def test_dkd_matches_definition(logits):
    s, t = logits
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    for a, b, T in ((1.0, 8.0, 4.0), (0.5, 2.0, 1.0)):
        expected = np_dkd(
            s.numpy().astype(np.float64), t.numpy().astype(np.float64), y.numpy(), a, b, T
        )
        assert float(dkd_loss(s, t, y, a, b, T)) == pytest.approx(expected, rel=1e-4)


def test_soft_target_dkd_equals_dkd_on_log_targets(logits):
    s, t = logits
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    probs = torch.softmax(t, dim=1)  # untempered targets == teacher logits at T=1 for the target
    got = soft_target_dkd_loss(s, probs, y, 1.0, 8.0, 3.0)
    # dkd_loss tempers the teacher by T; T*log(probs) at temperature T gives back probs.
    ref = dkd_loss(s, 3.0 * torch.log(probs), y, 1.0, 8.0, 3.0)
    assert float(got) == pytest.approx(float(ref), rel=1e-5)


def test_identical_inputs_give_zero(logits):
    s, _ = logits
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    assert float(kd_loss(s, s, 4.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_target_kd_loss(s, torch.softmax(s, 1), 1.0)) == pytest.approx(0, abs=1e-6)
    assert float(dkd_loss(s, s, y, 1.0, 8.0, 4.0)) == pytest.approx(0.0, abs=1e-5)
    f = torch.randn(4, 3, 5, 5)
    assert float(at_loss(f, f)) == pytest.approx(0.0, abs=1e-7)
    e = torch.randn(8, 7)
    assert float(pkt_loss(e, e)) == pytest.approx(0.0, abs=1e-7)
    assert float(rkd_loss(e, e)) == pytest.approx(0.0, abs=1e-7)


def test_temperature_scales_as_t_squared(logits):
    # For large T, KL(p_t^T || p_s^T) ~ c / T^2, so the T^2-scaled loss tends to a constant.
    s, t = logits
    big = [float(kd_loss(s, t, T)) for T in (100.0, 200.0, 400.0)]
    assert big[0] == pytest.approx(big[2], rel=0.01)
    zs, zt = s - s.mean(1, keepdim=True), t - t.mean(1, keepdim=True)
    limit = float(((zs - zt) ** 2).mean(1).mean() / 2)  # variance of the logit gap / 2
    assert big[2] == pytest.approx(limit, rel=0.02)


def test_gradients_double_precision(logits):
    s, t = (x.double() for x in logits)
    s.requires_grad_(True)
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    probs = torch.softmax(t, 1)
    assert torch.autograd.gradcheck(lambda a: kd_loss(a, t, 3.0), (s,))
    assert torch.autograd.gradcheck(lambda a: soft_target_kd_loss(a, probs, 3.0), (s,))
    assert torch.autograd.gradcheck(lambda a: dkd_loss(a, t, y, 1.0, 8.0, 4.0), (s,))
    assert torch.autograd.gradcheck(lambda a: soft_target_dkd_loss(a, probs, y, 1, 8, 4), (s,))
    f = torch.randn(2, 3, 4, 4, dtype=torch.double, requires_grad=True)
    g = torch.randn(2, 5, 4, 4, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda a: at_loss(a, g), (f,))
    e = torch.randn(5, 4, dtype=torch.double, requires_grad=True)
    h = torch.randn(5, 6, dtype=torch.double)
    assert torch.autograd.gradcheck(lambda a: pkt_loss(a, h), (e,))
    assert torch.autograd.gradcheck(lambda a: rkd_loss(a, h, 25.0, 50.0), (e,))


def test_at_loss_matches_numpy():
    fs, ft = torch.randn(3, 4, 5, 5), torch.randn(3, 6, 5, 5)

    def att(f):
        a = (f**2).mean(axis=1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    expected = ((att(fs.numpy()) - att(ft.numpy())) ** 2).mean()
    assert float(at_loss(fs, ft)) == pytest.approx(expected, rel=1e-5)


def test_pkt_loss_matches_loops():
    s, t = torch.randn(5, 3).double(), torch.randn(5, 4).double()

    def probs(f):
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        k = np.array([[(f[i] @ f[j] + 1) / 2 for j in range(len(f))] for i in range(len(f))])
        return k / k.sum(axis=1, keepdims=True)

    ps, pt = probs(s.numpy()), probs(t.numpy())
    expected = np.mean(pt * np.log((pt + 1e-7) / (ps + 1e-7)))
    assert float(pkt_loss(s, t)) == pytest.approx(expected, rel=1e-6)


def test_rkd_distance_term_matches_loops():
    s, t = torch.randn(4, 3).double(), torch.randn(4, 5).double()

    def dist(f):
        n = len(f)
        d = np.array([[np.linalg.norm(f[i] - f[j]) for j in range(n)] for i in range(n)])
        return d / (d.sum() / (n * n - n))

    def huber(a, b):
        x = np.abs(a - b)
        return np.where(x < 1, 0.5 * x**2, x - 0.5).mean()

    expected = huber(dist(s.numpy()), dist(t.numpy()))
    assert float(rkd_loss(s, t, 1.0, 0.0)) == pytest.approx(expected, rel=1e-6)


# --- Reductions and the official codes' formulas (issue 10), numpy float64 ---------------


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_kldiv_default(log_q, p):
    """``nn.KLDivLoss()(log_q, p)`` at its default reduction, written out: the pointwise
    ``p (log p - log q)`` (0 where p = 0) averaged over every element."""
    safe = np.where(p > 0, p, 1.0)
    return np.where(p > 0, p * (np.log(safe) - log_q), 0.0).mean()


@pytest.mark.parametrize("T", [1.0, 4.0, 20.0])
def test_kd_mean_reduction_is_the_fmnist_notebook_formula(logits, T):
    # fashion_mnist/large_model_distillation.ipynb cell 14:
    # nn.KLDivLoss()(log_softmax(s/T), softmax(t/T)) * T * T
    s, t = (x.double() for x in logits)
    sn, tn = s.numpy(), t.numpy()
    expected = np_kldiv_default(np_log_softmax(sn / T), np_softmax(tn / T)) * T * T
    assert float(kd_loss(s, t, T, reduction="mean")) == pytest.approx(expected, rel=1e-10)
    # mean = batchmean / classes
    batchmean = float(kd_loss(s, t, T, reduction="batchmean"))
    assert batchmean == pytest.approx(expected * s.shape[1], rel=1e-10)


@pytest.mark.parametrize("T", [1.0, 5.0, 20.0])
def test_soft_target_mean_reduction_is_the_tinyslg_notebook_formula(logits, T):
    # fashion_mnist/tinySLG_distillation.ipynb cell 13 (tiny_imagenet/... cell 15):
    # nn.KLDivLoss()(log_softmax(s/T), soft_labels) * T * T, soft labels untempered.
    s, _ = (x.double() for x in logits)
    g = torch.Generator().manual_seed(3)
    targets = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.double), dim=1)
    targets[0] = torch.tensor([0.0, 0.5, 0.5, 0.0, 0.0], dtype=torch.double)  # zeros too
    expected = np_kldiv_default(np_log_softmax(s.numpy() / T), targets.numpy()) * T * T
    got = soft_target_kd_loss(s, targets, T, reduction="mean")
    assert float(got) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_soft_target_batchmean_has_the_cifar100_notebook_gradient(logits, T):
    # cifar100/tinySLG_distillation.ipynb cell 11: F.cross_entropy(s/T, soft_labels) * T * T
    # (soft-target CE, mean over the batch) = batchmean KL + the targets' entropy: same gradient.
    s, _ = (x.double() for x in logits)
    s.requires_grad_(True)
    g = torch.Generator().manual_seed(4)
    targets = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.double), dim=1)
    soft_target_kd_loss(s, targets, T, reduction="batchmean").backward()
    # d/ds of T^2 * mean_i(-sum_j p_ij log softmax(s_i/T)_j) = T (softmax(s/T) - p) / N
    sn, p = s.detach().numpy(), targets.numpy()
    expected = T * (np_softmax(sn / T) - p) / len(sn)
    np.testing.assert_allclose(s.grad.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_bad_reduction_names_the_allowed_values(logits):
    s, t = logits
    with pytest.raises(ValueError, match="'sum'.*batchmean \\| mean"):
        kd_loss(s, t, 2.0, reduction="sum")


def np_dkd_mdistiller(s, t, y, a, b, T):
    """mdistiller/distillers/DKD.py dkd_loss in float64: binary (target, sum of the others)
    probabilities with no clamp; NCKD on the logits with the target pushed down by 1000."""
    ps, pt = np_softmax(s / T), np_softmax(t / T)
    gt = np.eye(s.shape[1], dtype=bool)[y]
    bs = np.stack([ps[gt], np.where(gt, 0, ps).sum(1)], 1)
    bt = np.stack([pt[gt], np.where(gt, 0, pt).sum(1)], 1)
    tckd = (bt * (np.log(bt) - np.log(bs))).sum() / len(s)
    qs = np_log_softmax(s / T - 1000.0 * gt)
    qt = np_softmax(t / T - 1000.0 * gt)
    # F.kl_div counts 0 where the target probability is 0 (the target class, e^-1000)
    nckd = np.where(qt > 0, qt * (np.log(np.where(qt > 0, qt, 1.0)) - qs), 0.0).sum() / len(s)
    return T * T * (a * tckd + b * nckd)


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0])
def test_dkd_matches_mdistiller_with_confident_logits(T):
    # Confident teacher and student (rest mass ~1e-8 at T = 1): the old clamp of p_target at
    # 1 - 1e-7 shifted TCKD by a few percent here.
    g = torch.Generator().manual_seed(5)
    y = torch.tensor([0, 1, 2, 3])
    s = torch.randn(4, 10, generator=g, dtype=torch.float64) + 18.0 * torch.eye(10)[y].double()
    t = torch.randn(4, 10, generator=g, dtype=torch.float64) + 21.0 * torch.eye(10)[y].double()
    expected = np_dkd_mdistiller(s.numpy(), t.numpy(), y.numpy(), 1.0, 8.0, T)
    assert float(dkd_loss(s.float(), t.float(), y, 1.0, 8.0, T)) == pytest.approx(
        expected, rel=1e-3
    )
    assert float(dkd_loss(s, t, y, 1.0, 8.0, T)) == pytest.approx(expected, rel=1e-9)
    tckd_only = np_dkd_mdistiller(s.numpy(), t.numpy(), y.numpy(), 1.0, 0.0, T)
    assert float(dkd_loss(s, t, y, 1.0, 0.0, T)) == pytest.approx(tckd_only, rel=1e-7)


def np_dkd_from_probs(ps, pt, y, a, b, T, reduction):
    """DKD from the paper's definitions on given student/target probabilities (float64);
    ``mean`` averages each KL over its elements (N x 2, N x C) as nn.KLDivLoss() would."""
    n, c = ps.shape
    tckd = nckd = 0.0
    for i in range(n):
        bs, bt = [ps[i, y[i]], 1 - ps[i, y[i]]], [pt[i, y[i]], 1 - pt[i, y[i]]]
        others = [j for j in range(c) if j != y[i]]
        qs = ps[i, others] / ps[i, others].sum()
        qt = pt[i, others] / pt[i, others].sum()
        tckd += np_kl(bt, bs)
        nckd += np_kl(qt, qs)
    scale = (1 / n, 1 / n) if reduction == "batchmean" else (1 / (2 * n), 1 / (c * n))
    return T * T * (a * tckd * scale[0] + b * nckd * scale[1])


@pytest.mark.parametrize("T", [1.0, 3.0, 8.0])
@pytest.mark.parametrize("reduction", ["batchmean", "mean"])
def test_dkd_and_soft_target_dkd_match_numpy(logits, T, reduction):
    s, t = (x.double() for x in logits)
    y = torch.tensor([0, 1, 2, 3, 4, 2])
    ps = np_softmax(s.numpy() / T)
    expected = np_dkd_from_probs(ps, np_softmax(t.numpy() / T), y.numpy(), 1.0, 8.0, T, reduction)
    got = dkd_loss(s, t, y, 1.0, 8.0, T, reduction)
    assert float(got) == pytest.approx(expected, rel=1e-9)
    # Soft-label targets are not tempered.
    g = torch.Generator().manual_seed(6)
    probs = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.double), dim=1)
    expected = np_dkd_from_probs(ps, probs.numpy(), y.numpy(), 0.5, 2.0, T, reduction)
    got = soft_target_dkd_loss(s, probs, y, 0.5, 2.0, T, reduction)
    assert float(got) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("T", [1.0, 4.0, 20.0])
def test_soft_target_kd_batchmean_matches_numpy(logits, T):
    s, _ = (x.double() for x in logits)
    g = torch.Generator().manual_seed(8)
    targets = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.double) * 2, dim=1)
    ps = np_softmax(s.numpy() / T)
    expected = T * T * np.mean([np_kl(targets[i].numpy(), ps[i]) for i in range(6)])
    assert float(soft_target_kd_loss(s, targets, T)) == pytest.approx(expected, rel=1e-10)
