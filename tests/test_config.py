import copy
import os
import subprocess
import sys

import pytest
import torch
import yaml

from conftest import REPO
from fixtures import cli
from kdlab.checks import load_preset, parse_checked
from kdlab.config import ConfigError, load_config, parse_config
from kdlab.models import model_names


def test_default_params_are_valid_and_match_preset(default_params):
    cfg = parse_config(default_params)
    assert cfg.alpha == 0.6 and cfg.temperature == 20.0
    assert cfg.methods == ("kd", "reffakd", "dkd", "reffakd_dkd")
    assert cfg.teacher.model == "resnet18" and cfg.student.model == "lenet5"
    preset = (REPO / "src/kdlab/presets/default.yaml").read_text()
    # The committed params.yaml (the workspace copy may hold an applied `dvc exp run -S ...`).
    committed = subprocess.run(
        ["git", "show", "HEAD:params.yaml"], cwd=REPO, capture_output=True, text=True
    )
    text = committed.stdout if committed.returncode == 0 else (REPO / "params.yaml").read_text()
    assert text == preset


def test_the_old_preset_key_is_an_error_naming_its_new_name(default_params):
    # params.yaml said `profile_name:` before the key was renamed `preset` (issue 21).
    old = {("profile_name" if k == "preset" else k): v for k, v in default_params.items()}
    message = r"profile_name is now called preset; rename the key \(profile_name: default ->"
    with pytest.raises(ConfigError, match=message):
        parse_config(old)
    with pytest.raises(ConfigError, match=message):  # before the check's "unknown key"
        parse_checked(old)
    both = {**default_params, "profile_name": "default"}
    with pytest.raises(ConfigError, match="profile_name is now called preset"):
        parse_checked(both)


def test_paper_preset_is_the_papers_recipe():
    cfg = load_preset("paper")
    t = cfg.student.train
    assert (cfg.teacher.model, cfg.student.model) == ("resnet18", "lenet5")
    assert cfg.teacher.options.get("width", 64) == 64
    # The official notebooks' batch 128 (lenet_5_baseline, tinySLG_distillation,
    # large_model_distillation, autoencoder), not Table 7's 256.
    assert (t.epochs, t.batch_size, t.lr, t.momentum, t.weight_decay) == (200, 128, 0.1, 0.9, 5e-4)
    assert (t.schedule, t.milestones, t.lr_decay) == ("step", (60, 120, 160), 0.2)
    assert t.augment.rotation == 15 and t.augment.hflip
    assert cfg.student.input_size == cfg.cae.input_size == 32
    assert cfg.cae.train.batch_size == 128 and cfg.cae.normalize and cfg.cae.keep == "best_val"
    assert cfg.soft_labels.augment
    # fashion_mnist/resnet_baseline.ipynb: 28x28 (no Resize), batch 512, lr 0.01.
    tt = cfg.teacher.train
    assert (cfg.teacher.input_size, tt.batch_size, tt.lr) == (28, 512, 0.01)
    assert cfg.soft_labels.gamma == 0.008


@pytest.mark.parametrize("name", ["reffakd_cifar100", "reffakd_tiny"])
def test_reffakd_presets_train_at_the_notebooks_batch_and_crop(name):
    """Every official CIFAR-100 / Tiny ImageNet notebook (teacher, CAE, distillation) uses
    batch 128; the CIFAR-100 ones crop 32x32 from the 4-padded image before flip + rotation."""
    cfg = load_preset(name)
    crop = 4 if name == "reffakd_cifar100" else 0
    for mc in (cfg.teacher, cfg.student, cfg.cae):
        assert mc.train.batch_size == 128
        a = mc.train.augment
        assert (a.crop_padding, a.hflip, a.rotation) == (crop, True, 15)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.update(alpha=1.5), "alpha = 1.5 is not allowed; allowed: a number in [0, 1]"),
        (lambda p: p.update(alpha=-0.1), "alpha = -0.1"),
        (
            lambda p: p.update(temperature=0),
            "temperature = 0 is not allowed; allowed: a number > 0",
        ),
        (
            lambda p: p.update(methods={"kd": "teacher", "nope": "teacher"}),
            "methods = 'nope' is not allowed; allowed: ab, at,",
        ),
        (
            lambda p: p.update(methods=["kd", "reffakd"]),
            "allowed: a mapping method -> knowledge source, e.g. {kd: teacher,",
        ),
        (
            lambda p: p.update(methods={"reffakd": "teacher"}),
            "methods.reffakd = 'teacher' is not allowed; allowed: soft_labels",
        ),
        (
            lambda p: p.update(methods={"ce": "labels"}),
            "ce is the CE baseline: train_student",
        ),
        (lambda p: p["student"].update(model="lenet7"), "student.model = 'lenet7'"),
        (lambda p: p["teacher"]["train"].update(epochs=0), "teacher.train.epochs = 0"),
        (lambda p: p["teacher"]["train"].update(schedule="exp"), "allowed: step | onecycle"),
        (lambda p: p["data"].update(name="imagenet"), "data.name = 'imagenet'"),
        (lambda p: p["soft_labels"].update(gamma="big"), "soft_labels.gamma = 'big'"),
        (lambda p: p["method_params"]["dkd"].update(beta=8), "method_params.dkd.beta is not"),
        (lambda p: p["method_params"]["dkd"].update(nckd_weight=-1), "nckd_weight = -1"),
        (lambda p: p.update(device="tpu"), "device = 'tpu'"),
    ],
)
def test_bad_values_are_named(default_params, edit, message):
    p = copy.deepcopy(default_params)
    edit(p)
    with pytest.raises(ConfigError) as err:
        parse_checked(p)
    assert message in str(err.value)


