"""Issue 22 items 6-12: the reference code's module shapes, feature taps and recipes.

Every expected value is computed here independently of the code under test (hand-written
RepDistiller formulas, parameter counts from the layer shapes)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fixtures import method_params
from kdlab.methods import get_method
from kdlab.models import build_model, count_params


def distiller(method, teacher_name, student_name, classes=100, params=None):
    torch.manual_seed(0)
    teacher = build_model(teacher_name, classes).eval()
    student = build_model(student_name, classes)
    d = get_method(method)(
        student,
        method_params(method, **(params or {})),
        alpha=0.5,
        temperature=4.0,
        teacher_model=teacher,
        input_shape=(3, 32, 32),
        num_data=4,
        train_labels=torch.arange(4),
    )
    return d, teacher, student


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# --- item 9: FitNet / AB / FSP modules as RepDistiller builds them ---------------------------


@pytest.mark.parametrize(
    ("teacher", "student", "s_c", "t_c"),
    [("wrn_40_2", "wrn_16_2", 64, 64), ("resnet32x4", "resnet8x4", 128, 128)],
)
def test_fitnet_regressor_is_a_1x1_conv_with_bias_at_equal_sizes(teacher, student, s_c, t_c):
    """RepDistiller ConvReg (models/util.py 131-154) at hint layer 2 (the second stage, 16x16
    both sides): Conv2d(s_C, t_C, kernel (1 + s_H - t_H) = 1) with bias, BN, ReLU."""
    d, _, _ = distiller("fitnet", teacher, student)
    conv = d.regressor.conv
    assert isinstance(conv, nn.Conv2d)
    assert tuple(conv.weight.shape) == (t_c, s_c, 1, 1)
    assert conv.bias is not None
    assert n_params(d.regressor) == t_c * s_c + t_c + 2 * t_c  # conv weight + bias + BN


def test_convreg_kernels_follow_the_reference_size_rules():
    from kdlab.methods.features import ConvReg

    down = ConvReg((8, 16, 16), (4, 8, 8)).conv  # student twice the teacher's size
    assert isinstance(down, nn.Conv2d) and (down.kernel_size, down.stride) == ((3, 3), (2, 2))
    up = ConvReg((8, 4, 4), (4, 8, 8)).conv  # half
    assert isinstance(up, nn.ConvTranspose2d) and up.kernel_size == (4, 4)
    valid = ConvReg((8, 10, 10), (4, 8, 8)).conv  # larger: a valid kernel 1 + 10 - 8
    assert valid.kernel_size == (3, 3)
    x = torch.randn(2, 8, 10, 10)
    assert ConvReg((8, 10, 10), (4, 8, 8))(x).shape == (2, 4, 8, 8)


def test_ab_has_no_connector_for_equal_shapes_and_a_convreg_otherwise():
    """RepDistiller Connector (models/util.py 65-90): nn.Sequential() (identity) where channels
    and size agree, ConvReg without ReLU otherwise."""
    d, _, _ = distiller("ab", "wrn_40_2", "wrn_16_2")
    assert n_params(d) - n_params(d.student) == 0
    assert all(isinstance(c, nn.Identity) for c in d.connectors)
    d, _, _ = distiller("ab", "wrn_40_2", "wrn_40_1")  # 16/32/64 -> 32/64/128 channels
    for conn, cs, ct in zip(d.connectors, (16, 32, 64), (32, 64, 128), strict=True):
        assert tuple(conn.conv.weight.shape) == (ct, cs, 1, 1) and conn.conv.bias is not None
        assert not conn.relu


def _fsp_reference(feats_s, feats_t):
    """RepDistiller distiller_zoo/FSP.py: G = mean_hw(bot * top) per consecutive pair (the
    larger map average-pooled), loss per pair = mean (G_s - G_t)^2, summed (-b 1 per pair)."""

    def fsp(g):
        out = []
        for bot, top in zip(g[:-1], g[1:]):
            h = min(bot.shape[2], top.shape[2])
            bot, top = F.adaptive_avg_pool2d(bot, h), F.adaptive_avg_pool2d(top, h)
            b, c1, c2 = bot.shape[0], bot.shape[1], top.shape[1]
            out.append(
                torch.einsum("bix,bjx->bji", bot.reshape(b, c1, -1), top.reshape(b, c2, -1))
                / (h * h)
            )
        return out

    return sum((s - t).pow(2).mean() for s, t in zip(fsp(feats_s), fsp(feats_t)))


def test_fsp_reads_the_stem_and_has_no_connectors_for_equal_channels():
    """FSP on [f0 (stem), f1, f2, f3] (train_student.py line 255, feat[:-1]): three matrices,
    the last from the WRN's pre-BN tap; no parameters (equal channels)."""
    d, teacher, student = distiller("fsp", "wrn_40_2", "wrn_16_2", params={"fsp_weight": 1.0})
    assert n_params(d) - n_params(student) == 0
    x = torch.randn(3, 3, 32, 32)

    def taps(m):  # conv1, then the three blocks, no final BN-ReLU (RepDistiller wrn.py)
        out = [m.conv1(x)]
        for stage in m.stages:
            out.append(stage(out[-1]))
        return out

    student.eval()
    with torch.no_grad():
        want = _fsp_reference(taps(student), taps(teacher))
        s, t = student.forward_features(x), teacher.forward_features(x)
        got = d.distill_terms(s, t, None, 0)["fsp"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


# --- item 8: WRN feature taps before the final BN-ReLU ---------------------------------------


def test_wrn_taps_are_preactivation_as_repdistiller():
    """RepDistiller wrn.py: f3 = block3's output, then relu(bn1(.)) -> avgpool -> fc;
    preact: f1 = block2[0].bn1(f1), f2 = block3[0].bn1(f2), f3 = bn1(f3)."""
    torch.manual_seed(0)
    m = build_model("wrn_16_2", 100).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f0 = m.conv1(x)
        f1 = m.stages[0](f0)
        f2 = m.stages[1](f1)
        f3 = m.stages[2](f2)
        logits = m.classifier(F.relu(m.bn(f3)).mean((2, 3)))
        out = m.forward_features(x)
    for got, want in zip(out["stages"], (f1, f2, f3), strict=True):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(out["stem"], f0)
    torch.testing.assert_close(out["head_map"], F.relu(m.bn(f3)))
    torch.testing.assert_close(out["logits"], logits)
    pre = (m.stages[1][0].bn1(f1), m.stages[2][0].bn1(f2), m.bn(f3))
    for got, want in zip(out["preact_stages"], pre, strict=True):
        torch.testing.assert_close(got, want)
    assert (out["stages"][-1] < 0).any()  # not after a ReLU


# --- item 10: SimKD's projector reads MobileNetV2's 320-channel block ------------------------


def test_simkd_projector_reads_mobilenetv2_last_block_not_its_head():
    """SimKD train_student.py: feat_s[-2], MobileNetV2's blocks[6] output (320 channels at
    x1.0; RepDistiller models/mobilenetv2.py f4), not the 1280-channel head conv."""
    d, _, _ = distiller("simkd", "resnet32x4", "mobilenetv2")
    assert d.projector[0][0].in_channels == 320
    assert d.projector[-1][0].out_channels == 256  # resnet32x4's last stage


# --- resolved presets and queued runs: the official recipes ----------------------------------


def resolved(name):
    import yaml

    from kdlab import presets

    return yaml.safe_load(presets.resolve(name))


def queued_params(table):
    """Every queued run of ``table`` as its full params (the preset with its -S applied)."""
    import copy

    from kdlab.methods import method_names
    from kdlab.reports import experiments

    spec = experiments.PAIRS[table]
    preset = resolved(spec.presets[0])
    runs = []
    for over in experiments.queue_overrides(table, preset, set(method_names())):
        params = copy.deepcopy(preset)
        for o in over:
            if o.startswith("~"):
                continue
            key, value = o.lstrip("+").split("=", 1)
            node = params
            *parents, leaf = key.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            import yaml

            node[leaf] = yaml.safe_load(value)
        runs.append(params)
    return runs


def _recipe(role):
    t = role["train"]
    return (t["epochs"], t["lr"], list(t["milestones"]), t["lr_decay"], t["batch_size"])


def test_srrl_table5_runs_the_cifar10_recipe_per_architecture():
    """SRRL appendix, CIFAR-10: WRNs 200 epochs, lr 0.1 /5 at 60/120/160; ResNets 350 epochs,
    lr 0.1 /10 at 150/250/320; crop 4 + flip; the thin ResNet-18/34."""
    wrn = (200, 0.1, [60, 120, 160], 0.2, 128)
    resnet = (350, 0.1, [150, 250, 320], 0.1, 128)
    runs = queued_params("srrl_table5")
    assert runs and all(p["data"]["name"] == "cifar10" for p in runs)
    seen = set()
    for p in runs:
        for role in ("teacher", "student"):
            model = p[role]["model"]
            want = resnet if model.startswith("resnet") else wrn
            assert _recipe(p[role]) == want, (model, role)
            assert p[role]["train"]["augment"]["crop_padding"] == 4
            assert p[role]["train"]["augment"]["hflip"] is True
            seen.add(model)
        if p["student"]["model"] == "resnet18":
            assert p["student"]["options"]["width"] == 16 == p["teacher"]["options"]["width"]
    assert {"wrn_16_1", "wrn_16_2", "wrn_40_2", "resnet8", "resnet14", "resnet26"} <= seen
    assert resolved("srrl_cifar10")["preset"] == "srrl_cifar10"


def test_srrl_thin_resnet18_34_parameter_counts():
    """SRRL Table 5's ResNet-18 (0.7M) / ResNet-34 (1.4M) at 10 classes, counted from the layer
    shapes of 4-stage basic-block ResNets at widths 16/32/64/128 (blocks 2-2-2-2, 3-4-6-3)."""

    def count(blocks, w=16, classes=10):
        n, cin = 3 * w * 9 + 2 * w, w  # stem conv + BN
        for i, b in enumerate(blocks):
            c = w * 2**i
            for _ in range(b):
                n += cin * c * 9 + 2 * c + c * c * 9 + 2 * c
                if cin != c:
                    n += cin * c + 2 * c  # 1x1 projection + BN
                cin = c
        return n + cin * classes + classes

    r18 = count_params(build_model("resnet18", 10, width=16))
    r34 = count_params(build_model("resnet34", 10, width=16))
    assert r18 == count([2, 2, 2, 2]) and r34 == count([3, 4, 6, 3])
    assert abs(r18 - 0.7e6) / 0.7e6 < 0.01
    # 1.33M: no integer width of this layout gives 1.4M within 1% (width 17: 1.50M); the paper's
    # own Table 6 prints the same network as 1.39M at 100 classes (ours 1.35M); docs/zoo.md.
    assert abs(r34 - 1.4e6) / 1.4e6 < 0.05
    assert abs(count([3, 4, 6, 3], w=17) - 1.4e6) / 1.4e6 > 0.05


def test_srrl_at_after_the_last_two_groups_with_a_resnet_every_group_for_wrns():
    """SRRL appendix: AT after each WRN group, after the last two ResNet groups."""
    for table in ("srrl_table5", "srrl_table6", "srrl_table10"):
        for p in queued_params(table):
            resnet = "resnet" in p["teacher"]["model"] + p["student"]["model"]
            assert p["method_params"]["at"]["last_pairs"] == (2 if resnet else 0), table
    d, teacher, student = distiller("at", "resnet26", "resnet8", 10, {"last_pairs": 2})
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        s, t = student.eval().forward_features(x), teacher.forward_features(x)
        got = d.distill_terms(s, t, None, 0)["at"]

    def a(f):  # Zagoruyko & Komodakis: normalise(mean_c f^2), squared difference, mean
        return F.normalize(f.pow(2).mean(1).flatten(1))

    want = sum((a(s["stages"][k]) - a(t["stages"][k])).pow(2).mean() for k in (1, 2))
    torch.testing.assert_close(got, 1000.0 * want)
    with pytest.raises(ValueError, match="last_pairs = 4 is not allowed"):
        distiller("at", "resnet26", "resnet8", 10, {"last_pairs": 4})


def test_crd_benchmark_learning_rates_and_init_phases():
    """RepDistiller: batch 64, lr 0.05 (0.01 for MobileNetV2/ShuffleNet students,
    train_student.py 93-94), 240 epochs x0.1 at 150/180/210, crop 4 + flip; AB, FSP and FT with
    --init_epochs 30 before them."""
    p = resolved("srrl_crd")
    for role in ("teacher", "student"):
        assert _recipe(p[role]) == (240, 0.05, [150, 180, 210], 0.1, 64)
        assert p[role]["train"]["augment"]["crop_padding"] == 4
    assert all(p["method_params"][m]["init_epochs"] == 30 for m in ("ab", "fsp", "ft"))
    small = {"mobilenetv2_half", "shufflev1", "shufflev2"}
    for table in ("srrl_table11", "srrl_table12"):
        for run in queued_params(table):
            want = 0.01 if run["student"]["model"] in small else 0.05
            assert run["student"]["train"]["lr"] == want, run["student"]["model"]
            assert run["teacher"]["train"]["lr"] == 0.05


def test_init_epochs_come_before_the_recipe():
    """30 init epochs + 240: the main phase keeps its milestones (150/180/210 after init)."""
    from kdlab.checks import load_preset

    train = load_preset("srrl_crd").student.train
    for method in ("ab", "fsp", "ft"):
        cfg = get_method(method).train_config(train, method_params(method, init_epochs=30))
        assert (cfg.epochs, cfg.milestones) == (270, (180, 210, 240))
    assert get_method("at").train_config(train, method_params("at")) is train
    with pytest.raises(
        ValueError,
        match=r"method_params\.ab\.init_epochs = 2\.5 is not allowed; allowed: an integer >= 0",
    ):
        get_method("ab").train_config(train, method_params("ab", init_epochs=2.5))


def test_ft_pretrains_the_paraphraser_then_freezes_it():
    """RepDistiller factor: init trains the paraphraser alone (MSE reconstruction), then the
    student trains on CE + FT with the paraphraser fixed."""
    from kdlab.data.pipeline import Batch

    d, _, student = distiller("ft", "resnet20", "resnet8", 10, {"init_epochs": 2})
    d.train()
    batch = Batch(
        x=torch.randn(4, 3, 32, 32),
        y=torch.arange(4),
        index=torch.arange(4),
        flipped=torch.zeros(4, dtype=torch.bool),
    )
    _, losses = d.forward_train(batch, 1)  # init: only the reconstruction term
    sum(losses.values()).backward()
    assert all(p.grad is None for p in student.parameters())
    assert all(p.grad is not None for p in d.paraphraser_encoder.parameters())
    d.zero_grad(set_to_none=True)
    _, losses = d.forward_train(batch, 2)  # main phase: the paraphraser gets no gradient
    sum(losses.values()).backward()
    assert all(p.grad is None for p in d.paraphraser_encoder.parameters())
    assert any(p.grad is not None for p in student.parameters())


def test_simkd_teacher_trains_at_005():
    """SimKD README / train_teacher.py --learning_rate 0.05; the MobileNetV2 student 0.01."""
    p = resolved("simkd")
    assert p["teacher"]["train"]["lr"] == 0.05 and p["student"]["train"]["lr"] == 0.01
    assert p["teacher"]["train"]["batch_size"] == 64


# --- item 11: Patel & Obeid ------------------------------------------------------------------


def test_patel_vgg16_runs_multisteplr_momentum_09_the_others_cosine_095():
    """Run the catalogue commands' loops with `dvc exp run --queue` replaced by a printer."""
    import subprocess

    from kdlab.reports.papers import published

    p = resolved("patel")
    assert (p["teacher"]["train"]["schedule"], p["teacher"]["train"]["momentum"]) == (
        "cosine",
        0.95,
    )
    assert p["method_params"]["kd"]["form"] == "textbook"
    for key, table in published("patel")["tables"].items():
        loop = table["command"].split("params.yaml && ")[1].split(" && dvc queue start")[0]
        script = 'run() { echo "$@"; }; ' + loop.replace("dvc exp run --queue", "run")
        lines = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, check=True
        ).stdout.splitlines()
        assert len(lines) == (3 if key == "table1" else 9)
        for line in lines:
            for role in ("teacher", "student"):
                model = line.split(f"-S {role}.model=")[1].split()[0]
                vgg = model.startswith("p_vgg16")
                assert (f"-S {role}.train.schedule=step" in line) == vgg, line
                assert (f"-S {role}.train.momentum=0.9" in line) == vgg, line


