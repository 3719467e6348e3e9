"""Presets: ``default.yaml`` holds every key with its default and comment (the one source of
truth); every other preset is an overlay holding only what differs from it.

``kdlab preset NAME`` writes ``default.yaml`` with the overlay applied: the overlay's header
comment replaces the default's, its values (and their end-of-line comments) replace the
default's key by key, and the rest keeps the default's comments.
"""

from __future__ import annotations

import io
from importlib import resources
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap

from kdlab.errors import ConfigError

DEFAULT = "default"
# Sub-trees an overlay replaces whole instead of merging key by key: a preset's method list or
# model options are its own, not additions to the default's.
REPLACED = (
    "methods",
    "grid.cells",
    "data.md5",
    "teacher.options",
    "student.options",
    "cae.options",
)


def _yaml() -> YAML:
    y = YAML()  # round-trip: keeps comments, key order and flow style
    y.width = 100
    y.preserve_quotes = True
    return y


def names() -> list[str]:
    """Every preset's name."""
    files = resources.files("kdlab.presets").iterdir()
    return sorted(p.name[: -len(".yaml")] for p in files if p.name.endswith(".yaml"))


def read(name: str) -> str:
    """The text of ``presets/<name>.yaml`` (the overlay itself, for non-default presets)."""
    if name not in names():
        raise ConfigError(f"unknown preset {name!r}; allowed: {', '.join(names())}")
    return resources.files("kdlab.presets").joinpath(f"{name}.yaml").read_text("utf-8")


def _header(text: str) -> list[str]:
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def _merge(base: CommentedMap, overlay: CommentedMap, prefix: str, name: str) -> None:
    for key, value in overlay.items():
        full = f"{prefix}{key}"
        if key not in base:
            raise ConfigError(
                f"preset {name!r}: {full} is not a key of the default preset; presets may "
                "only change values that default.yaml defines"
            )
        if isinstance(value, dict) and isinstance(base[key], dict) and full not in REPLACED:
            _merge(base[key], value, f"{full}.", name)
            continue
        base[key] = value
        comment = overlay.ca.items.get(key)
        if comment is not None:  # the overlay's end-of-line comment explains its value
            base.ca.items[key] = comment


def resolve(name: str) -> str:
    """The full params.yaml text of preset ``name`` (the default with the overlay applied)."""
    default_text = read(DEFAULT)
    if name == DEFAULT:
        return default_text
    overlay_text = read(name)
    y = _yaml()
    base = y.load(default_text)
    overlay = y.load(overlay_text) or CommentedMap()
    if not isinstance(overlay, dict):
        raise ConfigError(f"preset {name!r} must be a mapping of keys to values")
    _merge(base, overlay, "", name)
    buf = io.StringIO()
    y.dump(base, buf)
    body = buf.getvalue().splitlines()
    default_header = _header(default_text)
    body = body[len(default_header) :] if body[: len(default_header)] == default_header else body
    return "\n".join(_header(overlay_text) + body) + "\n"


def differences(default: Any, full: Any, prefix: str = "") -> dict[str, Any]:
    """Leaves of ``full`` that differ from ``default`` (dotted keys): what an overlay holds."""
    out: dict[str, Any] = {}
    if isinstance(full, dict) and isinstance(default, dict) and prefix.rstrip(".") not in REPLACED:
        for k, v in full.items():
            out.update(differences(default.get(k), v, f"{prefix}{k}."))
        return out
    if full != default:
        out[prefix.rstrip(".")] = full
    return out


def method_params(method: str, preset: str = "default", **overrides: Any) -> dict[str, Any]:
    """Method ``method``'s ``method_params`` block of preset ``preset`` (resolved), with
    ``overrides``: what a method takes outside a pipeline (benchmarks, notebooks), since it has
    no defaults in code. A method without a block gets ``{}`` plus the overrides."""
    import yaml

    block = (yaml.safe_load(resolve(preset)).get("method_params") or {}).get(method) or {}
    return {**block, **overrides}
