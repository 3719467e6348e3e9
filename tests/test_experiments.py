"""Paper tables from DVC experiments: grouping, mean +- std, missing cells, a real DVC repo."""

import shutil
import statistics
import textwrap

import pandas as pd
import pytest
import yaml

from kdlab.reports import base as report_base
from kdlab.reports import experiments
from kdlab.reports.runs import REPO_KEY, exp_show, preset_of, runs_from_exp_show


def run(params, scores, name="x"):
    return {"name": name, "rev": name, "params": params, "scores": scores}


def p(T, alpha, seed, preset="default", methods=("kd", "reffakd")):
    return {
        "preset": preset,
        "temperature": T,
        "alpha": alpha,
        "seed": seed,
        "methods": {m: "teacher" for m in methods},  # a mapping, as params.yaml has it
    }


def m(kd=None, reffakd=None):
    out = {}
    if kd is not None:
        out["kd"] = {"test_acc": kd}
    if reffakd is not None:
        out["reffakd"] = {"test_acc": reffakd}
    return out


def _row(df, label):
    return df[df["setting"] == label].iloc[0]


def test_grid_mean_std_missing_and_other_presets_left_out():
    runs = [
        run(p(20.0, 0.6, 1), m(kd=90.0, reffakd=91.0)),
        run(p(20.0, 0.6, 2), m(kd=92.0, reffakd=91.5)),
        run(p(5.0, 0.8, 1, methods=("kd",)), m(kd=88.0, reffakd=10.0)),  # stale reffakd file
        run(p(1.0, 0.9, 1, preset="srrl"), m(kd=50.0, reffakd=50.0)),  # another preset
    ]
    df = experiments.build(runs, "reffakd_table10")
    assert len(df) == 16
    r = _row(df, "T=20, alpha=0.6")
    assert r["vanilla_kd ours"] == f"91.00 ± {statistics.stdev([90.0, 92.0]):.2f}"
    assert r["vanilla_kd n"] == 2 and r["reffakd n"] == 2
    assert r["reffakd ours"] == "91.25 ± 0.35" and r["reffakd paper"] == 92.37
    assert r["reffakd ours - paper"] == round(91.25 - 92.37, 2)
    assert pd.isna(r["vanilla_kd ours - paper"])  # the cell is garbled in the paper's text
    r = _row(df, "T=5, alpha=0.8")
    assert r["vanilla_kd ours"] == "88.00" and r["vanilla_kd n"] == 1
    assert r["reffakd ours"] == "—" and r["reffakd n"] == 0  # stale file not read
    r = _row(df, "T=1, alpha=0.9")
    assert r["vanilla_kd ours"] == "—" and r["reffakd paper"] == 89.78


def test_preset_of_reads_either_spelling_of_the_key():
    assert preset_of({"preset": "srrl"}) == "srrl"
    assert preset_of({"profile_name": "srrl"}) == "srrl"  # runs recorded before the rename
    assert preset_of({"preset": "hao", "profile_name": "srrl"}) == "hao"  # the new key wins
    assert preset_of({"seed": 0}) == "default"  # older still: the default preset's
    assert preset_of({"seed": 0}, "paper") == "paper"


def test_runs_recorded_with_the_old_preset_key_still_count():
    def old(params):
        return {("profile_name" if k == "preset" else k): v for k, v in params.items()}

    runs = [
        run(p(20.0, 0.6, 1), m(kd=90.0, reffakd=91.0)),
        run(old(p(20.0, 0.6, 2)), m(kd=92.0, reffakd=91.5)),  # `profile_name: default`
        run(old(p(20.0, 0.6, 3, preset="srrl")), m(kd=1.0, reffakd=1.0)),  # another preset
    ]
    r = _row(experiments.build(runs, "reffakd_table10"), "T=20, alpha=0.6")
    assert r["vanilla_kd n"] == 2 and r["vanilla_kd ours"].startswith("91.00 ± ")


def test_unknown_report_is_named():
    with pytest.raises(ValueError, match="unknown report 'nope'; known: reffakd_table5"):
        experiments.build([], "nope")


STAGE = textwrap.dedent(
    """
    import json, os, yaml
    p = yaml.safe_load(open("params.yaml"))
    for k, base in (("kd", 80.0), ("reffakd", 81.0)):
        acc = base + p["temperature"] + 10 * p["alpha"] + p["seed"]
        os.makedirs(f"metrics/distill/{k}", exist_ok=True)
        summary = {"step": 0, k: {"test_acc": acc}}  # as kdlab.live writes it
        json.dump(summary, open(f"metrics/distill/{k}/metrics.json", "w"))
        record = {"test_acc": acc, "wall_time_s": 10.0 * p["seed"] + base - 80.0,
                  "device": "cpu: Planted CPU, 1 torch thread(s)"}  # what ran, not the param
        json.dump(record, open(f"metrics/distill/{k}.json", "w"))  # the plain record
    """
)


