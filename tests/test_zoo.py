"""The model zoo: published parameter counts, feature taps, torchscan-mode ratios, CLI listing."""

import json

import pytest
import torch
from torch import nn

from kdlab.cli import main
from kdlab.models import build_model, check_input, count_params, get_spec, model_names
from kdlab.models.base import FeatureClassifier
from kdlab.models.patel import count_weights
from kdlab.profiling import profile_model, ratios

# RepDistiller / SRRL (paper 003) / SimKD (paper 001) counts at 100 classes (DESIGN.md section 3).
CIFAR100 = [
    ("resnet8", 0.084e6),
    ("resnet14", 0.181e6),
    ("resnet20", 0.278e6),
    ("resnet32", 0.473e6),
    ("resnet56", 0.862e6),
    ("resnet110", 1.737e6),
    ("resnet8x4", 1.234e6),
    ("resnet32x4", 7.434e6),
    ("wrn_16_1", 0.181e6),
    ("wrn_16_2", 0.703e6),
    ("wrn_40_1", 0.570e6),
    ("wrn_40_2", 2.255e6),
    ("wrn_16_4", 2.77e6),  # SRRL Table 6
    ("wrn_40_4", 8.97e6),
    ("wrn_10_10", 7.49e6),
    ("wrn_16_10", 17.2e6),
    ("vgg8", 3.965e6),
    ("vgg13", 9.462e6),
    ("mobilenetv2", 2.353e6),
    ("shufflev1", 0.949e6),
    ("shufflev2", 1.356e6),
]

# SRRL Table 6's ResNet pairs named by size (paper 003): CIFAR-style ResNets at width 64.
SRRL_SIZED = [("resnet10", 64, 4.95e6), ("resnet34", 64, 21.33e6)]


def test_srrl_sized_resnets_match_the_papers_counts():
    for name, width, published in SRRL_SIZED:
        n = count_params(build_model(name, 100, 3, width=width))
        assert abs(n - published) / published < 0.002, (name, n)
    assert count_params(build_model("resnet26", 10, 3)) == pytest.approx(0.37e6, rel=0.02)


# Seed 004 Table 1 at 10 classes: conv + linear weights (biases and BatchNorm left out).
PATEL = [
    ("p_vgg16", 15_239_872),
    ("p_vgg16_half", 3_811_680),
    ("p_resnet18", 11_164_352),
    ("p_resnet18_half", 2_792_800),
    ("p_densenet121", 6_880_448),
    ("p_densenet121_half", 1_725_024),
]


def _meta(name: str, num_classes: int, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build_model(name, num_classes, get_spec(name).default_in_channels, **kwargs)


@pytest.mark.parametrize("name, published", CIFAR100)
def test_cifar100_published_counts(name, published):
    assert count_params(_meta(name, 100)) == pytest.approx(published, rel=0.005)


@pytest.mark.parametrize("name, published", PATEL)
def test_patel_obeid_table1_counts(name, published):
    model = _meta(name, 10)
    assert count_weights(model) == published  # the paper's convention, exactly
    # Full counts add biases and BatchNorm: within 0.5% except DenseNet (BN before every conv).
    tol = 0.025 if "densenet" in name else 0.005
    assert count_params(model) == pytest.approx(published, rel=tol)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("hao_teacher", 2_560 + 1_180_160 + 250_890),  # conv 1->256, conv 256->512, 25088->10
        ("hao_student", 160 + 4_640 + 15_690),
        ("tv_resnet18", 11_689_512),  # torchvision's count at 1000 classes
        ("tv_resnet34", 21_797_672),
    ],
)
def test_other_counts(name, expected):
    classes = 1000 if name.startswith("tv_") else 10
    assert count_params(_meta(name, classes)) == expected


@pytest.mark.parametrize(
    "name, shape, stages, dim",
    [
        ("resnet8", (3, 32, 32), [(16, 32, 32), (32, 16, 16), (64, 8, 8)], 64),
        ("wrn_16_1", (3, 32, 32), [(16, 32, 32), (32, 16, 16), (64, 8, 8)], 64),
        ("hao_student", (1, 28, 28), [(16, 14, 14), (32, 7, 7)], 32 * 7 * 7),
        ("shufflev2", (3, 32, 32), [(116, 16, 16), (232, 8, 8), (464, 4, 4)], 1024),
        ("mobilenetv2_half", (3, 32, 32), None, 1280),
        ("p_resnet18_half", (3, 32, 32), None, 256),
        ("p_densenet121_half", (3, 32, 32), None, 512),
    ],
)
def test_forward_and_feature_taps(name, shape, stages, dim):
    torch.manual_seed(0)
    m = build_model(name, 7, shape[0], input_size=shape[1]).eval()
    assert isinstance(m, FeatureClassifier) and isinstance(m.classifier, nn.Linear)
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = m.forward_features(x)
        logits = m(x)
    if stages is not None:
        assert [tuple(s.shape[1:]) for s in out["stages"]] == stages
    assert out["pooled"].shape == (2, dim) == (2, m.feature_dim)
    assert out["logits"].shape == (2, 7)
    assert torch.allclose(out["logits"], logits)
    assert torch.allclose(m.classifier(out["pooled"]), logits)


