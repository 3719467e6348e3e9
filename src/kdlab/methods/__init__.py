"""Distillation method registry: ``methods: [...]`` in params.yaml picks from here.

Adding a method is one module with a :class:`~kdlab.methods.base.Distiller` subclass decorated
with :func:`register`, one import line at the bottom of this file and one ``method_params``
block in params.yaml.
"""

from __future__ import annotations

from kdlab.methods.base import Distiller

_REGISTRY: dict[str, type[Distiller]] = {}


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: add a Distiller under its ``name``."""
    if not cls.name or cls.name in _REGISTRY:
        raise ValueError(f"method name {cls.name!r} is empty or registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Names of all registered methods: the ``ce`` baseline first, then the rest sorted."""
    return sorted(_REGISTRY, key=lambda name: (name != "ce", name))


def get_method(name: str) -> type[Distiller]:
    """Look up a method class by name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(method_names())}")
    return _REGISTRY[name]


# Method modules: one import each.
from kdlab.methods import (  # noqa: E402,F401
    ab,
    at,
    cc,
    ce,
    crd,
    dkd,
    fitnet,
    fsp,
    ft,
    kd,
    kd_l2,
    kdsvd,
    nst,
    pkt,
    reffakd,
    reffakd_dkd,
    reffakd_uniform,
    rkd,
    simkd,
    sp,
    srrl,
    srrl_combined,
    vid,
)
