"""Paper tables from finished DVC experiments (``dvc exp show --json``).

A grid is a queue of experiments (``dvc exp run --queue -S temperature=5 -S alpha=0.8`` ...,
then ``dvc queue start``); :func:`report` groups the finished runs by the params that define the
table's rows (e.g. ``temperature`` x ``alpha``), keeps only runs of the table's preset
(``profile_name``), reports mean +- sample std (n - 1) where seeds repeat, and puts the paper's
published cell beside ours. A cell with no finished run is missing, never another run's number.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab import paths
from kdlab.catalogue import paper_tables
from kdlab.report_records import Built, at_scale, main_scale, write_report
from kdlab.seeds import exp_show, flatten, listed_methods, lookup, runs_from_exp_show

# Where tables built from finished experiments go: outside `tables/` (the `tables` stage's
# output), which DVC empties whenever that stage reruns.
REPORTS = Path("results")


@dataclass(frozen=True)
class GridSpec:
    """How one paper table maps onto experiments."""

    paper: str
    table: str
    row_params: tuple[str, ...]  # params whose values name a row, in the paper's row label
    models: tuple[tuple[str, str], ...]  # (paper column, our metrics model) pairs
    profiles: tuple[str, ...]  # presets (profile_name) whose runs belong to the table
    metric: str = "test_acc"


GRIDS: dict[str, GridSpec] = {
    "reffakd_table5": GridSpec(
        "reffakd",
        "table5",
        ("temperature", "alpha"),
        (("reffakd", "reffakd"), ("vanilla_kd", "kd")),
        ("reffakd_cifar100",),
    ),
    "reffakd_table9": GridSpec(
        "reffakd",
        "table9",
        ("temperature", "alpha"),
        (("reffakd", "reffakd"), ("vanilla_kd", "kd")),
        ("reffakd_tiny",),
    ),
    "reffakd_table10": GridSpec(
        "reffakd",
        "table10",
        ("temperature", "alpha"),
        (("reffakd", "reffakd"), ("vanilla_kd", "kd")),
        ("default", "paper"),
    ),
}


def _row_label(values: dict[str, Any]) -> str:
    """``"T=20, alpha=0.6"``: the paper's own row labels in papers/*.yaml."""
    names = {"temperature": "T"}
    return ", ".join(f"{names.get(k, k)}={v:g}" for k, v in values.items())


def collect(
    runs: list[dict[str, Any]], spec: GridSpec, where: dict | None = None
) -> dict[str, dict[str, dict[int, float]]]:
    """``{row label: {our model: {seed: value}}}`` of the runs of ``spec.profiles``; ``where``
    (when given) gets ``{(row label, our model): [run, ...]}``, the runs behind each cell."""
    cells: dict[str, dict[str, dict[int, float]]] = {}
    for run in runs:
        flat = {k: json.loads(v) for k, v in flatten(run["params"]).items()}
        if flat.get("profile_name", "default") not in spec.profiles:
            continue
        if any(flat.get(p) is None for p in spec.row_params):
            continue
        label = _row_label({p: float(flat[p]) for p in spec.row_params})
        methods = listed_methods(run["params"])
        for model, values in run["scores"].items():
            value = values.get(spec.metric)
            # Only the methods this run lists: a stale file of another run is not this run's.
            if model not in ("teacher", "ce") and model not in methods:
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.setdefault(label, {}).setdefault(model, {})[int(flat.get("seed", 0))] = value
                if where is not None:
                    where.setdefault((label, model), []).append(run)
    return cells


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (n - 1); std None for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    if math.isnan(mean):  # a diverged run (kdlab.seeds.mark_diverged): no number to print
        return "diverged"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def build(runs: list[dict[str, Any]], name: str, where: dict | None = None) -> pd.DataFrame:
    """The table ``name`` of :data:`GRIDS` in the paper's layout: per row and column, ours
    (mean ± std), n, the paper's number and ours - paper; ``where`` (when given) gets the runs
    behind each cell, ``{(row label, paper column): [run, ...]}``."""
    if name not in GRIDS:
        raise ValueError(f"unknown report {name!r}; known: {', '.join(GRIDS)}")
    spec = GRIDS[name]
    published = paper_tables(spec.paper)[spec.table]
    cols = published["columns"]
    found: dict[tuple[str, str], list[dict[str, Any]]] = {}
    cells = collect(runs, spec, found)
    if where is not None:
        for col, model in spec.models:
            where.update({(lab, col): found[lab, m] for lab, m in found if m == model})
    rows = []
    for prow in published["rows"]:
        label = prow[0]
        row: dict[str, Any] = {cols[0]: label}
        for col, model in spec.models:
            paper = prow[cols.index(col)]
            by_seed = cells.get(label, {}).get(model, {})
            mean, std = mean_std(list(by_seed.values()))
            row[f"{col} ours"] = _cell(mean, std)
            row[f"{col} n"] = len(by_seed)
            row[f"{col} paper"] = paper
            row[f"{col} ours - paper"] = (
                None if mean is None or paper is None else round(mean - paper, 2)
            )
        rows.append(row)
    return pd.DataFrame(rows)


# How each paper's alpha maps to ours (ours always weighs the distillation term).
ALPHA_CONVENTION = {
    "reffakd": "alpha weighs the distillation term, (1 - alpha) the cross-entropy, as in ReffAKD "
    "(the paper's alpha = ours)",
    "hao": "Hao's alpha weighs the student's cross-entropy: the paper's alpha = 1 - ours",
    "patel": "Patel & Obeid's alpha weighs the cross-entropy: the paper's alpha = 1 - ours",
    "simkd": "SimKD's loss has no alpha (the feature term alone); our alpha weighs that term",
    "srrl": "SRRL's KD alpha (0.9) weighs the KL term, as ours; its CE + L_FM + L_SR is our "
    "alpha 0.5 up to a factor 1/2",
}


