"""Checked values: the helpers every params.yaml section uses, and the sections the library
layer needs (augmentation and training). A leaf module: it imports no other kdlab module but
the errors, so the data pipeline and the training loop can use it without import cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kdlab.errors import ConfigError

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "onecycle", "cosine", "constant")
DEVICES = "auto | cpu | cuda | cuda:N"
# The largest learning rate any recipe uses is 0.2-ish; 10 leaves room and refuses typos such
# as 1e10 (a NaN loss in the first batch).
MAX_LR = 10.0


def _fail(key: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"params.yaml: {key} = {value!r} is not allowed; allowed: {allowed}")


_REQUIRED = object()


def _number(
    d: dict,
    key: str,
    prefix: str,
    lo=None,
    hi=None,
    lo_open=False,
    integer=False,
    default=_REQUIRED,
):
    """``d[key]`` checked against a range; a missing key is an error naming it. ``default``
    stands in for a missing key only where the value is inherited from another key (a grid
    cell's alpha): a tunable's default lives in presets/default.yaml, nowhere else."""
    full = f"{prefix}{key}"
    if key not in d:
        if default is not _REQUIRED:
            return default
        raise ConfigError(f"params.yaml: {full} is missing")
    v = d[key]
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))  # 2.5: no int
    if isinstance(v, bool) or not ok_type:
        raise _fail(full, v, _range_text(kind, lo, hi, lo_open))
    if (lo is not None and (v <= lo if lo_open else v < lo)) or (hi is not None and v > hi):
        raise _fail(full, v, _range_text(kind, lo, hi, lo_open))
    return v if integer else float(v)


def _range_text(kind: str, lo, hi, lo_open: bool) -> str:
    if lo is not None and hi is not None:
        return f"{kind} in {'(' if lo_open else '['}{lo}, {hi}]"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    return kind


def _choice(d: dict, key: str, prefix: str, allowed) -> str:
    if key not in d:
        raise ConfigError(f"params.yaml: {prefix}{key} is missing")
    v = d[key]
    if v not in allowed:
        raise _fail(f"{prefix}{key}", v, " | ".join(map(str, allowed)))
    return v


def _section(d: dict, key: str, prefix: str = "") -> dict:
    v = d.get(key)
    if not isinstance(v, dict):
        raise _fail(f"{prefix}{key}", v, "a mapping (see the commented default params.yaml)")
    return v


def _flag(d: dict, key: str, prefix: str) -> bool:
    """``d[key]`` as a boolean; a missing key or anything but true/false (a string, 0/1) is
    refused."""
    if key not in d:
        raise ConfigError(f"params.yaml: {prefix}{key} is missing")
    value = d[key]
    if not isinstance(value, bool):
        raise _fail(f"{prefix}{key}", value, "true | false")
    return value


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation, applied to tensors on the training device. No field has a default:
    params.yaml gives each (defaults: presets/default.yaml); :data:`NO_AUGMENT` is none."""

    hflip: bool
    rotation: float  # max degrees, uniform in [-rotation, rotation]
    crop_padding: int  # random crop after zero-padding by this many pixels

    @property
    def finite_views(self) -> bool:
        """True when every augmented image is one of a fixed set of views (identity, flip)."""
        return self.rotation == 0 and self.crop_padding == 0

    @staticmethod
    def parse(d: dict, prefix: str) -> AugmentConfig:
        return AugmentConfig(
            hflip=_flag(d, "hflip", prefix),
            rotation=_number(d, "rotation", prefix, lo=0, hi=180),
            crop_padding=_number(d, "crop_padding", prefix, lo=0, integer=True),
        )


NO_AUGMENT = AugmentConfig(hflip=False, rotation=0.0, crop_padding=0)


def _epochs(d: dict, key: str, prefix: str, required: bool = True) -> tuple[int, ...]:
    """A list of positive epoch numbers (``milestones``, ``test_epochs``); a missing key is an
    error unless not ``required`` (then: empty)."""
    if required and key not in d:
        raise ConfigError(f"params.yaml: {prefix}{key} is missing")
    value = d.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in value
    ):
        raise _fail(f"{prefix}{key}", value, "a list of positive epoch numbers")
    return tuple(value)


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser, schedule and augmentation for one training stage."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    weight_decay: float
    schedule: str
    milestones: tuple[int, ...]
    lr_decay: float
    augment: AugmentConfig
    # Epochs after which test accuracy is also measured: a key of student.train only in
    # default.yaml (teacher and CAE are never tested mid-run), so absent means none: ().
    test_epochs: tuple[int, ...] = ()

    @staticmethod
    def parse(d: dict, prefix: str) -> TrainConfig:
        """``<role>.train``; every key required but ``test_epochs`` (absent: none)."""
        return TrainConfig(
            epochs=_number(d, "epochs", prefix, lo=1, integer=True),
            batch_size=_number(d, "batch_size", prefix, lo=1, integer=True),
            optimizer=_choice(d, "optimizer", prefix, OPTIMIZERS),
            lr=_number(d, "lr", prefix, lo=0, hi=MAX_LR, lo_open=True),
            momentum=_number(d, "momentum", prefix, lo=0, hi=1),
            weight_decay=_number(d, "weight_decay", prefix, lo=0),
            schedule=_choice(d, "schedule", prefix, SCHEDULES),
            milestones=_epochs(d, "milestones", prefix),
            lr_decay=_number(d, "lr_decay", prefix, lo=0, hi=1, lo_open=True),
            augment=AugmentConfig.parse(_section(d, "augment", prefix), f"{prefix}augment."),
            test_epochs=tuple(sorted(set(_epochs(d, "test_epochs", prefix, required=False)))),
        )
