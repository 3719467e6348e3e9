"""Mean +- std over seeds from `dvc exp show --json` (its real document layout)."""

import math
import statistics

import pytest

from kdlab.reports.runs import runs_from_exp_show
from kdlab.reports.summary import summarize, to_markdown


def rev(sha, params, metrics, name=None):
    return {
        "rev": sha,
        "name": name,
        "data": {
            "rev": sha,
            "params": {"params.yaml": {"data": params}},
            "metrics": {path: {"data": m} for path, m in metrics.items()},
        },
        "error": None,
        "experiments": None,
    }


def params(seed, alpha):
    return {"seed": seed, "alpha": alpha, "student": {"model": "lenet5", "epochs": 2}}


def metrics(student, kd):
    return {
        "metrics/student/metrics.json": {"step": 1, "ce": {"test_acc": student}},
        "metrics/distill/kd/metrics.json": {"step": 1, "kd": {"test_acc": kd}},
        "metrics/teacher/metrics.json": {"step": 1, "teacher": {"test_acc": 95.0}},
    }


def exp(name, sha, p, m, state="success"):
    return {"revs": [rev(sha, p, m, name)], "executor": {"state": state}, "name": name}


DOC = [
    # The workspace repeats the last applied run: left out.
    {**rev("workspace", params(0, 0.6), metrics(1.0, 1.0)), "experiments": None},
    {
        **rev("a" * 40, params(0, 0.6), metrics(90.0, 91.0), name="main"),
        "experiments": [
            exp("s1", "b" * 40, params(1, 0.6), metrics(90.5, 92.0)),
            exp("s2", "c" * 40, params(2, 0.6), metrics(89.5, 90.5)),
            exp("a8", "d" * 40, params(0, 0.8), metrics(90.0, 89.0)),
            exp("busy", "e" * 40, params(3, 0.6), metrics(0.0, 0.0), state="running"),
            exp("broke", "f" * 40, params(4, 0.6), metrics(0.0, 0.0), state="failed"),
        ],
    },
]


def test_runs_skip_workspace_and_unfinished():
    runs = runs_from_exp_show(DOC)
    assert [r["name"] for r in runs] == ["main", "s1", "s2", "a8"]
    assert runs[1]["params"]["seed"] == 1
    assert runs[1]["scores"]["kd"] == {"test_acc": 92.0}
    assert set(runs[1]["scores"]) == {"ce", "kd", "teacher"}  # models read from the files


def test_summary_groups_by_everything_but_seed():
    df = summarize(runs_from_exp_show(DOC))
    row = df[(df.config == "alpha=0.6") & (df.model == "kd")].iloc[0]
    assert row.n == 3 and row.seeds == "0 1 2"
    assert row["mean"] == pytest.approx(statistics.fmean([91.0, 92.0, 90.5]))
    # Sample std (n - 1), computed by hand: deviations -0.1667, 0.8333, -0.6667.
    m = (91.0 + 92.0 + 90.5) / 3
    assert row["std"] == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in (91.0, 92.0, 90.5)) / 2))
    single = df[(df.config == "alpha=0.8") & (df.model == "kd")].iloc[0]
    assert single.n == 1 and math.isnan(single["std"])
    # teacher first, then the CE student, then the methods.
    assert list(df[df.config == "alpha=0.6"].model) == ["teacher", "ce", "kd"]
    md = to_markdown(df, "test_acc")
    assert "| alpha=0.6 | kd | 91.17 +- 0.76 | 3 | 0 1 2 |" in md
    assert "| alpha=0.8 | kd | 89.00 +- - | 1 | 0 |" in md


def test_long_labels_get_a_legend():
    doc = [
        {
            **rev("a" * 40, {"seed": 0, **{f"k{i}": "x" * 20 for i in range(6)}}, metrics(1, 2)),
            "experiments": [
                exp(
                    "o",
                    "b" * 40,
                    {"seed": 0, **{f"k{i}": "y" * 20 for i in range(6)}},
                    metrics(3, 4),
                )
            ],
        }
    ]
    df = summarize(runs_from_exp_show(doc))
    assert set(df.config) == {"config 1", "config 2"}
    md = to_markdown(df, "test_acc")
    assert '- config 1: k0="xxxxxxxxxxxxxxxxxxxx"' in md


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no finished DVC runs"):
        summarize([])
    with pytest.raises(ValueError, match="no run reports the metric 'nope'"):
        summarize(runs_from_exp_show(DOC), "nope")


def test_a_models_scores_from_several_files_are_merged():
    m = metrics(90.0, 91.0)
    m["metrics/analysis/metrics.json"] = {"kd": {"kl_teacher": 0.5}, "ce": {"nmi": 70.0}}
    runs = runs_from_exp_show([{**rev("a" * 40, params(0, 0.6), m, name="main")}])
    assert runs[0]["scores"]["kd"] == {"test_acc": 91.0, "kl_teacher": 0.5}
    assert runs[0]["scores"]["ce"] == {"test_acc": 90.0, "nmi": 70.0}


def test_a_diverged_model_is_marked_not_printed():
    """Issue 23: a summary marked ``diverged`` (kdlab.live) reaches no table as a number."""
    m = metrics(90.0, 10.0)
    m["metrics/distill/kd/metrics.json"] = {"kd": {"epoch": 7, "val_acc": 10.0, "diverged": 7}}
    m["metrics/analysis/metrics.json"] = {"kd": {"test_acc": 10.0}}  # another file's number
    doc = [{**rev("a" * 40, params(0, 0.8), m, name="main"), "experiments": None}]
    runs = runs_from_exp_show(doc, repo=None)
    assert math.isnan(runs[0]["scores"]["kd"]["test_acc"]) and runs[0]["scores"]["ce"]
    out = to_markdown(summarize(runs), "test_acc")
    assert "| kd | diverged | 1 | 0 |" in out and "10.00" not in out