def _values(runs: list[dict[str, Any]], key: str) -> str:
    """The distinct values of a dotted param among ``runs``, comma-separated."""
    seen = []
    for run in runs:
        v: Any = run["params"]
        for part in key.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        if v not in seen:
            seen.append(v)
    return ", ".join(str(v) for v in seen)


def reduction_note(runs: list[dict[str, Any]], models: list[str]) -> str | None:
    """The KL reduction each model's runs used (what ran is the "What ran" note, built from
    the cells' records: kdlab.report_records.what_ran)."""
    by_model = {m: _values(runs, f"method_params.{m}.reduction") for m in models}
    reductions = "; ".join(f"{m} {r}" for m, r in by_model.items() if r not in ("None", ""))
    return f"KL reduction: {reductions}." if reductions else None


def with_devices(runs: list[dict[str, Any]], models: list[str], repo: Path) -> None:
    """Set each run's ``device`` to the one its stage records of ``models`` name (records of
    older code name none: the report then says "not recorded", never the param ``auto``)."""
    for run in runs:
        for model in models:
            record = run_record(repo, run["rev"], model_stage(model, run)) or {}
            if record.get("device"):
                run["device"] = record["device"]
                break


def model_stage(model: str, run: dict[str, Any] | None = None) -> str:
    """The stage that trains ``model``: ``student`` for ce, ``distill/<m>`` for a method, or
    the run's own (``grid/<cell>`` for a grid cell, :func:`kdlab.seeds.grid_cell_runs`)."""
    if run and model in (run.get("stages") or {}):
        return run["stages"][model]
    return {"ce": "student", "teacher": "teacher"}.get(model, f"distill/{model}")


