"""What every report writer shares: the three table shapes a paper table of DVC experiments
takes (:class:`GridSpec`, :class:`RowsSpec`, :class:`PairSpec`; built by
:mod:`kdlab.reports.experiments`), a cell's mean ± std, and the header notes (each paper's alpha
convention, the KL reduction, the devices and the measured wall time of the runs behind a table).
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kdlab.reports.runs import model_stage, run_record

Pins = tuple[tuple[str, Any], ...]  # (dotted param, value) pairs a run must have

# Builder defaults of params a preset may leave out (ResNets of resnet_cifar.py: width 64).
PARAM_DEFAULTS = {"student.options.width": 64, "teacher.options.width": 64}


@dataclass(frozen=True)
class GridSpec:
    """How one paper table maps onto experiments."""

    paper: str
    table: str
    row_params: tuple[str, ...]  # params whose values name a row, in the paper's row label
    models: tuple[tuple[str, str], ...]  # (paper column, our metrics model) pairs
    presets: tuple[str, ...]  # the presets whose runs belong to the table (runs.preset_of)
    metric: str = "test_acc"


@dataclass(frozen=True)
class RowsSpec:
    """A table whose rows are named experiment settings (ablations, variants)."""

    paper: str
    table: str
    rows: tuple[tuple[str, str, tuple[tuple[str, Any], ...]], ...]  # (row, our model, params)
    columns: tuple[tuple[str, str], ...]  # (paper column, our metric key)
    presets: tuple[str, ...]
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


@dataclass(frozen=True)
class PairSpec:
    """A table of teacher/student pairs x methods (SRRL Tables 5, 6, 10-12): each cell is the
    runs of one pair (its models, widths, data set) and one method (its model name and the
    params its paper setting pins)."""

    paper: str
    table: str
    pairs: tuple[tuple[str, Pins], ...]  # (paper label, the params that make the pair)
    methods: tuple[tuple[str, str, Pins], ...]  # (paper label, our model, the method's pins)
    presets: tuple[str, ...]
    pairs_are_rows: bool = True  # False: methods are rows, pairs columns (Tables 11-12)
    seeds: tuple[int | None, ...] = (None,)  # seeds the experiments run (None: the preset's)
    metric: str = "test_acc"
    note: str = ""
    pair_metrics: tuple[str, ...] = ()  # one metric per pair instead of ``metric`` (Table 4)
    # One preset per pair (same order as ``pairs``) when each pair is its own recipe (ReffAKD
    # Table 8: a data set per row, each with its preset's input size, crop and reduction): a
    # pair's cells come only from runs of its preset, and `kdlab queue` queues only the pairs
    # of the preset in params.yaml. Empty: any of ``presets``.
    pair_presets: tuple[str, ...] = ()
    # The paper fixes one teacher per pair and varies only the students over ``seeds`` (the CRD
    # benchmark, SRRL Tables 11-12): the seeds are ``student_seed``'s, the teacher keeps the
    # preset's ``seed``, and a run's seed in the table is its students' seed (the teacher's row:
    # its own seed, one teacher).
    fixed_teacher: bool = False


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (n - 1); std None for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    if math.isnan(mean):  # a diverged run (kdlab.reports.runs.mark_diverged): no number to print
        return "diverged"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


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
    the cells' records: kdlab.reports.records.what_ran)."""
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
