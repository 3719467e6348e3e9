"""``kdlab reproduce NAME``: plan, price, run, resume and report one paper grid.

The grids here are ReffAKD's T x alpha x {KD, ReffAKD} tables
(:data:`kdlab.reports.registry.GRIDS`): every cell shares the teacher/student pair and the data
and differs only in method, alpha and temperature, so the cells train together in one
``distill_grid`` run (``grid.cells``) on a committed baseline that holds the shared stages
(teacher + its cached logits, CAE + soft labels).

Why a committed baseline: DVC skips its run-cache for stages with ``cache: false`` outputs
(treeverse/dvc#8738), so anything run on a commit whose ``dvc.lock`` lacks the teacher would
retrain it. The baseline lives on branch ``reproduce/NAME``; each seed adds a baseline commit
(its shared stages) and a grid commit (its cells). A rerun finds the finished cells in those
commits (``dvc exp show``, read by :func:`kdlab.reports.runs.runs_from_exp_show`) and in the
committed report records, and trains only the rest; an interrupted grid resumes each cell from its
checkpoint (same cell params, same fingerprint).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from kdlab import presets
from kdlab.reports import experiments
from kdlab.reports.papers import paper_tables
from kdlab.reports.records import RECORDS, number, scale_of
from kdlab.reports.runs import REPO_KEY, preset_of, runs_from_exp_show

# The stages that make what a method reads (its entry in params.yaml `methods`), trained once
# per seed in the baseline commit.
SHARED_STAGES = {
    "teacher": ("train_teacher", "teacher_logits"),
    "soft_labels": ("train_cae", "soft_labels"),
}
# Which model's speed prices each stage, and which params give its epochs.
STAGE_ROLE = {"train_teacher": "teacher", "train_cae": "cae", "train_student": "student"}
ROLE_EPOCHS = {"teacher": "teacher", "cae": "cae", "student": "student", "distill": "student"}
CURRENT = "current"  # --scale current: params.yaml as it is (custom or tiny setups)


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: a setting (the paper's row label) of one method at one seed."""

    setting: str  # "T=20, alpha=0.6"
    model: str  # our method: kd, reffakd
    column: str  # the paper's column: vanilla_kd, reffakd
    alpha: float
    temperature: float
    seed: int

    @property
    def name(self) -> str:
        """The ``grid.cells`` key: letters, digits, '_' (config.py's rule)."""
        return f"{self.model}_T{self.temperature:g}_a{self.alpha:g}".replace(".", "p")

    def grid_entry(self) -> dict[str, Any]:
        return {"method": self.model, "alpha": self.alpha, "temperature": self.temperature}


@dataclass
class Plan:
    """What ``kdlab reproduce`` will do, before doing any of it."""

    name: str
    preset: str  # or CURRENT
    scale: str  # kdlab.reports.records.scale_of the params: data set and student epochs
    params: dict[str, Any]
    seeds: list[int]
    shared: list[str]  # stages trained once per seed, in the baseline commit
    cells: list[Cell]
    finished: set[tuple[str, str, int]] = field(default_factory=set)  # (setting, model, seed)
    repo: Path = field(default_factory=Path.cwd)  # where the speed table's records are read
    # --rerun: train every cell again (only this branch's own runs count as finished) and
    # compare the new cells with the committed records they replace.
    rerun: bool = False

    @property
    def todo(self) -> list[Cell]:
        return [c for c in self.cells if (c.setting, c.model, c.seed) not in self.finished]

    @property
    def branch(self) -> str:
        return f"reproduce/{self.name}"

    def epochs(self, role: str) -> int:
        return int(self.params[ROLE_EPOCHS[role]]["train"]["epochs"])


def grid_names() -> list[str]:
    """The entries ``kdlab reproduce`` runs: same-pair grids of :data:`experiments.GRIDS`."""
    return list(experiments.GRIDS)


def settings(name: str) -> list[tuple[str, float, float]]:
    """``(row label, temperature, alpha)`` of each row of the published table: its labels
    (``"T=20, alpha=0.6"``) are the settings, so they are said once, in papers/*.yaml."""
    spec = experiments.GRIDS[name]
    out = []
    for row in paper_tables(spec.paper)[spec.table]["rows"]:
        values = dict(part.split("=") for part in row[0].replace(" ", "").split(","))
        out.append((row[0], float(values["T"]), float(values["alpha"])))
    return out


