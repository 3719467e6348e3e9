"""Resource counts of a model at batch 1: parameters, MACs, FLOPs and memory.

Two counting conventions (``count_mode``):

* ``"fvcore"`` (default, the honest count): fvcore's "flop" is one multiply-accumulate, so
  MACs = fvcore's total and FLOPs = 2 x MACs; counted in eval mode.
* ``"torchscan"``: reproduces the torchscan 0.1.x summary behind ReffAKD Table 6 (DESIGN.md
  section 4). Only leaf modules are counted (functional ops such as ``F.relu`` or a residual
  ``+`` are invisible), in TRAIN mode (BatchNorm running-stat updates are counted), FLOPs count
  every operation (additions, activations, BatchNorm, pooling) separately from MACs, and a
  ConvTranspose is counted as a convolution over its *output* grid, i.e. stride^2 (4x) too high.

Counting runs on a deep copy, so the caller's model is never touched.
"""

from __future__ import annotations

import copy
import math
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd, _ConvTransposeNd
from torch.nn.modules.pooling import (
    _AdaptiveAvgPoolNd,
    _AdaptiveMaxPoolNd,
    _AvgPoolNd,
    _MaxPoolNd,
)

MIB = 2**20
COUNT_MODES = ("fvcore", "torchscan")


@dataclass(frozen=True)
class Profile:
    """Counts for one model and input shape (batch 1)."""

    model: str
    input: str  # CxHxW
    params: int
    macs: int
    flops: int  # fvcore: 2 x MACs; torchscan: every operation counted on its own
    param_mib: float  # parameters + buffers
    activation_mib: float  # sum of every leaf module's output (what training keeps)
    count_mode: str = "fvcore"

    def as_dict(self) -> dict:
        return asdict(self)


def parse_shape(text: str) -> tuple[int, int, int]:
    """``"3x32x32"`` -> ``(3, 32, 32)``, with a clear error otherwise."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) <= 0:
        raise ValueError(f"input shape {text!r} is not allowed; allowed: CxHxW, e.g. 3x32x32")
    return shape  # type: ignore[return-value]


def _forward_with_leaf_hook(model: nn.Module, x: torch.Tensor, hook) -> None:
    """One no-grad forward pass with ``hook`` on every leaf module, removed afterwards."""
    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()


def _activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    _forward_with_leaf_hook(model, x, hook)
    return total


def fvcore_macs(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, counted by fvcore."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # fvcore's import-time FutureWarning (iopath)
        from fvcore.nn import FlopCountAnalysis

    analysis = FlopCountAnalysis(model, x)
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return int(analysis.total())


def _as_tuple(v: int | tuple[int, ...], ndim: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, tuple | list) else (v,) * ndim


def _adaptive_kernel(inp: torch.Tensor, output_size) -> tuple[int, ...]:
    """torchscan's approximation of an adaptive pool's window from the in/out spatial sizes."""
    spatial = tuple(inp.shape[2:])
    sizes = _as_tuple(output_size, len(spatial))
    return tuple(
        i // (o or i) if i % (o or i) == 0 else i - o * (i // o) + 1
        for i, o in zip(spatial, sizes, strict=True)
    )


def _conv_counts(m: _ConvNd, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, MACs) of a convolution, torchscan-style: per output element, the window over
    ``in_channels / groups`` input channels. Applied unchanged to a ConvTranspose, this is the
    stride^2 over-count the paper's table inherits."""
    k = math.prod(m.kernel_size)
    cin = inp.shape[1] // m.groups
    window_flops = cin * (2 * k - 1) + (cin - 1)  # k mults + (k - 1) adds per channel, + sums
    flops = out.numel() * window_flops + (out.numel() if m.bias is not None else 0)
    return flops, out.numel() * cin * k