def test_unknown_model_lists_close_matches(default_params):
    p = copy.deepcopy(default_params)
    p["teacher"]["model"] = "resnet19"
    with pytest.raises(ConfigError, match="Did you mean resnet18"):
        parse_checked(p)
    assert "resnet18" in model_names()


@pytest.mark.parametrize("stage", [["train", "teacher"], ["distill", "kd"], ["download"]])
def test_cli_fails_before_any_work(tmp_path, default_params, stage, capsys, monkeypatch):
    p = copy.deepcopy(default_params)
    p["alpha"] = 1.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    r = cli(stage, capsys)
    assert r.returncode == 2
    assert "alpha = 1.5 is not allowed; allowed: a number in [0, 1]" in r.stderr
    assert not (tmp_path / "data").exists() and not (tmp_path / "metrics").exists()


def test_hao_preset_is_the_alpha_study():
    cfg = load_preset("hao")
    assert (cfg.teacher.model, cfg.student.model) == ("hao_teacher", "hao_student")
    assert cfg.temperature == 3.0
    d = cfg.data
    assert d.subset - d.val_size == 10_000 and round(d.label_noise * 10_000) == 500
    assert cfg.student.train.optimizer == "adam" and cfg.student.train.batch_size == 32


@pytest.mark.parametrize(
    "preset, data, size, alpha, temperature, classes",
    [
        ("reffakd_cifar100", "cifar100", 32, 0.8, 5.0, 100),
        ("reffakd_tiny", "tiny_imagenet", 64, 0.9, 20.0, 200),
    ],
)
def test_reffakd_cifar_presets_are_the_papers_recipe(
    preset, data, size, alpha, temperature, classes
):
    from kdlab.data import get_dataset
    from kdlab.models import build_model, count_params

    cfg = load_preset(preset)
    assert cfg.preset == preset and cfg.data.name == data
    assert (cfg.alpha, cfg.temperature, cfg.soft_labels.gamma) == (alpha, temperature, 0.0225)
    assert get_dataset(data).num_classes == classes
    for role in (cfg.teacher, cfg.student, cfg.cae):
        t = role.train
        assert role.input_size == size
        assert (t.epochs, t.batch_size, t.optimizer, t.lr, t.momentum) == (
            200,
            128,
            "sgd",
            0.1,
            0.9,
        )
        assert (t.weight_decay, t.schedule, tuple(t.milestones), t.lr_decay) == (
            5e-4,
            "step",
            (60, 120, 160),
            0.2,
        )
        assert (t.augment.hflip, t.augment.rotation) == (True, 15)
    # The paper's published parameter counts (DESIGN.md section 3).
    published = {32: (23_705_252, 11_220_132), 64: (25_138_952, 11_578_632)}[size]
    for role, count in zip((cfg.teacher, cfg.student), published):
        with torch.device("meta"):
            model = build_model(role.model, classes, 3, input_size=size, **role.options)
        assert count_params(model) == count