@pytest.mark.skipif(shutil.which("git") is None, reason="git needed")
def test_report_from_a_real_dvc_repo(tmp_path):
    from fixtures import one_stage_repo

    sh = one_stage_repo(
        tmp_path,
        STAGE,
        "preset: default\ntemperature: 20.0\nalpha: 0.6\nseed: 1\n"
        "methods: {kd: teacher, reffakd: soft_labels}\n"
        "device: cpu\ndata: {name: fashion_mnist}\nmethod_params: {kd: {reduction: mean}}\n"
        "student: {model: lenet5, train: {epochs: 12}}\n"
        "teacher: {model: resnet18, options: {width: 16}, train: {epochs: 3}}\n",
        ["temperature", "alpha", "seed", "preset", "methods"],
        outs=["metrics/distill/kd.json", "metrics/distill/reffakd.json"],
        metrics=["metrics/distill/kd/metrics.json", "metrics/distill/reffakd/metrics.json"],
    )
    dvc = sh.dvc
    sh(*dvc, "exp", "run", "-q", "-S", "seed=2")
    # (dvc exp run leaves the last experiment applied: name every param that matters)
    sh(*dvc, "exp", "run", "-q", "-S", "temperature=5", "-S", "alpha=0.8", "-S", "seed=1")
    runs = runs_from_exp_show(exp_show(tmp_path))
    assert len(runs) == 3
    df = experiments.build(runs, "reffakd_table10")
    r = _row(df, "T=20, alpha=0.6")  # seeds 1 (baseline commit) and 2 (experiment)
    assert r["reffakd ours"] == f"{81 + 20 + 6 + 1.5:.2f} ± {statistics.stdev([108, 109]):.2f}"
    assert _row(df, "T=5, alpha=0.8")["vanilla_kd ours"] == f"{80 + 5 + 8 + 1:.2f}"
    assert _row(df, "T=10, alpha=0.6")["vanilla_kd ours"] == "—"
    out = experiments.report("reffakd_table10", tmp_path)
    md = out.read_text()
    assert out == tmp_path / "results/reffakd_table10.md"
    assert "From 3 finished DVC runs" in md and "4 of 32 cells have a run" in md
    assert (  # from the runs' params and their stage records (the device that ran)
        "- What ran (each shown cell's record): fashion_mnist/12ep: 12-epoch lenet5 students "
        "(61,750 params); 3-epoch resnet18 teacher (width 16, 701,178 params); seeds 1, 2; "
        "device cpu: Planted CPU, 1 torch thread(s). Ours: final-epoch test accuracy, nothing "
        "selected on the test set; the paper: its best epoch, selected on the test set.\n"
        "- KL reduction: kd mean.\n"
    ) in md
    assert "the paper's alpha = ours" in md
    # wall times: seed 1 runs 10 + 11 (kd, reffakd) twice (baseline, T5 run), seed 2 20 + 21
    assert "Measured: 6 stages of reffakd, kd over 3 runs took 83 s of wall time" in md
    assert (tmp_path / "results/reffakd_table10.csv").exists()


@pytest.mark.skipif(shutil.which("git") is None, reason="git needed")
def test_a_commit_that_changed_params_without_rerunning_shows_no_scores(tmp_path):
    """A preset switch committed before `dvc repro` carries the previous run's metrics under
    the new params: with the repository given, those files are left out (their stage's params
    in dvc.lock differ from the commit's), and the consistent commit keeps its scores."""
    from fixtures import one_stage_repo

    sh = one_stage_repo(
        tmp_path,
        STAGE,
        "preset: default\ntemperature: 20.0\nalpha: 0.6\nseed: 1\n"
        "methods: {kd: teacher, reffakd: soft_labels}\n",
        ["temperature", "alpha", "seed"],
        metrics=["metrics/distill/kd/metrics.json", "metrics/distill/reffakd/metrics.json"],
    )
    params = (tmp_path / "params.yaml").read_text().replace("temperature: 20.0", "temperature: 5")
    (tmp_path / "params.yaml").write_text(params)
    sh("git", "commit", "-qam", "new params, not run")
    data = exp_show(tmp_path, all_commits=True)
    by_t = {r["params"]["temperature"]: r for r in runs_from_exp_show(data, tmp_path)}
    assert by_t[20.0]["scores"]["kd"]["test_acc"] == 80 + 20 + 6 + 1
    assert by_t[5]["scores"] == {}  # T 20's metrics, not T 5's
    assert runs_from_exp_show(data) == runs_from_exp_show(data, tmp_path)  # exp_show noted it
    for base in data:  # data not read by exp_show: no repository to check against
        del base[REPO_KEY]
    stale = {r["params"]["temperature"]: r for r in runs_from_exp_show(data)}
    assert stale[5]["scores"]["kd"]["test_acc"] == 80 + 20 + 6 + 1


