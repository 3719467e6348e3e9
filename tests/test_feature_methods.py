"""Feature/relation losses against independent computations, and the feature Distillers end to
end on tiny models (LeNet5 student, ResNet18 width 8 teacher, channels first)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixtures import method_params
from kdlab.config import ConfigError
from kdlab.data.pipeline import Batch
from kdlab.losses import (
    ab_loss,
    cc_loss,
    crd_nce_loss,
    fsp_loss,
    fsp_matrix,
    ft_loss,
    gated_mse_loss,
    kd_loss,
    kdsvd_loss,
    logit_l2_loss,
    match_spatial,
    nst_loss,
    sp_loss,
    vid_loss,
)
from kdlab.methods import get_method, method_names
from kdlab.methods.base import TeacherLogits
from kdlab.methods.features import pair_stages
from kdlab.methods.srrl import adain
from kdlab.models import build_model

FEATURE_METHODS = {
    "fitnet": {"fitnet"},
    "at": {"at"},
    "sp": {"sp"},
    "cc": {"cc"},
    "vid": {"vid"},
    "rkd": {"rkd"},
    "pkt": {"pkt"},
    "ab": {"ab"},
    "ft": {"ft", "ft_rec"},
    "fsp": {"fsp"},
    "nst": {"nst"},
    "kdsvd": {"kdsvd"},
    "crd": {"crd"},
    "srrl": {"fm", "sr"},
    "kd_srrl": {"fm", "sr", "kd"},
    "at_srrl": {"fm", "sr", "at"},
    "simkd": {"simkd"},
}


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


# --- losses ----------------------------------------------------------------------------------


def test_sp_loss_matches_numpy():
    s, t = rand(5, 3, 4, 4, seed=1), rand(5, 6, 2, 2, seed=2)

    def gram(f):
        f = f.reshape(5, -1).numpy().astype(np.float64)
        g = f @ f.T
        return g / np.linalg.norm(g, axis=1, keepdims=True)

    expected = ((gram(s) - gram(t)) ** 2).sum() / 25
    assert float(sp_loss(s, t)) == pytest.approx(expected, rel=1e-5)
    assert float(sp_loss(s, s)) == 0.0


def test_cc_loss_is_taylor_of_gaussian_rbf():
    s, t = rand(6, 7, seed=1), rand(6, 9, seed=2)

    def corr(f, gamma, order):
        f = f.numpy().astype(np.float64)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        out = np.zeros((6, 6))
        for i in range(6):
            for j in range(6):
                d2 = ((f[i] - f[j]) ** 2).sum()
                if order is None:
                    out[i, j] = math.exp(-gamma * d2)
                else:
                    sim = f[i] @ f[j]
                    out[i, j] = sum(
                        math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim**p
                        for p in range(order + 1)
                    )
        return out

    for order in (0, 2):
        expected = ((corr(s, 0.4, order) - corr(t, 0.4, order)) ** 2).mean()
        assert float(cc_loss(s, t, 0.4, order)) == pytest.approx(expected, rel=1e-5)
    # A long expansion is the exact RBF kernel on unit vectors.
    exact = ((corr(s, 0.4, None) - corr(t, 0.4, None)) ** 2).mean()
    assert float(cc_loss(s.double(), t.double(), 0.4, 20)) == pytest.approx(exact, rel=1e-8)
    assert float(cc_loss(s, s)) == 0.0


def test_vid_loss_matches_loops():
    mu, t, ls = rand(2, 3, 2, 2, seed=1), rand(2, 3, 2, 2, seed=2), rand(3, seed=3)
    var = np.log1p(np.exp(ls.numpy().astype(np.float64))) + 1e-5
    total = 0.0
    for n in range(2):
        for c in range(3):
            for h in range(2):
                for w in range(2):
                    d = float(mu[n, c, h, w] - t[n, c, h, w])
                    total += 0.5 * (d * d / var[c] + math.log(var[c]))
    assert float(vid_loss(mu, t, ls)) == pytest.approx(total / 24, rel=1e-5)
    # 2-D inputs (N x C) broadcast the per-channel variance too.
    assert torch.isfinite(vid_loss(rand(4, 3), rand(4, 3), ls))


def test_ab_loss_matches_loops_and_is_zero_beyond_margin():
    src, tgt = rand(3, 2, 3, 3, seed=1) * 2, rand(3, 2, 3, 3, seed=2)
    m = 0.5
    total = 0.0
    for s, t in zip(src.flatten().tolist(), tgt.flatten().tolist()):
        if t <= 0 and s > -m:
            total += (s + m) ** 2
        if t > 0 and s <= m:
            total += (s - m) ** 2
    assert float(ab_loss(src, tgt, m)) == pytest.approx(total / 3, rel=1e-5)
    beyond = torch.where(tgt > 0, torch.full_like(tgt, 2.0), torch.full_like(tgt, -2.0))
    assert float(ab_loss(beyond, tgt, 1.0)) == 0.0


def np_ft_factor(f):
    """RepDistiller distiller_zoo/FT.py factor(), p1 = 2: per sample, the channel mean of the
    squared map, flattened over space and L2-normalised."""
    a = (f.astype(np.float64) ** 2).mean(axis=1).reshape(len(f), -1)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_ft_loss_matches_the_reference_factor():
    # Channel counts differ (translator vs paraphraser factors may), so no whole-map formula.
    s, t = rand(4, 3, 5, 5, seed=1), rand(4, 6, 5, 5, seed=2)
    a, b = np_ft_factor(s.numpy()), np_ft_factor(t.numpy())
    assert float(ft_loss(s, t)) == pytest.approx(np.abs(a - b).mean(), rel=1e-5)
    assert float(ft_loss(s, t, p=2)) == pytest.approx(((a - b) ** 2).mean(), rel=1e-5)
    # Larger maps are average-pooled to the smaller first (FactorTransfer.factor_loss).
    big = rand(4, 3, 10, 10, seed=3)
    pooled = big.numpy().reshape(4, 3, 5, 2, 5, 2).mean(axis=(3, 5))
    expected = np.abs(np_ft_factor(pooled) - b).mean()
    assert float(ft_loss(big, t)) == pytest.approx(expected, rel=1e-5)
    assert float(ft_loss(3 * s, s)) == pytest.approx(0.0, abs=1e-7)


def test_ft_modules_follow_repdistiller():
    d, _, _ = make("ft")
    convs = [m for m in d.paraphraser_encoder if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in convs] == [(64, 64), (64, 32), (32, 32)]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.paraphraser_encoder)
    deconvs = [m for m in d.paraphraser_decoder if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [(m.in_channels, m.out_channels) for m in deconvs] == [(32, 32), (32, 64), (64, 64)]
    tr = [m for m in d.translator if isinstance(m, torch.nn.Conv2d)]
    assert [(m.in_channels, m.out_channels) for m in tr] == [(16, 16), (16, 32), (32, 32)]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in d.translator) == 3


def test_fsp_matrix_and_loss():
    a, b = rand(2, 3, 4, 4, seed=1), rand(2, 5, 2, 2, seed=2)
    g = fsp_matrix(a, b)
    pooled = F.adaptive_avg_pool2d(a, 2)
    for n in range(2):
        for i in range(3):
            for j in range(5):
                ref = sum(
                    float(pooled[n, i, h, w] * b[n, j, h, w]) for h in range(2) for w in range(2)
                )
                assert float(g[n, i, j]) == pytest.approx(ref / 4, rel=1e-5, abs=1e-7)
    c, d = rand(2, 3, 4, 4, seed=3), rand(2, 5, 2, 2, seed=4)
    expected = ((g - fsp_matrix(c, d)) ** 2).mean()
    assert float(fsp_loss(a, b, c, d)) == pytest.approx(float(expected), rel=1e-6)
    assert float(fsp_loss(a, b, a, b)) == 0.0


def test_nst_loss_matches_numpy():
    s, t = rand(2, 3, 4, 4, seed=1), rand(2, 5, 2, 2, seed=2)
    sp = F.adaptive_avg_pool2d(s, 2).flatten(2).numpy().astype(np.float64)
    tp = t.flatten(2).numpy().astype(np.float64)
    sp = sp / np.linalg.norm(sp, axis=2, keepdims=True)
    tp = tp / np.linalg.norm(tp, axis=2, keepdims=True)

    def k(a, b):
        return np.mean(
            [
                (a[n, i] @ b[n, j]) ** 2
                for n in range(2)
                for i in range(len(a[0]))
                for j in range(len(b[0]))
            ]
        )

    expected = k(tp, tp) + k(sp, sp) - 2 * k(sp, tp)
    assert float(nst_loss(s, t)) == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert float(nst_loss(s, s)) == pytest.approx(0.0, abs=1e-6)


def test_kdsvd_loss_matches_per_sample_loops():
    fs = [rand(2, 4, 3, 3, seed=1, dtype=torch.float64), rand(2, 5, 2, 2, seed=2).double()]
    ft = [rand(2, 4, 3, 3, seed=3, dtype=torch.float64), rand(2, 5, 2, 2, seed=4).double()]
    k = 1
    total = 0.0
    for n in range(2):
        prev = None
        for a, b in zip(fs, ft):

            def top(f, m, n=n):
                _, sv, vh = torch.linalg.svd(f[n].reshape(f.shape[1], -1).t())
                return sv[:m] / sv[:m].norm(), vh[:m].t() / vh[:m].t().norm(dim=0)

            s_t, v_t = top(b, k)
            _, v_s = top(a, k + 3)
            cols = []
            for j in range(k):
                cos = v_s.t() @ v_t[:, j]
                best = int(cos.abs().argmax())
                cols.append(v_s[:, best] * torch.sign(cos[best]))
            v_s = torch.stack(cols, 1) * s_t
            v_t = v_t * s_t
            if prev is not None:
                for i in range(v_s.shape[0]):
                    for j in range(prev[0].shape[0]):
                        for c in range(k):
                            rs = math.exp(-(float(v_s[i, c] - prev[0][j, c]) ** 2) / 8)
                            rt = math.exp(-(float(v_t[i, c] - prev[1][j, c]) ** 2) / 8)
                            total += (rs - rt) ** 2
            prev = (v_s, v_t)
    assert float(kdsvd_loss(fs, ft, k)) == pytest.approx(total / 2, rel=1e-6, abs=1e-12)
    assert float(kdsvd_loss(ft, ft, k)) == pytest.approx(0.0, abs=1e-12)


def test_crd_nce_loss_matches_loops():
    probs = torch.rand(3, 5, generator=torch.Generator().manual_seed(0)) * 1e-3
    n_data, k = 100, 4
    total = 0.0
    for row in probs.tolist():
        total += math.log(row[0] / (row[0] + k / n_data + 1e-7))
        total += sum(math.log((k / n_data) / (x + k / n_data + 1e-7)) for x in row[1:])
    assert float(crd_nce_loss(probs, n_data)) == pytest.approx(-total / 3, rel=1e-5)


def test_logit_l2_and_gated_mse():
    s, t = rand(4, 3, seed=1), rand(4, 3, seed=2)
    assert float(logit_l2_loss(s, t)) == pytest.approx(float(((s - t) ** 2).mean()), rel=1e-6)
    assert float(logit_l2_loss(s, s)) == 0.0
    mask = torch.tensor([True, False, True, False])
    per = [float(((s[i] - t[i]) ** 2).mean()) for i in (0, 2)]
    assert float(gated_mse_loss(s, t, mask)) == pytest.approx(sum(per) / 2, rel=1e-6)
    assert float(gated_mse_loss(s, t, torch.ones(4, dtype=torch.bool))) == pytest.approx(
        float(logit_l2_loss(s, t)), rel=1e-6
    )
    s.requires_grad_(True)
    none = gated_mse_loss(s, t, torch.zeros(4, dtype=torch.bool))
    none.backward()
    assert float(none.detach()) == 0.0 and float(s.grad.abs().sum()) == 0.0


def test_match_spatial_pools_to_the_smaller_map():
    a, b = match_spatial(rand(1, 2, 6, 6), rand(1, 3, 3, 3))
    assert a.shape == (1, 2, 3, 3) and b.shape == (1, 3, 3, 3)


@pytest.mark.parametrize(
    "name, fn, shapes",
    [
        ("sp", sp_loss, [(4, 2, 3, 3), (4, 3, 2, 2)]),
        ("cc", lambda a, b: cc_loss(a, b, 0.4, 2), [(4, 3), (4, 5)]),
        ("vid", lambda a, b, c: vid_loss(a, b, c), [(2, 3, 2, 2), (2, 3, 2, 2), (3,)]),
        ("ab", lambda a, b: ab_loss(a, b.detach(), 0.5), [(2, 3, 2, 2), (2, 3, 2, 2)]),
        ("ft", ft_loss, [(2, 3, 2, 2), (2, 3, 2, 2)]),
        ("fsp", fsp_loss, [(2, 2, 4, 4), (2, 3, 2, 2), (2, 2, 4, 4), (2, 3, 2, 2)]),
        ("nst", nst_loss, [(2, 3, 4, 4), (2, 2, 2, 2)]),
        (
            "kdsvd",
            lambda a, b: kdsvd_loss(
                [a, b],
                [rand(2, 4, 3, 3, seed=7, dtype=torch.float64), rand(2, 5, 2, 2, seed=8).double()],
            ),
            [(2, 4, 3, 3), (2, 5, 2, 2)],
        ),
        ("crd", lambda p: crd_nce_loss(p.abs() + 0.1, 50), [(3, 6)]),
        ("l2", logit_l2_loss, [(3, 4), (3, 4)]),
        (
            "gated",
            lambda a, b: gated_mse_loss(a, b, torch.tensor([True, False, True])),
            [(3, 4), (3, 4)],
        ),
    ],
)
def test_gradcheck(name, fn, shapes):
    inputs = [
        rand(*s, seed=i, dtype=torch.float64).requires_grad_(True) for i, s in enumerate(shapes)
    ]
    if name == "ab":  # keep away from the hinge's kinks
        inputs[0] = (inputs[0].detach() * 3).requires_grad_(True)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5)


# --- Distillers ------------------------------------------------------------------------------


def batch(n=6):
    return Batch(
        x=rand(n, 1, 28, 28, seed=5),
        y=torch.arange(n) % 10,
        index=torch.arange(n),
        flipped=torch.zeros(n, dtype=torch.bool),
    )


def models():
    torch.manual_seed(0)
    teacher = build_model("resnet18", 10, 1, width=8, input_size=28)
    # A trained teacher has non-trivial BN statistics: move them off the defaults.
    teacher.train()
    with torch.no_grad():
        teacher(rand(16, 1, 28, 28, seed=9))
    student = build_model("lenet5", 10, 1, input_size=28)
    return teacher.eval(), student


def make(name, params=None, alpha=0.6, **kw):
    teacher, student = models()
    d = get_method(name)(
        student,
        method_params(name, **{**({"nce_k": 8} if name == "crd" else {}), **(params or {})}),
        alpha=alpha,
        temperature=4.0,
        teacher_model=teacher,
        input_shape=(1, 28, 28),
        **{"num_data": 10, "train_labels": torch.arange(10) % 10, **kw},
    )
    return d, teacher, student


def test_registry_has_every_method():
    assert set(FEATURE_METHODS) | {"kd_l2"} <= set(method_names())
    for name in FEATURE_METHODS:
        assert get_method(name).needs_teacher_features
    assert not get_method("kd").needs_teacher_features


def test_pair_stages():
    assert pair_stages(2, 4) == [(0, 1), (1, 3)]
    assert pair_stages(4, 4) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert pair_stages(4, 2) == [(1, 0), (3, 1)]
    assert pair_stages(3, 4)[-1] == (2, 3)


@pytest.mark.parametrize("name", sorted(FEATURE_METHODS))
def test_feature_distiller_end_to_end(name):
    d, teacher, student = make(name)
    t_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    bn = {k: v.clone() for k, v in student.state_dict().items() if "running" in k}
    # The construction probe leaves the student's BN statistics alone.
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in bn.items())
    # The teacher is not part of the Distiller's parameters or state.
    t_ids = {id(p) for p in teacher.parameters()}
    assert not t_ids & {id(p) for p in d.parameters()}
    assert not any(k.startswith(("teacher", "_teacher")) for k in d.state_dict())
    d.train()
    assert not teacher.training
    logits, losses = d.forward_train(batch(), 0)
    assert logits.shape == (6, 10)
    assert set(losses) == {"ce"} | FEATURE_METHODS[name]
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    sum(losses.values()).backward()
    # Gradients reach the student and every extra module.
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    for child_name, child in d.named_children():
        if child_name == "student":
            continue
        for p in child.parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), (child_name, p.shape)
    # The teacher is untouched: no gradients, same weights and BN statistics, still eval.
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in t_state.items())
    assert not teacher.training
    extra = d.extra_state()
    assert set(extra) >= {n for n, _ in d.named_children() if n != "student"}
    assert "student" not in extra


def test_alpha_weighs_terms():
    d, _, _ = make("at", alpha=0.25)
    b = batch()
    torch.manual_seed(0)
    logits, losses = d.forward_train(b, 0)
    s = d.student.forward_features(b.x)
    t = d.teacher_features(b)
    from kdlab.losses import at_loss

    ref = sum(at_loss(s["stages"][i], t["stages"][j], 2) for i, j in d.pairs)
    assert torch.allclose(losses["at"], 0.25 * 1000 * ref, rtol=1e-5)
    assert torch.allclose(losses["ce"], 0.75 * F.cross_entropy(logits, b.y), rtol=1e-5)


def test_simkd_forward_test_uses_teacher_classifier():
    d, teacher, student = make("simkd")
    d.eval()
    x = batch().x
    out = d.forward_test(x)
    feat = d.projector(F.adaptive_avg_pool2d(student.forward_features(x)["stages"][-1], 4))
    assert torch.allclose(out, teacher.classifier(teacher.pool(feat)), atol=1e-6)
    with torch.no_grad():
        student.classifier.bias.add_(5.0)  # the student's own classifier plays no part
        teacher.classifier.bias.add_(torch.arange(10.0))
    shifted = d.forward_test(x)
    assert torch.allclose(shifted, out + torch.arange(10.0), atol=1e-5)
    extra = d.extra_state()
    assert "projector" in extra
    assert set(extra["teacher_head"]) == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("projectors, n_extra", [("end", 0), ("two_thirds", 1), ("all", 1)])
def test_simkd_projector_variants(projectors, n_extra):
    d, _, _ = make("simkd", {"projectors": projectors, "loss": "kl"})
    assert len(d.extra_projectors) == n_extra
    _, losses = d.forward_train(batch(), 0)
    assert torch.isfinite(losses["simkd"])


def test_simkd_label_gated_learns_only_where_teacher_is_right():
    d, teacher, _ = make("simkd", {"label_gated": 1}, alpha=1.0)
    b = batch()
    wrong = teacher(b.x).argmax(1) + 1  # labels the teacher never predicts
    b_wrong = Batch(x=b.x, y=wrong % 10, index=b.index, flipped=b.flipped)
    _, losses = d.forward_train(b_wrong, 0)
    assert float(losses["simkd"].detach()) == 0.0
    b_right = Batch(x=b.x, y=teacher(b.x).argmax(1), index=b.index, flipped=b.flipped)
    _, losses = d.forward_train(b_right, 0)
    assert float(losses["simkd"].detach()) > 0.0


@pytest.mark.parametrize("sr", ["l2", "kl", "ce"])
def test_srrl_sr_variants(sr):
    params = {"sr_loss": sr, "fm_weight": 0.0, "sr_weight": 1.0, "connector": "pooled"}
    d, teacher, _ = make("srrl", params, alpha=1.0)
    d.eval()  # connector BN in eval mode: deterministic
    b = batch()
    _, losses = d.forward_train(b, 0)
    h = d.connector(d.student.forward_features(b.x)["pooled"])
    q, p = teacher.classifier(h), teacher(b.x)
    ref = {
        "l2": F.mse_loss(q, p),
        "kl": kd_loss(q, p, 4.0),
        "ce": F.cross_entropy(q, b.y),
    }[sr]
    assert torch.allclose(losses["sr"], ref, rtol=1e-5)
    assert float(losses["fm"].detach()) == 0.0


def test_adain_matches_numpy_and_pools_to_the_style_mean():
    content, style = rand(2, 3, 5, 4, seed=1), rand(2, 3, 6, 6, seed=2) * 3 + 1
    out = adain(content, style)
    c, st = content.double().numpy(), style.double().numpy()
    ref = np.empty_like(c)
    for n in range(2):
        for ch in range(3):
            x, y = c[n, ch], st[n, ch]
            ref[n, ch] = (x - x.mean()) / np.sqrt(x.var() + 1e-5) * np.sqrt(y.var() + 1e-5)
            ref[n, ch] += y.mean()
    assert np.allclose(out.double().numpy(), ref, atol=1e-5)
    # Global average pooling of the result is the style's channel mean: at the last stage
    # SRRL's AdaIN path is the end-of-network method (the pooled student feature).
    assert torch.allclose(out.mean((2, 3)), style.mean((2, 3)), atol=1e-5)


def _teacher_from_stage(teacher, x, j, replace):
    """ResNet18 (kuangliu layout) run by hand with stage ``j``'s map replaced."""
    out = F.relu(teacher.bn1(teacher.conv1(x)))
    for k, layer in enumerate(teacher.layers):
        out = layer(out)
        if k == j:
            out = replace(out)
    return teacher.classifier(teacher.pool(out))