def choose_preset(name: str, scale: str) -> str:
    """``paper`` -> the table's paper-scale preset, ``cpu`` -> its CPU one, else a preset name
    (or ``current``)."""
    theirs = experiments.GRIDS[name].presets
    if scale == CURRENT:
        return CURRENT
    if scale == "cpu":
        if "default" not in theirs:
            raise ValueError(
                f"{name} has no CPU preset (its presets: {', '.join(theirs)}); "
                "use --scale paper or name a preset"
            )
        return "default"
    if scale == "paper":  # the table's preset that is not the CPU preset
        return next(p for p in theirs if p != "default")
    if scale not in presets.names():
        raise ValueError(f"unknown scale {scale!r}: paper, cpu, current or a preset")
    return scale


def preset_params(preset: str, repo: Path) -> tuple[str, dict[str, Any]]:
    """The params.yaml text and values the run uses."""
    text = (
        (repo / "params.yaml").read_text(encoding="utf-8")
        if preset == CURRENT
        else presets.resolve(preset)
    )
    return text, yaml.safe_load(text)


def shared_stages(params: dict[str, Any], methods: list[str]) -> list[str]:
    """The stages making what the grid's methods read (params.yaml ``methods``: method ->
    teacher / soft_labels), in pipeline order."""
    sources = params.get("methods") or {}
    for m in methods:
        if m not in sources:
            raise ValueError(f"method {m!r} is not in the preset's methods (what it reads)")
    needed = {sources[m] for m in methods}
    return [stage for src, stages in SHARED_STAGES.items() if src in needed for stage in stages]


def make_plan(
    name: str,
    repo: Path,
    scale: str = "paper",
    seeds: list[int] | None = None,
    only: list[str] | None = None,
    runs: list[dict[str, Any]] | None = None,
    rerun: bool = False,
) -> Plan:
    """The plan of ``name`` at ``scale``: cells (settings x methods x seeds; ``only`` keeps
    those row labels) and which are finished (``runs``: finished DVC runs, by default read from
    ``dvc exp show`` of HEAD and of branch ``reproduce/NAME``; plus the committed records).
    ``rerun``: the committed records and HEAD's runs do not count, only the branch's own runs
    (so an interrupted rerun still resumes)."""
    if name not in experiments.GRIDS:
        raise ValueError(
            f"kdlab reproduce runs the grids {', '.join(grid_names())} here (pairs tables: "
            f"kdlab.reproduce_pairs); not {name!r}"
        )
    spec = experiments.GRIDS[name]
    preset = choose_preset(name, scale)
    _, params = preset_params(preset, repo)
    seeds = list(seeds) if seeds else [int(params.get("seed", 0))]
    rows = [s for s in settings(name) if only is None or s[0] in only]
    cells = [
        Cell(label, model, column, alpha, temp, seed)
        for seed in seeds
        for label, temp, alpha in rows
        for column, model in spec.models
    ]
    plan = Plan(
        name,
        preset,
        scale_of(params),
        params,
        seeds,
        shared_stages(params, [m for _, m in spec.models]),
        cells,
        rerun=rerun,
    )
    if runs is None:
        runs = finished_runs(repo, plan.branch, head=not rerun)
    plan.finished = finished_cells(plan, runs, repo, records=not rerun)
    plan.repo = repo
    return plan


def finished_runs(repo: Path, branch: str, head: bool = True) -> list[dict[str, Any]]:
    """Finished runs of HEAD's experiments (``head``) and of every commit of ``branch`` since
    it left HEAD, through the project's one reader
    (:func:`kdlab.reports.runs.runs_from_exp_show`). Not ``--all-commits``: that walks the
    whole history (minutes here)."""
    revs = [("HEAD", 1)] if head else []
    if git_out(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False):
        base = git_out(repo, "merge-base", "HEAD", branch)
        revs.append((branch, 1 + int(git_out(repo, "rev-list", "--count", f"{base}..{branch}"))))
    data: list[dict[str, Any]] = []
    for rev, num in revs:
        cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json", "--rev", rev, "-n", str(num)]
        proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"`dvc exp show` failed in {repo}: {proc.stderr.strip()}")
        for base in json.loads(proc.stdout) or []:
            base[REPO_KEY] = str(repo)
            data.append(base)
    return runs_from_exp_show(data)