def simkd_run(proj, gated, loss, lr, seed, acc, methods=("simkd",)):
    params = {
        "preset": "simkd",
        "seed": seed,
        "methods": {m: "teacher" for m in methods},  # a mapping, as params.yaml has it
        "student": {"train": {"lr": lr}},
        "method_params": {"simkd": {"projectors": proj, "label_gated": gated, "loss": loss}},
    }
    return run(
        params,
        {"simkd": {"test_acc": acc}, "ce": {}},
    )


def test_rows_table_keeps_the_best_lr_and_matches_params():
    runs = [
        simkd_run("two_thirds", 0, "l2", 0.01, 1, 70.0),
        simkd_run("two_thirds", 0, "l2", 0.01, 2, 72.0),
        simkd_run("two_thirds", 0, "l2", 0.05, 1, 60.0),  # worse lr: not shown
        simkd_run("all", 0, "kl", 0.01, 1, 65.0),
        simkd_run("end", 1, "l2", 0.01, 1, 99.0, methods=("kd",)),  # stale simkd file
    ]
    df = experiments.build_rows(runs, "simkd_study")
    r = df[df["projector/loss"] == "multiple_projector_bias/l2"].iloc[0]
    assert r["lr_best ours"] == 0.01 and r["lr_best paper"] == 0.01
    assert r["test_acc ours"] == f"71.00 ± {statistics.stdev([70.0, 72.0]):.2f}"
    assert r["test_acc paper"] == "75.52 ± 0.18" and r["test_acc ours - paper"] == -4.52
    r = df[df["projector/loss"] == "all_layers_unbiased/kl"].iloc[0]
    assert r["test_acc ours"] == "65.00" and r["test_acc n"] == 1
    r = df[df["projector/loss"] == "ground_truth_labels/l2"].iloc[0]
    assert r["test_acc ours"] == "—" and r["test_acc n"] == 0


SRRL_BASE = {"preset": "srrl", "seed": 0, "alpha": 0.5, "temperature": 4.0}
SRRL = {
    "fm_weight": 1.0,
    "sr_weight": 1.0,
    "stage": -1,
    "all_stages": 0,
    "sr_loss": "l2",
    "connector": "map",
}


def srrl_run(scores, methods=("srrl",), **over):
    params = {k: v for k, v in over.items() if k in SRRL_BASE}
    srrl = {**SRRL, **{k: v for k, v in over.items() if k in SRRL}}
    return run(
        {
            **SRRL_BASE,
            **params,
            "methods": {m: "teacher" for m in methods},
            "method_params": {"srrl": srrl},
        },
        scores,
    )


def test_srrl_table1_rows_and_missing_top5():
    runs = [
        srrl_run({"srrl": {"test_acc": 60.0}, "ce": {"test_acc": 55.0}}, sr_weight=0),
        srrl_run({"srrl": {"test_acc": 58.0, "test_top5": 80.0}}, stage=1),
        # The default srrl run (both terms at weight 1) is Table 1's fm+sr@conv4 row ...
        srrl_run({"srrl": {"test_acc": 61.0}}),
        # ... and neither an L_SR-loss variant nor another alpha is.
        srrl_run({"srrl": {"test_acc": 1.0}}, sr_loss="kl"),
        srrl_run({"srrl": {"test_acc": 2.0}}, alpha=0.9),
    ]
    df = experiments.build_rows(runs, "srrl_table1").set_index("method")
    assert (
        df.loc["fm@conv4", "top1 ours"] == "60.00" and df.loc["fm@conv4", "top1 paper"] == "78.05"
    )
    assert df.loc["fm@conv4", "top5 ours"] == "—"  # no top-5 metric in that run
    assert df.loc["fm+sr@conv3", "top5 ours"] == "80.00"
    assert df.loc["student", "top1 ours"] == "55.00" and df.loc["sr@conv4", "top1 n"] == 0
    assert df.loc["fm+sr@conv4", "top1 ours"] == "61.00" and df.loc["fm+sr@conv4", "top1 n"] == 1


def test_srrl_table2_reads_the_analysis_measures_of_the_right_runs():
    closeness = {"kl_teacher": 0.5, "ce_label": 0.9, "test_acc": 70.0}
    runs = [
        srrl_run({"srrl": closeness, "ce": {"kl_teacher": 0.6, "ce_label": 1.0, "test_acc": 65}}),
        # KD in SRRL's setting (alpha 0.9, T 4) is the kd row; the preset's kd at 0.5 is not.
        srrl_run({"kd": {"kl_teacher": 0.55, "test_acc": 68.0}}, methods=("kd",), alpha=0.9),
        srrl_run({"kd": {"kl_teacher": 9.0, "test_acc": 9.0}}, methods=("kd",)),
        srrl_run({"srrl": {"kl_teacher": 0.45}}, fm_weight=0),
    ]
    df = experiments.build_rows(runs, "srrl_table2").set_index("method")
    assert df.loc["fm+sr", "kl_teacher ours"] == "0.50"
    assert df.loc["fm+sr", "kl_teacher paper"] == "0.46"
    assert df.loc["fm+sr", "kl_teacher ours - paper"] == round(0.5 - 0.4597, 2)
    assert df.loc["kd", "kl_teacher ours"] == "0.55" and df.loc["kd", "top1 ours"] == "68.00"
    assert df.loc["student", "ce_label ours"] == "1.00"
    assert df.loc["sr", "kl_teacher ours"] == "0.45" and df.loc["sr", "top1 ours"] == "—"
    assert df.loc["at", "kl_teacher n"] == 0 and df.loc["fm", "kl_teacher n"] == 0


