"""Paper tables from finished DVC experiments (``dvc exp show --json``).

A grid is a queue of experiments (``dvc exp run --queue -S temperature=5 -S alpha=0.8`` ...,
then ``dvc queue start``); :func:`report` groups the finished runs by the params that define the
table's rows (e.g. ``temperature`` x ``alpha``), keeps only runs of the table's preset
(:func:`~kdlab.reports.runs.preset_of`), reports mean +- sample std (n - 1) where seeds
repeat, and puts the paper's published cell beside ours. A cell with no finished run is
missing, never another run's number.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.reports.base import (
    ALPHA_CONVENTION,
    PARAM_DEFAULTS,
    GridSpec,
    PairSpec,
    Pins,
    RowsSpec,
    _cell,
    mean_std,
    reduction_note,
    wall_time_note,
    with_devices,
)
from kdlab.reports.papers import paper_tables
from kdlab.reports.records import RESULTS, Built, at_scale, main_scale, write_report
from kdlab.reports.registry import GRIDS, PAIRS, ROWS
from kdlab.reports.runs import (
    exp_show,
    flatten,
    listed_methods,
    lookup,
    preset_of,
    runs_from_exp_show,
)


def _row_label(values: dict[str, Any]) -> str:
    """``"T=20, alpha=0.6"``: the paper's own row labels in papers/*.yaml."""
    names = {"temperature": "T"}
    return ", ".join(f"{names.get(k, k)}={v:g}" for k, v in values.items())


def collect(
    runs: list[dict[str, Any]], spec: GridSpec, where: dict | None = None
) -> dict[str, dict[str, dict[int, float]]]:
    """``{row label: {our model: {seed: value}}}`` of the runs of ``spec.presets``; ``where``
    (when given) gets ``{(row label, our model): [run, ...]}``, the runs behind each cell."""
    cells: dict[str, dict[str, dict[int, float]]] = {}
    # A cell's seed can have several runs (--all-commits reads every commit's): the newest wins,
    # so an old commit's run of since-changed code never overrides its rerun.
    newest: dict[tuple[str, str, int], str] = {}
    for run in runs:
        if preset_of(run["params"]) not in spec.presets:
            continue
        flat = {k: json.loads(v) for k, v in flatten(run["params"]).items()}
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
                seed = int(flat.get("seed", 0))
                stamp = str(run.get("timestamp") or "")
                if newest.get((label, model, seed), "") > stamp:
                    continue
                newest[label, model, seed] = stamp
                cells.setdefault(label, {}).setdefault(model, {})[seed] = value
                if where is not None:
                    where.setdefault((label, model), []).append(run)
    return cells


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