def test_patel_printed_kd_formula():
    """The printed `-nn.KLDivLoss()(F.softmax(s/T), F.softmax(t/T)) * (T + 1)`, by hand in
    numpy: -(T + 1) mean_{b,c} p_t (log p_t - p_s)."""
    import numpy as np

    torch.manual_seed(0)
    s, t = torch.randn(5, 10), torch.randn(5, 10)
    for temp in (1.0, 3.0):

        def softmax(z, temp=temp):
            e = np.exp(z / temp - (z / temp).max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        ps, pt = softmax(s.double().numpy()), softmax(t.double().numpy())
        want = -(temp + 1) * np.mean(pt * (np.log(pt) - ps))
        d = get_method("kd")(
            build_model("lenet5", 10, 1),
            method_params("kd", form="patel_printed"),
            alpha=0.3,
            temperature=temp,
            teacher=lambda batch: t,
        )
        got = d.distill_term(s, None)
        assert float(got) == pytest.approx(want, rel=1e-5)


# --- item 12: SRRL Table 3's distance on normalised features ---------------------------------


def test_l2_normalised_is_two_minus_two_cosine():
    from kdlab.analysis import closeness

    torch.manual_seed(0)
    h_s, h_t = torch.rand(6, 8), torch.rand(6, 8)
    cos = (h_s * h_t).sum(1) / (h_s.norm(dim=1) * h_t.norm(dim=1))
    z = torch.randn(6, 3)
    out = closeness(z, h_s, z, h_t, torch.arange(6) % 3, 0)
    assert out["l2_normalised"] == pytest.approx(float((2 - 2 * cos).mean()), abs=1e-4)
    assert out["l2_distance"] == pytest.approx(float((h_t - h_s).pow(2).sum(1).mean()), abs=1e-4)
    from kdlab.reports import experiments

    assert ("l2_distance", "l2_normalised") in experiments.ROWS["srrl_table3"].columns


def test_cc_repdistiller_form_modules_and_formula():
    """RepDistiller CC: LinearEmbed(feat_s[-1] -> 128) per side (bias), loss
    mean_i sum_c |d_i| |d_{i+1}|, d = e_s - e_t; the srrl_crd preset runs it at -b 0.02."""
    import numpy as np

    cc = resolved("srrl_crd")["method_params"]["cc"]
    assert (cc["form"], cc["cc_weight"], cc["feat_dim"]) == ("repdistiller", 0.02, 128)
    d, teacher, student = distiller("cc", "wrn_40_2", "wrn_16_2", params={"form": "repdistiller"})
    assert tuple(d.embed_s.weight.shape) == (128, 128) and d.embed_s.bias is not None
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        s, t = student.eval().forward_features(x), teacher.forward_features(x)
        got = float(d.distill_terms(s, t, None, 0)["cc"])
        e = (d.embed_s(s["pooled"]) - d.embed_t(t["pooled"])).double().numpy()
    want = np.mean([np.sum(np.abs(e[i]) * np.abs(e[i + 1])) for i in range(3)])
    assert got == pytest.approx(want, rel=1e-5)