def finished_cells(
    plan: Plan, runs: list[dict[str, Any]], repo: Path, records: bool = True
) -> set[tuple]:
    """``(setting, model, seed)`` with a result at the plan's scale: in a finished run (grid
    cells included) or (``records``) in the committed records ``results/records/NAME.json``."""
    spec = experiments.GRIDS[plan.name]
    at = [r for r in runs if scale_of(r["params"]) == plan.scale]
    done = {
        (label, model, seed)
        for label, per_model in experiments.collect(at, spec).items()
        for model, by_seed in per_model.items()
        for seed in by_seed
    }
    path = repo / RECORDS / f"{plan.name}.json"
    if records and path.exists():
        column_model = dict(spec.models)
        for cell in json.loads(path.read_text(encoding="utf-8")).get("cells", []):
            if cell.get("scale") == plan.scale and cell.get("column") in column_model:
                for seed in cell.get("seeds") or []:
                    done.add((cell["setting"], column_model[cell["column"]], int(seed)))
    return done


def speeds(repo: Path) -> dict[str, Any]:
    """The speed table (kdlab/papers/speeds.yaml) with each entry's ``s_per_epoch`` computed
    from its record in ``repo`` (``key`` / ``epochs``), so a rerun that rewrites the record
    updates the estimate; an entry whose record is missing or has no such number is dropped
    (its role then prints as not measured)."""
    text = resources.files("kdlab.papers").joinpath("speeds.yaml").read_text(encoding="utf-8")
    table = yaml.safe_load(text)
    for roles in table["speeds"].values():
        for per_device in roles.values():
            for dev, entry in list(per_device.items()):
                try:
                    rec = json.loads((repo / entry["source"]).read_text())
                    entry["s_per_epoch"] = float(rec[entry["key"]]) / int(rec["epochs"])
                except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
                    del per_device[dev]
    return table


def estimate(plan: Plan) -> list[str]:
    """One line per device class: the plan's training time from measured seconds per epoch
    (speeds.yaml), or what is not measured. Soft labels and teacher logits (seconds) and
    evaluation outside the epochs are not counted."""
    table = speeds(plan.repo)
    per_role = table["speeds"].get(preset_of(plan.params, plan.preset), {})
    seeds_left = {c.seed for c in plan.todo}
    work: list[tuple[str, int]] = []  # (role, epochs) of everything left to train
    for stage in plan.shared:
        if stage in STAGE_ROLE:
            work += [(STAGE_ROLE[stage], plan.epochs(STAGE_ROLE[stage]))] * len(seeds_left)
    work += [("distill", plan.epochs("distill"))] * len(plan.todo)
    lines = []
    for dev, label in table["device_classes"].items():
        total, missing = 0.0, sorted({r for r, _ in work if dev not in per_role.get(r, {})})
        for role, epochs in work:
            if dev in per_role.get(role, {}):
                total += per_role[role][dev]["s_per_epoch"] * epochs
        if not work:
            lines.append(f"{dev}: nothing left to train")
        elif missing:
            part = f"; the measured rest: {hours_text(total)}" if total else ""
            lines.append(
                f"{dev}: not measured ({', '.join(missing)} of preset {plan.preset}){part}"
            )
        else:
            lines.append(f"{dev}: {hours_text(total)} ({label})")
    return lines


def hours_text(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds / 60:.0f} min"


