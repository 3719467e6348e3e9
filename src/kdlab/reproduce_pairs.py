"""``kdlab reproduce NAME`` for a pairs x methods table (:data:`experiments.PAIRS`).

Its cells do not share the teacher/student pair, so they cannot train as one grid: each pair
and teacher seed gets a *baseline*, a commit on branch ``reproduce/NAME`` whose params.yaml is
the preset with the pair's pins and the seed, and whose ``dvc.lock`` holds the shared stages
(teacher, its logits, the CE student; the CAE and soft labels when a method reads them). Each
unfinished experiment of that group (a group of methods whose pins agree, at one seed) is then
queued on that commit (``dvc exp run --queue -S ...``: a queued experiment keeps its baseline
rev), so no experiment retrains the teacher; ``dvc queue start -j JOBS`` runs them, the queue is
waited on as ``scripts/queue_wait.sh`` does, and ``kdlab report NAME`` writes the table.

A table with ``fixed_teacher`` (SRRL 11-12, the CRD benchmark) varies only the students:
its seeds are ``student_seed``'s, so one baseline per pair holds the one teacher and every
students' seed is an experiment on it (the CE student of each other seed trains there too).

Resume: an experiment is finished when a finished run (``dvc exp show`` of HEAD and of the
branch, :func:`kdlab.reproduce.finished_runs`) of its preset and scale has its pins, seeds and
methods, each with a score; a rerun queues only the rest, on the baseline commit the branch
already holds (same params.yaml): no ``dvc repro`` at all, where the branch tip's ``dvc.lock``
(another pair's teacher) would retrain it.
"""

from __future__ import annotations

import copy
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML

from kdlab import presets
from kdlab.reports import experiments
from kdlab.reports.base import PARAM_DEFAULTS, PairSpec
from kdlab.reports.records import scale_of
from kdlab.reports.runs import flatten, listed_methods, preset_of
from kdlab.reproduce import (
    CURRENT,
    commit_outputs,
    enter_branch,
    finished_runs,
    git_out,
    hours_text,
    run_command,
    speeds,
    stages_run,
)

# Which model's speed prices each shared stage, as in kdlab.reproduce.
TEACHER_STAGES = ("train_teacher", "teacher_logits")
SOFT_LABEL_STAGES = ("train_cae", "soft_labels")
# Keys whose pinning makes a pair's models or data differ from its preset's measured ones.
MODEL_KEYS = ("teacher.", "student.", "data.")


@dataclass(frozen=True)
class Baseline:
    """One pair at one teacher seed: the commit its experiments are queued on."""

    pair: str
    preset: str  # or CURRENT
    seed: int  # the teacher's (and split's)
    student_seed: int | None  # the baseline's CE student's, under a fixed teacher
    overrides: tuple[str, ...]  # -S style, applied to the preset's params.yaml text
    stages: tuple[str, ...]  # the shared stages `dvc repro` runs

    @property
    def label(self) -> str:
        return f"{self.pair}, teacher seed {self.seed}"


@dataclass(frozen=True)
class Experiment:
    """One queued experiment: a group of methods of one pair at one seed."""

    baseline: int  # index into PairPlan.baselines
    models: tuple[str, ...]
    pins: tuple[tuple[str, Any], ...]  # every pin but the seeds: the pair's and the methods'
    seed: int  # the seed the table counts it under (the students' under a fixed teacher)
    overrides: tuple[str, ...]  # -S, relative to the baseline's params
    targets: tuple[str, ...]  # the stages `dvc exp run` reproduces
    scale: str


