"""``kdlab reproduce`` of a pairs x methods table (kdlab.reproduce_pairs): the plan's baselines
and experiments against expectations written here, the fixed-teacher rule, resume, bad input,
the comment-keeping params editor, the queue wait, and the run itself with the DVC calls
captured by a stand-in that reruns a stage as DVC does: when a param it declares in the real
dvc.yaml differs from the one its ``dvc.lock`` recorded (a real queue of 40 GPU runs is not a
test)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from fixtures import cli
from kdlab import presets, reproduce_pairs
from kdlab.reports import experiments, runs
from test_experiments import _apply

CRD_PAIRS = [  # SRRL Table 11 (CRD benchmark), written out: (teacher, student)
    ("wrn_40_2", "wrn_16_2"),
    ("wrn_40_2", "wrn_40_1"),
    ("resnet56", "resnet20"),
    ("resnet110", "resnet20"),
    ("resnet110", "resnet32"),
    ("resnet32x4", "resnet8x4"),
    ("vgg13", "vgg8"),
]
CRD_AT_05 = {  # every implemented method of Table 11 but KD, at alpha 0.5
    *("fitnet", "at", "sp", "cc", "vid", "rkd", "pkt", "ab", "ft", "fsp", "nst"),
    *("crd", "srrl"),
}


@pytest.fixture
def no_runs(monkeypatch):
    """No DVC here: nothing has finished."""
    monkeypatch.setattr(reproduce_pairs, "finished_runs", lambda repo, branch, head=True: [])


def applied(plan, e) -> dict:
    """An experiment's full params: its preset, its baseline's overrides, its own (applied by
    the DVC -S semantics tests/test_experiments.py writes out, not the code under test)."""
    b = plan.baselines[e.baseline]
    return _apply(_apply(yaml.safe_load(presets.resolve(b.preset)), b.overrides), e.overrides)


def test_table11_plan_one_teacher_per_pair_students_over_three_seeds(no_runs):
    plan = reproduce_pairs.make_pair_plan("srrl_table11", REPO)
    assert len(plan.baselines) == 7  # not 21: the three students' seeds share a baseline
    got = set()
    for e in plan.experiments:
        p = applied(plan, e)
        assert p["seed"] == 0 and p["preset"] == "srrl_crd"  # one teacher, the preset's seed
        methods = frozenset(p["methods"])
        got.add(
            (p["teacher"]["model"], p["student"]["model"], p["student_seed"], p["alpha"], methods)
        )
        base = plan.baselines[e.baseline]
        assert base.pair == f"{p['teacher']['model']}/{p['student']['model']}"
        assert base.student_seed == 0 and base.stages == (
            "train_teacher",
            "teacher_logits",
            "train_student",
        )
        # a students' seed other than the baseline's retrains its CE student, never the teacher
        assert ("train_student" in e.targets) == (p["student_seed"] != 0)
        assert not any(o.startswith(("seed=", "teacher.", "data.")) for o in e.overrides)
    want = {
        (t, s, seed, alpha, frozenset(ms))
        for t, s in CRD_PAIRS
        for seed in (0, 1, 2)
        for alpha, ms in ((0.9, {"kd"}), (0.5, CRD_AT_05))
    }
    assert got == want and len(plan.experiments) == 42
    text = reproduce_pairs.plan_text(plan)
    assert "rule: fixed teacher" in text and "student_seed 0 1 2" not in text
    assert "experiments: 42" in text and "finished 0, to run 42" in text
    assert "[wrn_40_2/wrn_16_2, student_seed 1] -S student_seed=1" in text
    assert "cpu_2core: not measured" in text  # no SRRL preset is measured
    assert "then: dvc queue start -j 1" in text


def test_without_the_fixed_teacher_rule_each_seed_has_its_baseline(no_runs, monkeypatch):
    spec = replace(experiments.PAIRS["srrl_table11"], fixed_teacher=False)
    monkeypatch.setitem(experiments.PAIRS, "srrl_table11", spec)
    plan = reproduce_pairs.make_pair_plan("srrl_table11", REPO)
    assert len(plan.baselines) == 21 and len(plan.experiments) == 42
    assert {b.seed for b in plan.baselines} == {0, 1, 2}
    assert "each seed (0 1 2) trains its own teacher" in reproduce_pairs.plan_text(plan)


def test_table6_plan_pins_each_pair_in_its_baseline(no_runs):
    """SRRL Table 6 (9 CIFAR-100 pairs, the preset's seed): one baseline per pair holding its
    models and widths; two experiments on it (KD at 0.9; AT, RKD, CRD, SRRL at 0.5)."""
    plan = reproduce_pairs.make_pair_plan("srrl_table6", REPO, seeds=[0, 1])
    assert len(plan.baselines) == 9 * 2 and len(plan.experiments) == 9 * 2 * 2
    first = plan.baselines[0]
    assert first.pair == "wrn_16_2/wrn_40_4" and "student.model=wrn_16_2" in first.overrides
    wide = [b for b in plan.baselines if b.pair == "resnet10_0.34m/resnet34_1.39m"]
    assert {b.seed for b in wide} == {0, 1}
    assert "+student.options.width=16" in wide[0].overrides  # a key the preset lacks: +
    kinds = set()
    for e in plan.experiments:
        p = applied(plan, e)
        assert p["seed"] == plan.baselines[e.baseline].seed and p["student_seed"] is None
        kinds.add((p["alpha"], frozenset(p["methods"])))
    assert kinds == {(0.9, frozenset({"kd"})), (0.5, frozenset({"at", "rkd", "crd", "srrl"}))}


def test_table8_baselines_come_from_each_rows_preset_and_add_soft_labels(no_runs):
    plan = reproduce_pairs.make_pair_plan("reffakd_table8", REPO)
    assert [(b.pair, b.preset) for b in plan.baselines] == [
        ("cifar100", "reffakd_cifar100"),
        ("tiny_imagenet", "reffakd_tiny"),
    ]
    assert all(b.stages[-2:] == ("train_cae", "soft_labels") for b in plan.baselines)
    only = reproduce_pairs.make_pair_plan("reffakd_table8", REPO, scale="reffakd_tiny")
    assert [b.pair for b in only.baselines] == ["tiny_imagenet"]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["reproduce", "srrl_table99"], "unknown table 'srrl_table99'; allowed: reffakd_table5"),
        (["reproduce", "srrl_table6", "--scale", "tpu"], "unknown scale 'tpu': paper, cpu"),
        (["reproduce", "srrl_table6", "--scale", "cpu"], "srrl_table6 has no CPU preset"),
        (["reproduce", "srrl_table6", "--scale", "hao"], "not 'hao'"),
        (["reproduce", "srrl_table6", "--jobs", "0"], "--jobs 0 is not allowed; allowed: an"),
        (["reproduce", "srrl_table6", "--rerun"], "--rerun is for the grids"),
    ],
)
def test_bad_input_names_the_value_and_what_is_allowed(argv, message, capsys, no_runs):
    r = cli([*argv, "--dry-run", "--repo", REPO], capsys)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_dry_run_prints_the_plan_and_queues_nothing(capsys, no_runs, monkeypatch):
    monkeypatch.setattr(reproduce_pairs, "execute", lambda *a, **k: pytest.fail("executed"))
    r = cli(["reproduce", "srrl_table12", "--dry-run", "--jobs", "3", "--repo", REPO], capsys)
    assert r.returncode == 0, r.stderr
    assert "baselines: 6 (one per pair and teacher seed)" in r.stdout
    assert "-S student.train.lr=0.01" in r.stdout  # CRD's small-lr students, in the baseline
    assert "then: dvc queue start -j 3" in r.stdout


def test_params_editor_keeps_comments_and_follows_dvc_rules():
    text = presets.resolve("srrl_crd")
    out = reproduce_pairs.apply_overrides(
        text, ["alpha=0.5", "+student.options.width=16", "~methods.kd", "student_seed=2"]
    )
    assert "# T of the KD term (RepDistiller's 4)" in out  # comments kept
    assert out.count("\n#") == text.count("\n#")
    p = yaml.safe_load(out)
    assert p["alpha"] == 0.5 and p["student"]["options"] == {"width": 16}
    assert "kd" not in p["methods"] and p["student_seed"] == 2
    untouched = {
        k: v
        for k, v in yaml.safe_load(text).items()
        if k not in ("alpha", "student", "methods", "student_seed")
    }
    assert {k: p[k] for k in untouched} == untouched
    for bad, why in (
        (["alpha2=1"], "is new: use +"),
        (["+alpha=1"], "exists: drop the +"),
        (["~nope"], "has no nope"),
        (["alpha"], "allowed key=value"),
    ):
        with pytest.raises(ValueError, match=why):
            reproduce_pairs.apply_overrides(text, bad)


def test_queue_wait_needs_two_idle_polls_and_reports_failures():
    answers = iter(
        [
            (True, "Task  Name  Created  Status\n"),  # a lone empty poll right after start
            (True, "abc  exp-1  10:00  Running\n"),
            (False, "dvc: error"),  # a failed status call never counts as idle
            (True, "abc  exp-1  10:00  Success\n"),
            (True, "abc  exp-1  10:00  Success\ndef  exp-2  10:01  Failed\n"),
        ]
    )
    polls = []
    ok = reproduce_pairs.wait_queue(
        Path("."), poll=7, status=lambda repo: next(answers), sleep=polls.append
    )
    assert ok is False and polls == [7] * 5


def test_queue_wait_restarts_workers_when_tasks_wait_with_none_active():
    """DVC's workers exit when the queue empties for a moment; a task queued after that waits
    with no worker: the wait starts them again, and only then."""
    answers = iter(
        [
            (True, "a  exp-1  10:00  Queued\nWorker status: 1 active, 0 idle\n"),
            (True, "a  exp-1  10:00  Queued\nWorker status: 0 active, 0 idle\n"),
            (True, "a  exp-1  10:00  Running\nWorker status: 1 active, 0 idle\n"),
            (True, "a  exp-1  10:00  Success\nWorker status: 0 active, 0 idle\n"),
            (True, "a  exp-1  10:00  Success\nWorker status: 0 active, 0 idle\n"),
        ]
    )
    restarted: list[Path] = []
    ok = reproduce_pairs.wait_queue(
        Path("repo"),
        poll=0,
        status=lambda repo: next(answers),
        sleep=lambda s: None,
        restart=restarted.append,
    )
    assert ok is True and restarted == [Path("repo")]


# --- the run, with DVC stood in for ------------------------------------------------------


def _declared() -> dict[str, list[str]]:
    """Each stage's params and its upstream's (the real dvc.yaml): what reruns it."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]

    def params(stage):
        return [p for p in spec[stage].get("params", []) if isinstance(p, str)]

    upstream = [*params("download"), *params("split")]
    return {s: [*upstream, *params(s)] for s in ("train_teacher", "train_student")}


class FakeDvc:
    """Runs what `kdlab reproduce` asks as DVC would decide it: `dvc repro STAGES` runs a
    stage whose declared params differ from the ones dvc.lock holds (and writes them there);
    a queued experiment runs, on its baseline's dvc.lock, each stage whose params its -S
    overrides change. Each run prints DVC's ``Running stage '...'`` line."""

    def __init__(self):
        self.calls: list[list[str]] = []
        self.queued: list[str] = []  # the queue's output, once started
        self.declared = _declared()

    def signature(self, params: dict, stage: str) -> str:
        return json.dumps([runs.lookup(params, k) for k in self.declared[stage]], default=str)

    def __call__(self, repo: Path, cmd: list[str], log: list[str]) -> str:
        cmd = cmd[cmd.index("-m") + 2 :] if "-m" in cmd else cmd  # after `python -m dvc`
        self.calls.append(cmd)
        lock_path = repo / "dvc.lock"
        lock = json.loads(lock_path.read_text()) if lock_path.exists() else {}
        params = yaml.safe_load((repo / "params.yaml").read_text())
        out = ""
        if cmd[0] == "repro":
            for stage in cmd[1:]:
                if stage in self.declared and lock.get(stage) != self.signature(params, stage):
                    lock[stage] = self.signature(params, stage)
                    out += f"Running stage '{stage}':\n"
            lock_path.write_text(json.dumps(lock))
        elif cmd[:3] == ["exp", "run", "--queue"]:
            sets = [cmd[i + 1] for i, c in enumerate(cmd) if c == "-S"]
            mine = _apply(params, sets)
            for stage in self.declared:
                if lock.get(stage) != self.signature(mine, stage):
                    self.queued.append(f"Running stage '{stage}':\n")
        elif cmd[:2] == ["queue", "start"]:
            out = "".join(self.queued)
        elif cmd[0] == "report":
            (repo / "results").mkdir(exist_ok=True)
            (repo / "results" / "report.md").write_text(" ".join(cmd))
        log.append(out)
        return out


def _repo(tmp_path: Path) -> Path:
    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q", "-b", "main")
    git("config", "user.email", "t@t")
    git("config", "user.name", "t")
    (tmp_path / "params.yaml").write_text(presets.resolve("default"))
    git("add", "-A")
    git("commit", "-qm", "start")
    return tmp_path


def _teachers(log: list[str]) -> int:
    return sum(out.count("Running stage 'train_teacher'") for out in log)


def test_run_trains_one_teacher_per_pair_then_resumes_only_the_missing(tmp_path, no_runs):
    repo = _repo(tmp_path)
    plan = reproduce_pairs.make_pair_plan("srrl_table11", repo, jobs=2)
    dvc = FakeDvc()
    ran = reproduce_pairs.execute(plan, repo, run=dvc, wait=lambda repo, restart=None: True)
    # One teacher per distinct teacher, all in baselines (pairs 1-2 share WRN-40-2, pairs 4-5
    # ResNet-110: the second baseline's dvc.lock already holds it); the 42 queued
    # experiments retrain none.
    teachers = [t for i, (t, _) in enumerate(CRD_PAIRS) if i == 0 or CRD_PAIRS[i - 1][0] != t]
    assert ran.count("train_teacher") == len(teachers) == 5, ran
    assert "".join(dvc.queued).count("train_teacher") == 0
    # the CE student: in the baselines (student_seed 0; pairs 3-4 share ResNet-20), then
    # 2 groups x 2 other students' seeds per pair in the queue
    students = [s for i, (_, s) in enumerate(CRD_PAIRS) if i == 0 or CRD_PAIRS[i - 1][1] != s]
    assert ran.count("train_student") == len(students) + 7 * 2 * 2
    exps = [c for c in dvc.calls if c[:3] == ["exp", "run", "--queue"]]
    assert len(exps) == 42 and ["queue", "start", "-j", "2"] in dvc.calls
    assert dvc.calls[-1][:3] == ["report", "srrl_table11", "--all-commits"]
    branch = subprocess.run(
        ["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    assert branch == "main"

    # Resume: the runs of the first pair's experiments finished (one of them at another
    # students' seed than it asked for: not its run), everything else is queued again, and the
    # first pair's committed baseline is reused without a `dvc repro`.
    finished = []
    for e in plan.experiments:
        if e.baseline == 0:
            p = applied(plan, e)
            scores = {m: {"test_acc": 70.0} for m in e.models}
            finished.append({"name": "x", "rev": "r", "params": p, "scores": scores})
    finished[-1]["params"]["student_seed"] = 9
    plan2 = reproduce_pairs.make_pair_plan("srrl_table11", repo, runs=finished)
    assert len(plan2.todo) == 42 - 5 and plan2.todo_of(0) == [plan.experiments[5]]
    dvc2 = FakeDvc()
    ran2 = reproduce_pairs.execute(plan2, repo, run=dvc2, wait=lambda repo, restart=None: True)
    exps2 = [c for c in dvc2.calls if c[:3] == ["exp", "run", "--queue"]]
    assert len(exps2) == 37
    assert [c for c in dvc2.calls if c[0] == "repro"] == []  # every baseline was committed
    assert ran2.count("train_teacher") == 0 and "train_teacher" not in "".join(dvc2.queued)


def test_a_planted_teacher_retraining_fails(tmp_path, no_runs, monkeypatch):
    """The count above is not vacuous: experiments that set the seed (as `kdlab queue` does
    on a table without baselines) retrain a teacher each, and the stand-in sees it."""
    repo = _repo(tmp_path)
    plan = reproduce_pairs.make_pair_plan("srrl_table11", repo)
    planted = [replace(e, overrides=(*e.overrides, f"seed={e.seed + 1}")) for e in plan.experiments]
    plan.experiments = planted
    dvc = FakeDvc()
    reproduce_pairs.execute(plan, repo, run=dvc, wait=lambda repo, restart=None: True)
    assert "".join(dvc.queued).count("Running stage 'train_teacher'") == 42
