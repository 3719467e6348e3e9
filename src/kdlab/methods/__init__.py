"""Distillation method registry: ``methods: {...}`` in params.yaml picks from here.

One method per module, named after it: ``kdlab.methods.<name>`` defines a
:class:`~kdlab.methods.base.Distiller` subclass decorated with :func:`register`. The registry
is lazy: :func:`get_method` imports only the module of the method asked for (and what that
module imports), so a stage that runs one method loads, and depends on, that method's code
only (``python -m kdlab.depgraph`` derives dvc.yaml's deps from these imports).

Adding a method is its module, one name in :data:`METHODS` and one ``method_params`` block in
presets/default.yaml.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kdlab.methods.base import Distiller

# Every method, one name each: its module is kdlab.methods.<name>.
METHODS = (
    "ab",
    "at",
    "at_srrl",
    "cc",
    "ce",
    "crd",
    "dkd",
    "fitnet",
    "fsp",
    "ft",
    "kd",
    "kd_l2",
    "kd_srrl",
    "kdsvd",
    "nst",
    "pkt",
    "reffakd",
    "reffakd_dkd",
    "reffakd_uniform",
    "rkd",
    "simkd",
    "sp",
    "srrl",
    "vid",
)

_REGISTRY: dict[str, type[Distiller]] = {}


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: add a Distiller under its ``name``, which must be its module's."""
    if cls.name not in METHODS or cls.__module__ != f"{__name__}.{cls.name}":
        raise ValueError(
            f"method {cls.name!r} is defined in {cls.__module__}; a method lives in "
            f"{__name__}.<name> and its name is listed in METHODS"
        )
    if cls.name in _REGISTRY:
        raise ValueError(f"method {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def method_names() -> list[str]:
    """Names of all methods: the ``ce`` baseline first, then the rest sorted."""
    return sorted(METHODS, key=lambda name: (name != "ce", name))


def get_method(name: str) -> type[Distiller]:
    """Look up a method class by name, importing its module on first use."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(method_names())}")
    if name not in _REGISTRY:
        import_module(f"{__name__}.{name}")
    return _REGISTRY[name]
