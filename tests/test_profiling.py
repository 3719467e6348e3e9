import pytest
from torch import nn

from kdlab.models import build_model
from kdlab.profiling import parse_shape, profile_model, ratios


def test_counts_match_hand_computation():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10)
    )
    p = profile_model(model, "toy", (1, 8, 8))
    conv_macs = 4 * 8 * 8 * (1 * 3 * 3)  # outputs x kernel volume
    lin_macs = 4 * 8 * 8 * 10
    assert p.macs == conv_macs + lin_macs
    assert p.flops == 2 * p.macs
    assert p.params == (4 * 9 + 4) + (256 * 10 + 10)
    assert p.param_mib == pytest.approx(p.params * 4 / 2**20)
    # Leaf outputs: conv 256 + relu 256 + flatten 256 + linear 10 floats.
    assert p.activation_mib == pytest.approx((256 * 3 + 10) * 4 / 2**20)


def test_conv_transpose_counted_once_per_input_position():
    m = nn.ConvTranspose2d(2, 3, 4, 2, 1)
    p = profile_model(m, "ct", (2, 4, 4))
    # Each of the 2*4*4 input values is multiplied into a 3x4x4 kernel slab.
    assert p.macs == 2 * 4 * 4 * 3 * 4 * 4


def test_paper_fmnist_ratios_fvcore():
    t = profile_model(build_model("resnet18", 10, 1, input_size=32), "resnet18", (1, 32, 32))
    c = profile_model(build_model("cae", 0, 1), "cae", (1, 32, 32))
    r = ratios(t, c)
    assert t.params == 11_172_810 and c.params == 46_585
    assert r["params"] == pytest.approx(239.8, abs=0.1)  # the paper's 239x
    assert r["flops"] == r["macs"]


def test_bad_input_shape():
    with pytest.raises(ValueError, match="allowed: CxHxW"):
        parse_shape("32x32")
    m = build_model("resnet18", 10, 3, width=8)
    with pytest.raises(ValueError, match="cannot take input 1x32x32"):
        profile_model(m, "resnet18", (1, 32, 32))
