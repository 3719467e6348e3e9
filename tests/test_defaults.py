"""One home per default: presets/default.yaml. Every default written in code (a parse
fallback, a dataclass field default, a method parameter) is either absent or equal to
default.yaml's value; integers and booleans are typed; the ``profile`` section is validated.
"""

from __future__ import annotations

import copy
import dataclasses
import re

import pytest

from kdlab import accel, config, distributed, schema
from kdlab.checks import _FREE_FORM
from kdlab.config import ConfigError, parse_config
from kdlab.methods import METHODS, get_method

# Sub-trees whose keys are data, not settings (the check stage's free-form list); method_params
# is walked method by method below.
DATA_TREES = _FREE_FORM


def _paths(tree: dict, prefix: str = ""):
    """Every key path of ``tree`` (sections and leaves), data sub-trees not entered."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, dict) and path not in DATA_TREES:
            yield from _paths(value, f"{path}.")


def _without(tree: dict, path: str) -> dict:
    out = copy.deepcopy(tree)
    *parents, last = path.split(".")
    node = out
    for p in parents:
        node = node[p]
    del node[last]
    return out


def _at(tree: dict, path: str):
    node = tree
    for p in path.split("."):
        if not isinstance(node, dict) or p not in node:
            raise KeyError(path)
        node = node[p]
    return node


def test_every_key_left_out_is_an_error_naming_it_or_defaults_to_default_yaml(default_params):
    """Leaving out any key of default.yaml either fails naming it (no default in code) or
    parses to the very config default.yaml gives (the code's default agrees with it)."""
    reference = parse_config(default_params)
    agreeing = []
    for path in _paths(default_params):
        try:
            cfg = parse_config(_without(default_params, path))
        except ConfigError as err:
            assert re.search(rf"\b{re.escape(path)}\b", str(err)), (path, str(err))
            continue
        assert cfg == reference, f"{path}: the default in code disagrees with default.yaml"
        agreeing.append(path)
    # The only defaults in code: the library's accel/distributed (callers without params)
    # and test_epochs (absent: none), each equal to default.yaml's value.
    assert set(agreeing) <= {
        *(f"accel.{f.name}" for f in dataclasses.fields(accel.AccelConfig)),
        *(f"distributed.{f.name}" for f in dataclasses.fields(distributed.DistributedConfig)),
        "student.train.test_epochs",
    }, agreeing


# Each config dataclass -> the sections of default.yaml it parses (None: not a section).
SECTIONS = {
    config.Config: [""],
    config.ModelConfig: ["teacher", "student"],
    config.CaeConfig: ["cae"],
    config.DataConfig: ["data"],
    config.SoftLabelConfig: ["soft_labels"],
    config.ProbeConfig: ["probe"],
    config.ProfileConfig: ["profile"],
    config.ProfiledModel: None,  # rows of profile.table6 (data; num_classes/options optional)
    config.GridCellConfig: None,  # grid.cells.<name>: alpha/temperature inherited
    schema.TrainConfig: ["teacher.train", "student.train", "cae.train"],
    schema.AugmentConfig: ["teacher.train.augment", "student.train.augment", "cae.train.augment"],
    accel.AccelConfig: ["accel"],
    distributed.DistributedConfig: ["distributed"],
    distributed.Context: None,  # the process's rank (torchrun's environment), not a param
}


def _field_defaults(cls) -> dict:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def _same(code, yaml_value) -> bool:
    if isinstance(code, tuple) and isinstance(yaml_value, list):
        return list(code) == yaml_value
    return code == yaml_value and type(code) is type(yaml_value)


def test_every_dataclass_default_agrees_with_default_yaml(default_params):
    """A field default of a config type equals default.yaml's value wherever default.yaml sets
    that key (or default.yaml never sets it); every config type is mapped to its sections."""
    modules = (config, schema, accel, distributed)
    found = {
        obj
        for m in modules
        for obj in vars(m).values()
        if isinstance(obj, type) and dataclasses.is_dataclass(obj) and obj.__module__ == m.__name__
    }
    assert found <= set(SECTIONS), f"map these to their sections here: {found - set(SECTIONS)}"
    for cls, sections in SECTIONS.items():
        for name, default in _field_defaults(cls).items():
            for section in sections or ():
                path = f"{section}.{name}" if section else name
                try:
                    value = _at(default_params, path)
                except KeyError:
                    continue  # default.yaml has no such key here (no preset can set it)
                assert _same(default, value), (
                    f"{cls.__name__}.{name} = {default!r} in code, {path} = {value!r} in "
                    "presets/default.yaml: remove the default or make them agree"
                )


@pytest.mark.parametrize("name", METHODS)
def test_every_method_parameter_lives_in_default_yaml_only(name, default_params):
    """Each method's parameters: typed (int or float), no default in code, each one in its
    default.yaml block (nothing else there); leaving one out is an error naming it."""
    cls = get_method(name)
    block = default_params["method_params"].get(name) or {}
    declared = [*cls.schema, *cls.choices]
    assert sorted(block) == sorted(declared), f"method_params.{name} vs {cls.__name__}"
    for key, spec in cls.schema.items():
        assert len(spec) == 3 and spec[0] in (int, float), (
            f"{name}.{key}: {spec!r}; a parameter is (int | float, lo, hi): its default is "
            "presets/default.yaml's"
        )
    for key, allowed in cls.choices.items():
        assert all(isinstance(a, str) for a in allowed), (name, key, allowed)
    resolved = cls.resolve_params(block)
    assert resolved == block
    for key, (kind, _, _) in cls.schema.items():
        assert type(resolved[key]) is kind, (name, key, resolved[key])
    for key in declared:
        partial = {k: v for k, v in block.items() if k != key}
        with pytest.raises(ConfigError, match=rf"method_params\.{name}\.{key} is missing"):
            cls.resolve_params(partial)


@pytest.mark.parametrize(
    "edit, message",
    [
        (
            lambda p: p["student"]["train"].update(epochs=2.5),
            "student.train.epochs = 2.5 is not allowed; allowed: an integer >= 1",
        ),
        (
            lambda p: p["teacher"]["train"].update(batch_size=128.0),
            "teacher.train.batch_size = 128.0 is not allowed; allowed: an integer >= 1",
        ),
        (lambda p: p.update(seed=1.5), "seed = 1.5 is not allowed; allowed: an integer in"),
        (
            lambda p: p["teacher"]["options"].update(width=16),  # options: the builder's
            None,
        ),
        (
            lambda p: p["teacher"].update(channels_last="yes"),
            "teacher.channels_last = 'yes' is not allowed; allowed: true | false",
        ),
        (
            lambda p: p["cae"].update(normalize=1),
            "cae.normalize = 1 is not allowed; allowed: true | false",
        ),
        (
            lambda p: p["student"]["train"]["augment"].update(hflip="true"),
            "student.train.augment.hflip = 'true' is not allowed; allowed: true | false",
        ),
        (
            lambda p: p["distributed"].update(sync_bn="no"),
            "distributed.sync_bn = 'no': must be true or false",
        ),
        (
            lambda p: p["distributed"].update(nproc_per_node=True),
            "distributed.nproc_per_node = True: must be an integer >= 1",
        ),
        (
            lambda p: p["accel"].update(tf32="true"),
            "accel.tf32 = 'true': must be true or false",
        ),
    ],
)
def test_ints_and_bools_are_typed(default_params, edit, message):
    edit(default_params)
    if message is None:
        parse_config(default_params)
        return
    with pytest.raises(ConfigError) as err:
        parse_config(default_params)
    assert message in str(err.value)


@pytest.mark.parametrize(
    "name, key, value, message",
    [
        ("dkd", "warmup_epochs", 2.5, "allowed: an integer >= 0"),
        ("dkd", "warmup_epochs", 20.0, "allowed: an integer >= 0"),
        ("crd", "nce_k", 16384.0, "allowed: an integer >= 1"),
        ("srrl", "all_stages", True, "allowed: an integer [0, 1]"),
        ("dkd", "temperature", "4", "allowed: a number >= 0.01"),
        ("kd", "reduction", True, "allowed: batchmean | mean"),
    ],
)
def test_method_ints_refuse_floats_and_bools(name, key, value, message, default_params):
    cls = get_method(name)
    block = {**default_params["method_params"][name], key: value}
    with pytest.raises(ConfigError) as err:
        cls.resolve_params(block)
    assert f"method_params.{name}.{key} = {value!r} is not allowed; {message}" in str(err.value)


def test_method_floats_take_ints_as_floats(default_params):
    block = {**default_params["method_params"]["dkd"], "temperature": 4}
    assert type(get_method("dkd").resolve_params(block)["temperature"]) is float


def _set(tree: dict, path: str, value) -> dict:
    *parents, last = path.split(".")
    node = tree
    for p in parents:
        node = node[p]
    node[last] = value
    return tree


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("profile.extra", 1, "unknown key profile.extra; allowed here: count_modes, table6"),
        (
            "profile.table6.cifar100.student",
            {"model": "x", "input": "3x32x32"},
            "unknown key profile.table6.cifar100.student; allowed here: teacher, cae",
        ),
        (
            "profile.table6.cifar100.teacher.classes",
            100,
            "unknown key profile.table6.cifar100.teacher.classes; allowed here: model, input",
        ),
        ("profile.count_modes", ["flops"], "profile.count_modes = ['flops'] is not allowed"),
        ("profile.count_modes", [], "profile.count_modes = [] is not allowed"),
        (
            "profile.table6.cifar100.cae.input",
            "3x32",
            "profile.table6.cifar100.cae.input = '3x32' is not allowed; allowed: CxHxW",
        ),
        (
            "profile.table6.cifar100.teacher.num_classes",
            100.0,
            "profile.table6.cifar100.teacher.num_classes = 100.0 is not allowed; allowed: an "
            "integer >= 1",
        ),
        (
            "profile.table6.cifar100.teacher.options",
            [1],
            "profile.table6.cifar100.teacher.options = [1] is not allowed",
        ),
        (
            "profile.table6.cifar100.cae",
            None,
            "profile.table6.cifar100.cae = None is not allowed",
        ),
        (
            "profile.table6_labels.nope",
            "x",
            "unknown key profile.table6_labels.nope; allowed here: rows of profile.table6",
        ),
        (
            "profile.table6_labels.fashion_mnist",
            3,
            "profile.table6_labels.fashion_mnist = 3 is not allowed",
        ),
    ],
)
def test_profile_is_validated_at_every_depth(default_params, path, value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(_set(default_params, path, value))
    assert message in str(err.value)


def test_profile_is_typed(default_params):
    from kdlab.profiling import COUNT_MODES

    assert config.COUNT_MODES == COUNT_MODES
    p = parse_config(default_params).profile
    assert p.count_modes == ("fvcore", "torchscan")
    row = p.table6["fashion_mnist_as_published"]
    assert (row["teacher"].model, row["teacher"].input, row["teacher"].num_classes) == (
        "resnet18",
        "1x32x32",
        100,
    )
    assert (row["cae"].num_classes, row["cae"].options) == (0, {"out_channels": 3})
    assert set(p.table6_labels) <= set(p.table6)


def test_config_has_no_raw_params(default_params):
    cfg = parse_config(default_params)
    assert not hasattr(cfg, "raw")
    assert (cfg.preset, cfg.data.subset) == ("default", None)