def report(
    name: str,
    repo: Path,
    out_dir: Path | None = None,
    all_commits: bool = False,
    replace: bool = False,
) -> Path:
    """Write ``results/<name>.md`` (+ .csv, + ``results/records/<name>.json``) from the
    finished experiments of ``repo`` merged with the committed records
    (:func:`kdlab.reports.records.write_report`)."""
    stem = (out_dir or repo / RESULTS) / name
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
        if preset_of(r["params"]) in spec.presets and any(m in r["scores"] for m in models):
            mine.setdefault(json.dumps(r["params"], sort_keys=True), r)
    notes = [
        f"From {len(mine)} finished DVC runs of `dvc exp show` (presets "
        f"{', '.join(spec.presets)}"
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
    flats = _flat_runs(runs, spec.presets)
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
    # The baseline model of each run by its revision: a grid cell (runs.grid_cell_runs) carries
    # only its method's scores, so it is paired with its run's CE student this way.
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
            if any(isinstance(values.get(key), (int, float)) for _, key in spec.columns):
                # only the runs with a number here are the row's sources (not every run whose
                # params match: a commit whose metrics are stale has params and no scores)
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


def _pin_value(flat: dict[str, Any], key: str) -> Any:
    return flat[key] if key in flat else PARAM_DEFAULTS.get(key)


def _pinned(flat: dict[str, Any], pins: Pins) -> bool:
    return all(_pin_value(flat, k) == v for k, v in pins)


def _flat_runs(runs: list[dict[str, Any]], names: tuple[str, ...]) -> list[tuple]:
    """``(flat params, scores, listed methods)`` of the runs of the presets ``names``."""
    out = []
    for r in runs:
        if preset_of(r["params"]) in names:
            flat = {k: json.loads(v) for k, v in flatten(r["params"]).items()}
            out.append((flat, r["scores"], listed_methods(r["params"]), r))
    return out


def build_pairs(runs: list[dict[str, Any]], name: str, where: dict | None = None) -> pd.DataFrame:
    """The table ``name`` of :data:`PAIRS` in the paper's layout: per pair and method, ours
    (mean ± std over seeds), n, the paper's number and ours - paper."""
    spec = PAIRS[name]
    published = paper_tables(spec.paper)[spec.table]
    pcols = published["columns"]
    by_label = {row[0]: row for row in published["rows"]}
    flats = _flat_runs(runs, spec.presets)
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
            own = pair_preset(spec, pair)
            for flat, scores, listed, run in flats:
                if own is not None and preset_of(run["params"]) != own:
                    continue  # another recipe's run (e.g. Tiny ImageNet at 32x32)
                if (model in ("ce", "teacher") or model in listed) and _pinned(
                    flat, (*pair_pins, *pins)
                ):
                    value = (scores.get(model) or {}).get(metric)
                    if isinstance(value, (int, float)) and not isinstance(value, bool):
                        by_seed[run_seed(flat, spec, model)] = value
                        if where is not None:
                            where.setdefault((o[0], i[0]), []).append(run)
            _put_cell(row, i[0], by_seed, prow[pcols.index(i[0])])
        out.append(row)
    return pd.DataFrame(out)


def run_seed(flat: dict[str, Any], spec: PairSpec, model: str) -> int:
    """The seed a run's ``model`` counts under in ``spec``'s table: ``seed``, or with
    ``spec.fixed_teacher`` the students' seed (``student_seed``, null or absent: ``seed``),
    the teacher keeping its own."""
    seed = int(flat.get("seed", 0))
    if spec.fixed_teacher and model != "teacher" and flat.get("student_seed") is not None:
        return int(flat["student_seed"])
    return seed


def pair_preset(spec: PairSpec, pair: str) -> str | None:
    """The preset a pair's runs must come from (``spec.pair_presets``), None when any."""
    if not spec.pair_presets:
        return None
    return spec.pair_presets[[p for p, _ in spec.pairs].index(pair)]


def run_groups(spec: PairSpec, methods: set[str]) -> list[tuple[dict[str, Any], list[str]]]:
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


def overrides(
    params: dict[str, Any],
    pins: dict[str, Any],
    models: list[str],
    knowledge: dict[str, str] | None = None,
) -> list[str]:
    """The ``-S`` overrides that turn ``params`` (nested) into a run with ``pins`` listing
    exactly ``models``: only what differs is overridden; a key ``params`` lacks is added with
    ``+`` (DVC refuses a new key otherwise); an added method reads ``knowledge[m]`` (default
    ``teacher``)."""
    over = []
    for key, value in pins.items():
        found, current = lookup(params, key)
        if not found:
            over.append(f"+{key}={value}")
        elif current != value:
            over.append(f"{key}={value}")
    listed = set(params.get("methods") or {})
    over += [f"~methods.{m}" for m in sorted(listed - set(models))]
    known = knowledge or {}
    over += [f"+methods.{m}={known.get(m, 'teacher')}" for m in models if m not in listed]
    return over


def seed_key(spec: PairSpec) -> str:
    """The param ``spec.seeds`` set: ``student_seed`` under a fixed teacher, else ``seed``."""
    return "student_seed" if spec.fixed_teacher else "seed"


def queue_overrides(name: str, preset: dict[str, Any], methods: set[str]) -> list[list[str]]:
    """The ``-S`` overrides of every experiment that fills the table ``name`` of
    :data:`PAIRS`, from ``preset`` (its resolved params.yaml): one run per pair, seed and
    group of methods whose pins agree (a fixed-teacher table's seeds are the students'). Only
    what differs from the preset is overridden; a key the preset lacks is added with ``+``."""
    spec = PAIRS[name]
    ours = preset_of(preset)
    if ours not in spec.presets:
        raise ValueError(
            f"{name}'s experiments start from preset {' or '.join(spec.presets)}, but "
            f"params.yaml holds {ours!r}: run `kdlab preset {spec.presets[0]}` (and commit "
            "it) first"
        )
    runs = []
    for pair, pair_pins in spec.pairs:
        if pair_preset(spec, pair) not in (None, ours):
            continue  # queued from its own preset
        for seed in spec.seeds:
            for group_pins, models in run_groups(spec, methods):
                pins = {**dict(pair_pins), **group_pins}
                if seed is not None:
                    pins[seed_key(spec)] = seed
                over = overrides(preset, pins, models)
                if over not in runs:  # rows that differ only in their metric share runs
                    runs.append(over)
    return runs