@dataclass
class PairPlan:
    """What ``kdlab reproduce`` does for a pairs table, before doing any of it."""

    name: str
    spec: PairSpec
    scale_arg: str
    seeds: list[int]
    baselines: list[Baseline]
    experiments: list[Experiment]
    params: dict[int, dict[str, Any]]  # baseline index -> its full params
    jobs: int = 1
    finished: set[int] = field(default_factory=set)  # indices into experiments
    repo: Path = field(default_factory=Path.cwd)

    @property
    def branch(self) -> str:
        return f"reproduce/{self.name}"

    @property
    def todo(self) -> list[Experiment]:
        return [e for i, e in enumerate(self.experiments) if i not in self.finished]

    def todo_of(self, baseline: int) -> list[Experiment]:
        return [e for e in self.todo if e.baseline == baseline]


def table_names() -> list[str]:
    """The pairs tables ``kdlab reproduce`` runs through the queue."""
    return list(experiments.PAIRS)


def _yaml() -> YAML:
    y = YAML()  # round-trip: comments, key order and flow style kept
    y.width = 100
    y.preserve_quotes = True
    return y


def apply_overrides(text: str, overrides: list[str] | tuple[str, ...]) -> str:
    """params.yaml ``text`` with DVC's ``-S`` overrides applied, comments kept: ``key=value``
    sets an existing dotted key, ``+key=value`` adds a new one, ``~key`` deletes one; values
    are parsed as YAML (``0.01``, ``cifar10``, ``[1, 2]``)."""
    y = _yaml()
    doc = y.load(text)
    _apply(doc, overrides)
    buf = io.StringIO()
    y.dump(doc, buf)
    return buf.getvalue()