def test_srrl_at_an_earlier_stage_uses_adain_through_the_rest_of_the_teacher():
    d, teacher, student = make("srrl", {"stage": 0, "fm_weight": 1.0, "sr_weight": 1.0}, 1.0)
    assert d.positions == [0] and not d.at_end
    assert d.pairs[0] == (0, 1)  # LeNet5 stage 0 -> ResNet18 stage 1
    d.eval()
    b = batch()
    _, losses = d.forward_train(b, 0)
    with torch.no_grad():
        f_s = student.forward_features(b.x)["stages"][0]
        f_t = teacher.forward_features(b.x)["stages"][1]
        g = d.stage_connectors["0"](F.adaptive_avg_pool2d(f_s, f_t.shape[-2:]))
        q = _teacher_from_stage(teacher, b.x, 1, lambda f: adain(f, g))
        p = teacher(b.x)
    assert torch.allclose(losses["fm"], F.mse_loss(g, f_t), rtol=1e-5)
    assert torch.allclose(losses["sr"], F.mse_loss(q, p), rtol=1e-5)
    # L_SR trains the student through the frozen teacher; the teacher gets no gradient.
    d.train()
    _, losses = d.forward_train(b, 0)
    losses["sr"].backward()
    assert student.conv1.weight.grad is not None and student.conv1.weight.grad.abs().sum() > 0
    assert all(prm.grad is None for prm in teacher.parameters())