def torchscan_layer_counts(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, MACs) of one leaf module in torchscan 0.1.x's convention; 0 for anything else."""
    n_in, n_out = inp.numel(), out.numel()
    if isinstance(m, nn.Linear):
        rows = n_in // inp.shape[-1]
        flops = rows * m.out_features * (2 * m.in_features - 1)
        flops += n_out if m.bias is not None else 0
        return flops, rows * m.out_features * m.in_features
    if isinstance(m, nn.ReLU):
        return n_in, 0
    if isinstance(m, nn.ReLU6):
        return 2 * n_in, 0
    if isinstance(m, nn.LeakyReLU | nn.Sigmoid):
        return 4 * n_in, 0
    if isinstance(m, nn.ELU):
        return 6 * n_in, 0
    if isinstance(m, nn.Tanh):
        return 6 * n_in, 0
    if isinstance(m, nn.Dropout):
        return (n_in if m.p > 0 and m.training else 0), 0
    if isinstance(m, _ConvTransposeNd):
        flops, macs = _conv_counts(m, inp, out)
        nd = len(m.kernel_size)
        return flops + 8 * nd, macs + 4 * nd  # plus torchscan's output-padding bookkeeping
    if isinstance(m, _ConvNd):
        return _conv_counts(m, inp, out)
    if isinstance(m, _BatchNorm):
        c = m.num_features
        per_channel = inp.shape[0] * math.prod(inp.shape[2:])
        flops = 2 * c + 2 * n_in + (2 * n_in if m.affine else 0)
        macs = n_in * (2 if m.affine else 1)
        if m.track_running_stats and m.training:
            flops += (1 if m.momentum is None else 0) + c * per_channel + 3 * n_in + 6 * c
            macs += c * (per_channel - 1) + c * (2 * per_channel - 1) + 4 * c
        return flops, macs
    if isinstance(m, _MaxPoolNd):
        k = math.prod(_as_tuple(m.kernel_size, inp.dim() - 2))
        return n_out * (k - 1), n_out * (k - 1)
    if isinstance(m, _AvgPoolNd):
        k = math.prod(_as_tuple(m.kernel_size, inp.dim() - 2))
        ops = n_out * (k - 1 + inp.dim() - 2)
        return ops, ops
    if isinstance(m, _AdaptiveMaxPoolNd):
        ops = n_out * (math.prod(_adaptive_kernel(inp, m.output_size)) - 1)
        return ops, ops
    if isinstance(m, _AdaptiveAvgPoolNd):
        kernel = _adaptive_kernel(inp, m.output_size)
        ops = n_out * (math.prod(kernel) - 1 + len(kernel))
        return ops, ops
    return 0, 0


def torchscan_counts(model: nn.Module, x: torch.Tensor) -> tuple[int, int]:
    """(FLOPs, MACs) of one forward pass summed over leaf modules, in the module's current mode.

    Forward hooks see only ``nn.Module`` calls, like torchscan's crawler: functional operations
    (``F.relu``, ``torch.cat``, residual additions) are not counted, which is the convention.
    """
    flops = macs = 0

    def hook(m: nn.Module, inputs: tuple, out: object) -> None:
        nonlocal flops, macs
        if not inputs or not isinstance(inputs[0], torch.Tensor):
            return
        if not isinstance(out, torch.Tensor):
            return
        f, mc = torchscan_layer_counts(m, inputs[0], out)
        flops += f
        macs += mc

    _forward_with_leaf_hook(model, x, hook)
    return flops, macs


def profile_model(
    model: nn.Module, name: str, shape: tuple[int, int, int], count_mode: str = "fvcore"
) -> Profile:
    """Profile ``model`` on an input of ``shape`` at batch 1.

    ``count_mode="fvcore"`` (default) counts in eval mode with fvcore, FLOPs = 2 x MACs;
    ``count_mode="torchscan"`` reproduces the ReffAKD Table 6 convention (see module docstring).
    """
    if count_mode not in COUNT_MODES:
        raise ValueError(f"count mode {count_mode!r} is not allowed; allowed: {COUNT_MODES}")
    m = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(1, *shape)
    try:
        with torch.no_grad():
            m(x)
    except RuntimeError as err:
        raise ValueError(
            f"model {name!r} cannot take input {'x'.join(map(str, shape))}: {err}"
        ) from err
    if count_mode == "fvcore":
        macs = fvcore_macs(m, x)
        flops = 2 * macs
    else:
        # The paper ran torchscan on models in train mode. Counts do not depend on the input's
        # values, so zeros (not torchscan's random batch) keep the global RNG untouched.
        t = copy.deepcopy(model).cpu().train()
        try:
            flops, macs = torchscan_counts(t, x)
        except (RuntimeError, ValueError) as err:
            raise ValueError(
                f"model {name!r} cannot run in train mode at batch 1 on input "
                f"{'x'.join(map(str, shape))} (torchscan count mode): {err}"
            ) from err
    params = sum(p.numel() for p in m.parameters())
    mem = sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    return Profile(
        model=name,
        input="x".join(map(str, shape)),
        params=params,
        macs=macs,
        flops=flops,
        param_mib=mem / MIB,
        activation_mib=_activation_bytes(m, x) / MIB,
        count_mode=count_mode,
    )


def ratios(big: Profile, small: Profile) -> dict[str, float]:
    """How many times ``big`` exceeds ``small`` (ReffAKD Table 6 compares teacher to CAE)."""
    return {
        "flops": big.flops / small.flops,
        "macs": big.macs / small.macs,
        "params": big.params / small.params,
        "memory": big.param_mib / small.param_mib,
    }