def test_srrl_table3_in_the_papers_transposed_layout():
    runs = [
        srrl_run(
            {
                "srrl": {"l2_normalised": 1.2, "l2_distance": 99.0, "nmi": 80.0, "test_acc": 71.0},
                "ce": {"nmi": 75},
            }
        ),
        srrl_run({"srrl": {"nmi": 79.0}}, seed=1),
    ]
    df = experiments.build_rows(runs, "srrl_table3").set_index("metric")
    assert list(df.index) == ["l2_distance", "nmi", "top1"]
    assert df.loc["nmi", "fm+sr ours"] == f"79.50 ± {statistics.stdev([80.0, 79.0]):.2f}"
    assert df.loc["nmi", "fm+sr n"] == 2 and df.loc["nmi", "fm+sr paper"] == "79.85"
    assert df.loc["l2_distance", "fm+sr ours"] == "1.20" and df.loc["l2_distance", "fm+sr n"] == 1
    assert df.loc["l2_distance", "fm+sr paper"] == "1.01"
    assert df.loc["nmi", "student ours"] == "75.00" and df.loc["top1", "sr n"] == 0


def test_srrl_table9_rows_are_the_sr_loss_variants():
    runs = [
        srrl_run({"srrl": {"test_acc": a}}, sr_loss=loss) for loss, a in (("ce", 1.0), ("kl", 2.0))
    ]
    df = experiments.build_rows(runs, "srrl_table9").set_index("method")
    assert df.loc["fm+sr_ce", "top1 ours"] == "1.00" and df.loc["fm+sr_kl", "top1 ours"] == "2.00"
    assert df.loc["fm+sr_l2", "top1 n"] == 0 and df.loc["fm+sr_ce", "top1 paper"] == "78.80"


def _apply(params: dict, overrides: list[str]) -> dict:
    """DVC's -S semantics on a params dict, written out here: key=value sets an existing key,
    +key=value adds a new one, ~key deletes one."""
    import copy

    import yaml

    out = copy.deepcopy(params)
    for o in overrides:
        op = o[0] if o[0] in "+~" else ""
        key, _, value = o.lstrip("+~").partition("=")
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        if op == "~":
            del node[leaf]
        else:
            assert (leaf in node) == (op != "+"), o  # DVC refuses the other cases
            node[leaf] = yaml.safe_load(value)
    return out


@pytest.mark.parametrize(
    "name",
    ["srrl_table4", "srrl_table5", "srrl_table6", "srrl_table10", "srrl_table11", "srrl_table12"],
)
def test_queued_experiments_fill_every_implemented_cell_of_a_pairs_table(name):
    """`kdlab queue` -> (runs) -> `kdlab report`: the runs the queue asks for, with every
    method they list scoring, fill each cell whose method exists here with exactly its seeds."""
    import yaml

    from kdlab import presets
    from kdlab.methods import method_names
    from kdlab.models import model_names

    spec = experiments.PAIRS[name]
    preset = yaml.safe_load(presets.resolve(spec.presets[0]))
    queued = experiments.queue_overrides(name, preset, set(method_names()))
    runs = []
    for i, over in enumerate(queued):
        params = _apply(preset, over)
        assert params["student"]["model"] in model_names()
        assert params["teacher"]["model"] in model_names()
        metrics = {"test_acc", *spec.pair_metrics}
        scores = {
            m: {k: 50.0 + params["seed"] for k in metrics} for m in [*params["methods"], "ce"]
        }
        scores["teacher"] = {"test_acc": 70.0 + params["seed"]}
        runs.append(run(params, scores, name=str(i)))
    df = experiments.build_pairs(runs, name)
    implemented = {lbl for lbl, m, _ in spec.methods if m in (*method_names(), "teacher")}
    seeds = len(spec.seeds)
    # A fixed-teacher table (SRRL 11-12) trains one teacher per pair: its row counts 1 run.
    teachers = {lbl for lbl, m, _ in spec.methods if m == "teacher"} if spec.fixed_teacher else ()
    cols = [c[: -len(" n")] for c in df.columns if c.endswith(" n")]
    assert len(cols) == (len(spec.methods) if spec.pairs_are_rows else len(spec.pairs))
    for _, row in df.iterrows():
        for col in cols:
            method = col if spec.pairs_are_rows else row.iloc[0]
            want = (1 if method in teachers else seeds) if method in implemented else 0
            assert row[f"{col} n"] == want, (name, row.iloc[0], col)
    # 42 experiments for Table 11: 7 pairs x 3 seeds x (KD at 0.9 | the rest at 0.5)
    if name == "srrl_table11":
        assert len(queued) == 7 * 3 * 2


