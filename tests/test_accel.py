"""The fast path's switches; bf16 autocast is exercised on CPU."""

from __future__ import annotations

import pytest
import torch

from kdlab.accel import AccelConfig, Accelerator, resolve_precision
from kdlab.train import fit
from test_train import _setup, cfg


def test_parse_and_resolve():
    assert AccelConfig.parse({}) == AccelConfig()
    with pytest.raises(ValueError, match="accel.precision = 'fp8'"):
        AccelConfig.parse({"precision": "fp8"})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['amp'\]"):
        AccelConfig.parse({"amp": True})
    with pytest.raises(ValueError, match="accel.compile = 'yes': must be true or false"):
        AccelConfig.parse({"compile": "yes"})
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"


def test_autocast_runs_matmuls_in_bf16_and_scaler_only_for_fp16():
    lin = torch.nn.Linear(4, 3)
    x = torch.randn(2, 4)
    bf = Accelerator(AccelConfig(precision="bf16"), "cpu")
    with bf.autocast():
        assert lin(x).dtype == torch.bfloat16
    with Accelerator(AccelConfig(precision="auto"), "cpu").autocast():
        assert lin(x).dtype == torch.float32  # auto on CPU is fp32: a no-op
    assert not bf.scaler.is_enabled()
    assert Accelerator(AccelConfig(precision="fp16"), "cpu").scaler.is_enabled()


def test_bf16_training_matches_fp32():
    """Same seeds, fp32 vs bf16 autocast: both learn (chance is 25%); stated tolerance two of
    the 16 validation images and 15% of the final training loss (bf16 keeps 8 mantissa bits;
    CPUs differ in how they round bf16, so no exact score is asserted)."""
    c = cfg(epochs=4, schedule="onecycle")
    runs = {}
    for precision in ("fp32", "bf16"):
        d, tr, va = _setup()
        runs[precision] = fit(
            d, tr, va, c, "t", log=lambda _: None, accel=AccelConfig(precision=precision)
        )
    f32, b16 = runs["fp32"].history, runs["bf16"].history
    assert f32[-1]["val_acc"] >= 75 and b16[-1]["val_acc"] >= 75
    assert abs(f32[-1]["val_acc"] - b16[-1]["val_acc"]) <= 2 * 100 / 16
    assert b16[-1]["train_loss"] == pytest.approx(f32[-1]["train_loss"], rel=0.15, abs=0.02)
    assert b16[0]["train_loss"] != f32[0]["train_loss"]  # bf16 really ran


def test_fp16_scaler_step_and_state_roundtrip():
    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    acc = Accelerator(AccelConfig(precision="fp16"), "cpu")
    before = lin.weight.detach().clone()
    for _ in range(20):
        opt.zero_grad()
        with acc.autocast():
            loss = lin(torch.randn(8, 4) * 100).float().pow(2).mean()
        acc.backward_step(loss, opt)
    # The first scaled gradients overflow fp16: those steps are skipped and the scale backs off
    # from 2**16; later steps update the weights.
    assert acc.scaler.get_scale() < 65536.0
    assert not torch.equal(before, lin.weight.detach())
    other = Accelerator(AccelConfig(precision="fp16"), "cpu")
    other.load_state_dict(acc.state_dict())
    assert other.scaler.get_scale() == acc.scaler.get_scale()


@pytest.mark.e2e  # slow: torch.compile's CPU code generation takes ~20 s
@pytest.mark.slow
def test_compiled_bf16_step_trains_through_fit():
    c = cfg(epochs=2, schedule="onecycle")
    d, tr, va = _setup()
    ref = fit(d, tr, va, c, "t", log=lambda _: None, accel=AccelConfig(precision="bf16"))
    d, tr, va = _setup()
    out = fit(
        d, tr, va, c, "t", log=lambda _: None, accel=AccelConfig(precision="bf16", compile=True)
    )
    # Compiled kernels round differently from eager ones: both learn (chance 25%), within two
    # of the 16 validation images of each other.
    assert out.history[-1]["val_acc"] >= 75 and ref.history[-1]["val_acc"] >= 75
    assert abs(out.history[-1]["val_acc"] - ref.history[-1]["val_acc"]) <= 2 * 100 / 16
    assert out.history[0]["train_loss"] == pytest.approx(ref.history[0]["train_loss"], rel=0.05)
