"""The fast GPU path: mixed precision, TF32, cuDNN autotuning and optional torch.compile.

The training loop uses it in three places: :meth:`Accelerator.prepare` once on the step
function, :meth:`Accelerator.autocast` around forward + loss, :meth:`Accelerator.backward_step`
in place of ``loss.backward(); opt.step()``. On CPU everything is a no-op except a precision
asked for explicitly (bf16 autocast runs on CPU; it is how the tests exercise it).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class AccelConfig:
    """``accel:`` in params.yaml. The field defaults serve callers without a params file; they
    equal presets/default.yaml's (tests/test_defaults.py), which params.yaml always gives."""

    precision: str = "auto"  # auto: bf16 on a CUDA GPU that supports it, else fp32
    tf32: bool = True  # TF32 matmuls/convolutions on Ampere+ GPUs (CUDA only)
    cudnn_benchmark: bool = True  # cuDNN picks the fastest kernels for fixed shapes (CUDA only)
    compile: bool = False  # torch.compile the training step (minutes of warm-up; long runs)

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> AccelConfig:
        """Validate the ``accel:`` block (unknown keys and bad values are errors)."""
        raw = dict(raw or {})
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"accel: unknown key(s) {unknown}; allowed: {sorted(cls.__dataclass_fields__)}"
            )
        cfg = cls(**raw)
        if cfg.precision not in PRECISIONS:
            raise ValueError(f"accel.precision = {cfg.precision!r}: allowed {PRECISIONS}")
        for key in ("tf32", "cudnn_benchmark", "compile"):
            if not isinstance(getattr(cfg, key), bool):
                raise ValueError(f"accel.{key} = {getattr(cfg, key)!r}: must be true or false")
        return cfg


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> bf16 on a CUDA device with bf16 support, fp32 otherwise."""
    if precision != "auto":
        return precision
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


class Accelerator:
    """Precision and speed switches for one training run on ``device``."""

    def __init__(self, cfg: AccelConfig | None, device: torch.device | str) -> None:
        self.cfg = cfg or AccelConfig()
        self.device = torch.device(device)
        self.precision = resolve_precision(self.cfg.precision, self.device)
        if self.device.type == "cuda":
            # Global switches: the whole process runs one configuration.
            torch.backends.cuda.matmul.allow_tf32 = self.cfg.tf32
            torch.backends.cudnn.allow_tf32 = self.cfg.tf32
            torch.backends.cudnn.benchmark = self.cfg.cudnn_benchmark
        # fp16 overflows without loss scaling; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def prepare(self, step: Callable) -> Callable:
        """``torch.compile`` the training step when asked (the module's weights are shared)."""
        return torch.compile(step) if self.cfg.compile else step

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """Forward and loss in the configured precision (plain fp32 for ``fp32``)."""
        if self.precision == "fp32":
            yield
            return
        with torch.autocast(self.device.type, dtype=DTYPES[self.precision]):
            yield

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """``loss.backward(); optimizer.step()``, through the gradient scaler for fp16."""
        if self.scaler.is_enabled():
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            loss.backward()
            optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        """The loss scaler's state, for checkpoints (empty unless fp16)."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore the loss scaler from a checkpoint."""
        if state:
            self.scaler.load_state_dict(state)