def test_pairs_table_pins_settings_and_widths():
    def srrl_pair(student, teacher, alpha, seed, scores, **opts):
        params = {
            "preset": "srrl",
            "alpha": alpha,
            "temperature": 4.0,
            "seed": seed,
            "data": {"name": "cifar100"},
            "student": {"model": student, "options": opts.get("so", {})},
            "teacher": {"model": teacher, "options": opts.get("to", {})},
            "methods": {m: "teacher" for m in scores if m not in ("ce", "teacher")},
            "method_params": {"srrl": SRRL},
        }
        if "resnet" in student + teacher:  # SRRL's AT rule for ResNets, set by the queue
            params["method_params"] |= {"at": {"last_pairs": 2}, "at_srrl": {"last_pairs": 2}}
        return run(params, {m: {"test_acc": v} for m, v in scores.items()})

    runs = [
        srrl_pair("wrn_16_2", "wrn_40_4", 0.9, 0, {"kd": 74.0, "ce": 72.0, "teacher": 79.0}),
        srrl_pair("wrn_16_2", "wrn_40_4", 0.9, 1, {"kd": 75.0}),
        srrl_pair("wrn_16_2", "wrn_40_4", 0.5, 0, {"kd": 1.0, "at": 74.5, "srrl": 76.0}),
        # ResNet34 at its builder's default width (64) is the paper's 21.33M teacher ...
        srrl_pair("resnet10", "resnet34", 0.5, 0, {"srrl": 77.0}, so={"width": 64}),
        # ... a width-16 pair is the 0.34M / 1.39M row
        srrl_pair(
            "resnet10", "resnet34", 0.5, 0, {"srrl": 69.0}, so={"width": 16}, to={"width": 16}
        ),
    ]
    df = experiments.build_pairs(runs, "srrl_table6").set_index("student/teacher")
    r = df.loc["wrn_16_2/wrn_40_4"]
    assert r["kd ours"] == f"74.50 ± {statistics.stdev([74.0, 75.0]):.2f}" and r["kd n"] == 2
    assert r["kd paper"] == "74.52" and r["ours ours"] == "76.00" and r["at ours"] == "74.50"
    assert r["student ours"] == "72.00" and r["teacher ours"] == "79.00"
    assert r["ofd ours"] == "—" and r["ofd paper"] == "75.57"
    assert df.loc["resnet10_4.95m/resnet34_21.33m", "ours ours"] == "77.00"
    assert df.loc["resnet10_0.34m/resnet34_1.39m", "ours ours"] == "69.00"
    assert df.loc["wrn_16_4/wrn_40_4", "ours n"] == 0


def test_queue_refuses_another_presets_params():
    with pytest.raises(ValueError, match="start from preset srrl_crd.*kdlab preset srrl_crd"):
        experiments.queue_overrides("srrl_table11", {"preset": "srrl"}, {"kd"})


def test_table4_rows_read_their_own_probe_metric():
    params = {
        **SRRL_BASE,
        "data": {"name": "cifar100"},
        "student": {"model": "wrn_16_4"},
        "teacher": {"model": "wrn_40_4"},
        "methods": {"srrl": "teacher", "crd": "teacher"},
        "method_params": {"srrl": SRRL},
    }
    scores = {m: {"probe_stl10": 70.0, "probe_cifar100": 78.0} for m in ("srrl", "crd")}
    df = experiments.build_pairs([run(params, scores)], "srrl_table4").set_index("student/dataset")
    assert df.loc["wrn_16_4/stl10", "fm+sr ours"] == "70.00"
    assert df.loc["wrn_16_4/cifar100", "fm+sr ours"] == "78.00"
    assert df.loc["wrn_16_4/cifar100", "crd ours"] == "78.00"
    assert df.loc["wrn_16_4/stl10", "fm ours"] == "—"  # the run is fm+sr, not fm alone
    assert df.loc["mobilenetv2/stl10", "crd n"] == 0


