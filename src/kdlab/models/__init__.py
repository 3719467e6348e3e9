"""Model registry: every architecture is built by name from params.yaml.

Adding a model family is one module that decorates its builders with :func:`register`,
plus one import line at the bottom of this file.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str
    in_channels: tuple[int, ...] | None = None  # None: any channel count
    default_in_channels: int = 3  # what listings and profiles use when not told


_REGISTRY: dict[str, ModelSpec] = {}


def register(
    name: str,
    family: str,
    description: str,
    in_channels: tuple[int, ...] | None = None,
    default_in_channels: int = 3,
):
    """Decorator: register ``builder(num_classes=, in_channels=, **kwargs) -> nn.Module``."""

    def deco(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered twice")
        _REGISTRY[name] = ModelSpec(
            name, family, builder, description, in_channels, default_in_channels
        )
        return builder

    return deco


def model_names() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


class UnknownModelError(ValueError):
    """An unknown model name; the message lists close matches and every allowed name."""


def get_spec(name: str) -> ModelSpec:
    """Look up a model by name, with a helpful error listing close matches."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, model_names(), n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Allowed: {', '.join(model_names())}"
        )
    return _REGISTRY[name]


def build_model(name: str, num_classes: int, in_channels: int = 3, **kwargs) -> nn.Module:
    """Build a registered model.

    Raises:
        UnknownModelError: the name is not registered.
        ValueError: the model cannot take ``in_channels``.
    """
    spec = get_spec(name)
    if spec.in_channels is not None and in_channels not in spec.in_channels:
        raise ValueError(
            f"model {name!r} takes {spec.in_channels} input channels, not {in_channels}"
        )
    return spec.builder(num_classes=num_classes, in_channels=in_channels, **kwargs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def check_input(model: nn.Module, name: str, shape: tuple[int, int, int]) -> None:
    """Run one dummy forward pass so a shape a model cannot take fails before any training.

    The dummy input goes where the model's parameters are (a model already moved to the GPU
    would otherwise reject a CPU tensor, whatever the shape).
    """
    device = next(model.parameters(), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape, device=device))
    except RuntimeError as err:
        raise ValueError(
            f"model {name!r} cannot take input of shape {'x'.join(map(str, shape))}: {err}"
        ) from err
    finally:
        model.train(was_training)


# Model families: one import per module (each registers its builders).
from kdlab.models import cae, cifar_zoo, hao, lenet, patel, resnet_cifar  # noqa: E402,F401
