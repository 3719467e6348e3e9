"""Resource counts of a model at batch 1: parameters, MACs and FLOPs (fvcore), memory.

fvcore's "flop" is one multiply-accumulate, so MACs = fvcore's total and FLOPs = 2 x MACs.
Counting runs on a deep copy in eval mode, so the caller's model is never touched.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import asdict, dataclass

import torch
from torch import nn

MIB = 2**20


@dataclass(frozen=True)
class Profile:
    """Counts for one model and input shape (batch 1)."""

    model: str
    input: str  # CxHxW
    params: int
    macs: int
    flops: int  # 2 x MACs
    param_mib: float  # parameters + buffers
    activation_mib: float  # sum of every leaf module's output (what training keeps)

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


def _activation_bytes(model: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(_m, _i, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    handles = [m.register_forward_hook(hook) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
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


def profile_model(model: nn.Module, name: str, shape: tuple[int, int, int]) -> Profile:
    """Profile ``model`` on a zero input of ``shape`` at batch 1."""
    m = copy.deepcopy(model).cpu().eval()
    x = torch.zeros(1, *shape)
    try:
        with torch.no_grad():
            m(x)
    except RuntimeError as err:
        raise ValueError(
            f"model {name!r} cannot take input {'x'.join(map(str, shape))}: {err}"
        ) from err
    macs = fvcore_macs(m, x)
    params = sum(p.numel() for p in m.parameters())
    mem = sum(t.numel() * t.element_size() for t in [*m.parameters(), *m.buffers()])
    return Profile(
        model=name,
        input="x".join(map(str, shape)),
        params=params,
        macs=macs,
        flops=2 * macs,
        param_mib=mem / MIB,
        activation_mib=_activation_bytes(m, x) / MIB,
    )


def ratios(big: Profile, small: Profile) -> dict[str, float]:
    """How many times ``big`` exceeds ``small`` (ReffAKD Table 6 compares teacher to CAE)."""
    return {
        "flops": big.flops / small.flops,
        "macs": big.macs / small.macs,
        "params": big.params / small.params,
        "memory": big.param_mib / small.param_mib,
    }
