"""params.yaml -> a typed, validated configuration.

Every value is checked before any work starts; an error names the key, the bad value and what
is allowed, e.g. ``params.yaml: alpha = 1.5 is not allowed; allowed: a number in [0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kdlab.accel import AccelConfig
from kdlab.distributed import DistributedConfig

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("step", "onecycle", "cosine", "constant")
DEVICES = "auto | cpu | cuda | cuda:N"


class ConfigError(ValueError):
    """A bad value in params.yaml."""


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
    """``d[key]`` checked against a range; ``default`` (if given) stands in for a missing key."""
    full = f"{prefix}{key}"
    if key not in d:
        if default is not _REQUIRED:
            return default
        raise ConfigError(f"params.yaml: {full} is missing")
    v = d[key]
    kind = "an integer" if integer else "a number"
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
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
    v = d.get(key)
    if v not in allowed:
        raise _fail(f"{prefix}{key}", v, " | ".join(map(str, allowed)))
    return v


def _section(d: dict, key: str, prefix: str = "") -> dict:
    v = d.get(key)
    if not isinstance(v, dict):
        raise _fail(f"{prefix}{key}", v, "a mapping (see the commented default params.yaml)")
    return v


@dataclass(frozen=True)
class AugmentConfig:
    """Batch augmentation, applied to tensors on the training device."""

    hflip: bool = False
    rotation: float = 0.0  # max degrees, uniform in [-rotation, rotation]
    crop_padding: int = 0  # random crop after zero-padding by this many pixels

    @property
    def finite_views(self) -> bool:
        """True when every augmented image is one of a fixed set of views (identity, flip)."""
        return self.rotation == 0 and self.crop_padding == 0

    @staticmethod
    def parse(d: dict, prefix: str) -> AugmentConfig:
        hflip = d.get("hflip", False)
        if not isinstance(hflip, bool):
            raise _fail(f"{prefix}hflip", hflip, "true | false")
        return AugmentConfig(
            hflip=hflip,
            rotation=_number(d, "rotation", prefix, lo=0, hi=180, default=0.0),
            crop_padding=_number(d, "crop_padding", prefix, lo=0, integer=True, default=0),
        )


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

    @staticmethod
    def parse(d: dict, prefix: str) -> TrainConfig:
        milestones = d.get("milestones", [])
        if not isinstance(milestones, list) or not all(
            isinstance(m, int) and not isinstance(m, bool) and m > 0 for m in milestones
        ):
            raise _fail(f"{prefix}milestones", milestones, "a list of positive epoch numbers")
        return TrainConfig(
            epochs=_number(d, "epochs", prefix, lo=1, integer=True),
            batch_size=_number(d, "batch_size", prefix, lo=1, integer=True),
            optimizer=_choice(d, "optimizer", prefix, OPTIMIZERS),
            lr=_number(d, "lr", prefix, lo=0, lo_open=True),
            momentum=_number(d, "momentum", prefix, lo=0, hi=1, default=0.0),
            weight_decay=_number(d, "weight_decay", prefix, lo=0),
            schedule=_choice(d, "schedule", prefix, SCHEDULES),
            milestones=tuple(milestones),
            lr_decay=_number(d, "lr_decay", prefix, lo=0, hi=1, lo_open=True, default=0.1),
            augment=AugmentConfig.parse(d.get("augment") or {}, f"{prefix}augment."),
        )


@dataclass(frozen=True)
class ModelConfig:
    """A model from the registry plus how to train it."""

    model: str
    input_size: int
    options: dict[str, Any]  # extra builder keyword arguments (e.g. width)
    train: TrainConfig
    channels_last: bool = False  # NHWC memory layout (faster CPU convolutions)

    @staticmethod
    def parse(d: dict, prefix: str) -> ModelConfig:
        from kdlab.models import UnknownModelError, get_spec

        name = d.get("model")
        try:
            get_spec(str(name))
        except UnknownModelError as err:
            raise ConfigError(f"params.yaml: {prefix}model = {name!r}: {err}") from None
        options = d.get("options") or {}
        if not isinstance(options, dict):
            raise _fail(f"{prefix}options", options, "a mapping of model keyword arguments")
        channels_last = d.get("channels_last", False)
        if not isinstance(channels_last, bool):
            raise _fail(f"{prefix}channels_last", channels_last, "true | false")
        return ModelConfig(
            channels_last=channels_last,
            model=name,
            input_size=_number(d, "input_size", prefix, lo=8, integer=True),
            options=dict(options),
            train=TrainConfig.parse(_section(d, "train", prefix), f"{prefix}train."),
        )


@dataclass(frozen=True)
class DataConfig:
    """Which data set, where, and the derived training set (subset, noise, validation)."""

    name: str
    root: str
    source_dir: str | None
    md5: dict[str, str]
    val_size: int
    subset: int | None
    label_noise: float

    @staticmethod
    def parse(d: dict) -> DataConfig:
        from kdlab.data import dataset_names

        p = "data."
        source_dir = d.get("source_dir")
        if source_dir is not None and not isinstance(source_dir, str):
            raise _fail(f"{p}source_dir", source_dir, "null or a folder path")
        md5 = d.get("md5") or {}
        if not isinstance(md5, dict):
            raise _fail(f"{p}md5", md5, "a mapping file name -> md5 (empty: official checksums)")
        subset = d.get("subset")
        if subset is not None:
            subset = _number(d, "subset", p, lo=1, integer=True)
        return DataConfig(
            name=_choice(d, "name", p, dataset_names()),
            root=str(d.get("root", "data/raw")),
            source_dir=source_dir,
            md5={str(k): str(v) for k, v in md5.items()},
            val_size=_number(d, "val_size", p, lo=0, integer=True),
            subset=subset,
            label_noise=_number(d, "label_noise", p, lo=0, hi=1, default=0.0),
        )


@dataclass(frozen=True)
class SoftLabelConfig:
    """ReffAKD soft-label construction (seed 000 section 3.2)."""

    samples_per_class: int
    gamma: float | None  # None: grid search ("auto")
    gamma_step: float
    gamma_max: float
    batch_size: int

    @staticmethod
    def parse(d: dict) -> SoftLabelConfig:
        p = "soft_labels."
        gamma = d.get("gamma")
        if gamma != "auto":
            gamma = _number(d, "gamma", p, lo=0) if not isinstance(gamma, str) else None
            if gamma is None:
                raise _fail(f"{p}gamma", d.get("gamma"), "a number >= 0 or auto")
        return SoftLabelConfig(
            samples_per_class=_number(d, "samples_per_class", p, lo=2, integer=True),
            gamma=None if gamma == "auto" else gamma,
            gamma_step=_number(d, "gamma_step", p, lo=0, lo_open=True),
            gamma_max=_number(d, "gamma_max", p, lo=0, lo_open=True),
            batch_size=_number(d, "batch_size", p, lo=1, integer=True, default=512),
        )


@dataclass(frozen=True)
class Config:
    """The whole validated params.yaml."""

    seed: int
    alpha: float
    temperature: float
    methods: tuple[str, ...]
    method_params: dict[str, dict[str, Any]]
    device: str
    threads: int
    data: DataConfig
    teacher: ModelConfig
    student: ModelConfig
    cae: ModelConfig
    soft_labels: SoftLabelConfig
    profile: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    accel: AccelConfig = field(default_factory=AccelConfig)  # h5: the fast GPU path
    distributed: DistributedConfig = field(default_factory=DistributedConfig)  # h5: DDP


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a params mapping; raise :class:`ConfigError` naming the first bad value."""
    from kdlab.methods import get_method, method_names

    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping of keys to values")
    methods = raw.get("methods")
    if not isinstance(methods, list) or not methods:
        raise _fail("methods", methods, f"a non-empty list of: {', '.join(method_names())}")
    for m in methods:
        if m not in method_names():
            raise _fail("methods", m, ", ".join(method_names()))
    if len(set(methods)) != len(methods):
        raise _fail("methods", methods, "a list without repeated methods")
    method_params = raw.get("method_params") or {}
    if not isinstance(method_params, dict):
        raise _fail("method_params", method_params, "a mapping method -> its parameters")
    for m in methods:
        if not isinstance(method_params.get(m), dict):
            raise _fail(f"method_params.{m}", method_params.get(m), "a mapping ({} if none)")
    device = raw.get("device", "auto")
    if not (
        device in ("auto", "cpu", "cuda")
        or (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise _fail("device", device, DEVICES)
    try:  # h5: accel/distributed validate themselves (kdlab/accel.py, kdlab/distributed.py)
        accel = AccelConfig.parse(raw.get("accel"))
        dist_cfg = DistributedConfig.parse(raw.get("distributed"))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    cfg = Config(
        seed=_number(raw, "seed", "", lo=0, integer=True),
        alpha=_number(raw, "alpha", "", lo=0, hi=1),
        temperature=_number(raw, "temperature", "", lo=0, lo_open=True),
        methods=tuple(methods),
        method_params={k: dict(v) for k, v in method_params.items()},
        device=device,
        threads=_number(raw, "threads", "", lo=0, integer=True) if "threads" in raw else 0,
        data=DataConfig.parse(_section(raw, "data")),
        teacher=ModelConfig.parse(_section(raw, "teacher"), "teacher."),
        student=ModelConfig.parse(_section(raw, "student"), "student."),
        cae=ModelConfig.parse(_section(raw, "cae"), "cae."),
        soft_labels=SoftLabelConfig.parse(_section(raw, "soft_labels")),
        profile=dict(raw.get("profile") or {}),
        raw=raw,
        accel=accel,
        distributed=dist_cfg,
    )
    for m in methods:  # each method validates its own block
        get_method(m).validate_params(cfg.method_params[m], f"method_params.{m}.")
    return cfg


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root or pass --params")
    with open(path, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    return parse_config(raw)