def test_srrl_all_stages_sums_every_pair_and_the_end():
    params = {"all_stages": 1, "sr_weight": 0.0, "connector": "pooled"}
    d, teacher, student = make("srrl", params, alpha=1.0)
    assert d.positions == [0] and d.at_end  # 2 pairs: one earlier stage, then the end
    d.eval()
    b = batch()
    _, losses = d.forward_train(b, 0)
    with torch.no_grad():
        s, t = student.forward_features(b.x), teacher.forward_features(b.x)
        g = d.stage_connectors["0"](
            F.adaptive_avg_pool2d(s["stages"][0], t["stages"][1].shape[-2:])
        )
        ref = F.mse_loss(g, t["stages"][1]) + F.mse_loss(d.connector(s["pooled"]), t["pooled"])
    assert torch.allclose(losses["fm"], ref, rtol=1e-5)
    # The default (stage -1) and the last pair's index are the paper's end-of-network method.
    for params in ({}, {"stage": 1}):
        d, _, _ = make("srrl", params)
        assert d.positions == [] and d.at_end and len(d.stage_connectors) == 0


@pytest.mark.parametrize(
    "params, message",
    [
        ({"stage": 2}, r"method_params.srrl.stage = 2 is not allowed; allowed: -1 .* 0..1"),
        ({"stage": 0.5}, r"method_params.srrl.stage = 0.5 is not allowed"),
        (
            {"all_stages": 0.5},
            r"method_params.srrl.all_stages = 0.5 is not allowed; allowed: an integer \[0, 1\]",
        ),
    ],
)
def test_srrl_position_errors(params, message):
    with pytest.raises(ValueError, match=message):
        make("srrl", params)