@pytest.mark.parametrize("preset", ["srrl", "srrl_crd", "srrl_cifar10", "simkd", "patel"])
def test_paper_presets_build_and_step_every_method(preset):
    """Each preset's teacher/student pair takes every method it lists (feature shapes fit): one
    training step on random images gives finite losses and gradients to the student."""
    from kdlab.data import get_dataset
    from kdlab.data.pipeline import Batch
    from kdlab.methods import get_method
    from kdlab.methods.base import TeacherLogits
    from kdlab.models import build_model

    cfg = load_preset(preset)
    spec = get_dataset(cfg.data.name)
    c, k, size = spec.shape[0], spec.num_classes, cfg.student.input_size
    torch.manual_seed(0)
    teacher = build_model(cfg.teacher.model, k, c, input_size=size, **cfg.teacher.options).eval()
    n = 4
    batch = Batch(
        x=torch.randn(n, c, size, size),
        y=torch.arange(n) % k,
        index=torch.arange(n),
        flipped=torch.zeros(n, dtype=torch.bool),
    )
    for method in cfg.methods:
        cls = get_method(method)
        student = build_model(cfg.student.model, k, c, input_size=size, **cfg.student.options)
        extra = {}
        if cls.needs_teacher:
            extra["teacher"] = TeacherLogits(model=teacher)
        if cls.needs_soft_labels:
            extra["soft_labels"] = torch.full((k, k), 1.0 / k)
        if cls.needs_teacher_features:
            extra.update(
                teacher_model=teacher,
                input_shape=(c, size, size),
                num_data=n,
                train_labels=batch.y.clone(),  # CRD's memory banks and negatives
            )
        d = cls(student, cfg.method_params[method], cfg.alpha, cfg.temperature, **extra)
        d.train()
        logits, losses = d.forward_train(batch, 0)
        assert logits.shape == (n, k)
        total = sum(losses.values())
        assert torch.isfinite(total), (preset, method, losses)
        total.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_srrl_preset_table1_position_rows_build():
    """The srrl preset's Table 1 position rows (stage 0, 1 and all) fit WRN-40-4 -> WRN-16-4."""
    from kdlab.methods import get_method
    from kdlab.models import build_model

    cfg = load_preset("srrl")
    teacher = build_model("wrn_40_4", 100, 3).eval()
    for extra in ({"stage": 0}, {"stage": 1}, {"all_stages": 1}):
        params = {**cfg.method_params["srrl"], **extra}
        d = get_method("srrl")(
            build_model("wrn_16_4", 100, 3),
            params,
            0.5,
            4.0,
            teacher_model=teacher,
            input_shape=(3, 32, 32),
        )
        assert d.positions == ([0, 1] if "all_stages" in extra else [extra["stage"]])


def test_presets_are_overlays_of_the_default():
    """Each preset stores only what differs from default.yaml, and resolves to a valid config."""
    from kdlab import presets

    default = yaml.safe_load(presets.read("default"))
    for name in presets.names():
        overlay = yaml.safe_load(presets.read(name))
        full = yaml.safe_load(presets.resolve(name))
        parse_checked(full)
        if name == "default":
            continue
        assert len(presets.read(name).splitlines()) < 80, name
        diff = presets.differences(default, full)
        # Every value the overlay writes is a real difference (nothing restated)...
        assert presets.differences(default, overlay) == {
            k: v for k, v in diff.items() if k in presets.differences(default, overlay)
        }
        # ... and every difference comes from the overlay.
        assert set(diff) == set(presets.differences(default, overlay)), name
        assert full["preset"] == name


def test_overlay_methods_replace_the_default_list():
    from kdlab import presets

    srrl = yaml.safe_load(presets.resolve("srrl"))
    assert list(srrl["methods"]) == ["kd", "at", "srrl"]


def test_overlay_key_missing_from_the_default_is_an_error(monkeypatch):
    from kdlab import presets

    real = presets.read
    monkeypatch.setattr(
        presets, "read", lambda n: "student:\n  trian: {epochs: 3}\n" if n == "x" else real(n)
    )
    with pytest.raises(ConfigError, match="preset 'x': student.trian is not a key of the default"):
        presets.resolve("x")


def test_kdlab_preset_writes_the_resolved_file(tmp_path):
    from kdlab import presets
    from kdlab.cli import main

    target = tmp_path / "params.yaml"
    assert main(["--params", str(target), "preset", "paper"]) == 0
    assert target.read_text() == presets.resolve("paper")
    assert "# kdlab parameters: the `paper` preset" in target.read_text()
    assert load_config(target).teacher.train.epochs == 200
    assert main(["--params", str(target), "preset", "nosuch"]) == 2


def test_config_checks_types_and_the_check_stage_names(
    default_params, tmp_path, capsys, monkeypatch
):
    """parse_config loads no registry: an unknown method passes it and fails the check
    (kdlab.checks, the `check` stage); a stage asked to run it fails in the registry lookup,
    with one line and exit status 2."""
    from kdlab.methods import get_method
    from kdlab.stages.distill import main

    p = copy.deepcopy(default_params)
    p["methods"] = {"nope": "teacher"}
    p["method_params"]["nope"] = {}
    assert parse_config(p).methods == ("nope",)
    with pytest.raises(ConfigError, match="methods = 'nope' is not allowed; allowed: ab, at,"):
        parse_checked(p)
    with pytest.raises(ValueError, match="unknown method 'nope'; allowed: ce, ab, at"):
        get_method("nope")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    monkeypatch.chdir(tmp_path)
    assert main(["--params", "params.yaml", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kdlab distill: error: unknown method 'nope'") and err.count("\n") == 1


def test_the_method_registry_imports_only_the_method_asked_for():
    """get_method imports kdlab.methods.<name> (and what it imports), nothing else: the
    ground the distill stages' generated deps stand on (kdlab.depgraph)."""
    code = (
        "import sys\n"
        "from kdlab.methods import get_method\n"
        "assert get_method('reffakd').name == 'reffakd'\n"
        "print(sorted(m for m in sys.modules if m.startswith('kdlab.methods.')))\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(
        ["kdlab.methods.base", "kdlab.methods.kd", "kdlab.methods.reffakd"]
    )