def plan_text(plan: Plan) -> str:
    """The plan as printed before anything runs."""
    n_set = len({c.setting for c in plan.cells})
    models = sorted({c.model for c in plan.cells})
    todo = plan.todo
    lines = [
        f"kdlab reproduce {plan.name}: preset {plan.preset}, scale {plan.scale}, "
        f"seeds {' '.join(map(str, plan.seeds))}, branch {plan.branch}",
        f"shared stages, trained once per seed in the baseline commit: {', '.join(plan.shared)}",
        f"cells: {n_set} settings x {{{', '.join(models)}}} x {len(plan.seeds)} seed(s) = "
        f"{len(plan.cells)}; finished {len(plan.cells) - len(todo)}, to run {len(todo)}",
        f"run: one distill_grid per seed ({', '.join(models)} share the pair and the data): "
        f"{len(todo)} students of {plan.epochs('distill')} epochs together",
        f"epochs: teacher {plan.epochs('teacher')}, cae {plan.epochs('cae')}, "
        f"students {plan.epochs('distill')}",
        *(
            [
                "rerun: the committed records do not count as finished; each new cell is "
                "compared with the record it replaces"
            ]
            if plan.rerun
            else []
        ),
        "estimated training time (kdlab/papers/speeds.yaml; a grid priced as its cells run "
        "one by one):",
        *(f"  {line}" for line in estimate(plan)),
    ]
    for seed in plan.seeds:
        left = [c for c in todo if c.seed == seed]
        if left:
            lines.append(f"seed {seed}: {', '.join(c.name for c in left)}")
    lines.append("then: kdlab report " + plan.name + f" --all-commits --scale {plan.scale}")
    return "\n".join(lines) + "\n"


def git_out(repo: Path, *args: str, check: bool = True) -> str:
    proc = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {proc.stderr.strip()}")
    return proc.stdout.strip() if proc.returncode == 0 else ""


def run_command(repo: Path, cmd: list[str], log: list[str]) -> str:
    """Run ``cmd``, echo and keep its output (the caller counts the stages that ran)."""
    # This kdlab's source first: `python -m kdlab` must not find another checkout's install.
    src = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]))
    # The stages' `python` is this one (its environment has torch), as in an activated venv.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Streamed line by line: a grid's per-epoch progress shows while it trains.
    proc = subprocess.Popen(
        cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        print(line, end="", flush=True)
    proc.wait()
    out = "".join(lines)
    log.append(out)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode})")
    return out


def with_seed_and_cells(text: str, seed: int, cells: list[Cell]) -> str:
    """params.yaml ``text`` with ``seed`` and ``grid.cells`` set, comments kept (both are
    one-line values; a JSON mapping is YAML flow style)."""
    entries = {c.name: c.grid_entry() for c in cells}
    text, n_seed = re.subn(r"(?m)^seed: *[^\s#]+", f"seed: {seed}", text, count=1)
    text, n_cells = re.subn(
        r"(?m)^(grid:\s*(?:#.*)?\n(?:\s*#.*\n)*)  cells: *(?:\{\}|\{.*\})",
        lambda m: m.group(1) + f"  cells: {json.dumps(entries)}",
        text,
        count=1,
    )
    if not (n_seed and n_cells):
        raise ValueError("params.yaml has no one-line `seed:` or `grid:` / `  cells:` to set")
    return text


def stages_run(output: str) -> list[str]:
    """The stages DVC ran, from its ``Running stage '...'`` lines."""
    return re.findall(r"Running stage '([^']+)'", output)


def enter_branch(repo: Path, branch: str) -> str:
    """Check out ``branch`` (created from the current commit when new; an existing one's
    dvc.lock holds the shared stages it trained) and return the branch the run started on.
    Already on it: a resumed run, its work tree as the interruption left it (dvc.lock holds
    every stage that finished, checkpoints every model's last epoch). Needs a clean work tree
    otherwise: the run commits on the branch."""
    start = git_out(repo, "rev-parse", "--abbrev-ref", "HEAD")
    if start != branch:
        if git_out(repo, "status", "--porcelain", "--untracked-files=no"):
            raise RuntimeError("commit or stash your changes first: the run commits on a branch")
        if git_out(repo, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False):
            git_out(repo, "checkout", "-q", branch)
        else:
            git_out(repo, "checkout", "-q", "-b", branch)
    return start