def applied(params: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """A copy of nested ``params`` with the overrides applied (as :func:`apply_overrides`,
    without the round trip through text: plans apply hundreds)."""
    out = copy.deepcopy(params)
    _apply(out, overrides)
    return out


def _apply(doc: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> None:
    for over in overrides:
        op = over[0] if over[:1] in ("+", "~") else ""
        key, eq, raw = over.lstrip("+~").partition("=")
        if not key or (op != "~" and not eq):
            raise ValueError(f"override {over!r}: allowed key=value, +key=value or ~key")
        *parents, leaf = key.split(".")
        node = doc
        for part in parents:
            if not isinstance(node.get(part), dict):
                if op != "+":
                    raise ValueError(f"override {over!r}: params.yaml has no {part!r} there")
                node[part] = {}
            node = node[part]
        if op == "~":
            if leaf not in node:
                raise ValueError(f"override {over!r}: params.yaml has no {key}")
            del node[leaf]
        elif (leaf in node) != (op != "+"):  # DVC's rule: + only adds, plain only sets
            raise ValueError(
                f"override {over!r}: {key} {'exists: drop the +' if op else 'is new: use +'}"
            )
        else:
            node[leaf] = yaml.safe_load(raw)


def choose_presets(name: str, scale: str, repo: Path) -> dict[str, str]:
    """pair label -> the preset (or ``current``) its runs start from: ``paper`` -> each pair's
    own preset (``pair_presets``) or the table's; a preset name -> the pairs of that preset;
    ``current`` -> params.yaml as it is (its preset must be one of the table's)."""
    spec = experiments.PAIRS[name]
    own = {pair: experiments.pair_preset(spec, pair) for pair, _ in spec.pairs}
    if scale == "cpu":
        raise ValueError(
            f"{name} has no CPU preset (its presets: {', '.join(spec.presets)}); "
            "use --scale paper, current or one of its presets"
        )
    if scale == "paper":
        return {p: own[p] or spec.presets[0] for p in own}
    if scale == CURRENT:
        text = (repo / "params.yaml").read_text(encoding="utf-8")
        ours = preset_of(yaml.safe_load(text))
        chosen = ours
    else:
        if scale not in presets.names():
            raise ValueError(
                f"unknown scale {scale!r}: paper, cpu, current or a preset "
                f"({', '.join(presets.names())})"
            )
        ours, chosen = scale, scale
    if ours not in spec.presets:
        raise ValueError(
            f"{name}'s runs come from preset {' or '.join(spec.presets)}, not {ours!r} "
            "(its report would not read them)"
        )
    return {p: chosen for p in own if own[p] in (None, ours)}


def _preset_text(preset: str, repo: Path) -> str:
    if preset == CURRENT:
        return (repo / "params.yaml").read_text(encoding="utf-8")
    return presets.resolve(preset)


def _knowledge(params: dict[str, Any], models: list[str]) -> dict[str, str]:
    """What each method reads: as params.yaml ``methods`` lists it, else its own declaration."""
    from kdlab.methods import get_method

    listed = params.get("methods") or {}
    return {m: listed.get(m) or get_method(m).knowledge() for m in models}


def make_pair_plan(
    name: str,
    repo: Path,
    scale: str = "paper",
    seeds: list[int] | None = None,
    jobs: int = 1,
    runs: list[dict[str, Any]] | None = None,
) -> PairPlan:
    """The plan of pairs table ``name``: one baseline per pair and teacher seed, its
    experiments (a method group x seed each) and which are finished (``runs``: finished DVC
    runs, by default :func:`kdlab.reproduce.finished_runs` of HEAD and the branch)."""
    if name not in experiments.PAIRS:
        known = [*experiments.GRIDS, *experiments.PAIRS]
        raise ValueError(f"kdlab reproduce runs {', '.join(known)}; not {name!r}")
    if jobs < 1:
        raise ValueError(f"--jobs {jobs}: allowed an integer >= 1 (queue workers)")
    spec = experiments.PAIRS[name]
    chosen = choose_presets(name, scale, repo)
    from kdlab.methods import method_names

    groups = experiments.run_groups(spec, set(method_names()))
    reads_probe = any(m.startswith("probe_") for m in (spec.metric, *spec.pair_metrics))
    plan = PairPlan(name, spec, scale, [], [], [], {}, jobs=jobs, repo=repo)
    for pair, pair_pins in spec.pairs:
        if pair not in chosen:
            continue
        text = _preset_text(chosen[pair], repo)
        preset = yaml.safe_load(text)
        table_seeds = list(seeds) if seeds else [s for s in spec.seeds if s is not None]
        if not table_seeds:  # None: the preset's own seed
            table_seeds = [int(preset.get("seed", 0))]
        plan.seeds = table_seeds
        # A fixed teacher: one (the preset's seed), the students over the seeds.
        teacher_seeds = [int(preset.get("seed", 0))] if spec.fixed_teacher else table_seeds
        everything = sorted({m for _, ms in groups for m in ms})
        knows = _knowledge(preset, everything)
        for tseed in teacher_seeds:
            pins = dict(pair_pins)
            pins["seed"] = tseed
            first = table_seeds[0] if spec.fixed_teacher else None
            if first is not None:
                pins["student_seed"] = first
            base_over = experiments.overrides(preset, pins, sorted(preset.get("methods") or {}))
            params = applied(preset, base_over)
            needs = {knows[m] for _, ms in groups for m in ms}
            stages = [*TEACHER_STAGES, "train_student"]
            stages += list(SOFT_LABEL_STAGES) if "soft_labels" in needs else []
            index = len(plan.baselines)
            plan.baselines.append(
                Baseline(pair, chosen[pair], tseed, first, tuple(base_over), tuple(stages))
            )
            plan.params[index] = params
            for sseed in table_seeds if spec.fixed_teacher else [tseed]:
                for group_pins, models in groups:
                    want = {**group_pins}
                    if spec.fixed_teacher:
                        want["student_seed"] = sseed
                    over = experiments.overrides(params, want, models, knows)
                    targets = [f"distill@{m}" for m in models]
                    if spec.fixed_teacher and sseed != first:
                        targets.insert(0, "train_student")  # this seed's CE student
                    if reads_probe:
                        targets.append("probe")
                    full = applied(params, over)
                    plan.experiments.append(
                        Experiment(
                            index,
                            tuple(models),
                            tuple({**dict(pair_pins), **group_pins}.items()),
                            sseed,
                            tuple(over),
                            tuple(targets),
                            scale_of(full),
                        )
                    )
    if not plan.baselines:
        raise ValueError(f"{name}: no pair of {name} starts from scale {scale!r}")
    if runs is None:
        runs = finished_runs(repo, plan.branch)
    plan.finished = finished_experiments(plan, runs)
    return plan


def _metric(spec: PairSpec, pair: str) -> str:
    if spec.pair_metrics:
        return spec.pair_metrics[[p for p, _ in spec.pairs].index(pair)]
    return spec.metric


def finished_experiments(plan: PairPlan, runs: list[dict[str, Any]]) -> set[int]:
    """Indices of the plan's experiments that a finished run covers: same preset and scale,
    the experiment's pins (a pin the run lacks: its builder default), its teacher and
    students' seeds, and every method of it listed with a score."""
    done = set()
    flats = []
    for r in runs:
        flat = {k: json.loads(v) for k, v in flatten(r["params"]).items()}
        flats.append((r, flat, listed_methods(r["params"])))
    for i, e in enumerate(plan.experiments):
        base = plan.baselines[e.baseline]
        want_preset = preset_of(plan.params[e.baseline])
        metric = _metric(plan.spec, base.pair)
        for r, flat, listed in flats:
            if preset_of(r["params"]) != want_preset or scale_of(r["params"]) != e.scale:
                continue
            if int(flat.get("seed", 0)) != base.seed:
                continue
            if experiments.run_seed(flat, plan.spec, e.models[0]) != e.seed:
                continue
            if not all(flat.get(k, PARAM_DEFAULTS.get(k)) == v for k, v in e.pins):
                continue
            scores = r.get("scores") or {}
            if all(
                m in listed and isinstance((scores.get(m) or {}).get(metric), (int, float))
                for m in e.models
            ):
                done.add(i)
                break
    return done


def _work(plan: PairPlan) -> list[tuple[int, str, int]]:
    """(baseline, role, epochs) of everything left to train: each baseline with experiments
    left trains its shared models once; each experiment its students (and, under a fixed
    teacher, its seed's CE student when that is not the baseline's)."""
    work = []
    for i, b in enumerate(plan.baselines):
        left = plan.todo_of(i)
        if not left:
            continue
        p = plan.params[i]
        work.append((i, "teacher", int(p["teacher"]["train"]["epochs"])))
        work.append((i, "student", int(p["student"]["train"]["epochs"])))
        if "train_cae" in b.stages:
            work.append((i, "cae", int(p["cae"]["train"]["epochs"])))
        for e in left:
            if "train_student" in e.targets:
                work.append((i, "student", int(p["student"]["train"]["epochs"])))
            work += [(i, "distill", int(p["student"]["train"]["epochs"]))] * len(e.models)
    return work


def estimate(plan: PairPlan) -> list[str]:
    """One line per device class of speeds.yaml: the time left, from measured seconds per
    epoch of the baseline's preset and role; a role of a pair whose models or data differ from
    its preset's (the measured ones) is not measured."""
    table = speeds(plan.repo)
    work = _work(plan)
    lines = []
    for dev, label in table["device_classes"].items():
        total, missing = 0.0, set()
        for i, role, epochs in work:
            base = plan.baselines[i]
            preset = preset_of(plan.params[i], base.preset)
            own = not any(o.lstrip("+").startswith(MODEL_KEYS) for o in base.overrides)
            entry = (table["speeds"].get(preset, {}).get(role) or {}).get(dev) if own else None
            if entry is None:
                missing.add(f"{role} of preset {preset}" + ("" if own else " (pair's models)"))
            else:
                total += entry["s_per_epoch"] * epochs
        if not work:
            lines.append(f"{dev}: nothing left to train")
        elif missing:
            part = f"; the measured rest: {hours_text(total)}" if total else ""
            lines.append(f"{dev}: not measured ({', '.join(sorted(missing))}){part}")
        else:
            lines.append(f"{dev}: {hours_text(total)} ({label})")
    return lines


def rule_text(spec: PairSpec, seeds: list[int]) -> str:
    """The table's seed rule, as the plan and the report note state it."""
    s = " ".join(map(str, seeds))
    if spec.fixed_teacher:
        return (
            f"fixed teacher (as the paper's benchmark): one teacher per pair at the preset's "
            f"seed; the students' seeds {s} are student_seed's, each an experiment on the pair's "
            "baseline"
        )
    return f"each seed ({s}) trains its own teacher: one baseline per pair and seed"


def plan_text(plan: PairPlan) -> str:
    """The plan as printed before anything runs."""
    spec = plan.spec
    presets_used = sorted({b.preset for b in plan.baselines})
    todo = plan.todo
    lines = [
        f"kdlab reproduce {plan.name}: a pairs x methods table ({len(spec.pairs)} pairs x "
        f"{len(spec.methods)} methods), preset(s) {', '.join(presets_used)}, seeds "
        f"{' '.join(map(str, plan.seeds))}, branch {plan.branch}",
        f"rule: {rule_text(spec, plan.seeds)}",
        f"baselines: {len(plan.baselines)} (one per pair and teacher seed), each a commit of "
        "`dvc repro` of its shared stages, trained once there: "
        + ", ".join(plan.baselines[0].stages),
    ]
    if spec.fixed_teacher:
        lines.append(
            f"  (the CE student there is student_seed {plan.seeds[0]}'s; each experiment of "
            "another students' seed retrains its CE student: train_student)"
        )
    for i, b in enumerate(plan.baselines):
        over = " ".join(f"-S {o}" for o in b.overrides) or "(the preset as is)"
        left = len(plan.todo_of(i))
        lines.append(f"  {b.label}: {over}; experiments left {left}")
    n = len(plan.experiments)
    lines.append(
        f"experiments: {n} (pair x seed x group of methods whose pins agree); finished "
        f"{n - len(todo)}, to run {len(todo)}, queued on their pair's baseline commit"
    )
    key = "student_seed" if spec.fixed_teacher else "seed"
    for e in todo:
        b = plan.baselines[e.baseline]
        over = " ".join(f"-S {o}" for o in e.overrides) or "(no override)"
        lines.append(f"  [{b.pair}, {key} {e.seed}] {over} {' '.join(e.targets)}")
    epochs = sorted(
        {
            (p["teacher"]["train"]["epochs"], p["student"]["train"]["epochs"])
            for p in plan.params.values()
        }
    )
    lines.append("epochs: " + "; ".join(f"teacher {t}, students {s}" for t, s in epochs))
    lines += [
        "estimated training time (kdlab/papers/speeds.yaml; each stage priced as run alone):",
        *(f"  {line}" for line in estimate(plan)),
        f"then: dvc queue start -j {plan.jobs}; wait for the queue; kdlab report {plan.name} "
        "--all-commits",
    ]
    return "\n".join(lines) + "\n"


def queue_status(repo: Path) -> tuple[bool, str]:
    """``dvc queue status``: whether it succeeded, and its output."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "status"], cwd=repo, capture_output=True, text=True
    )
    return proc.returncode == 0, proc.stdout + proc.stderr


def start_workers(repo: Path, jobs: int) -> None:
    """``dvc queue start -j JOBS``: DVC starts only the workers not already running."""
    subprocess.run(
        [sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
        cwd=repo,
        capture_output=True,
        stdin=subprocess.DEVNULL,
    )


def wait_queue(
    repo: Path,
    poll: float = 30.0,
    status: Callable[[Path], tuple[bool, str]] = queue_status,
    sleep: Callable[[float], None] = time.sleep,
    restart: Callable[[Path], None] | None = None,
) -> bool:
    """Wait as ``scripts/queue_wait.sh`` does: done after two polls in a row in which
    ``dvc queue status`` succeeded and listed no Queued or Running task (right after
    ``dvc queue start`` one poll once saw neither). DVC's workers exit once the queue is empty
    for a moment, so a poll that finds tasks Queued and no worker active calls ``restart``
    (starts the workers again). Returns False when a task failed."""
    idle, out = 0, ""
    while idle < 2:
        sleep(poll)
        ok, out = status(repo)
        if ok and not re.search(r"Queued|Running", out):
            idle += 1
            continue
        idle = 0
        if restart and "Queued" in out and re.search(r"Worker status: 0 active", out):
            print("[reproduce] tasks queued and no worker active: starting them again", flush=True)
            restart(repo)
    return "Failed" not in out


def committed_baseline(repo: Path, branch: str, message: str, text: str) -> str | None:
    """The newest commit of ``branch`` made with ``message`` whose params.yaml is ``text``
    (a baseline a previous run committed), or None."""
    shas = git_out(repo, "log", "-F", f"--grep={message}", "--format=%H", branch, check=False)
    for sha in shas.split():
        if git_out(repo, "show", f"{sha}:params.yaml", check=False) == text.strip():
            return sha
    return None


def execute(
    plan: PairPlan,
    repo: Path,
    run: Callable[[Path, list[str], list[str]], str] = run_command,
    wait: Callable[..., bool] = wait_queue,
) -> list[str]:
    """Run the plan on branch ``reproduce/NAME``: per baseline with experiments left, write
    its params.yaml, ``dvc repro`` its shared stages, commit, queue its experiments; then run
    the queue, wait, write and commit the report, and go back to the start branch. Returns the
    stages DVC ran in the workspace (the queue's run in their own copies). ``run`` runs one
    command (tests capture them)."""
    start = enter_branch(repo, plan.branch)
    dvc = [sys.executable, "-m", "dvc"]
    log: list[str] = []
    queued = 0
    for i, b in enumerate(plan.baselines):
        todo = plan.todo_of(i)
        if not todo:
            continue
        text = apply_overrides(_preset_text(b.preset, repo), b.overrides)
        message = f"reproduce {plan.name}: baseline {b.label}, preset {b.preset}"
        sha = committed_baseline(repo, plan.branch, message, text)
        if sha:  # queue on the commit that holds it: the tip's dvc.lock may hold another pair
            git_out(repo, "checkout", "-q", "--detach", sha)
            print(f"[reproduce] baseline {b.label}: committed in {sha[:10]}, reused", flush=True)
        else:
            (repo / "params.yaml").write_text(text, encoding="utf-8")
            run(repo, [*dvc, "repro", *b.stages], log)  # a no-op where dvc.lock holds them
            commit_outputs(repo, message)
        for e in todo:
            sets = [x for o in e.overrides for x in ("-S", o)]
            run(repo, [*dvc, "exp", "run", "--queue", *sets, *e.targets], log)
            queued += 1
        if sha:
            git_out(repo, "checkout", "-q", plan.branch)
    ok = True
    if queued:
        run(repo, [*dvc, "queue", "start", "-j", str(plan.jobs)], log)
        ok = wait(repo, restart=lambda r: start_workers(r, plan.jobs))
    report = [sys.executable, "-m", "kdlab", "report", plan.name, "--all-commits"]
    scales = {e.scale for e in plan.experiments}
    if len(scales) == 1:
        report += ["--scale", scales.pop()]
    run(repo, report, log)
    git_out(repo, "add", "results")
    commit_outputs(repo, f"reproduce {plan.name}: report")
    if start != plan.branch:
        git_out(repo, "checkout", "-q", start)
    if not ok:
        print("some experiments failed: `dvc queue logs NAME`; rerun to queue them again")
    return [s for out in log for s in stages_run(out)]
