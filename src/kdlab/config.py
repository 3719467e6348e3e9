"""params.yaml -> a typed configuration, its types and ranges validated.

An error names the key, the bad value and what is allowed, e.g. ``params.yaml: alpha = 1.5 is
not allowed; allowed: a number in [0, 1]``. Names are not looked up here (keys of the default
preset, models, data sets, methods and their parameters): that is :mod:`kdlab.checks`, run by
the ``check`` stage every other stage waits for, so that a stage loads, and depends on, no
registry it does not run.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from kdlab.accel import AccelConfig
from kdlab.distributed import DistributedConfig
from kdlab.errors import ConfigError
from kdlab.schema import (  # noqa: F401 (re-exported: the config types live in schema.py)
    DEVICES,
    NO_AUGMENT,
    OPTIMIZERS,
    SCHEDULES,
    AugmentConfig,
    TrainConfig,
    _choice,
    _fail,
    _flag,
    _number,
    _section,
)

# Keys renamed since runs were recorded: old name -> new name. A params.yaml that still
# writes the old one gets an error saying so (not "unknown key" or "missing").
RENAMED_KEYS = {"profile_name": "preset"}


def check_renamed(raw: dict[str, Any]) -> None:
    """A top-level key that was renamed is an error naming both spellings."""
    for old, new in RENAMED_KEYS.items():
        if old in raw:
            raise ConfigError(
                f"params.yaml: {old} is now called {new}; rename the key "
                f"({old}: {raw[old]} -> {new}: {raw[old]}), or run `kdlab preset NAME`"
            )


def _required(d: dict, key: str, prefix: str = "") -> Any:
    """``d[key]``; a missing key is an error naming it (every default lives in
    presets/default.yaml, nowhere else)."""
    if key not in d:
        raise ConfigError(f"params.yaml: {prefix}{key} is missing")
    return d[key]


@dataclass(frozen=True)
class ModelConfig:
    """A model from the registry plus how to train it."""

    model: str
    input_size: int
    options: dict[str, Any]  # extra builder keyword arguments (e.g. width)
    train: TrainConfig
    channels_last: bool  # NHWC memory layout (faster CPU convolutions)

    @staticmethod
    def parse(d: dict, prefix: str) -> ModelConfig:
        name = _required(d, "model", prefix)
        if not isinstance(name, str) or not name:
            raise _fail(f"{prefix}model", name, "a model name (`kdlab models` lists them)")
        options = _required(d, "options", prefix)
        if options is None:
            options = {}
        if not isinstance(options, dict):
            raise _fail(f"{prefix}options", options, "a mapping of model keyword arguments")
        return ModelConfig(
            channels_last=_flag(d, "channels_last", prefix),
            model=name,
            input_size=_number(d, "input_size", prefix, lo=8, integer=True),
            options=dict(options),
            train=TrainConfig.parse(_section(d, "train", prefix), f"{prefix}train."),
        )


CAE_KEEP = ("best_val", "final")


@dataclass(frozen=True)
class CaeConfig(ModelConfig):
    """ReffAKD's autoencoder: a model config plus how its input is prepared and which epoch's
    weights the soft labels use."""

    # Both required in params.yaml (defaults: presets/default.yaml); see its comments.
    normalize: bool  # train on (and reconstruct) mean/std-normalised images
    keep: str  # which epoch's weights are saved

    @staticmethod
    def parse(d: dict, prefix: str) -> CaeConfig:
        """``cae``: a model section without ``channels_last`` (not a key of cae in
        default.yaml, so no preset can set it: the CAE always trains in NCHW layout)."""
        if "channels_last" in d:
            raise ConfigError(
                f"params.yaml: unknown key {prefix}channels_last; the CAE trains in NCHW layout"
            )
        base = ModelConfig.parse({**d, "channels_last": False}, prefix)
        normalize = _flag(d, "normalize", prefix)
        keep = _choice(d, "keep", prefix, CAE_KEEP)
        return CaeConfig(**base.__dict__, normalize=normalize, keep=keep)


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
        p = "data."
        source_dir = _required(d, "source_dir", p)
        if source_dir is not None and not isinstance(source_dir, str):
            raise _fail(f"{p}source_dir", source_dir, "null or a folder path")
        md5 = _required(d, "md5", p)
        if md5 is None:
            md5 = {}
        if not isinstance(md5, dict):
            raise _fail(f"{p}md5", md5, "a mapping file name -> md5 (empty: official checksums)")
        subset = _required(d, "subset", p)
        if subset is not None:
            subset = _number(d, "subset", p, lo=1, integer=True)
        root = _required(d, "root", p)
        if not isinstance(root, str) or not _inside_repo(root):
            raise _fail(f"{p}root", root, "a relative folder inside the repository, e.g. data/raw")
        name = _required(d, "name", p)
        if not isinstance(name, str) or not name:
            raise _fail(f"{p}name", name, "a data set name (`kdlab data list` lists them)")
        return DataConfig(
            name=name,
            root=root,
            source_dir=source_dir,
            md5={str(k): str(v) for k, v in md5.items()},
            val_size=_number(d, "val_size", p, lo=0, integer=True),
            subset=subset,
            label_noise=_number(d, "label_noise", p, lo=0, hi=1),
        )


def _inside_repo(folder: str) -> bool:
    """A relative path that stays inside the working directory (no absolute path, no ``..``
    escape): DVC tracks ``data.root`` as an output and deletes it before the stage runs."""
    parts = Path(folder).parts
    if not folder or Path(folder).is_absolute() or folder.startswith("~"):
        return False
    depth = 0
    for part in parts:
        depth += -1 if part == ".." else (0 if part == "." else 1)
        if depth < 0:
            return False
    return depth > 0


@dataclass(frozen=True)
class SoftLabelConfig:
    """ReffAKD soft-label construction (ReffAKD's paper, section 3.2)."""

    samples_per_class: int
    gamma: float | None  # None: grid search ("auto")
    gamma_step: float
    gamma_max: float
    batch_size: int
    augment: bool  # embed the images as the CAE's training loader shows them

    @staticmethod
    def parse(d: dict) -> SoftLabelConfig:
        p = "soft_labels."
        gamma = _required(d, "gamma", p)
        if gamma != "auto":
            # softmax(z + gamma I) is one-hot long before 1000; beyond float32 it is NaN.
            gamma = _number(d, "gamma", p, lo=0, hi=1000) if not isinstance(gamma, str) else None
            if gamma is None:
                raise _fail(f"{p}gamma", d.get("gamma"), "a number in [0, 1000] or auto")
        return SoftLabelConfig(
            samples_per_class=_number(d, "samples_per_class", p, lo=2, integer=True),
            gamma=None if gamma == "auto" else gamma,
            gamma_step=_number(d, "gamma_step", p, lo=0, lo_open=True),
            gamma_max=_number(d, "gamma_max", p, lo=0, lo_open=True),
            batch_size=_number(d, "batch_size", p, lo=1, integer=True),
            augment=_flag(d, "augment", p),
        )


@dataclass(frozen=True)
class ProbeConfig:
    """The linear probe of every student's frozen features (SRRL Table 4)."""

    datasets: tuple[str, ...]
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float

    @staticmethod
    def parse(d: dict, data: DataConfig) -> ProbeConfig:
        p = "probe."
        names = _required(d, "datasets", p)
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _fail(f"{p}datasets", names, "a list of data set names ([]: data.name)")
        names = names or [data.name]  # []: the distillation data set itself
        return ProbeConfig(
            datasets=tuple(names),
            epochs=_number(d, "epochs", p, lo=1, integer=True),
            batch_size=_number(d, "batch_size", p, lo=1, integer=True),
            lr=_number(d, "lr", p, lo=0, lo_open=True),
            weight_decay=_number(d, "weight_decay", p, lo=0),
        )


# kdlab.profiling.COUNT_MODES (not imported: the config loads no torch; a test compares them).
COUNT_MODES = ("fvcore", "torchscan")
PROFILE_KEYS = ("count_modes", "table6", "table6_labels")
TABLE6_ROLES = ("teacher", "cae")
PROFILED_MODEL_KEYS = ("model", "input", "num_classes", "options")
_SHAPE = re.compile(r"([0-9]+)[xX]([0-9]+)[xX]([0-9]+)")


def _known_keys(d: dict, allowed: tuple[str, ...], prefix: str) -> None:
    """Refuse a key of ``d`` not in ``allowed``, naming it and what is allowed there."""
    for k in d:
        if k not in allowed:
            raise ConfigError(
                f"params.yaml: unknown key {prefix}{k}; allowed here: {', '.join(allowed)}"
            )


@dataclass(frozen=True)
class ProfiledModel:
    """One model of a ``profile.table6`` row: ``build_model(model, num_classes, C,
    input_size=H, **options)`` at batch 1."""

    model: str
    input: str  # CxHxW, e.g. 3x32x32
    num_classes: int  # 0 (the row leaves it out): no classifier, as the CAE
    options: dict[str, Any]  # builder keyword arguments (the row leaves them out: none)

    @staticmethod
    def parse(d: Any, prefix: str) -> ProfiledModel:
        if not isinstance(d, dict):
            raise _fail(prefix.rstrip("."), d, "a mapping {model, input, num_classes?, options?}")
        _known_keys(d, PROFILED_MODEL_KEYS, prefix)
        model = _required(d, "model", prefix)
        if not isinstance(model, str) or not model:
            raise _fail(f"{prefix}model", model, "a model name (`kdlab models` lists them)")
        shape = _required(d, "input", prefix)
        match = _SHAPE.fullmatch(shape) if isinstance(shape, str) else None
        if match is None or min(int(g) for g in match.groups()) <= 0:
            raise _fail(f"{prefix}input", shape, "CxHxW with positive sizes, e.g. 3x32x32")
        options = d.get("options", {})
        if not isinstance(options, dict):
            raise _fail(f"{prefix}options", options, "a mapping of model keyword arguments")
        has_classes = "num_classes" in d
        return ProfiledModel(
            model=model,
            input=shape,
            num_classes=_number(d, "num_classes", prefix, lo=1, integer=True) if has_classes else 0,
            options=dict(options),
        )


@dataclass(frozen=True)
class ProfileConfig:
    """``profile``: the resource counts of ReffAKD Table 6 (the ``profile`` stage)."""

    count_modes: tuple[str, ...]  # kdlab.profiling's counting conventions, each row in each
    table6: dict[str, dict[str, ProfiledModel]]  # row -> {teacher, cae}
    table6_labels: dict[str, str]  # row -> its label in the table (rows without: none)

    @staticmethod
    def parse(d: dict) -> ProfileConfig:
        p = "profile."
        _known_keys(d, PROFILE_KEYS, p)
        modes = _required(d, "count_modes", p)
        allowed = f"a non-empty list of {' | '.join(COUNT_MODES)}, each once"
        if (
            not isinstance(modes, list)
            or not modes
            or any(not isinstance(m, str) or m not in COUNT_MODES for m in modes)
            or len(set(modes)) != len(modes)
        ):
            raise _fail(f"{p}count_modes", modes, allowed)
        rows = _required(d, "table6", p)
        if rows is None:
            rows = {}
        if not isinstance(rows, dict):
            raise _fail(f"{p}table6", rows, "a mapping row -> {teacher: {...}, cae: {...}}")
        table6 = {}
        for row, pair in rows.items():
            key = f"{p}table6.{row}"
            if not isinstance(pair, dict):
                raise _fail(key, pair, "a mapping {teacher: {model, input, ...}, cae: {...}}")
            _known_keys(pair, TABLE6_ROLES, f"{key}.")
            table6[str(row)] = {
                role: ProfiledModel.parse(_required(pair, role, f"{key}."), f"{key}.{role}.")
                for role in TABLE6_ROLES
            }
        labels = _required(d, "table6_labels", p)
        if labels is None:
            labels = {}
        if not isinstance(labels, dict):
            raise _fail(f"{p}table6_labels", labels, "a mapping row of table6 -> its label")
        for row, label in labels.items():
            if row not in table6:
                allowed_rows = ", ".join(map(str, table6)) or "none (table6 is empty)"
                raise ConfigError(
                    f"params.yaml: unknown key {p}table6_labels.{row}; allowed here: rows of "
                    f"{p}table6: {allowed_rows}"
                )
            if not isinstance(label, str):
                raise _fail(f"{p}table6_labels.{row}", label, "a text label")
        return ProfileConfig(count_modes=tuple(modes), table6=table6, table6_labels=dict(labels))


@dataclass(frozen=True)
class GridCellConfig:
    """One cell of ``grid.cells``: a method at its own alpha, temperature and method params
    (the method's ``method_params`` block with the cell's ``params`` overrides applied)."""

    name: str
    method: str
    alpha: float
    temperature: float
    params: dict[str, Any]
    # The cell sets its own temperature (refused for a method with its own: kdlab.checks).
    temperature_set: bool = False


GRID_CELL_KEYS = ("method", "alpha", "temperature", "params")
_CELL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _grid_cell(name: Any, cell: Any, method_params: dict, alpha: float, temperature: float):
    """One cell of ``grid.cells``, validated as its single run's params would be."""
    key = f"grid.cells.{name}"
    if not isinstance(name, str) or not _CELL_NAME.fullmatch(name):
        raise _fail("grid.cells", name, "cell names of letters, digits, '_' and '-'")
    if not isinstance(cell, dict) or "method" not in cell:
        raise _fail(key, cell, "a mapping with a method (and alpha, temperature, params)")
    for k in cell:
        if k not in GRID_CELL_KEYS:
            raise ConfigError(
                f"params.yaml: unknown key {key}.{k}; allowed here: {', '.join(GRID_CELL_KEYS)}"
            )
    method = cell["method"]
    if not isinstance(method, str):
        raise _fail(f"{key}.method", method, "a method name")
    base = method_params.get(method) or {}
    if not isinstance(base, dict):
        raise _fail(f"method_params.{method}", base, "a mapping ({} if none)")
    overrides = cell.get("params") or {}
    if not isinstance(overrides, dict):
        raise _fail(f"{key}.params", overrides, "a mapping of the method's parameters")
    return GridCellConfig(
        name=name,
        method=method,
        alpha=_number(cell, "alpha", f"{key}.", lo=0, hi=1, default=alpha),
        temperature=_number(
            cell, "temperature", f"{key}.", lo=0, lo_open=True, default=temperature
        ),
        params={**base, **overrides},
        temperature_set="temperature" in cell,
    )


def _grid_cells(raw: dict, method_params: dict, alpha: float, temperature: float):
    """``grid.cells``: name -> {method, alpha?, temperature?, params?}; alpha and temperature
    default to the top-level ones, params overlay the method's ``method_params`` block."""
    grid = _required(raw, "grid")
    if not isinstance(grid, dict):
        raise _fail("grid", grid, "a mapping with cells: {name: {method, alpha, ...}}")
    cells = _required(grid, "cells", "grid.")
    if cells is None:
        cells = {}
    if not isinstance(cells, dict):
        raise _fail("grid.cells", cells, "a mapping cell name -> {method, alpha, ...} ({} if none)")
    return tuple(
        _grid_cell(name, cell, method_params, alpha, temperature) for name, cell in cells.items()
    )


@dataclass(frozen=True)
class Config:
    """The whole validated params.yaml."""

    preset: str  # the preset it was written from (`kdlab preset NAME`)
    seed: int
    student_seed: int | None  # the students' seed; None: ``seed`` (:attr:`students_seed`)
    alpha: float
    temperature: float
    methods: tuple[str, ...]
    method_params: dict[str, dict[str, Any]]
    device: str
    threads: int
    data: DataConfig
    teacher: ModelConfig
    student: ModelConfig
    cae: CaeConfig
    soft_labels: SoftLabelConfig
    probe: ProbeConfig
    profile: ProfileConfig
    accel: AccelConfig  # the fast GPU path
    distributed: DistributedConfig  # DDP
    grid: tuple[GridCellConfig, ...]  # the distill_grid stage's cells (kdlab.grid)
    # ``methods`` as written: method -> the knowledge folder its stage reads (data/<value>).
    knowledge: dict[str, str]

    @property
    def students_seed(self) -> int:
        """The seed of every student (CE, distilled, grid cells): ``student_seed``, or
        ``seed`` when it is null, so a params file without it runs as before."""
        return self.seed if self.student_seed is None else self.student_seed


# Every stage seeds ``seed + offset`` (kdlab.runtime.SEED_STREAMS, offsets < 100) into
# NumPy, whose seeds are 32-bit.
MAX_SEED = 2**31 - 1


def _optional_seed(raw: dict[str, Any], key: str) -> int | None:
    """``raw[key]``: null or a seed (required: its default, null, is default.yaml's)."""
    value = _required(raw, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise _fail(key, value, f"null (= seed) | an integer in [0, {MAX_SEED}]")
    return value


def _methods(methods: Any) -> dict[str, str]:
    """``methods``: a mapping method -> the knowledge it reads (checked against each method's
    own declaration by :mod:`kdlab.checks`).

    The value is redundant with the method's own declaration on purpose: DVC's foreach gives
    each ``distill@<method>`` stage the knowledge folder ``data/<value>`` as its one dependency
    on upstream results, so a ReffAKD stage never reruns because the teacher changed.
    """
    example = "{kd: teacher, reffakd: soft_labels}"
    if not isinstance(methods, dict) or not methods:
        raise _fail("methods", methods, f"a mapping method -> knowledge source, e.g. {example}")
    for m, source in methods.items():
        if not isinstance(m, str) or not isinstance(source, str):
            raise _fail(f"methods.{m}", source, f"a knowledge source, e.g. {example}")
    return dict(methods)


def parse_config(raw: dict[str, Any]) -> Config:
    """Validate a params mapping's types and ranges; raise :class:`ConfigError` naming the
    first bad value (names: :func:`kdlab.checks.check_params`)."""
    if not isinstance(raw, dict):
        raise ConfigError("params.yaml must be a mapping of keys to values")
    check_renamed(raw)
    _check_finite(raw, "")
    preset = _required(raw, "preset")
    if not isinstance(preset, str) or not preset:
        raise _fail("preset", preset, "a preset name (`kdlab preset` lists them)")
    knowledge = _methods(_required(raw, "methods"))
    methods = list(knowledge)
    method_params = _required(raw, "method_params")
    if method_params is None:
        method_params = {}
    if not isinstance(method_params, dict):
        raise _fail("method_params", method_params, "a mapping method -> its parameters")
    for m in [*methods, *(k for k in method_params if k not in methods)]:
        block = method_params.get(m)
        if not isinstance(block, dict) and (m in methods or block is not None):
            raise _fail(f"method_params.{m}", block, "a mapping ({} if none)")
    device = _required(raw, "device")
    if not (
        device in ("auto", "cpu", "cuda")
        or (isinstance(device, str) and device.startswith("cuda:") and device[5:].isdigit())
    ):
        raise _fail("device", device, DEVICES)
    _check_device(device)
    try:  # accel/distributed validate themselves (kdlab/accel.py, kdlab/distributed.py)
        accel = AccelConfig.parse(_required(raw, "accel"))
        dist_cfg = DistributedConfig.parse(_required(raw, "distributed"))
    except ValueError as err:
        raise ConfigError(f"params.yaml: {err}") from None
    data = DataConfig.parse(_section(raw, "data"))
    alpha = _number(raw, "alpha", "", lo=0, hi=1)
    temperature = _number(raw, "temperature", "", lo=0, lo_open=True)
    return Config(
        preset=preset,
        seed=_number(raw, "seed", "", lo=0, hi=MAX_SEED, integer=True),
        student_seed=_optional_seed(raw, "student_seed"),
        alpha=alpha,
        temperature=temperature,
        methods=tuple(methods),
        method_params={k: dict(v or {}) for k, v in method_params.items()},
        device=device,
        threads=_number(raw, "threads", "", lo=0, integer=True),
        data=data,
        teacher=ModelConfig.parse(_section(raw, "teacher"), "teacher."),
        student=ModelConfig.parse(_section(raw, "student"), "student."),
        cae=CaeConfig.parse(_section(raw, "cae"), "cae."),
        soft_labels=SoftLabelConfig.parse(_section(raw, "soft_labels")),
        probe=ProbeConfig.parse(_section(raw, "probe"), data),
        profile=ProfileConfig.parse(_section(raw, "profile")),
        accel=accel,
        distributed=dist_cfg,
        grid=_grid_cells(raw, method_params, alpha, temperature),
        knowledge=knowledge,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key repeated in one mapping (DVC refuses them too) and
    every alias (``*name``): a few KB of nested aliases expand to billions of nodes (a
    "billion laughs" file hangs the loader), and params.yaml never needs one."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise ConfigError(
                f"params.yaml line {event.start_mark.line + 1}: alias *{event.anchor} refused; "
                "allowed: plain values (write the value out instead of an anchor/alias)"
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise ConfigError(
                    f"params.yaml line {line}: key {key!r} is repeated (first on line "
                    f"{seen[key]}); allowed: each key once per mapping"
                )
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def read_params(path: str | Path) -> Any:
    """Parse a params file: YAML errors and repeated keys become one-line ConfigErrors."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root or pass --params")
    if not path.is_file():
        raise ConfigError(f"{path} is not a file; allowed: --params pointing at a YAML file")
    with open(path, encoding="utf-8") as fh:
        try:
            return yaml.load(fh, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark
            where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(
                f"{path}{where}: not valid YAML ({err.problem}); fix the syntax there"
            ) from None
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from None


def load_config(path: str | Path = "params.yaml") -> Config:
    """Read and validate params.yaml."""
    return parse_config(read_params(path))


def _check_finite(value: Any, key: str) -> None:
    """NaN and infinity are valid YAML floats but never a valid setting."""
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(key, value, "a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _check_finite(v, f"{key}[{i}]")


def _check_device(device: str) -> None:
    """A CUDA device must exist on this machine (``auto`` falls back to the CPU)."""
    if not device.startswith("cuda"):
        return
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device[5:]) if ":" in device else 0
    if index >= count:
        have = f"cuda:0 .. cuda:{count - 1}" if count else "none (no CUDA GPU on this machine)"
        raise _fail("device", device, f"auto | cpu | a CUDA device present here: {have}")
