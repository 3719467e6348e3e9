"""Patel & Obeid Tables 1-3 from runs: accuracy, time, gain and compression per cell."""

import pytest

from kdlab.models import build_model
from kdlab.models.patel import count_weights
from kdlab.reports import patel as patel_report


def run(teacher, student, seed, scores, name):
    params = {
        "preset": "patel",
        "seed": seed,
        "teacher": {"model": teacher},
        "student": {"model": student},
        "methods": {"kd": "teacher"},
    }
    return {"name": name, "rev": name, "params": params, "scores": scores}


RUNS = [
    run(
        "p_vgg16",
        "p_vgg16_half",
        0,
        {"teacher": {"test_acc": 92.0}, "ce": {"test_acc": 90.0}, "kd": {"test_acc": 91.0}},
        "a",
    ),
    run(
        "p_vgg16",
        "p_vgg16_half",
        1,
        {"teacher": {"test_acc": 93.0}, "ce": {"test_acc": 90.5}, "kd": {"test_acc": 92.0}},
        "b",
    ),
    run("p_resnet18", "p_vgg16_half", 0, {"kd": {"test_acc": 90.5}, "ce": {"test_acc": 90.0}}, "c"),
    # another preset's run of the same pair is not Patel's
    {
        **run("p_vgg16", "p_vgg16_half", 2, {"kd": {"test_acc": 1.0}}, "d"),
        "params": {
            "preset": "default",
            "seed": 2,
            "teacher": {"model": "p_vgg16"},
            "student": {"model": "p_vgg16_half"},
            "methods": {"kd": "teacher"},
        },
    },
]
TIMES = {
    ("a", "teacher"): 1200.0,
    ("b", "teacher"): 1260.0,
    ("a", "student"): 600.0,
    ("a", "distill/kd"): 700.0,
    ("b", "distill/kd"): 720.0,
    ("c", "distill/kd"): 65.0,
}


def records(run, stage):
    t = TIMES.get((run["rev"], stage))
    return None if t is None else {"train_time_s": t}


def test_table1_accuracy_time_and_the_papers_weight_count():
    df = patel_report.build_table1(RUNS, records).set_index("model")
    assert df.loc["vgg/teacher", "acc ours"] == "92.50" and df.loc["vgg/teacher", "n"] == 2
    assert df.loc["vgg/teacher", "time ours"] == "20m 30s"  # mean of 1200 s and 1260 s
    assert df.loc["vgg/teacher", "acc ours - vcl"] == round(92.5 - 92.72, 2)
    # the CE student of seed 0 is one model whatever the run's teacher (DVC restores it)
    assert df.loc["vgg/student", "acc ours"] == "90.25" and df.loc["vgg/student", "n"] == 2
    assert df.loc["vgg/student", "time ours"] == "10m 0s"
    want = sum(
        m.weight.numel()
        for m in build_model("p_vgg16", 10, 3).modules()
        if type(m).__name__ in ("Conv2d", "Linear")
    )
    assert df.loc["vgg/teacher", "params ours"] == want == df.loc["vgg/teacher", "params paper"]
    assert df.loc["resnet/teacher", "acc ours"] == "—" and df.loc["resnet/teacher", "n"] == 0


def test_kd_table_cells():
    df = patel_report.build_kd_table(RUNS, records, "table2").set_index("student/metric")
    assert df.loc["vgg/acc", "vgg ours"] == "91.50" and df.loc["vgg/acc", "vgg n"] == 2
    assert df.loc["vgg/acc", "vgg paper"] == "91.98"
    assert df.loc["vgg/acc_gain", "vgg ours"] == "1.25"  # (91 - 90 + 92 - 90.5) / 2
    assert df.loc["vgg/acc_gain", "resnet ours"] == "0.50"
    assert (
        df.loc["vgg/time", "vgg ours"] == "11m 50s" and df.loc["vgg/time", "vgg paper"] == "17m 57s"
    )
    assert df.loc["vgg/time", "vgg ours - paper"] == 710 - (17 * 60 + 57)
    ratio = count_weights(build_model("p_vgg16_half", 10, 3)) / count_weights(
        build_model("p_resnet18", 10, 3)
    )
    assert df.loc["vgg/compression", "resnet ours"] == f"{ratio:.2f}" == "0.34"
    assert df.loc["vgg/compression", "resnet ours - paper"] == pytest.approx(
        ratio - 0.34, abs=0.005
    )
    assert df.loc["resnet/acc", "vgg ours"] == "—" and df.loc["resnet/acc", "vgg n"] == 0
    t3 = patel_report.build_kd_table(RUNS, records, "table3").set_index("student/metric")
    assert t3.loc["vgg/acc", "vgg ours"] == "91.50" and t3.loc["vgg/acc", "vgg paper"] == "91.63"


def test_unknown_patel_table_is_named(tmp_path):
    with pytest.raises(ValueError, match="unknown Patel table 'patel_table9'; known: patel_table1"):
        patel_report.report_patel("patel_table9", tmp_path)