def test_srrl_earlier_stage_needs_a_replaceable_teacher_stage():
    torch.manual_seed(0)
    teacher = build_model("lenet5", 10, 1, input_size=28).eval()
    student = build_model("lenet5", 10, 1, input_size=28)
    with pytest.raises(ValueError, match=r"stage pair 0 needs the teacher's stage 0 .*LeNet5"):
        get_method("srrl")(
            student,
            method_params("srrl", stage=0),
            0.5,
            4.0,
            teacher_model=teacher,
            input_shape=(1, 28, 28),
        )


def test_ab_and_fsp_init_phase():
    for name in ("ab", "fsp"):
        d, _, _ = make(name, {"init_epochs": 2})
        _, early = d.forward_train(batch(), 0)
        _, late = d.forward_train(batch(), 2)
        assert float(early["ce"].detach()) == 0.0 and float(early[name].detach()) > 0.0
        assert float(late["ce"].detach()) > 0.0 and float(late[name].detach()) == 0.0


def test_models_without_feature_taps_fail_at_start():
    class Plain(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(784, 10)

        def forward(self, x):
            return self.fc(x.flatten(1))

    _, student = models()
    with pytest.raises(
        ValueError,
        match=r"method 'fitnet' needs feature taps \(forward_features\) "
        r"from the teacher, which Plain does not provide",
    ):
        get_method("fitnet")(
            student,
            method_params("fitnet"),
            0.5,
            4.0,
            teacher_model=Plain(),
            input_shape=(1, 28, 28),
        )
    teacher, _ = models()
    with pytest.raises(ValueError, match="from the student, which Plain does not provide"):
        get_method("at")(
            Plain(), method_params("at"), 0.5, 4.0, teacher_model=teacher, input_shape=(1, 28, 28)
        )

    class NoStages(Plain):
        def forward_features(self, x):
            return {"logits": self(x), "pooled": x.flatten(1), "stages": []}

    with pytest.raises(ValueError, match="'stages' feature tap from the teacher, which NoStages"):
        get_method("nst")(
            student,
            method_params("nst"),
            0.5,
            4.0,
            teacher_model=NoStages(),
            input_shape=(1, 28, 28),
        )
    with pytest.raises(ValueError, match="needs a live teacher model"):
        get_method("pkt")(student, method_params("pkt"), 0.5, 4.0, input_shape=(1, 28, 28))
    with pytest.raises(ValueError, match="needs num_data"):
        get_method("crd")(
            student, method_params("crd"), 0.5, 4.0, teacher_model=teacher, input_shape=(1, 28, 28)
        )


def test_kd_l2_is_logit_mse():
    cached = rand(2, 6, 10, seed=3)
    _, student = models()
    d = get_method("kd_l2")(
        student, method_params("kd_l2"), 0.7, 4.0, teacher=TeacherLogits(cached=cached)
    )
    b = batch()
    logits, losses = d.forward_train(b, 0)
    assert torch.allclose(losses["kd"], 0.7 * F.mse_loss(logits, cached[0, b.index]))


def test_choice_params_are_validated():
    cls = get_method("srrl")
    cls.validate_params(method_params("srrl", sr_loss="kl", fm_weight=0), "method_params.srrl.")
    with pytest.raises(
        ConfigError,
        match=r"method_params.srrl.sr_loss = 'mse' is not allowed; "
        r"allowed: l2 \| kl \| ce",
    ):
        cls.validate_params(method_params("srrl", sr_loss="mse"), "method_params.srrl.")
    with pytest.raises(ConfigError, match="allowed: simkd_weight, factor, label_gated, loss"):
        get_method("simkd").validate_params(method_params("simkd", nope=1), "method_params.simkd.")


def test_simkd_student_file_rebuilds_and_predicts_identically():
    # A LeNet5 teacher's head (pool) holds fc1 and fc2: the student file must carry them.
    torch.manual_seed(1)
    teacher = build_model("lenet5", 10, 1, input_size=28).eval()
    student = build_model("lenet5", 10, 1, input_size=28)
    kw = dict(teacher_model=teacher, input_shape=(1, 28, 28), num_data=10)
    d = get_method("simkd")(student, method_params("simkd"), 1.0, 4.0, **kw)
    d.train()
    opt = torch.optim.SGD(d.parameters(), lr=0.1)
    sum(d.forward_train(batch(), 0)[1].values()).backward()
    opt.step()
    d.eval()
    saved = {"state_dict": dict(student.state_dict()), "extra": d.extra_state()}
    assert {k.split(".")[0] for k in saved["extra"]["teacher_head"]} == {"fc1", "fc2", "classifier"}
    # Rebuild from the file alone plus a teacher of the same architecture, freshly initialised.
    torch.manual_seed(7)
    skeleton = build_model("lenet5", 10, 1, input_size=28).eval()
    student2 = build_model("lenet5", 10, 1, input_size=28)
    student2.load_state_dict(saved["state_dict"])
    d2 = get_method("simkd")(
        student2, method_params("simkd"), 1.0, 4.0, **{**kw, "teacher_model": skeleton}
    )
    d2.load_extra_state(saved["extra"])
    d2.eval()
    x = batch().x
    assert torch.equal(d2.forward_test(x), d.forward_test(x))
    with pytest.raises(ValueError, match="no 'teacher_head'"):
        d2.load_extra_state({"projector": saved["extra"]["projector"]})


def test_crd_negatives_are_other_class_training_positions():
    torch.manual_seed(0)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, -1, -1, 0, 1, 2, 1])  # -1: validation positions
    d, _, _ = make("crd", {"nce_k": 50}, num_data=12, train_labels=labels)
    anchors = torch.tensor([0, 1, 2, 3, 4, 5, 8, 9, 10, 11])
    for _ in range(20):
        neg = d.sample_negatives(anchors, 50)
        assert neg.shape == (10, 50)
        assert (labels[neg] >= 0).all()  # never a non-training position
        assert (labels[neg] != labels[anchors][:, None]).all()  # never the anchor's class
        assert (neg != anchors[:, None]).all()  # never the anchor itself
    # Uniform over the other classes' training positions: anchor 0 (class 0) draws 1, 2, 4,
    # 5, 9, 10, 11 each about 1/7 of the time.
    draws = d.sample_negatives(torch.zeros(1, dtype=torch.long), 70000)[0]
    counts = torch.bincount(draws, minlength=12).float() / 70000
    allowed = torch.tensor([1, 2, 4, 5, 9, 10, 11])
    assert torch.allclose(counts[allowed], torch.full((7,), 1 / 7), atol=0.01)
    assert d.n_train == 10
    with pytest.raises(ValueError, match="outside the training split"):
        d.sample_negatives(torch.tensor([6]), 3)
    # k <= every anchor's negatives: exact draws without replacement (RepDistiller), the
    # option with_replacement draws with.
    for negatives, distinct in (("exact", True), ("with_replacement", False)):
        d, _, _ = make(
            "crd", {"nce_k": 5, "negatives": negatives}, num_data=12, train_labels=labels
        )
        rows = [d.sample_negatives(anchors, 5) for _ in range(30)]
        for neg in rows:
            assert (labels[neg] >= 0).all() and (labels[neg] != labels[anchors][:, None]).all()
        repeats = any(len(set(r.tolist())) < 5 for neg in rows for r in neg)
        assert repeats != distinct
    d, _, _ = make("crd", {"nce_k": 1}, num_data=12, train_labels=labels)
    draws = d.sample_negatives(torch.zeros(2000, dtype=torch.long), 1)[:, 0]
    counts = torch.bincount(draws, minlength=12).float() / 2000
    assert torch.allclose(counts[allowed], torch.full((7,), 1 / 7), atol=0.03)


