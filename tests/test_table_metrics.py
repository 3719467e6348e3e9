"""Metrics for the seed tables, against hand computations and the papers' own numbers."""

import math

import pytest
import torch

from kdlab import table_metrics as tm
from kdlab.catalogue import paper_tables


def test_topk_accuracy():
    logits = torch.tensor([[5.0, 4, 3, 2, 1, 0], [0.0, 1, 2, 3, 4, 5]])
    labels = torch.tensor([4, 4])
    assert tm.topk_accuracy(logits, labels, 1) == 0.0
    assert tm.topk_accuracy(logits, labels, 2) == 50.0  # row 2 has label 4 second
    assert tm.topk_accuracy(logits, labels, 5) == 100.0
    with pytest.raises(ValueError, match="k=7 must be in 1..6"):
        tm.topk_accuracy(logits, labels, 7)


def test_kl_and_ce_against_hand_computation():
    s = torch.tensor([[0.0, math.log(3.0)]])  # p_s = (.25, .75)
    t = torch.tensor([[0.0, 0.0]])  # p_t = (.5, .5)
    want = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert tm.kl_to_teacher(s, t) == pytest.approx(want)
    assert tm.kl_to_teacher(t, t) == pytest.approx(0.0, abs=1e-7)
    assert tm.ce_to_labels(s, torch.tensor([1])) == pytest.approx(-math.log(0.75))


def test_feature_l2():
    h_t = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    h_s = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert tm.feature_l2(h_t, h_s) == pytest.approx((5 + 25) / 2)
    with pytest.raises(ValueError, match="feature shapes differ"):
        tm.feature_l2(h_t, h_s[:, :1])


def test_nmi_values():
    a = torch.tensor([0, 0, 1, 1])
    assert tm.nmi(a, torch.tensor([5, 5, 7, 7])) == pytest.approx(1.0)  # relabelled
    assert tm.nmi(a, torch.tensor([0, 1, 0, 1])) == pytest.approx(0.0, abs=1e-12)
    # a = (0,0,1,1), b = (0,0,0,1): I = 1.5 ln 2 - 0.75 ln 3 ... check against the formula
    b = torch.tensor([0, 0, 0, 1])
    ha, hb = math.log(2), -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    mi = 0.5 * math.log(0.5 / (0.5 * 0.75)) + 0.25 * math.log(0.25 / (0.5 * 0.75))
    mi += 0.25 * math.log(0.25 / (0.5 * 0.25))
    assert tm.nmi(a, b) == pytest.approx(mi / math.sqrt(ha * hb))


def test_feature_nmi_separated_clusters_is_100():
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(60) % 3
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    x = centers[labels] + 0.1 * torch.randn(60, 2, generator=g)
    assert tm.feature_nmi(x, labels) == pytest.approx(100.0)
    assert tm.feature_nmi(torch.randn(60, 2, generator=g), labels) < 30.0


def test_patel_gain_and_compression_reproduce_the_papers_printed_cells():
    t1 = {r[0]: r for r in paper_tables("patel")["table1"]["rows"]}
    t2 = {r[0]: r for r in paper_tables("patel")["table2"]["rows"]}
    teachers = ("vgg", "resnet", "densenet")
    for s in teachers:
        for j, t in enumerate(teachers):
            rate = tm.compression_rate(t1[f"{s}/student"][1], t1[f"{t}/teacher"][1])
            assert round(rate, 2) == pytest.approx(t2[f"{s}/compression"][1 + j], abs=0.011)
            gain = tm.accuracy_gain(t2[f"{s}/acc"][1 + j], t1[f"{s}/student"][2])
            assert round(gain, 2) == pytest.approx(t2[f"{s}/acc_gain"][1 + j])
    with pytest.raises(ValueError, match="teacher_params must be positive"):
        tm.compression_rate(1, 0)
