"""Per-method weights visible in the loss terms, against formulas written out here.

Each method's terms are recomputed from probabilities with plain tensor maths (no
``kdlab.losses`` call), with weights chosen so that dropping or swapping one changes the
value: alpha = 0.3 (not 0.5, so alpha <-> 1 - alpha shows), DKD weights 2 and 5.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fixtures import method_params
from kdlab.data.pipeline import Batch
from kdlab.methods import get_method
from kdlab.methods.base import TeacherLogits

N, C, T, ALPHA = 6, 4, 3.0, 0.3


def _kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_j p_j log(p_j / q_j), mean over rows (terms with p_j = 0 are 0)."""
    return torch.where(p > 0, p * (p.log() - q.log()), torch.zeros_like(p)).sum(1).mean()


def _dkd(ps: torch.Tensor, pt: torch.Tensor, y: torch.Tensor, a: float, b: float, t: float):
    """t^2 (a TCKD + b NCKD) from the student's and the target's probabilities."""
    gt = torch.nn.functional.one_hot(y, C).bool()
    bs = torch.stack([ps[gt], 1 - ps[gt]], 1)
    bt = torch.stack([pt[gt], 1 - pt[gt]], 1)
    qs = ps.masked_fill(gt, 0)
    qt = pt.masked_fill(gt, 0)
    qs, qt = qs / qs.sum(1, keepdim=True), qt / qt.sum(1, keepdim=True)
    return t * t * (a * _kl(bt, bs) + b * _kl(qt, qs.masked_fill(gt, 1)))


@pytest.fixture
def setup():
    g = torch.Generator().manual_seed(0)
    student = nn.Sequential(nn.Flatten(), nn.Linear(8, C))
    x = torch.randn(N, 2, 2, 2, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 2])
    batch = Batch(x=x, y=y, index=torch.arange(N), flipped=torch.tensor([0, 1] * 3).bool())
    cached = torch.randn(2, N, C, generator=g) * 2
    soft = torch.softmax(torch.randn(C, C, generator=g) * 2, 1)  # rows != columns
    assert not torch.allclose(soft, soft.t())
    return student, batch, cached, soft


def _terms(name, student, batch, params=None, **kw):
    # batchmean: the textbook KL these tests write out (default.yaml's kd/reffakd use mean)
    params = method_params(name, **{"reduction": "batchmean", **(params or {})})
    d = get_method(name)(student, params, alpha=ALPHA, temperature=T, **kw)
    with torch.no_grad():
        logits, terms = d.forward_train(batch, epoch=100)
    return logits, terms


def _ce(logits, y):
    p = torch.softmax(logits, 1)
    return -(p[torch.arange(N), y].log()).mean()


def test_kd_alpha_on_kd_and_one_minus_alpha_on_ce_with_the_flipped_view(setup):
    student, batch, cached, _ = setup
    logits, terms = _terms("kd", student, batch, teacher=TeacherLogits(cached=cached))
    t = cached[batch.flipped.long(), batch.index]
    expected = ALPHA * T * T * _kl(torch.softmax(t / T, 1), torch.softmax(logits / T, 1))
    torch.testing.assert_close(terms["kd"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(terms["ce"], (1 - ALPHA) * _ce(logits, batch.y), rtol=1e-5, atol=0)


def test_reffakd_reads_rows_untempered(setup):
    student, batch, _, soft = setup
    logits, terms = _terms("reffakd", student, batch, soft_labels=soft)
    expected = ALPHA * T * T * _kl(soft[batch.y], torch.softmax(logits / T, 1))
    torch.testing.assert_close(terms["kd"], expected, rtol=1e-5, atol=1e-6)


# DKD's own temperature (method_params.dkd.temperature), not the global T of KD/ReffAKD.
DKD_T = 2.5


def test_dkd_alpha_and_its_own_weights(setup):
    student, batch, cached, _ = setup
    params = {"tckd_weight": 2.0, "nckd_weight": 5.0, "warmup_epochs": 1, "temperature": DKD_T}
    logits, terms = _terms(
        "dkd", student, batch, teacher=TeacherLogits(cached=cached), params=params
    )
    t = cached[batch.flipped.long(), batch.index]
    ps, pt = torch.softmax(logits / DKD_T, 1), torch.softmax(t / DKD_T, 1)
    expected = ALPHA * _dkd(ps, pt, batch.y, 2.0, 5.0, DKD_T)
    torch.testing.assert_close(terms["dkd"], expected, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(terms["ce"], (1 - ALPHA) * _ce(logits, batch.y), rtol=1e-5, atol=0)


def test_reffakd_dkd_rows_and_weights_in_place(setup):
    student, batch, _, soft = setup
    params = {"tckd_weight": 2.0, "nckd_weight": 5.0, "warmup_epochs": 1, "temperature": DKD_T}
    logits, terms = _terms("reffakd_dkd", student, batch, soft_labels=soft, params=params)
    ps = torch.softmax(logits / DKD_T, 1)
    expected = ALPHA * _dkd(ps, soft[batch.y], batch.y, 2.0, 5.0, DKD_T)
    torch.testing.assert_close(terms["dkd"], expected, rtol=1e-4, atol=1e-6)
    swapped = ALPHA * _dkd(ps, soft[:, batch.y].t(), batch.y, 5.0, 2.0, DKD_T)
    assert not torch.allclose(terms["dkd"], swapped, rtol=1e-3)


def test_dkd_temperature_is_its_own_not_the_global_one(setup):
    """Issue 23: the default preset's T = 20 (KD's, ReffAKD's) blew DKD's T^2-scaled term up;
    DKD and ReffAKD+DKD take method_params.<m>.temperature, by default mdistiller's 4."""
    from kdlab.checks import load_preset

    student, _, cached, soft = setup
    teacher = TeacherLogits(cached=cached)
    dkd = get_method("dkd")(student, method_params("dkd"), ALPHA, 20.0, teacher=teacher)
    both = get_method("reffakd_dkd")(
        student, method_params("reffakd_dkd"), ALPHA, 20.0, soft_labels=soft
    )
    assert dkd.term_temperature == both.term_temperature == 4.0
    kd = get_method("kd")(student, method_params("kd"), ALPHA, 20.0, teacher=teacher)
    assert kd.term_temperature == 20.0
    cfg = load_preset("default")
    assert cfg.temperature == 20.0
    assert cfg.method_params["dkd"]["temperature"] == 4.0
    assert cfg.method_params["reffakd_dkd"]["temperature"] == 4.0