def test_srrl_defaults_are_the_official_codes():
    # KD_SRRL train_imagenet_distillation.py: loss = CE + statm(L_FM) + args.weight * MSE,
    # --weight default 1.
    p = get_method("srrl").resolve_params(method_params("srrl"))
    assert (p["fm_weight"], p["sr_weight"], p["sr_loss"]) == (1.0, 1.0, "l2")


@pytest.mark.parametrize(
    "student_name, teacher_name, expected",
    [("lenet5", "resnet18", (0, 1)), ("resnet18", "resnet18", (1, 1))],
)
def test_fitnet_default_hint_is_repdistillers_second_stage(student_name, teacher_name, expected):
    # RepDistiller --hint_layer 2 indexes [stem, stage1, stage2, ...]: the second stage.
    torch.manual_seed(0)
    teacher = build_model(teacher_name, 10, 1, width=8, input_size=28).eval()
    kw = {"width": 8} if student_name == "resnet18" else {}
    student = build_model(student_name, 10, 1, input_size=28, **kw)
    d = get_method("fitnet")(
        student, method_params("fitnet"), 0.5, 4.0, teacher_model=teacher, input_shape=(1, 28, 28)
    )
    assert d.hint == expected


def test_ab_taps_the_students_pre_activation_when_the_model_gives_it():
    d, teacher, student = make("ab")
    b = batch()
    plain = d.forward_train(b, 0)[1]["ab"]
    base = student.forward_features

    def with_preact(x):
        out = base(x)
        return {**out, "preact_stages": [-f for f in out["stages"]]}

    student.forward_features = with_preact
    shifted = d.forward_train(b, 0)[1]["ab"]
    s = with_preact(b.x)
    t = teacher.forward_features(b.x)
    k = len(d.pairs)
    expected = sum(
        2.0 ** (n - k + 1)
        * ab_loss(*match_spatial(conn(s["preact_stages"][i]), t["stages"][j]), 1.0)
        for n, ((i, j), conn) in enumerate(zip(d.pairs, d.connectors))
    )
    assert torch.allclose(shifted, 0.6 * 0.003 * expected, rtol=1e-5)
    assert not torch.allclose(shifted, plain)