def test_reffakd_table8_rows_are_data_sets_and_methods_need_t4_alpha09():
    def r(ds, preset, alpha, scores, size=None):
        size = size or (64 if ds == "tiny_imagenet" else 32)
        params = {
            "preset": preset,
            "seed": 0,
            "alpha": alpha,
            "temperature": 4.0,
            "data": {"name": ds},
            "teacher": {"input_size": size},
            "student": {"input_size": size},
            "methods": {m: "teacher" for m in scores if m not in ("ce", "teacher")},
        }
        return run(params, {m: {"test_acc": v} for m, v in scores.items()})

    runs = [
        r("cifar100", "reffakd_cifar100", 0.9, {"kd": 76.0, "reffakd": 77.0, "teacher": 76.3}),
        r("cifar100", "reffakd_cifar100", 0.6, {"kd": 1.0}),  # not the caption's alpha
        r("tiny_imagenet", "reffakd_tiny", 0.9, {"dkd": 64.0, "ce": 62.5}),
        r("cifar100", "default", 0.9, {"at": 5.0}),  # another preset
        # Tiny ImageNet through the CIFAR recipe (32x32, its crop): not the Tiny row's run ...
        r("tiny_imagenet", "reffakd_cifar100", 0.9, {"kd": 2.0}, size=32),
        r("tiny_imagenet", "reffakd_cifar100", 0.9, {"pkt": 3.0}, size=64),
        # ... nor a Tiny preset run resized to 32x32
        r("tiny_imagenet", "reffakd_tiny", 0.9, {"rkd": 4.0}, size=32),
    ]
    df = experiments.build_pairs(runs, "reffakd_table8").set_index("dataset")
    assert df.loc["cifar100", "kd ours"] == "76.00" and df.loc["cifar100", "kd paper"] == "76.91"
    assert df.loc["cifar100", "resnet50 ours"] == "76.30"
    assert df.loc["tiny_imagenet", "dkd ours"] == "64.00"
    assert df.loc["tiny_imagenet", "resnet18 ours"] == "62.50"
    assert df.loc["cifar100", "at n"] == 0 and df.loc["tiny_imagenet", "kd n"] == 0
    assert df.loc["tiny_imagenet", "pkt n"] == 0 and df.loc["tiny_imagenet", "rkd n"] == 0


def test_kdlab_queue_reffakd_table8_queues_the_row_of_the_preset_in_params():
    """Each Table 8 row is its own recipe: from reffakd_cifar100 the CIFAR-100 run only (no
    data set switched under the CIFAR recipe), from reffakd_tiny the Tiny ImageNet run only."""
    from kdlab import presets
    from kdlab.methods import method_names

    names = set(method_names())
    for preset in ("reffakd_cifar100", "reffakd_tiny"):
        params = yaml.safe_load(presets.resolve(preset))
        (over,) = experiments.queue_overrides("reffakd_table8", params, names)
        assert not any(o.startswith(("data.", "teacher.", "student.")) for o in over), over
        # the caption's T 4 and alpha 0.9, overridden where the preset differs (CIFAR: 5, 0.8)
        assert ("alpha=0.9" in over) == (params["alpha"] != 0.9) and "temperature=4.0" in over
        assert "+methods.pkt=teacher" in over and not any(o.startswith("~") for o in over)


