"""SRRL Tables 2-3 measures against independent computations (numpy, by hand)."""

import math

import numpy as np
import pytest
import torch

from kdlab.analysis import ce_to_labels, closeness, feature_l2, feature_nmi, kl_to_teacher


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_kl_to_teacher_is_kl_of_teacher_from_student_at_t1():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g) * 3
    ps, pt = _softmax(s.numpy().astype(float)), _softmax(t.numpy().astype(float))
    want = np.mean(np.sum(pt * np.log(pt / ps), axis=1))
    assert kl_to_teacher(s, t) == pytest.approx(want, rel=1e-9)
    assert kl_to_teacher(t, t) == pytest.approx(0.0, abs=1e-12)
    # KL(T || S), not KL(S || T): the two differ here
    assert kl_to_teacher(t, s) != pytest.approx(want, rel=1e-3)


def test_ce_to_labels_by_hand():
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    want = (-math.log(math.e**2 / (math.e**2 + 1)) - math.log(1 / (1 + math.e))) / 2
    assert ce_to_labels(z, y) == pytest.approx(want, rel=1e-12)


def test_feature_l2_mean_squared_distance_and_width_mismatch():
    h_s = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    h_t = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert feature_l2(h_s, h_t) == pytest.approx((25.0 + 1.0) / 2)
    assert feature_l2(torch.zeros(2, 3), h_t) is None


def _nmi(a, b):
    """Arithmetic-mean NMI from the contingency table (Manning et al., 2008)."""
    n = len(a)
    ia, ib = np.unique(a, return_inverse=True)[1], np.unique(b, return_inverse=True)[1]
    c = np.zeros((ia.max() + 1, ib.max() + 1))
    np.add.at(c, (ia, ib), 1)
    pa, pb, pab = c.sum(1) / n, c.sum(0) / n, c / n
    nz = pab > 0
    mi = np.sum(pab[nz] * np.log(pab[nz] / np.outer(pa, pb)[nz]))
    h = lambda p: -np.sum(p[p > 0] * np.log(p[p > 0]))  # noqa: E731
    return mi / ((h(pa) + h(pb)) / 2)


def test_nmi_of_separable_clusters_and_of_a_mixed_labelling():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    labels = torch.arange(60) % 3
    feats = centres[labels] + 0.1 * torch.randn(60, 2, generator=g)
    assert feature_nmi(feats, labels, 3, seed=0) == pytest.approx(100.0)
    # Labels that split each cluster in two: k-means finds the 3 clusters, NMI < 1
    mixed = labels * 2 + (torch.arange(60) // 3) % 2
    clusters = labels.numpy()  # what k-means recovers (the separable clusters)
    assert feature_nmi(feats, mixed, 3, seed=0) == pytest.approx(
        100 * _nmi(mixed.numpy(), clusters)
    )
    assert 0 < _nmi(mixed.numpy(), clusters) < 1


def test_closeness_rounds_and_leaves_out_undefined_l2():
    g = torch.Generator().manual_seed(2)
    z, zt = torch.randn(30, 3, generator=g), torch.randn(30, 3, generator=g)
    y = torch.arange(30) % 3
    row = closeness(z, torch.randn(30, 4, generator=g), zt, torch.randn(30, 5, generator=g), y, 0)
    assert set(row) == {"test_acc", "kl_teacher", "ce_label", "nmi"}
    assert row["test_acc"] == round(100 * float((z.argmax(1) == y).float().mean()), 4)
    assert row["kl_teacher"] == round(kl_to_teacher(z, zt), 4)