def test_srrl_map_connector_is_the_official_codes():
    # KD_SRRL train_imagenet_distillation.py 113-117: transfer_conv on the student's last map,
    # statm_loss (squared gap of the spatial means, mean over channels and batch), and the
    # teacher's avgpool + fc on the connected map, MSE to the teacher's logits.
    d, teacher, student = make("srrl", {}, alpha=1.0)
    assert d.params["connector"] == "map" and d.params["sr_weight"] == 1.0
    assert isinstance(d.connector[0], torch.nn.Conv2d) and d.connector[0].kernel_size == (1, 1)
    d.eval()
    b = batch()
    _, losses = d.forward_train(b, 0)
    f_t = teacher.forward_features(b.x)["stages"][-1]
    f_s = student.forward_features(b.x)["stages"][-1]
    g = d.connector(F.adaptive_avg_pool2d(f_s, f_t.shape[-2:]))
    gs = g.detach().double().numpy().mean(axis=(2, 3))
    gt = f_t.double().numpy().mean(axis=(2, 3))
    statm = ((gs - gt) ** 2).mean(axis=1).mean()
    assert float(losses["fm"].detach()) == pytest.approx(statm, rel=1e-5)
    q = teacher.classifier(torch.flatten(F.adaptive_avg_pool2d(g, 1), 1))  # ResNet: GAP + fc
    assert torch.allclose(losses["sr"], F.mse_loss(q, teacher(b.x)), rtol=1e-5)