def run_record(repo: Path, rev: str, stage: str) -> dict[str, Any] | None:
    """A stage's plain record (``metrics/<stage>.json``) as committed in run ``rev``; None when
    that run has none."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:{paths.metrics(stage).as_posix()}"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def wall_time_note(runs: list[dict[str, Any]], models: list[str], repo: Path) -> str | None:
    """The measured wall time of the runs' stages of ``models``, from each run's committed
    plain record (``git show REV:metrics/distill/<model>.json``)."""
    total, stages = 0.0, 0
    seen: set[str] = set()
    for run in runs:
        for model in models:
            stage = model_stage(model, run)
            record = run_record(repo, run["rev"], stage)
            # A stage an experiment did not rerun keeps its baseline's record: count it once;
            # a grid's cells share one wall time (each cell's record holds the whole grid's).
            key = json.dumps(
                ["grid", run["rev"]] if stage.startswith("grid/") else [model, record],
                sort_keys=True,
            )
            if record is not None and key not in seen:
                seen.add(key)
                total += float(record.get("wall_time_s", 0.0))
                stages += 1
    if not stages:
        return None
    return (
        f"Measured: {stages} stages of {', '.join(models)} over {len(runs)} runs took "
        f"{total:,.0f} s of wall time in all (their records' wall_time_s; a stage several runs "
        "share, trained once in their baseline, counts once)."
    )


def report(
    name: str,
    repo: Path,
    out_dir: Path | None = None,
    all_commits: bool = False,
    replace: bool = False,
) -> Path:
    """Write ``results/<name>.md`` (+ .csv, + ``results/records/<name>.json``) from the
    finished experiments of ``repo`` merged with the committed records
    (:func:`kdlab.report_records.write_report`)."""
    stem = (out_dir or repo / REPORTS) / name
    return write_report(name, build_report(name, repo, all_commits), stem, replace)[0]


def build_report(
    name: str, repo: Path, all_commits: bool = False, scale: str | None = None
) -> Built:
    """The table ``name`` from the finished experiments of ``repo`` at one scale (``scale``,
    else the committed records' main scale), with a header naming the alpha convention and the
    measured wall time, and the runs behind each cell."""
    known = [*GRIDS, *ROWS, *PAIRS]
    if name not in known:
        raise ValueError(f"unknown report {name!r}; known: {', '.join(known)}")
    scale = scale or main_scale(repo, name)
    runs, others = at_scale(runs_from_exp_show(exp_show(repo, all_commits)), scale)
    extra = None  # a direction check's rank agreement
    where: dict[tuple[str, str], list[dict[str, Any]]] = {}
    if name in GRIDS:
        spec: Any = GRIDS[name]
        df, models = build(runs, name, where), [m for _, m in spec.models]
    elif name in ROWS:
        spec = ROWS[name]
        df, models = build_rows(runs, name, where), sorted({m for _, m, _ in spec.rows})
        extra = rank_agreement(df, spec) if spec.baseline else None
    else:
        spec = PAIRS[name]
        df, models = build_pairs(runs, name, where), sorted({m for _, m, _ in spec.methods})
    title = paper_tables(spec.paper)[spec.table]["title"]
    cols = [c for c in df.columns if c.endswith(" n")]
    filled = sum(int(df[c].gt(0).sum()) for c in cols)
    # The runs behind the table: its presets, scores of its models, each setting once (with
    # --all-commits the same run shows up in every commit that carries its results).
    mine: dict[str, dict[str, Any]] = {}
    for r in runs:
        profile = json.loads(flatten(r["params"]).get("profile_name", '"default"'))
        if profile in spec.profiles and any(m in r["scores"] for m in models):
            mine.setdefault(json.dumps(r["params"], sort_keys=True), r)
    notes = [
        f"From {len(mine)} finished DVC runs of `dvc exp show` (presets "
        f"{', '.join(spec.profiles)}"
        + (f", scale {scale}" if scale else "")
        + f"); {filled} of {len(df) * len(cols)} cells have a run."
        + ("" if mine else " No run of these presets has finished."),
        ALPHA_CONVENTION[spec.paper] + ".",
        "ours = mean ± sample std (n - 1) over seeds when n > 1; — = no finished run.",
        "The paper's numbers come from its own scale (its full-length GPU runs): where ours "
        "ran shorter or on other data, the difference compares the two scales, not the methods.",
    ]
    reduction = reduction_note(list(mine.values()), models)
    if reduction:
        notes.insert(1, reduction)  # where the run's scale was said
    if getattr(spec, "note", ""):
        notes.append(spec.note)
    if extra:
        notes.append(extra)
    wall = wall_time_note(list(mine.values()), models, repo)
    if wall:
        notes.append(wall)
    behind = {id(r): r for rs in where.values() for r in rs}
    behind.update({id(r): r for r in mine.values()})
    with_devices(list(behind.values()), models, repo)
    full_title = title + getattr(spec, "title", "") + " (ours from DVC experiments)"
    return Built(
        df,
        full_title,
        notes,
        cell_runs=where,
        runs=list(mine.values()),
        scale=scale,
        other_scales=others,
    )


@dataclass(frozen=True)
class RowsSpec:
    """A table whose rows are named experiment settings (ablations, variants)."""

    paper: str
    table: str
    rows: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...]  # (row, our model, params)
    columns: tuple[tuple[str, str], ...]  # (paper column, our metric key)
    profiles: tuple[str, ...]
    best_of: str | None = None  # a swept param: keep its value with the best mean (SimKD's lr)
    best_column: str | None = None  # the paper column that reports best_of
    transposed: bool = False  # the paper prints settings as columns and metrics as rows
    # Direction checks: every row's first metric minus ``baseline``'s (our model, seed by seed in
    # the same runs) beside the paper's row minus ``paper_baseline`` (a paper column, or a row).
    baseline: str | None = None
    paper_baseline: str | None = None
    # The baseline is another run's ``baseline`` model with these params (same seed and swept
    # value) instead of the same run's (SimKD's study compares with plain SimKD, not CE).
    baseline_params: tuple[tuple[str, Any], ...] | None = None
    baseline_label: str = ""  # the direction columns' name for the baseline (default: its model)
    title: str = ""  # appended to the paper table's title
    note: str = ""  # a header line: the scale and what the table is (and is not)


_SIMKD = "method_params.simkd."
_SRRL = "method_params.srrl."
# SRRL rows: the official loss (L2 SR loss, connector on the last map) at alpha 0.5 (CE + L_FM +
# L_SR up to 1/2), both terms at weight 1 unless the row drops one.
_SRRL_BASE = (("alpha", 0.5), (_SRRL + "sr_loss", "l2"), (_SRRL + "connector", "map"))
_SRRL_END = ((_SRRL + "stage", -1), (_SRRL + "all_stages", 0))
_FM = ((_SRRL + "fm_weight", 1.0), (_SRRL + "sr_weight", 0), *_SRRL_END, *_SRRL_BASE)
_SR = ((_SRRL + "fm_weight", 0), (_SRRL + "sr_weight", 1.0), *_SRRL_END, *_SRRL_BASE)
_FM_SR = ((_SRRL + "fm_weight", 1.0), (_SRRL + "sr_weight", 1.0), *_SRRL_BASE)
_FM_SR_ANY_LOSS = tuple(kv for kv in (*_FM_SR, *_SRRL_END) if kv[0] != _SRRL + "sr_loss")
_KD_09 = (("alpha", 0.9), ("temperature", 4.0))  # SRRL's KD: alpha 0.9, T 4
_AT = (("alpha", 0.5),)
# SRRL's settings by the paper's row / column label: our model and the params of its runs.
_SRRL_ROWS = {
    "student": ("ce", ()),
    "kd": ("kd", _KD_09),
    "at": ("at", _AT),
    "fm": ("srrl", _FM),
    "sr": ("srrl", _SR),
    "fm+sr": ("srrl", (*_FM_SR, *_SRRL_END)),
    "ours": ("srrl", (*_FM_SR, *_SRRL_END)),
    "teacher": ("teacher", ()),
    "ofd": ("ofd", ()),  # not implemented here: always missing
    "rkd": ("rkd", _AT),
    "crd": ("crd", _AT),
    "kd+ours": ("kd_srrl", _AT),
    "at+ours": ("at_srrl", _AT),
}


def _srrl_rows(*labels: str) -> tuple[tuple[str, str, Pins], ...]:
    return tuple((label, *_SRRL_ROWS[label]) for label in labels)


# The SimKD study's "baseline" column (75.43) is plain SimKD ("simKD model as a baseline": one
# projector at the end, every sample, L2), not a CE student.
_SIMKD_PLAIN = (
    (_SIMKD + "projectors", "end"),
    (_SIMKD + "label_gated", 0),
    (_SIMKD + "loss", "l2"),
)
ROWS: dict[str, RowsSpec] = {
    "simkd_study": RowsSpec(
        "simkd",
        "study",
        tuple(
            (
                f"{name}/{loss}",
                "simkd",
                (
                    (_SIMKD + "projectors", proj),
                    (_SIMKD + "label_gated", gated),
                    (_SIMKD + "loss", loss),
                ),
            )
            for name, proj, gated in (
                ("multiple_projector_bias", "two_thirds", 0),
                ("all_layers_unbiased", "all", 0),
                ("ground_truth_labels", "end", 1),
            )
            for loss in ("l2", "kl")
        ),
        (("test_acc", "test_acc"),),
        ("simkd",),
        best_of="student.train.lr",
        best_column="lr_best",
        baseline="simkd",
        paper_baseline="baseline",
        baseline_params=_SIMKD_PLAIN,
        baseline_label="plain_simkd",
        note="Each variant is compared with plain SimKD (its `baseline` column, 75.43: one "
        "projector at the end, L2, every sample) of the same seed and learning rate.",
    ),
    "srrl_table1": RowsSpec(
        "srrl",
        "table1",
        (
            ("student", "ce", ()),
            ("teacher", "teacher", ()),
            ("fm@conv4", "srrl", _FM),
            ("sr@conv4", "srrl", _SR),
            ("fm+sr@conv4", "srrl", (*_FM_SR, *_SRRL_END)),
            ("fm+sr@conv2", "srrl", (*_FM_SR, (_SRRL + "stage", 0), (_SRRL + "all_stages", 0))),
            ("fm+sr@conv3", "srrl", (*_FM_SR, (_SRRL + "stage", 1), (_SRRL + "all_stages", 0))),
            ("fm+sr@conv2+3+4", "srrl", (*_FM_SR, (_SRRL + "all_stages", 1))),
        ),
        (("top1", "test_acc"), ("top5", "test_top5")),
        ("srrl",),
    ),
    # Tables 2-3 read the analyse stage's measures of Table 1's runs (and the KD / AT runs).
    "srrl_table2": RowsSpec(
        "srrl",
        "table2",
        _srrl_rows("student", "kd", "at", "fm", "sr", "fm+sr"),
        (("kl_teacher", "kl_teacher"), ("ce_label", "ce_label"), ("top1", "test_acc")),
        ("srrl",),
    ),
    "srrl_table3": RowsSpec(
        "srrl",
        "table3",
        _srrl_rows("student", "fm", "sr", "fm+sr"),
        # the paper's L2 distance is read as that of L2-normalised features (kdlab.analysis)
        (("l2_distance", "l2_normalised"), ("nmi", "nmi"), ("top1", "test_acc")),
        ("srrl",),
        transposed=True,
    ),
    "srrl_table9": RowsSpec(
        "srrl",
        "table9",
        (
            ("student", "ce", ()),
            ("teacher", "teacher", ()),
            *(
                (f"fm+sr_{loss}", "srrl", (*_FM_SR_ANY_LOSS, (_SRRL + "sr_loss", loss)))
                for loss in ("l2", "ce", "kl")
            ),
        ),
        (("top1", "test_acc"), ("top5", "test_top5")),
        ("srrl",),
    ),
}


# Reduced-scale direction checks on Fashion-MNIST (the `fmnist_direction` preset): the same rows,
# each compared with the CE student of the same run and seed, beside the paper's change.
_DIRECTION = (
    "Direction check on Fashion-MNIST at reduced scale (preset `fmnist_direction`), not a "
    "reproduction: read the `direction` column (does each row move top-1 against the CE student "
    "the paper's way?), not the accuracies. Our differences are paired by seed (the same run's "
    "CE student)."
)
ROWS["simkd_study_fmnist"] = replace(
    ROWS["simkd_study"],
    # SimKD trains on its feature loss alone: alpha 1 (the preset's 0.5 is SRRL's).
    rows=tuple((label, m, (*want, ("alpha", 1.0))) for label, m, want in ROWS["simkd_study"].rows),
    profiles=("fmnist_direction",),
    baseline_params=(*_SIMKD_PLAIN, ("alpha", 1.0)),
    title=" — direction check on Fashion-MNIST",
    note="Direction check on Fashion-MNIST at reduced scale (preset `fmnist_direction`), not a "
    "reproduction: read the `direction` column (does each row move top-1 against plain SimKD, "
    "the paper's baseline, the paper's way?), not the accuracies. Our differences are paired by "
    "seed (plain SimKD's run of the same seed). One learning rate ran (the preset's); the "
    "paper's is its best of five.",
)
ROWS["srrl_table1_fmnist"] = replace(
    ROWS["srrl_table1"],
    profiles=("fmnist_direction",),
    baseline="ce",
    paper_baseline="student",
    title=" — direction check on Fashion-MNIST",
    note=_DIRECTION + " conv2 / conv3 / conv4 are the ResNet-8 student's three stages (stage "
    "pairs 0, 1 and the end, paired with the ResNet18 teacher's stages at proportional depths). "
    "Top-5 is not measured on 10 classes (only above 10, where it is informative).",
)


def _matches(flat: dict[str, Any], want: tuple[tuple[str, Any], ...]) -> bool:
    return all(k in flat and flat[k] == v for k, v in want)


def _paper_cell(v: Any) -> tuple[str, float | None]:
    if isinstance(v, list):  # [mean, std]
        return f"{v[0]:.2f} ± {v[1]:.2f}", v[0]
    return ("—", None) if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v), v)


def _put_cell(row: dict[str, Any], col: str, by_seed: dict[int, float], published: Any) -> None:
    """Column ``col`` of a report row: ours (mean ± std), n, the paper's cell, ours - paper."""
    mean, std = mean_std(list(by_seed.values()))
    shown, paper = _paper_cell(published)
    row[f"{col} ours"] = _cell(mean, std)
    row[f"{col} n"] = len(by_seed)
    row[f"{col} paper"] = shown
    missing = mean is None or paper is None or math.isnan(mean)
    row[f"{col} ours - paper"] = None if missing else round(mean - paper, 2)


def build_rows(runs: list[dict[str, Any]], name: str, where: dict | None = None) -> pd.DataFrame:
    """The table ``name`` of :data:`ROWS`: per paper row, the runs matching its params (and
    listing its method), mean ± std (n - 1) over seeds; with ``best_of``, the swept value with
    the best mean of the first column."""
    spec = ROWS[name]
    published = _row_per_setting(paper_tables(spec.paper)[spec.table], spec.transposed)
    pcols = published["columns"]
    flats = _flat_runs(runs, spec.profiles)
    # {(swept value, seed): first metric} of the baseline runs when the baseline is a setting
    other_base: dict[tuple[Any, int], float] = {}
    if spec.baseline and spec.baseline_params is not None:
        for flat, scores, methods, _run in flats:
            value = (scores.get(spec.baseline) or {}).get(spec.columns[0][1])
            if (
                spec.baseline in methods
                and _matches(flat, spec.baseline_params)
                and isinstance(value, (int, float))
            ):
                swept = flat.get(spec.best_of) if spec.best_of else None
                other_base[swept, int(flat.get("seed", 0))] = value
    # The baseline model of each run by its revision: a grid cell (kdlab.seeds.grid_cell_runs)
    # carries only its method's scores, so it is paired with its run's CE student this way.
    base_of_rev = {
        run["rev"]: (scores.get(spec.baseline) or {}).get(spec.columns[0][1])
        for _flat, scores, _methods, run in flats
        if spec.baseline and "rev" in run and spec.baseline in scores
    }
    out = []
    order = []  # (our mean, the paper's number) of each distilled setting: rank_agreement
    for (label, model, want), prow in zip(spec.rows, published["rows"]):
        if prow[0] != label:
            raise ValueError(f"{name}: row {label!r} does not match the paper's {prow[0]!r}")
        # {best_of value: {metric: {seed: value}}}
        groups: dict[Any, dict[str, dict[int, float]]] = {}
        behind: dict[Any, list[dict[str, Any]]] = {}  # best_of value -> its runs
        for flat, scores, methods, run in flats:
            listed = model in ("ce", "teacher") or model in methods
            if not listed or not _matches(flat, want):
                continue
            values = scores.get(model) or {}
            g = groups.setdefault(flat.get(spec.best_of) if spec.best_of else None, {})
            behind.setdefault(flat.get(spec.best_of) if spec.best_of else None, []).append(run)
            seed = int(flat.get("seed", 0))
            for _, key in spec.columns:
                if isinstance(values.get(key), (int, float)):
                    g.setdefault(key, {})[seed] = values[key]
            if spec.baseline_params is not None:
                base = other_base.get((flat.get(spec.best_of) if spec.best_of else None, seed))
            else:
                base = (scores.get(spec.baseline) or {}).get(spec.columns[0][1])
                if base is None:
                    base = base_of_rev.get(run.get("rev"))
            if spec.baseline and isinstance(base, (int, float)):
                g.setdefault(_BASELINE, {})[seed] = base  # the same run's baseline model
        first = spec.columns[0][1]
        best = max(
            groups,
            key=lambda b: mean_std(list(groups[b].get(first, {}).values()))[0] or -math.inf,
            default=None,
        )
        chosen = groups.get(best, {})
        row: dict[str, Any] = {pcols[0]: label}
        if spec.best_of:
            row[f"{spec.best_column} ours"] = best
            row[f"{spec.best_column} paper"] = prow[pcols.index(spec.best_column)]
        for col, key in spec.columns:
            _put_cell(row, col, chosen.get(key, {}), prow[pcols.index(col)])
            if where is not None and chosen.get(key):
                where[(col, label) if spec.transposed else (label, col)] = behind[best]
        if spec.baseline:
            _put_direction(row, spec, chosen, prow, published)
            if model not in (spec.baseline, "teacher"):
                ours = mean_std(list(chosen.get(first, {}).values()))[0]
                order.append((ours, _number(prow[pcols.index(spec.columns[0][0])])))
        out.append(row)
    df = pd.DataFrame(out)
    df = _metric_per_row(df, spec) if spec.transposed else df
    df.attrs["order"] = order  # metadata, not a column: write_table leaves it out
    return df


_BASELINE = "__baseline__"  # key of the baseline model's per-seed values in a row's group


def rank_agreement(df: pd.DataFrame, spec: RowsSpec) -> str | None:
    """Kendall's tau (scipy, tau-b) between our mean and the paper's first metric over the
    distilled settings (not the baseline's row, not the teacher's) that both have, from the
    unrounded numbers :func:`build_rows` keeps in ``df.attrs["order"]``: do the settings order
    as in the paper? None with fewer than three such rows."""
    from scipy.stats import kendalltau

    pairs = [(a, b) for a, b in df.attrs.get("order", []) if a is not None and b is not None]
    if len(pairs) < 3:
        return None
    tau = kendalltau([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return (
        f"Order of the {len(pairs)} distilled settings, ours against the paper's (by "
        f"{spec.columns[0][0]}): Kendall's tau {tau:+.2f} (+1: the same order, -1: reversed)."
    )


def _number(v: Any) -> float | None:
    """A published cell as a number (the mean of ``[mean, std]``); None when not printed."""
    v = v[0] if isinstance(v, list) else v
    return float(v) if isinstance(v, (int, float)) else None


def direction(
    ours: float | None, std: float | None, paper: float | None, paper_std: float | None = None
) -> str:
    """Does our change against the baseline go the paper's way? ``same`` / ``opposite``, noting
    a side whose mean change is smaller than its own spread over seeds (``ours within 1 std``,
    ``paper's within 1 std`` where the paper prints a std); ``—`` when either side is missing
    or the paper shows no change (the baseline row itself)."""
    if ours is None or paper is None or paper == 0:
        return "—"
    if ours == 0:
        return "no change"
    word = "same" if (ours > 0) == (paper > 0) else "opposite"
    notes = []
    if std is not None and abs(ours) < std:
        notes.append("ours within 1 std")
    if paper_std is not None and abs(paper) < paper_std:
        notes.append("paper's within 1 std")
    return word + (f" ({'; '.join(notes)})" if notes else "")


def _put_direction(
    row: dict[str, Any],
    spec: RowsSpec,
    chosen: dict[str, dict[int, float]],
    prow: list[Any],
    published: dict[str, Any],
) -> None:
    """Columns of a direction check: our first metric minus the baseline's, paired by seed
    (mean ± std (n - 1) of the per-seed differences), the paper's difference, and whether the
    two agree in sign."""
    col, key = spec.columns[0]
    pcols = published["columns"]
    ours, base = chosen.get(key, {}), chosen.get(_BASELINE, {})
    mean, std = mean_std([ours[s] - base[s] for s in sorted(ours) if s in base])
    if spec.paper_baseline in pcols:
        paper_base = _number(prow[pcols.index(spec.paper_baseline)])
    else:
        ref = [r for r in published["rows"] if r[0] == spec.paper_baseline]
        if not ref:
            raise ValueError(f"{spec.paper}.{spec.table}: no row {spec.paper_baseline!r}")
        paper_base = _number(ref[0][pcols.index(col)])
    cell = prow[pcols.index(col)]
    mine = _number(cell)
    paper = None if mine is None or paper_base is None else round(mine - paper_base, 2)
    label = f"{col} - {spec.baseline_label or spec.baseline}"
    row[f"{label} ours"] = _cell(mean, std)
    row[f"{label} paper"] = paper
    # The paper's std over its seeds, where printed ([mean, std]), bounds its own change's noise.
    row["direction"] = direction(mean, std, paper, cell[1] if isinstance(cell, list) else None)


def _row_per_setting(published: dict[str, Any], transposed: bool) -> dict[str, Any]:
    """A published table with one row per setting (a transposed one is turned around)."""
    if not transposed:
        return published
    cols, rows = published["columns"], published["rows"]
    return {
        "columns": ["setting", *(r[0] for r in rows)],
        "rows": [[c, *(r[i] for r in rows)] for i, c in enumerate(cols) if i > 0],
    }


def _metric_per_row(df: pd.DataFrame, spec: RowsSpec) -> pd.DataFrame:
    """The paper's transposed layout: one row per metric, ours / n / paper / difference of
    every setting side by side."""
    rows = []
    for col, _ in spec.columns:
        row: dict[str, Any] = {"metric": col}
        for _, r in df.iterrows():
            for part in ("ours", "n", "paper", "ours - paper"):
                row[f"{r.iloc[0]} {part}"] = r[f"{col} {part}"]
        rows.append(row)
    return pd.DataFrame(rows)


Pins = tuple[tuple[str, Any], ...]  # (dotted param, value) pairs a run must have

# Builder defaults of params a preset may leave out (ResNets of resnet_cifar.py: width 64).
PARAM_DEFAULTS = {"student.options.width": 64, "teacher.options.width": 64}


@dataclass(frozen=True)
class PairSpec:
    """A table of teacher/student pairs x methods (SRRL Tables 5, 6, 10-12): each cell is the
    runs of one pair (its models, widths, data set) and one method (its model name and the
    params its paper setting pins)."""

    paper: str
    table: str
    pairs: tuple[tuple[str, Pins], ...]  # (paper label, the params that make the pair)
    methods: tuple[tuple[str, str, Pins], ...]  # (paper label, our model, the method's pins)
    profiles: tuple[str, ...]
    pairs_are_rows: bool = True  # False: methods are rows, pairs columns (Tables 11-12)
    seeds: tuple[int | None, ...] = (None,)  # seeds `kdlab queue` runs (None: the preset's)
    metric: str = "test_acc"
    note: str = ""
    pair_metrics: tuple[str, ...] = ()  # one metric per pair instead of ``metric`` (Table 4)


def _pair(student: str, teacher: str, *extra: tuple[str, Any], sw=None, tw=None) -> Pins:
    pins = [("student.model", student), ("teacher.model", teacher)]
    pins += [("student.options.width", sw)] if sw else []
    pins += [("teacher.options.width", tw)] if tw else []
    return (*pins, *extra)


def _pin_value(flat: dict[str, Any], key: str) -> Any:
    return flat[key] if key in flat else PARAM_DEFAULTS.get(key)


def _pinned(flat: dict[str, Any], pins: Pins) -> bool:
    return all(_pin_value(flat, k) == v for k, v in pins)


_C100 = ("data.name", "cifar100")
_C10 = ("data.name", "cifar10")
# SRRL's AT (appendix, after Zagoruyko & Komodakis): after every group of a WRN, after the last
# two groups of a ResNet; pairs with a ResNet (either side) take the ResNet rule.
_AT_LAST_TWO = (("method_params.at.last_pairs", 2), ("method_params.at_srrl.last_pairs", 2))
_SRRL_PAIRS = (
    ("wrn_16_2/wrn_40_4", _pair("wrn_16_2", "wrn_40_4", _C100)),
    ("wrn_16_4/wrn_40_4", _pair("wrn_16_4", "wrn_40_4", _C100)),
    ("wrn_10_10/wrn_16_10", _pair("wrn_10_10", "wrn_16_10", _C100)),
    (
        "resnet10_0.34m/resnet34_1.39m",
        _pair("resnet10", "resnet34", _C100, *_AT_LAST_TWO, sw=16, tw=16),
    ),
    (
        "resnet18_0.75m/resnet50_1.99m",
        _pair("resnet18", "resnet50", _C100, *_AT_LAST_TWO, sw=16, tw=16),
    ),
    (
        "resnet10_4.95m/resnet34_21.33m",
        _pair("resnet10", "resnet34", _C100, *_AT_LAST_TWO, sw=64, tw=64),
    ),
    ("wrn_16_2/resnet34", _pair("wrn_16_2", "resnet34", _C100, *_AT_LAST_TWO, tw=64)),
    ("mobilenetv2/resnet34", _pair("mobilenetv2", "resnet34", _C100, *_AT_LAST_TWO, tw=64)),
    ("mobilenetv2/wrn_40_4", _pair("mobilenetv2", "wrn_40_4", _C100)),
)


def _c10_resnet(role: str) -> Pins:
    """SRRL's CIFAR-10 ResNet recipe (appendix) for ``role`` (teacher / student): 350 epochs,
    lr x0.1 at 150, 250, 320 (the srrl_cifar10 preset holds the WRN recipe)."""
    return (
        (f"{role}.train.epochs", 350),
        (f"{role}.train.milestones", [150, 250, 320]),
        (f"{role}.train.lr_decay", 0.1),
    )


_C10_RT = (*_c10_resnet("teacher"), *_AT_LAST_TWO)  # a ResNet teacher
_C10_RR = (*_c10_resnet("student"), *_C10_RT)  # ResNet teacher and student
_SRRL_SIZES = (
    "ResNet pairs named by size are CIFAR-style ResNets: width 64 gives the 4.95M / 21.33M "
    "pair exactly; the 0.34M / 1.39M and 0.75M / 1.99M pairs run at width 16 (0.32M / 1.35M "
    "and 0.71M / 1.53M: close, not the paper's models; docs/zoo.md)."
)
# CRD benchmark (srrl_crd preset): KD at its alpha 0.9; every other method at alpha 0.5 with its
# reference weight (method_params), i.e. the reference code's CE + w L times 1/2.
_CRD_METHODS = (
    ("Teacher", "teacher", ()),
    ("Student", "ce", ()),
    ("KD", "kd", (("alpha", 0.9),)),
    *(
        (label, model, (("alpha", 0.5),))
        for label, model in (
            ("FitNet", "fitnet"),
            ("AT", "at"),
            ("SP", "sp"),
            ("CC", "cc"),
            ("VID", "vid"),
            ("RKD", "rkd"),
            ("PKT", "pkt"),
            ("AB", "ab"),
            ("FT", "ft"),
            ("FSP", "fsp"),
            ("NST", "nst"),
            ("CRD", "crd"),
            ("Ours", "srrl"),
        )
    ),
)
_CRD_NOTE = (
    "Cells are the mean of 3 seeds (0, 1, 2), as the paper's. KD at alpha 0.9 (T 4); every "
    "other method at alpha 0.5 with its reference weight: the reference code's CE + w L "
    "times 1/2."
)


def _small_lr(student: str) -> Pins:
    """RepDistiller's student lr 0.01 for MobileNetV2 and ShuffleNet students
    (``train_student.py`` lines 93-94; the recipe's 0.05 otherwise)."""
    small = ("mobilenetv2", "mobilenetv2_half", "shufflev1", "shufflev2")
    return (("student.train.lr", 0.01),) if student in small else ()


PAIRS: dict[str, PairSpec] = {
    # ReffAKD Table 8: one row per data set (its preset), every method at T 4, alpha 0.9.
    "reffakd_table8": PairSpec(
        "reffakd",
        "table8",
        (("cifar100", (_C100,)), ("tiny_imagenet", (("data.name", "tiny_imagenet"),))),
        (
            ("resnet50", "teacher", ()),
            ("resnet18", "ce", ()),
            *(
                (m, m, (("temperature", 4.0), ("alpha", 0.9)))
                for m in ("at", "kd", "fitnet", "kdsvd", "pkt", "rkd", "dkd", "reffakd_dkd")
            ),
            ("reffakd", "reffakd", (("temperature", 4.0), ("alpha", 0.9))),
        ),
        ("reffakd_cifar100", "reffakd_tiny"),
        note="Every method at the caption's T 4 and alpha 0.9 (alpha weighs the distillation "
        "term in ReffAKD too), from the reffakd_cifar100 and reffakd_tiny presets.",
    ),
    "srrl_table4": PairSpec(
        "srrl",
        "table4",
        tuple(
            (f"{student}/{ds}", _pair(student, "wrn_40_4", _C100))
            for student in ("wrn_16_4", "mobilenetv2")
            for ds in ("stl10", "cifar100")
        ),
        _srrl_rows("kd", "crd", "fm", "sr", "fm+sr"),
        ("srrl",),
        pair_metrics=("probe_stl10", "probe_cifar100") * 2,
        note="Linear probe (the probe stage): a linear classifier on the student's frozen "
        "penultimate features, trained on the probed set's training split (SGD, cosine, "
        "params.yaml probe), its final test top-1. The paper does not name the MobileNetV2 "
        "student's teacher: WRN-40-4 here (the preset's).",
    ),
    "srrl_table5": PairSpec(
        "srrl",
        "table5",
        (
            ("wrn_16_1/wrn_16_2", _pair("wrn_16_1", "wrn_16_2", _C10)),
            ("wrn_16_2/wrn_40_2", _pair("wrn_16_2", "wrn_40_2", _C10)),
            ("resnet8/resnet26", _pair("resnet8", "resnet26", _C10, *_C10_RR)),
            ("resnet14/resnet26", _pair("resnet14", "resnet26", _C10, *_C10_RR)),
            # the thin ResNet-18 / ResNet-34 (0.7M / 1.4M): width 16
            ("resnet18/resnet34", _pair("resnet18", "resnet34", _C10, *_C10_RR, sw=16, tw=16)),
            ("wrn_16_1/resnet26", _pair("wrn_16_1", "resnet26", _C10, *_C10_RT)),
        ),
        _srrl_rows("student", "kd", "at", "ofd", "rkd", "ours", "teacher"),
        ("srrl_cifar10",),
        note="OFD is not implemented here: its column stays missing. The srrl_cifar10 preset: "
        "WRNs 200 epochs (lr /5 at 60, 120, 160), ResNets 350 epochs (lr /10 at 150, 250, 320); "
        "AT after every WRN group, after the last two groups when a ResNet is in the pair. "
        "ResNet-18 / ResNet-34 are width 16 (0.70M / 1.33M at 10 classes; docs/zoo.md).",
    ),
    "srrl_table6": PairSpec(
        "srrl",
        "table6",
        _SRRL_PAIRS,
        _srrl_rows("student", "kd", "at", "ofd", "rkd", "crd", "ours", "teacher"),
        ("srrl",),
        note="OFD is not implemented here: its column stays missing. " + _SRRL_SIZES,
    ),
    "srrl_table10": PairSpec(
        "srrl",
        "table10",
        _SRRL_PAIRS,
        _srrl_rows("student", "kd", "at", "kd+ours", "at+ours", "ours", "teacher"),
        ("srrl",),
        note="kd+ours and at+ours are the methods kd_srrl and at_srrl (SRRL's terms plus KD's or "
        "AT's at their reference weights 1 and 1000; the paper gives no weights for the "
        "combination) at alpha 0.5. " + _SRRL_SIZES,
    ),
    "srrl_table11": PairSpec(
        "srrl",
        "table11",
        tuple(
            (f"{t}/{s}", _pair(s, t))
            for t, s in (
                ("wrn_40_2", "wrn_16_2"),
                ("wrn_40_2", "wrn_40_1"),
                ("resnet56", "resnet20"),
                ("resnet110", "resnet20"),
                ("resnet110", "resnet32"),
                ("resnet32x4", "resnet8x4"),
                ("vgg13", "vgg8"),
            )
        ),
        _CRD_METHODS,
        ("srrl_crd",),
        pairs_are_rows=False,
        seeds=(0, 1, 2),
        note=_CRD_NOTE,
    ),
    "srrl_table12": PairSpec(
        "srrl",
        "table12",
        tuple(
            (f"{t}/{s}", _pair(model or s, t, *_small_lr(model or s)))
            for t, s, model in (
                # CRD's MobileNetV2 student is RepDistiller's mobile_half (width 0.5)
                ("vgg13", "mobilenetv2", "mobilenetv2_half"),
                ("resnet50", "mobilenetv2", "mobilenetv2_half"),
                ("resnet50", "vgg8", None),
                ("resnet32x4", "shufflenetv1", "shufflev1"),
                ("resnet32x4", "shufflenetv2", "shufflev2"),
                ("wrn_40_2", "shufflenetv1", "shufflev1"),
            )
        ),
        tuple(m for m in _CRD_METHODS if m[1] != "fsp"),
        ("srrl_crd",),
        pairs_are_rows=False,
        seeds=(0, 1, 2),
        note=_CRD_NOTE,
    ),
}


def _flat_runs(runs: list[dict[str, Any]], profiles: tuple[str, ...]) -> list[tuple]:
    """``(flat params, scores, listed methods)`` of the runs of ``profiles``."""
    out = []
    for r in runs:
        flat = {k: json.loads(v) for k, v in flatten(r["params"]).items()}
        if flat.get("profile_name", "default") in profiles:
            out.append((flat, r["scores"], listed_methods(r["params"]), r))
    return out


def build_pairs(runs: list[dict[str, Any]], name: str, where: dict | None = None) -> pd.DataFrame:
    """The table ``name`` of :data:`PAIRS` in the paper's layout: per pair and method, ours
    (mean ± std over seeds), n, the paper's number and ours - paper."""
    spec = PAIRS[name]
    published = paper_tables(spec.paper)[spec.table]
    pcols = published["columns"]
    by_label = {row[0]: row for row in published["rows"]}
    flats = _flat_runs(runs, spec.profiles)
    outer, inner = (spec.pairs, spec.methods) if spec.pairs_are_rows else (spec.methods, spec.pairs)
    out = []
    for o in outer:
        prow = by_label.get(o[0])
        if prow is None:
            raise ValueError(f"{name}: row {o[0]!r} is not a row of the paper's table")
        row: dict[str, Any] = {pcols[0]: o[0]}
        for i in inner:
            (pair, pair_pins), (method, model, pins) = (o, i) if spec.pairs_are_rows else (i, o)
            metric = (
                spec.pair_metrics[[p for p, _ in spec.pairs].index(pair)]
                if spec.pair_metrics
                else spec.metric
            )
            by_seed: dict[int, float] = {}
            for flat, scores, listed, run in flats:
                if (model in ("ce", "teacher") or model in listed) and _pinned(
                    flat, (*pair_pins, *pins)
                ):
                    value = (scores.get(model) or {}).get(metric)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        by_seed[int(flat.get("seed", 0))] = value
                        if where is not None:
                            where.setdefault((o[0], i[0]), []).append(run)
            _put_cell(row, i[0], by_seed, prow[pcols.index(i[0])])
        out.append(row)
    return pd.DataFrame(out)


def _run_groups(spec: PairSpec, methods: set[str]) -> list[tuple[dict[str, Any], list[str]]]:
    """The table's methods (those registered) packed into as few runs as their pins allow:
    ``[(pins, [method, ...]), ...]``; methods whose pins agree share a run."""
    groups: list[tuple[dict[str, Any], list[str]]] = []
    for _, model, pins in spec.methods:
        if model in ("ce", "teacher") or model not in methods:
            continue  # every run trains the teacher and the CE student; not implemented here
        for group_pins, models in groups:
            if all(group_pins.get(k, v) == v for k, v in pins):
                group_pins.update(pins)
                models.append(model)
                break
        else:
            groups.append((dict(pins), [model]))
    return groups


def queue_overrides(name: str, preset: dict[str, Any], methods: set[str]) -> list[list[str]]:
    """The ``-S`` overrides of every experiment that fills the table ``name`` of
    :data:`PAIRS`, from ``preset`` (its resolved params.yaml): one run per pair, seed and
    group of methods whose pins agree. Only what differs from the preset is overridden; a
    key the preset lacks is added with ``+`` (DVC refuses a new key otherwise)."""
    spec = PAIRS[name]
    profile = preset.get("profile_name")
    if profile not in spec.profiles:
        raise ValueError(
            f"{name}'s experiments start from preset {' or '.join(spec.profiles)}, but "
            f"params.yaml holds {profile!r}: run `kdlab preset {spec.profiles[0]}` (and commit "
            "it) first"
        )
    runs = []
    for _, pair_pins in spec.pairs:
        for seed in spec.seeds:
            for group_pins, models in _run_groups(spec, methods):
                pins = {**dict(pair_pins), **group_pins}
                if seed is not None:
                    pins["seed"] = seed
                over = []
                for key, value in pins.items():
                    found, current = lookup(preset, key)
                    if not found:
                        over.append(f"+{key}={value}")
                    elif current != value:
                        over.append(f"{key}={value}")
                listed = set(preset.get("methods") or {})
                over += [f"~methods.{m}" for m in sorted(listed - set(models))]
                over += [f"+methods.{m}=teacher" for m in models if m not in listed]
                if over not in runs:  # rows that differ only in their metric share runs
                    runs.append(over)
    return runs
