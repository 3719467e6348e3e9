"""Everything ``kdlab check`` (the pipeline's first stage) verifies beyond types and ranges,
before DVC deletes any output: every key exists in the default preset, every name is in its
registry (models, data sets, methods, each method's parameters, grid cells' methods), the
models build from their options, each feature method fits the teacher/student pair, and
``data.source_dir`` holds the data set's files.

:mod:`kdlab.config` checks types and ranges only, so that a stage imports, and depends on, no
registry it does not run; the stages trust ``data/params.ok``, which this check writes.
"""

from __future__ import annotations

import difflib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import yaml

from kdlab.artifacts import make_model
from kdlab.config import Config, ConfigError, _fail, check_renamed, parse_config, read_params
from kdlab.data import dataset_names, get_dataset
from kdlab.data.fetch import ChecksumError, verify
from kdlab.methods import get_method, method_names
from kdlab.models import UnknownModelError, build_model, check_input, get_spec


def parse_checked(raw: Any) -> Config:
    """:func:`kdlab.config.parse_config` plus the keys and names (:func:`check_params`)."""
    if isinstance(raw, dict):
        check_renamed(raw)  # before "unknown key": say what the old key is called now
        _check_keys(raw, _reference_keys())
        if isinstance(raw.get("methods"), dict):  # a misspelt method before its missing block
            _check_methods(raw["methods"])
    cfg = parse_config(raw)
    check_params(cfg)
    return cfg


def load_checked(path: str | Path = "params.yaml") -> Config:
    """Read params.yaml; its types, ranges, keys and names validated."""
    return parse_checked(read_params(path))


def load_preset(name: str) -> Config:
    """The validated config of a preset (the default with its overlay applied)."""
    from kdlab import presets

    return parse_checked(yaml.safe_load(presets.resolve(name)))


def check_built(cfg: Config) -> None:
    """What the check stage verifies beyond :func:`parse_checked`: the models build, each
    feature method fits them, ``data.source_dir`` holds verified files."""
    check_models(cfg)
    check_method_models(cfg)
    check_sources(cfg)


# Sub-trees whose keys are free (model builder arguments, file names, table rows) or checked
# by their owner (each method validates its own block against its schema).
_FREE_FORM = (
    "methods",
    "method_params",
    "data.md5",
    "grid.cells",
    "teacher.options",
    "student.options",
    "cae.options",
    "profile.table6",
    "profile.table6_labels",
)


@cache
def _reference_keys() -> dict[str, Any]:
    """The default preset: the one place every valid key (and its default) is written."""
    text = resources.files("kdlab.presets").joinpath("default.yaml").read_text("utf-8")
    return yaml.safe_load(text)


def _check_keys(raw: dict, ref: dict, prefix: str = "") -> None:
    """Every key of ``raw`` exists in the default preset (free-form sub-trees excepted)."""
    for key, value in raw.items():
        full = f"{prefix}{key}"
        if key not in ref:
            names = [str(k) for k in ref]
            near = difflib.get_close_matches(str(key), names, n=1, cutoff=0.6)
            hint = f"did you mean {prefix}{near[0]}? " if near else ""
            raise ConfigError(
                f"params.yaml: unknown key {full}; {hint}allowed here: {', '.join(names)}"
            )
        if full in _FREE_FORM:
            continue
        if isinstance(value, dict) and isinstance(ref[key], dict):
            _check_keys(value, ref[key], f"{full}.")


def check_params(cfg: Config) -> None:
    """Every name of ``cfg`` is in its registry and every method's parameters in its schema."""
    _check_methods(cfg.knowledge)
    for m in cfg.method_params:
        if m not in method_names():
            near = difflib.get_close_matches(str(m), method_names(), n=1)
            hint = f"did you mean {near[0]}? " if near else ""
            raise ConfigError(
                f"params.yaml: unknown method under method_params: {m!r}; {hint}"
                f"allowed: {', '.join(method_names())}"
            )
    if cfg.data.name not in dataset_names():
        raise _fail("data.name", cfg.data.name, " | ".join(dataset_names()))
    for role in ("teacher", "student", "cae"):
        name = getattr(cfg, role).model
        try:
            get_spec(name)
        except UnknownModelError as err:
            raise ConfigError(f"params.yaml: {role}.model = {name!r}: {err}") from None
    _check_probe(cfg)
    for m in cfg.methods:  # each method validates its own block
        get_method(m).validate_params(cfg.method_params[m], f"method_params.{m}.")
    for cell in cfg.grid:
        _check_cell(cfg, cell)


def _check_methods(knowledge: dict[str, str]) -> None:
    """``methods``: distillation methods, each mapped to the knowledge it learns from."""

    def valid() -> str:
        return ", ".join(m for m in method_names() if get_method(m).knowledge() != "labels")

    for m, source in knowledge.items():
        if m not in method_names():
            raise _fail("methods", m, valid())
        want = get_method(m).knowledge()
        if want == "labels":
            raise _fail(
                "methods", m, f"a distillation method ({m} is the CE baseline: train_student)"
            )
        if source != want:
            raise _fail(f"methods.{m}", source, f"{want} (what {m} learns from)")