def test_hao_input_checked_before_work():
    m = build_model("hao_teacher", 10, 1)
    check_input(m, "hao_teacher", (1, 28, 28))
    with pytest.raises(ValueError, match="cannot take input of shape 1x32x32"):
        check_input(m, "hao_teacher", (1, 32, 32))


def test_torchscan_mode_counts_conv_transpose_per_output_position():
    m = nn.ConvTranspose2d(2, 3, 4, 2, 1)
    ts = profile_model(m, "ct", (2, 4, 4), count_mode="torchscan")
    fv = profile_model(m, "ct", (2, 4, 4))
    # torchscan: every 3x8x8 output sees a 2x4x4 window, +4 per spatial dim of bookkeeping.
    assert ts.macs == 3 * 8 * 8 * 2 * 16 + 8 == 4 * fv.macs + 8
    assert ts.count_mode == "torchscan" and fv.count_mode == "fvcore"
    with pytest.raises(ValueError, match="count mode"):
        profile_model(m, "ct", (2, 4, 4), count_mode="thop")


@pytest.mark.parametrize(
    "classes, size, paper",
    [
        (100, 32, dict(flops=354, macs=358, params=501, memory=503)),  # CIFAR-100
        (200, 64, dict(flops=354, macs=355, params=530, memory=533)),  # Tiny ImageNet
    ],
)
def test_reffakd_table6_torchscan_ratios(classes, size, paper):
    shape = (3, size, size)
    t = profile_model(
        build_model("resnet50", classes, 3, input_size=size), "resnet50", shape, "torchscan"
    )
    c = profile_model(build_model("cae", 0, 3), "cae", shape, count_mode="torchscan")
    r = ratios(t, c)
    for key, value in paper.items():
        assert r[key] == pytest.approx(value, rel=0.01), key
    assert t.flops != 2 * t.macs  # FLOPs are counted per operation in this convention


def test_cli_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == model_names()
    assert all(set(r) == {"name", "family", "params", "description"} for r in rows)
    by_name = {r["name"]: r for r in rows}
    assert by_name["resnet32x4"]["params"] == 7_433_860
    assert by_name["resnet32x4"]["family"] == "cifar"
    assert by_name["tv_resnet18"]["family"] == "imagenet"
    assert by_name["hao_student"]["family"] == "hao"
    assert by_name["p_vgg16"]["family"] == "patel_obeid"
    assert main(["models", "--json", "--num-classes", "10"]) == 0
    rows10 = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows10["hao_teacher"]["params"] == 1_433_610
    assert rows10["p_resnet18"]["params"] == count_params(_meta("p_resnet18", 10))


def test_cli_profile_count_modes(capsys):
    assert main(["profile", "resnet8", "--input", "3x32x32", "--json"]) == 0
    fv = json.loads(capsys.readouterr().out)
    argv = ["profile", "resnet8", "--input", "3x32x32", "--count-mode", "torchscan", "--json"]
    assert main(argv) == 0
    ts = json.loads(capsys.readouterr().out)
    assert fv["count_mode"] == "fvcore" and ts["count_mode"] == "torchscan"
    assert fv["flops"] == 2 * fv["macs"] and ts["flops"] != 2 * ts["macs"]
    assert fv["params"] == ts["params"] == count_params(_meta("resnet8", 100))
    assert main(["profile", "resnet08"]) == 2
    err = capsys.readouterr().err
    assert "Did you mean" in err and "resnet8" in err
    assert main(["profile", "p_vgg16", "--input", "3x16x16"]) == 2  # five 2x2 max-pools
    assert "cannot take input 3x16x16" in capsys.readouterr().err


# Models whose stage maps are not all one module's output: (name, stages that cannot be replaced).
# The WRNs' and ShuffleNetV2's last taps are their last stage's output (RepDistiller's places;
# the final BN-ReLU / 1x1 head follow in ``head_map``), so only LeNet5's are not replaceable.
NOT_REPLACEABLE = {"lenet5": {0, 1}}


@pytest.mark.parametrize("name", [n for n in model_names() if n != "cae"])
def test_forward_replacing_stage_hooks_the_stage_map(name):
    """Identity replacement sees exactly the tapped stage map and leaves the logits alone; a
    changed map changes them. Stages that cannot be replaced raise a ValueError."""
    spec = get_spec(name)
    torch.manual_seed(0)
    size = 28 if name.startswith("hao") else 32
    model = build_model(name, 10, spec.default_in_channels, input_size=size)
    x = torch.randn(2, spec.default_in_channels, size, size)
    with torch.no_grad():
        model.train()(torch.randn(8, *x.shape[1:]))  # BN statistics off their defaults
        model.eval()
        out = model.forward_features(x)
        for k, f in enumerate(out["stages"]):
            if k in NOT_REPLACEABLE.get(name, set()):
                with pytest.raises(ValueError, match="one module"):
                    model.forward_replacing_stage(x, k, lambda m: m)
                continue
            seen = []
            z = model.forward_replacing_stage(x, k, lambda m, seen=seen: seen.append(m) or m)
            assert len(seen) == 1 and torch.equal(seen[0], f)
            assert torch.allclose(z, out["logits"], atol=1e-6)
            z2 = model.forward_replacing_stage(x, k, lambda m: m + torch.randn_like(m))
            assert not torch.allclose(z2, out["logits"])
        assert torch.allclose(model(x), out["logits"], atol=1e-6)  # the hook is gone