def test_kdlab_queue_dry_run_prints_the_commands(tmp_path, capsys):
    from kdlab import presets
    from kdlab.cli import main

    params = tmp_path / "params.yaml"
    params.write_text(presets.resolve("srrl"))
    assert main(["--params", str(params), "queue", "srrl_table9", "--dry-run"]) == 2
    assert "unknown table 'srrl_table9' for `kdlab queue`" in capsys.readouterr().err
    assert main(["--params", str(params), "queue", "srrl_table6", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "[queue] 18 experiments for srrl_table6 (dry run)"  # 9 pairs x 2 runs
    assert lines[0].startswith("dvc exp run --queue -S student.model=wrn_16_2 ")
    assert "-S alpha=0.9" in lines[0] and "'~methods.srrl'" in lines[0]


def direction_run(scores, seed, preset="fmnist_direction", alpha=0.5, **over):
    r = srrl_run(scores, seed=seed, alpha=alpha, **over)
    r["params"]["preset"] = preset
    return r


def test_direction_word():
    assert experiments.direction(1.2, 0.5, 0.8) == "same"
    assert experiments.direction(-1.2, None, 0.8) == "opposite"
    assert experiments.direction(0.3, 0.9, -2.0) == "opposite (ours within 1 std)"
    assert experiments.direction(0.3, 0.9, 0.09, 0.18) == (
        "same (ours within 1 std; paper's within 1 std)"
    )
    assert experiments.direction(2.0, 0.5, -8.55, 3.78) == "opposite"
    assert experiments.direction(0.0, None, 1.0) == "no change"
    assert experiments.direction(None, None, 1.0) == "—"
    assert experiments.direction(1.0, None, 0.0) == "—"  # the baseline row itself


def test_srrl_table1_direction_check_pairs_each_row_with_its_own_ce():
    runs = [
        # fm@conv4 at seeds 0 and 1; each run's own CE student is its baseline
        direction_run({"srrl": {"test_acc": 60.0}, "ce": {"test_acc": 55.0}}, 0, sr_weight=0),
        direction_run({"srrl": {"test_acc": 62.0}, "ce": {"test_acc": 58.0}}, 1, sr_weight=0),
        # conv2: below its CE student, while the paper's row is above its student
        direction_run({"srrl": {"test_acc": 54.0}, "ce": {"test_acc": 55.0}}, 0, stage=0),
        # a run of the srrl preset (GPU scale) is not part of the direction check ...
        direction_run({"srrl": {"test_acc": 99.0}, "ce": {"test_acc": 1.0}}, 2, "srrl"),
    ]
    df = experiments.build_rows(runs, "srrl_table1_fmnist").set_index("method")
    r = df.loc["fm@conv4"]
    assert r["top1 ours"] == f"61.00 ± {statistics.stdev([60.0, 62.0]):.2f}"
    assert r["top1 - ce ours"] == f"4.50 ± {statistics.stdev([5.0, 4.0]):.2f}"
    assert r["top1 - ce paper"] == round(78.05 - 76.97, 2) and r["direction"] == "same"
    r = df.loc["fm+sr@conv2"]
    assert r["top1 - ce ours"] == "-1.00" and r["top1 - ce paper"] == round(77.03 - 76.97, 2)
    assert r["direction"] == "opposite"
    r = df.loc["student"]  # the baseline itself: ce - ce over the three runs' seeds
    assert r["top1 - ce ours"] == "0.00 ± 0.00" and r["direction"] == "—"
    assert df.loc["fm+sr@conv4", "top1 - ce ours"] == "—"  # no run
    # ... and the GPU-scale table never shows the direction check's runs
    gpu = experiments.build_rows(runs, "srrl_table1").set_index("method")
    assert gpu.loc["fm@conv4", "top1 n"] == 0 and gpu.loc["student", "top1 ours"] == "1.00"


def test_direction_check_pairs_grid_cells_with_their_runs_ce():
    """A distill_grid run's cells (one run each, kdlab.reports.runs.grid_cell_runs) carry only
    their method's scores; each is paired with its own run's CE student (same revision)."""
    from kdlab.reports.runs import grid_cell_runs

    runs = []
    for seed, ce in ((0, 55.0), (1, 58.0)):
        run = direction_run({"ce": {"test_acc": ce}, "grid_fm": {"test_acc": ce + 5}}, seed)
        run["rev"] = f"rev{seed}"
        run["params"]["grid"] = {"cells": {"fm": {"method": "srrl", "params": {"sr_weight": 0}}}}
        runs += [run, *grid_cell_runs(run)]
    # another run's CE student at the same seed must not be taken for the cells' own
    other = direction_run({"ce": {"test_acc": 10.0}}, 0)
    other["rev"] = "rev9"
    df = experiments.build_rows([*runs, other], "srrl_table1_fmnist").set_index("method")
    r = df.loc["fm@conv4"]
    assert r["top1 ours"] == f"61.50 ± {statistics.stdev([60.0, 63.0]):.2f}"
    assert r["top1 - ce ours"] == "5.00 ± 0.00" and r["direction"] == "same"


def test_a_rows_sources_are_the_runs_with_a_number_in_it():
    """A run whose params match a row but that has no score for it (a commit that switched
    the preset without rerunning: its stale metrics are dropped) is not that row's source, so
    the report does not describe it (its device, its models) as what ran."""
    good = direction_run({"srrl": {"test_acc": 60.0}, "ce": {"test_acc": 55.0}}, 0, sr_weight=0)
    good["rev"] = "good"
    stale = direction_run({"soft_labels": {"mse": 0.1}}, 0, sr_weight=0)
    stale["rev"] = "stale"
    where: dict = {}
    experiments.build_rows([good, stale], "srrl_table1_fmnist", where)
    assert [r["rev"] for r in where["fm@conv4", "top1"]] == ["good"]
    assert [r["rev"] for r in where["student", "top1"]] == ["good"]
    assert ("fm+sr@conv4", "top1") not in where  # no run at all


def test_simkd_direction_check_needs_alpha_1_and_compares_with_plain_simkd():
    """The study's baseline column is plain SimKD (projector at the end, L2, every sample): each
    variant minus plain SimKD's run of the same seed, never the CE student."""

    def run_(alpha, seed, acc, ce, setting=("all", 0, "l2")):
        r = simkd_run(*setting, 0.1, seed, acc)
        r["params"].update(preset="fmnist_direction", alpha=alpha)
        r["scores"]["ce"] = {"test_acc": ce}
        return r

    def plain(seed, acc, alpha=1.0):
        return run_(alpha, seed, acc, 0.0, ("end", 0, "l2"))

    runs = [run_(1.0, 0, 80.0, 1.0), run_(1.0, 1, 81.0, 2.0), run_(0.5, 2, 95.0, 89.0)]
    runs += [plain(0, 89.0), plain(1, 89.5), plain(2, 50.0, alpha=0.5)]
    df = experiments.build_rows(runs, "simkd_study_fmnist")
    r = df[df["projector/loss"] == "all_layers_unbiased/l2"].iloc[0]
    assert r["test_acc n"] == 2 and r["lr_best ours"] == 0.1  # the alpha-0.5 run is not SimKD's
    assert r["test_acc - plain_simkd ours"] == f"-8.75 ± {statistics.stdev([-9.0, -8.5]):.2f}"
    assert r["test_acc - plain_simkd paper"] == round(53.23 - 75.43, 2)
    assert r["direction"] == "same"
    runs = [run_(1.0, 0, 89.0, 1.0), run_(1.0, 1, 89.2, 1.0), plain(0, 88.5), plain(1, 89.0)]
    r = experiments.build_rows(runs, "simkd_study_fmnist").iloc[2]  # paper: -22.2 +- 0.38
    assert r["projector/loss"] == "all_layers_unbiased/l2"
    assert r["test_acc - plain_simkd ours"] == "0.35 ± 0.21" and r["direction"] == "opposite"


def test_direction_report_header_says_what_it_is(tmp_path, monkeypatch):
    runs = [direction_run({"srrl": {"test_acc": 60.0}, "ce": {"test_acc": 55.0}}, 0, sr_weight=0)]
    runs[0]["params"].update(
        data={"name": "fashion_mnist", "subset": 25000},
        student={"model": "resnet8", "train": {"epochs": 5}},
    )
    monkeypatch.setattr(experiments, "exp_show", lambda repo, all_commits: None)
    monkeypatch.setattr(experiments, "runs_from_exp_show", lambda data: runs)
    md = experiments.report("srrl_table1_fmnist", tmp_path).read_text()
    assert md.startswith(
        "# Effect of L_FM / L_SR and position of distillation, CIFAR-100 (WRN-40-4 -> WRN-16-4)"
        " — direction check on Fashion-MNIST (ours from DVC experiments)"
    )
    assert "Direction check on Fashion-MNIST at reduced scale (preset `fmnist_direction`)" in md
    # the scale key names the seeded subset; the models their parameter counts
    assert "What ran (each shown cell's record): fashion_mnist[25000]/5ep: 5-epoch resnet8 " in md
    assert "5-epoch resnet8 students (77,754 params)" in md and "device auto" not in md


def test_wall_time_counts_a_shared_baseline_stage_once(monkeypatch):
    """Experiments that did not rerun the teacher carry their baseline's record: the teacher's
    time counts once, each experiment's own distill stage once each."""
    records = {
        ("a", "teacher"): {"wall_time_s": 300.0, "test_acc": 91.0},
        ("b", "teacher"): {"wall_time_s": 300.0, "test_acc": 91.0},  # the same run, carried
        ("a", "distill/srrl"): {"wall_time_s": 100.0},
        ("b", "distill/srrl"): {"wall_time_s": 120.0},
    }
    monkeypatch.setattr(
        report_base, "run_record", lambda repo, rev, stage: records.get((rev, stage))
    )
    runs = [{"rev": "a"}, {"rev": "b"}]
    note = report_base.wall_time_note(runs, ["srrl", "teacher"], None)
    assert note.startswith("Measured: 3 stages of srrl, teacher over 2 runs took 520 s")


def test_rank_agreement_of_the_distilled_settings_with_the_paper():
    # SRRL Table 1's six distilled rows in the paper's order of top-1 (fm+sr@conv4 79.58 >
    # conv2+3+4 79.43 > sr 79.10 > fm 78.05 > conv3 77.34 > conv2 77.03): the same order gives
    # +1, the reversed order -1; the student and teacher rows never count.
    order = [{}, {"all_stages": 1}, {"fm_weight": 0}, {"sr_weight": 0}, {"stage": 1}]
    order.append({"stage": 0})
    spec = experiments.ROWS["srrl_table1_fmnist"]

    def table(values, student=55.0):
        runs = [
            direction_run({"srrl": {"test_acc": v}, "ce": {"test_acc": student}}, 0, **over)
            for over, v in zip(order, values)
        ]
        return experiments.build_rows(runs, "srrl_table1_fmnist")

    # 0.001 apart: printed to two decimals they would tie; the ranking uses the real means
    same = table([90 - 0.001 * i for i in range(6)], student=99.0)  # the student never counts
    assert experiments.rank_agreement(same, spec).endswith(
        "Kendall's tau +1.00 (+1: the same order, -1: reversed)."
    )
    rev = table([80 + i for i in range(6)])
    assert "6 distilled settings" in experiments.rank_agreement(rev, spec)
    assert "Kendall's tau -1.00" in experiments.rank_agreement(rev, spec)
    assert experiments.rank_agreement(table([80.0, 79.0]), spec) is None


def test_grid_cell_takes_the_newest_run_of_a_seed():
    """--all-commits reads old commits too: of two runs of one cell and seed, the newer wins,
    whatever the order ``dvc exp show`` lists them in."""
    spec = experiments.GRIDS["reffakd_table10"]

    def r(stamp, acc):
        params = {
            "preset": "default",
            "seed": 0,
            "alpha": 0.6,
            "temperature": 20.0,
            "methods": {"kd": "teacher"},
        }
        return {
            "name": stamp,
            "rev": stamp,
            "timestamp": stamp,
            "params": params,
            "scores": {"kd": {"test_acc": acc}},
        }

    old, new = r("2026-11-26T00:00:00", 91.24), r("2026-12-03T18:00:00", 91.06)
    for runs in ([old, new], [new, old]):
        assert experiments.collect(runs, spec)["T=20, alpha=0.6"]["kd"] == {0: 91.06}
