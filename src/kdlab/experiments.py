"""Paper tables from finished DVC experiments (``dvc exp show --json``).

A grid is a queue of experiments (``dvc exp run --queue -S temperature=5 -S alpha=0.8`` ...,
then ``dvc queue start``); :func:`report` groups the finished runs by the params that define the
table's rows (e.g. ``temperature`` x ``alpha``), keeps only runs of the table's preset
(``profile_name``), reports mean +- sample std (n - 1) where seeds repeat, and puts the paper's
published cell beside ours. A cell with no finished run is missing, never another run's number.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab import paths
from kdlab.catalogue import paper_tables
from kdlab.seeds import exp_show, flatten, runs_from_exp_show
from kdlab.tables import write_table


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


def _model_of(path: str) -> str | None:
    if path == paths.metrics("teacher").as_posix():
        return "teacher"
    if path == paths.metrics("student").as_posix():
        return "ce"
    prefix = (paths.METRICS / "distill").as_posix() + "/"
    if path.startswith(prefix) and path.endswith(".json"):
        return path[len(prefix) : -len(".json")]
    return None


def _row_label(values: dict[str, Any]) -> str:
    """``"T=20, alpha=0.6"``: the paper's own row labels in papers/*.yaml."""
    names = {"temperature": "T"}
    return ", ".join(f"{names.get(k, k)}={v:g}" for k, v in values.items())


def collect(runs: list[dict[str, Any]], spec: GridSpec) -> dict[str, dict[str, dict[int, float]]]:
    """``{row label: {our model: {seed: value}}}`` of the runs of ``spec.profiles``."""
    cells: dict[str, dict[str, dict[int, float]]] = {}
    for run in runs:
        flat = {k: json.loads(v) for k, v in flatten(run["params"]).items()}
        if flat.get("profile_name", "default") not in spec.profiles:
            continue
        if any(flat.get(p) is None for p in spec.row_params):
            continue
        label = _row_label({p: float(flat[p]) for p in spec.row_params})
        methods = set(flat.get("methods") or [])
        for path, values in run["metrics"].items():
            model = _model_of(path)
            value = values.get(spec.metric)
            # Only the methods this run lists: a stale file of another run is not this run's.
            if model is None or (model not in ("teacher", "ce") and model not in methods):
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.setdefault(label, {}).setdefault(model, {})[int(flat.get("seed", 0))] = value
    return cells


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (n - 1); std None for one value, both None for none."""
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "—"
    return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def build(runs: list[dict[str, Any]], name: str) -> pd.DataFrame:
    """The table ``name`` of :data:`GRIDS` in the paper's layout: per row and column, ours
    (mean ± std), n, the paper's number and ours - paper."""
    if name not in GRIDS:
        raise ValueError(f"unknown report {name!r}; known: {', '.join(GRIDS)}")
    spec = GRIDS[name]
    published = paper_tables(spec.paper)[spec.table]
    cols = published["columns"]
    cells = collect(runs, spec)
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


def report(name: str, repo: Path, out_dir: Path | None = None, all_commits: bool = False) -> Path:
    """Write ``tables/<name>.md`` (+ .csv) from the finished experiments of ``repo``."""
    runs = runs_from_exp_show(exp_show(repo, all_commits))
    df = build(runs, name)
    spec = GRIDS[name]
    title = paper_tables(spec.paper)[spec.table]["title"]
    filled = sum(int(df[f"{c} n"].gt(0).sum()) for c, _ in spec.models)
    notes = [
        f"From {len(runs)} finished DVC runs of `dvc exp show` (presets "
        f"{', '.join(spec.profiles)}); {filled} of {len(df) * len(spec.models)} cells have a run.",
        "ours = mean ± sample std (n - 1) over seeds when n > 1; — = no finished run.",
        "Our scale is the preset's (see its params), not the paper's 200-epoch GPU runs.",
    ]
    stem = (out_dir or repo / paths.TABLES) / name
    write_table(df, stem, title + " (ours from DVC experiments)", notes)
    return stem.with_suffix(".md")