@pytest.mark.parametrize("name", ["kd_srrl", "at_srrl"])
def test_srrl_combinations_add_the_other_term_to_srrls(name):
    """SRRL Table 10's KD+Ours / AT+Ours: SRRL's own terms unchanged, plus KD (T^2 KL on the
    live teacher's logits) or AT summed over the stage pairs, all weighed by alpha."""
    from kdlab.losses import at_loss

    extra = {"kd_weight": 2.0} if name == "kd_srrl" else {"at_weight": 500.0}
    combo, teacher, student = make(name, extra, alpha=0.6)
    srrl, _, _ = make("srrl", {}, alpha=0.6)
    combo.eval(), srrl.eval()  # connector BN in eval mode: deterministic
    b = batch()
    _, got = combo.forward_train(b, 0)
    _, ref = srrl.forward_train(b, 0)
    for k in ("ce", "fm", "sr"):
        assert torch.allclose(got[k], ref[k], rtol=1e-6), k
    if name == "kd_srrl":
        want = 0.6 * 2.0 * kd_loss(student(b.x), teacher(b.x), 4.0)
        assert torch.allclose(got["kd"], want, rtol=1e-5)
    else:
        s, t = student.forward_features(b.x)["stages"], teacher.forward_features(b.x)["stages"]
        want = 0.6 * 500.0 * sum(at_loss(s[i], t[j], 2) for i, j in [(0, 1), (1, 3)])
        assert torch.allclose(got["at"], want, rtol=1e-5)
