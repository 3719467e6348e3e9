import pytest
import torch
from torch import nn

from kdlab.models import UnknownModelError, build_model, check_input, count_params

# Published counts (../shared/DESIGN.md section 3): kuangliu ResNets, LeNet5, the CAE.
PUBLISHED = [
    ("resnet18", dict(num_classes=100), 11_220_132),
    ("resnet50", dict(num_classes=100), 23_705_252),
    ("resnet18", dict(num_classes=200, input_size=64), 11_578_632),
    ("resnet50", dict(num_classes=200, input_size=64), 25_138_952),
    ("lenet5", dict(num_classes=10, in_channels=1), 61_750),
    ("cae", dict(num_classes=0, in_channels=3), 47_355),
    ("cae", dict(num_classes=0, in_channels=1), 46_585),
]


@pytest.mark.parametrize("name, kwargs, expected", PUBLISHED)
def test_published_parameter_counts(name, kwargs, expected):
    with torch.device("meta"):
        model = build_model(name, **kwargs)
    assert count_params(model) == expected


def test_lenet_same_params_at_28_and_32():
    a = build_model("lenet5", 10, 1, input_size=28)
    b = build_model("lenet5", 10, 1, input_size=32)
    assert count_params(a) == count_params(b) == 61_750
    assert a(torch.zeros(2, 1, 28, 28)).shape == b(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_feature_taps():
    m = build_model("resnet18", 10, 1, width=8, input_size=32)
    out = m.forward_features(torch.zeros(2, 1, 32, 32))
    assert [tuple(s.shape[1:]) for s in out["stages"]] == [
        (8, 32, 32),
        (16, 16, 16),
        (32, 8, 8),
        (64, 4, 4),
    ]
    assert out["pooled"].shape == (2, 64) and out["logits"].shape == (2, 10)
    assert torch.equal(out["logits"], m(torch.zeros(2, 1, 32, 32)))


def test_cae_bottleneck_and_reconstruction():
    m = build_model("cae", 0, 1)
    x = torch.rand(3, 1, 32, 32)
    assert m.encode(x).shape == (3, 768)
    with torch.no_grad():
        y = m(x)
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1
    with pytest.raises(ValueError, match="divisible by 8"):
        m(torch.rand(1, 1, 28, 28))


def test_unknown_model_and_bad_input():
    with pytest.raises(UnknownModelError, match=r"Did you mean .*resnet50"):
        build_model("resnet05", 10)
    m = build_model("resnet18", 10, 3, width=8)
    with pytest.raises(ValueError, match="cannot take input of shape 1x32x32"):
        check_input(m, "resnet18", (1, 32, 32))
    with pytest.raises(ValueError, match="input_size 28 or 32, not 64"):
        build_model("lenet5", 10, 1, input_size=64)


class _DeviceProbe(nn.Module):
    """Records the device of each input; its one parameter lives on ``device``."""

    def __init__(self, device: str | None) -> None:
        super().__init__()
        if device is not None:
            self.w = nn.Parameter(torch.zeros(1, device=device))
        self.seen: list[torch.device] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.device)
        return x


def test_check_input_puts_the_dummy_batch_where_the_parameters_are():
    """A model moved to the GPU gets a GPU batch (the first H100 run failed here: a CPU batch
    into the CAE on cuda); 'meta' stands in for another device on a CPU-only machine. A model
    without parameters gets a CPU batch."""
    on_meta = _DeviceProbe("meta")
    check_input(on_meta, "probe", (1, 4, 4))
    assert on_meta.seen == [torch.device("meta")]
    bare = _DeviceProbe(None)
    check_input(bare, "probe", (1, 4, 4))
    assert bare.seen == [torch.device("cpu")]