def execute(plan: Plan, repo: Path) -> list[str]:
    """Run the plan on branch ``reproduce/NAME`` (created from the current commit, or resumed)
    and write the report; returns the stages DVC ran, in order. Needs a clean work tree."""
    start = enter_branch(repo, plan.branch)
    text, _ = preset_params(plan.preset, repo)
    dvc = [sys.executable, "-m", "dvc"]
    log: list[str] = []
    for seed in plan.seeds:
        todo = [c for c in plan.todo if c.seed == seed]
        if not todo:
            continue
        # Baseline: the preset and seed, no cells; the shared stages run once (a no-op when
        # this branch's dvc.lock already holds them: a resumed run).
        (repo / "params.yaml").write_text(with_seed_and_cells(text, seed, []))
        run_command(repo, [*dvc, "repro", *plan.shared], log)
        commit_outputs(repo, f"reproduce {plan.name}: baseline, preset {plan.preset}, seed {seed}")
        (repo / "params.yaml").write_text(with_seed_and_cells(text, seed, todo))
        run_command(repo, [*dvc, "repro", "distill_grid"], log)
        commit_outputs(repo, f"reproduce {plan.name}: {len(todo)} grid cells, seed {seed}")
    before = records_before(repo, plan) if plan.rerun else None
    report = [sys.executable, "-m", "kdlab", "report", plan.name, "--all-commits"]
    run_command(repo, [*report, "--scale", plan.scale], log)
    git_out(repo, "add", "results")
    commit_outputs(repo, f"reproduce {plan.name}: report at scale {plan.scale}")
    if before is not None:
        after = json.loads((repo / RECORDS / f"{plan.name}.json").read_text(encoding="utf-8"))
        print("\n".join(compare_records(before, after, plan.scale)), flush=True)
    if start != plan.branch:
        git_out(repo, "checkout", "-q", start)
    return [s for out in log for s in stages_run(out)]


def records_before(repo: Path, plan: Plan) -> dict[str, Any]:
    """The committed records as they were where branch ``reproduce/NAME`` left its start (the
    parent of its first ``reproduce NAME:`` commit; the current ones on a fresh branch)."""
    own = git_out(repo, "log", "--format=%H", f"--grep=^reproduce {plan.name}:", "HEAD")
    rev = f"{own.split()[-1]}^" if own else "HEAD"
    text = git_out(repo, "show", f"{rev}:{RECORDS}/{plan.name}.json", check=False)
    return json.loads(text) if text else {"cells": []}


def _ours(cell: dict[str, Any]) -> float | None:
    """A cell's own number (``"90.73"`` or ``"90.73 ± 0.12"``), None when empty."""
    return number(cell.get("scores", {}).get(f"{cell['column']} ours", ""))


def compare_records(before: dict[str, Any], after: dict[str, Any], scale: str) -> list[str]:
    """Each cell of ``after`` at ``scale`` beside the record of the same setting and column in
    ``before`` (new - old, in printed points), then the largest and mean absolute difference."""
    old = {
        (c["setting"], c["column"]): c for c in before.get("cells", []) if c.get("scale") == scale
    }
    lines, diffs = [f"rerun vs the committed records at {scale} (new - old, points):"], []
    for cell in after.get("cells", []):
        key = (cell["setting"], cell["column"])
        if cell.get("scale") != scale:
            continue
        new, was = _ours(cell), _ours(old[key]) if key in old else None
        if new is None or was is None:
            lines.append(f"  {key[0]} | {key[1]}: new {new}, old {was} (nothing to compare)")
            continue
        diffs.append(new - was)
        lines.append(f"  {key[0]} | {key[1]}: {was:.2f} -> {new:.2f} ({new - was:+.2f})")
    if diffs:
        absd = [abs(d) for d in diffs]
        lines.append(
            f"  {len(diffs)} cells: max |diff| {max(absd):.2f}, mean |diff| "
            f"{sum(absd) / len(absd):.2f}, mean diff {sum(diffs) / len(diffs):+.2f}, "
            f"identical {sum(d == 0 for d in diffs)}"
        )
    return lines


def commit_outputs(repo: Path, message: str) -> None:
    """Commit params, lock and the committed outputs when anything changed."""
    paths = [p for p in ("params.yaml", "dvc.lock", "metrics", "plots") if (repo / p).exists()]
    git_out(repo, "add", *paths)
    if git_out(repo, "status", "--porcelain", "--untracked-files=no"):
        git_out(repo, "commit", "-qm", message)