def _check_probe(cfg: Config) -> None:
    """``probe.datasets``: registered data sets with the distillation data's channels."""
    p, data = "probe.", cfg.data
    channels = get_dataset(data.name).shape[0]
    for name in cfg.probe.datasets:
        if name not in dataset_names():
            raise _fail(f"{p}datasets", name, ", ".join(dataset_names()))
        if get_dataset(name).shape[0] != channels:
            same = [n for n in dataset_names() if get_dataset(n).shape[0] == channels]
            raise ConfigError(
                f"params.yaml: {p}datasets: {name} has {get_dataset(name).shape[0]} "
                f"channels, the students of {data.name} take {channels}; allowed: "
                f"{', '.join(same)}"
            )


def _check_cell(cfg: Config, cell) -> None:
    """A ``grid.cells`` cell: its method, and its params as its single run's would be."""
    key = f"grid.cells.{cell.name}"
    if cell.method not in method_names():
        raise _fail(f"{key}.method", cell.method, ", ".join(method_names()))
    cls = get_method(cell.method)
    if cell.temperature_set and "temperature" in cls.schema:
        # DKD's own T: a cell temperature it would ignore is a mistake, not a setting.
        raise ConfigError(
            f"params.yaml: {key}.temperature is not used by {cell.method}, which has its own; "
            f"set {key}.params.temperature"
        )
    base = cfg.method_params.get(cell.method) or {}
    cls.validate_params(base, f"method_params.{cell.method}.")  # also when not in `methods`
    # The base block passed: whatever the merged params refuse is one of the cell's overrides.
    cls.validate_params(cell.params, f"{key}.params.")


def check_models(cfg: Config) -> None:
    """``kdlab check``: build the teacher, the student and the CAE from their params on the CPU,
    so a typo under ``<role>.options`` fails here, naming the key, not in its stage after DVC
    deleted the outputs."""
    spec = get_dataset(cfg.data.name)
    cpu = torch.device("cpu")
    for role in ("teacher", "student", "cae"):
        mc = getattr(cfg, role)
        try:
            if role == "cae":
                model = build_model(mc.model, 0, spec.shape[0], **mc.options)
                check_input(model, mc.model, (spec.shape[0], mc.input_size, mc.input_size))
            else:
                make_model(mc, spec, cpu)
        except (TypeError, ValueError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise ConfigError(
                f"params.yaml: {role}.options = {mc.options!r} (model {mc.model}, input "
                f"{mc.input_size}): {first}"
            ) from None


def check_method_models(cfg: Config) -> None:
    """Method params that depend on the models (SRRL's stage index, FitNet's hint stage, ...).

    Builds each feature method's distiller (of ``methods`` and of every ``grid.cells`` cell)
    around untrained student and teacher models on the CPU, so that ``kdlab check`` (the
    pipeline's first stage) reports what the method's constructor would reject hours later,
    naming the params.yaml key.
    """
    spec = get_dataset(cfg.data.name)
    runs = [(m, cfg.method_params[m], f"methods.{m}") for m in cfg.methods]
    runs += [(c.method, c.params, f"grid.cells.{c.name}") for c in cfg.grid]
    for method, params, where in runs:
        cls = get_method(method)
        if not cls.needs_teacher_features:
            continue
        cpu = torch.device("cpu")
        student = make_model(cfg.student, spec, cpu)
        teacher = make_model(cfg.teacher, spec, cpu).eval()
        try:
            cls(
                student,
                params,
                cfg.alpha,
                cfg.temperature,
                epochs=cfg.student.train.epochs,
                teacher_model=teacher,
                input_shape=(spec.shape[0], cfg.student.input_size, cfg.student.input_size),
                teacher_input_size=cfg.teacher.input_size,
                num_data=2,  # memory banks sized for two images: only the shapes matter here
                train_labels=torch.tensor([0, 1 % spec.num_classes]),
            )
        except ValueError as err:
            raise ConfigError(
                f"params.yaml: {err} ({where}; teacher {cfg.teacher.model}, student "
                f"{cfg.student.model})"
            ) from None


def check_sources(cfg: Config) -> None:
    """``kdlab check``: the files of ``data.source_dir`` against their md5s, before DVC
    deletes ``data.root`` for the download stage (a corrupt source would leave it empty)."""
    source = cfg.data.source_dir
    if source is None:
        return
    folder = Path(source)
    if not folder.is_dir():
        raise ConfigError(
            f"params.yaml: data.source_dir = {source!r} is not allowed; allowed: null or an "
            "existing folder holding the data set's files"
        )
    for f in get_dataset(cfg.data.name).files:
        path = folder / f.name
        if not path.exists():
            if f.extract:
                continue  # an archive may come unpacked by hand: download checks its files
            raise ConfigError(f"params.yaml: data.source_dir = {source!r} has no {f.name}")
        try:
            verify(path, f, cfg.data.md5.get(f.name))
        except ChecksumError as err:
            raise ConfigError(f"params.yaml: data.source_dir: {err}") from None
