"""Issue 22 items 6-12: the reference code's module shapes, feature taps and recipes.

Every expected value is computed here independently of the code under test (hand-written
RepDistiller formulas, parameter counts from the layer shapes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdlab.methods import get_method
from kdlab.models import build_model


def distiller(method, teacher_name, student_name, classes=100, params=None):
    torch.manual_seed(0)
    teacher = build_model(teacher_name, classes).eval()
    student = build_model(student_name, classes)
    d = get_method(method)(
        student,
        params or {},
        alpha=0.5,
        temperature=4.0,
        teacher_model=teacher,
        input_shape=(3, 32, 32),
        num_data=4,
        train_labels=torch.arange(4),
    )
    return d, teacher, student


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- item 9: FitNet / AB / FSP modules as RepDistiller builds them ---------------------------


@pytest.mark.parametrize(
    ("teacher", "student", "s_c", "t_c"),
    [("wrn_40_2", "wrn_16_2", 64, 64), ("resnet32x4", "resnet8x4", 128, 128)],
)
def test_fitnet_regressor_is_a_1x1_conv_with_bias_at_equal_sizes(teacher, student, s_c, t_c):
    """RepDistiller ConvReg (models/util.py 131-154) at hint layer 2 (the second stage, 16x16
    both sides): Conv2d(s_C, t_C, kernel (1 + s_H - t_H) = 1) with bias, BN, ReLU."""
    d, _, _ = distiller("fitnet", teacher, student)
    conv = d.regressor.conv
    assert isinstance(conv, nn.Conv2d)
    assert tuple(conv.weight.shape) == (t_c, s_c, 1, 1)
    assert conv.bias is not None
    assert n_params(d.regressor) == t_c * s_c + t_c + 2 * t_c  # conv weight + bias + BN


def test_convreg_kernels_follow_the_reference_size_rules():
    from kdlab.methods.features import ConvReg

    down = ConvReg((8, 16, 16), (4, 8, 8)).conv  # student twice the teacher's size
    assert isinstance(down, nn.Conv2d) and (down.kernel_size, down.stride) == ((3, 3), (2, 2))
    up = ConvReg((8, 4, 4), (4, 8, 8)).conv  # half
    assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (4, 4)
    valid = ConvReg((8, 10, 10), (4, 8, 8)).conv  # larger: a valid kernel 1 + 10 - 8
    assert valid.kernel_size == (3, 3)
    x = torch.randn(2, 8, 10, 10)
    assert ConvReg((8, 10, 10), (4, 8, 8))(x).shape == (2, 4, 8, 8)


def test_ab_has_no_connector_for_equal_shapes_and_a_convreg_otherwise():
    """RepDistiller Connector (models/util.py 65-90): nn.Sequential() (identity) where channels
    and size agree, ConvReg without ReLU otherwise."""
    d, _, _ = distiller("ab", "wrn_40_2", "wrn_16_2")
    assert n_params(d) - n_params(d.student) == 0
    assert all(isinstance(c, nn.Identity) for c in d.connectors)
    d, _, _ = distiller("ab", "wrn_40_2", "wrn_40_1")  # 16/32/64 -> 32/64/128 channels
    for conn, cs, ct in zip(d.connectors, (16, 32, 64), (32, 64, 128), strict=True):
        assert tuple(conn.conv.weight.shape) == (ct, cs, 1, 1) and conn.conv.bias is not None
        assert not conn.relu


def _fsp_reference(feats_s, feats_t):
    """RepDistiller distiller_zoo/FSP.py: G = mean_hw(bot * top) per consecutive pair (the
    larger map average-pooled), loss per pair = mean (G_s - G_t)^2, summed (-b 1 per pair)."""

    def fsp(g):
        out = []
        for bot, top in zip(g[:-1], g[1:]):
            h = min(bot.shape[2], top.shape[2])
            bot, top = F.adaptive_avg_pool2d(bot, h), F.adaptive_avg_pool2d(top, h)
            b, c1, c2 = bot.shape[0], bot.shape[1], top.shape[1]
            out.append(
                torch.einsum("bix,bjx->bji", bot.reshape(b, c1, -1), top.reshape(b, c2, -1))
                / (h * h)
            )
        return out

    return sum((s - t).pow(2).mean() for s, t in zip(fsp(feats_s), fsp(feats_t)))


def test_fsp_reads_the_stem_and_has_no_connectors_for_equal_channels():
    """FSP on [f0 (stem), f1, f2, f3] (train_student.py line 255, feat[:-1]): three matrices,
    the last from the WRN's pre-BN tap; no parameters (equal channels)."""
    d, teacher, student = distiller("fsp", "wrn_40_2", "wrn_16_2", params={"fsp_weight": 1.0})
    assert n_params(d) - n_params(student) == 0
    x = torch.randn(3, 3, 32, 32)

    def taps(m):  # conv1, then the three blocks, no final BN-ReLU (RepDistiller wrn.py)
        out = [m.conv1(x)]
        for stage in m.stages:
            out.append(stage(out[-1]))
        return out

    student.eval()
    with torch.no_grad():
        want = _fsp_reference(taps(student), taps(teacher))
        s, t = student.forward_features(x), teacher.forward_features(x)
        got = d.distill_terms(s, t, None, 0)["fsp"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


# --- item 8: WRN feature taps before the final BN-ReLU ---------------------------------------


def test_wrn_taps_are_preactivation_as_repdistiller():
    """RepDistiller wrn.py: f3 = block3's output, then relu(bn1(.)) -> avgpool -> fc;
    preact: f1 = block2[0].bn1(f1), f2 = block3[0].bn1(f2), f3 = bn1(f3)."""
    torch.manual_seed(0)
    m = build_model("wrn_16_2", 100).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f0 = m.conv1(x)
        f1 = m.stages[0](f0)
        f2 = m.stages[1](f1)
        f3 = m.stages[2](f2)
        logits = m.classifier(F.relu(m.bn(f3)).mean((2, 3)))
        out = m.forward_features(x)
    for got, want in zip(out["stages"], (f1, f2, f3), strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out["stem"], f0)
    torch.testing.assert_close(out["head_map"], F.relu(m.bn(f3)))
    torch.testing.assert_close(out["logits"], logits)
    pre = (m.stages[1][0].bn1(f1), m.stages[2][0].bn1(f2), m.bn(f3))
    for got, want in zip(out["preact_stages"], pre, strict=True):
        torch.testing.assert_close(got, want)
    assert (out["stages"][-1] < 0).any()  # not after a ReLU


# --- item 10: SimKD's projector reads MobileNetV2's 320-channel block ------------------------


def test_simkd_projector_reads_mobilenetv2_last_block_not_its_head():
    """SimKD train_student.py: feat_s[-2], MobileNetV2's blocks[6] output (320 channels at
    x1.0; RepDistiller models/mobilenetv2.py f4), not the 1280-channel head conv."""
    d, _, _ = distiller("simkd", "resnet32x4", "mobilenetv2")
    assert d.projector[0][0].in_channels == 320
    assert d.projector[-1][0].out_channels == 256  # resnet32x4's last stage
