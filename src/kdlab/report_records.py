"""Per-cell records of committed reports (``results/records/<report>.json``) and the merge of
those records with the cells a report finds in DVC experiments.

A report's table is rows (a *setting*: the row label) x cell groups (a *column*: ``reffakd``,
``top1``, an epoch count ...). One record is one filled cell: its setting, column, scale,
seeds, device, the rendered values of the cell's columns (``scores``: exactly what the table
prints, e.g. ``{"top1 ours": "86.59 ± 0.31", "top1 n": 3, ...}``), the experiments it came
from (``exp``: run names and revisions) and its ``source``. Records are kept in git, so any
clone rebuilds a committed table from them alone; the file also keeps the report's title,
columns and header notes, so the rebuild is byte-identical.

Merge rule (:func:`merge`): a cell found in the experiments replaces the record of the same
setting and column only when it is at the record's scale, complete (its seeds include the
record's) and newer (its runs' timestamp is later than the record's); otherwise the record
stays and the experiment cell is reported as kept out. An experiment cell that prints exactly
the record's values is the same result (e.g. a fresh clone's HEAD commit, which carries the
run a grid started from): the record stays, and the source line says the experiment agrees.
A cell with no record takes the experiments' cell. ``replace=True`` drops every record: the
table is the experiments' alone.
A row's columns outside any cell group (best lr, difference with the baseline, direction)
follow the source of the row's first filled cell.

Refusal (:func:`check_not_shrinking`): a table with fewer filled cells than the committed one
is never written unless ``replace`` is given.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.io import write_text

RECORDS = Path("results/records")
FORMAT = 1


class ReportShrinks(ValueError):
    """The new table would fill fewer cells than the committed one."""


# ---------------------------------------------------------------------------------------------
# Table layout: which columns make a row's key, which make each cell


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or v == "—"


def plain(v: Any) -> Any:
    """A DataFrame value as JSON: numpy scalars to Python, NaN to None."""
    if hasattr(v, "item"):
        v = v.item()
    return None if isinstance(v, float) and math.isnan(v) else v


@dataclass(frozen=True)
class Layout:
    keys: tuple[str, ...]  # the columns that name a row
    groups: dict[str, tuple[str, ...]]  # cell group -> its columns
    counts: dict[str, str | None]  # cell group -> its count column (n), None: filled = shown


def layout(columns: list[str], keys: int = 1) -> Layout:
    """Cell groups of a table: each ``<group> n`` column's group holds every column starting
    with ``"<group> "``; a table with a bare ``n`` column is one group per row (``""``); a
    table without counts has one group per column (the Hao figure's epochs)."""
    key_cols = tuple(columns[:keys])
    rest = [c for c in columns if c not in key_cols]
    names = [c[: -len(" n")] for c in rest if c.endswith(" n")]
    if names:
        groups = {g: tuple(c for c in rest if c.startswith(g + " ")) for g in names}
        return Layout(key_cols, groups, {g: f"{g} n" for g in names})
    if "n" in rest:
        return Layout(key_cols, {"": tuple(rest)}, {"": "n"})
    return Layout(key_cols, {c: (c,) for c in rest}, {c: None for c in rest})


def setting(row: dict[str, Any], lay: Layout) -> str:
    if len(lay.keys) == 1:
        return str(row[lay.keys[0]])
    return ", ".join(f"{k} {plain(row[k])}" for k in lay.keys)


def is_filled(row: dict[str, Any], lay: Layout, group: str) -> bool:
    count = lay.counts[group]
    if count is not None:
        n = plain(row.get(count))
        return isinstance(n, (int, float)) and n > 0
    return not missing(plain(row.get(lay.groups[group][0])))


def count_filled(df: pd.DataFrame, keys: int = 1) -> tuple[int, int]:
    """(filled cells, all cells) of a table."""
    lay = layout(list(df.columns), keys)
    rows = df.to_dict("records")
    filled = sum(is_filled(r, lay, g) for r in rows for g in lay.groups)
    return filled, len(rows) * len(lay.groups)


# ---------------------------------------------------------------------------------------------
# The merge


@dataclass
class Built:
    """What a report writer found in the experiments, before the merge with the records."""

    df: pd.DataFrame
    title: str
    notes: list[str]
    keys: int = 1  # leading columns that name a row
    # (setting, group) -> the runs behind that cell (``runs_from_exp_show`` entries)
    cell_runs: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)
    runs: list[dict[str, Any]] = field(default_factory=list)  # every run behind the table
    after_write: Any = None  # callable(df, stem, from_experiments: bool): extra outputs (plots)


def scale_of(params: dict[str, Any]) -> str:
    """A run's scale key: data set (and subset size), student epochs: ``fashion_mnist/12ep``,
    ``fashion_mnist[25000]/3ep``. Cells of different scales never replace one another."""
    data = params.get("data") or {}
    epochs = ((params.get("student") or {}).get("train") or {}).get("epochs")
    subset = data.get("subset")
    return f"{data.get('name')}{f'[{subset}]' if subset else ''}/{epochs}ep"


def _run_ref(run: dict[str, Any]) -> str:
    return f"{run.get('name')}@{str(run.get('rev'))[:7]}"


def _experiment_cell(
    sett: str, group: str, row: dict[str, Any], lay: Layout, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    params = [r.get("params") or {} for r in runs]
    refs = [_run_ref(r) for r in runs] or ["(runs not known)"]
    return {
        "setting": sett,
        "column": group,
        "scale": ", ".join(sorted({scale_of(p) for p in params})) or "unknown",
        "seeds": sorted({int(p.get("seed", 0)) for p in params}),
        "device": ", ".join(sorted({str(p.get("device")) for p in params})),
        "scores": {c: plain(row[c]) for c in lay.groups[group]},
        "exp": refs,
        "timestamp": max((str(r.get("timestamp") or "") for r in runs), default=""),
        "source": "experiments " + ", ".join(refs),
    }


def printed(scores: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """How each value prints in the Markdown and in the CSV (``"90.64"`` and ``90.64`` are the
    same cell)."""
    from kdlab.tables import _fmt

    return {k: (_fmt(v), "" if v is None else str(v)) for k, v in scores.items()}


def _newer_and_complete(exp: dict[str, Any], rec: dict[str, Any]) -> list[str]:
    """Why the experiment cell ``exp`` may not replace the record ``rec`` (empty: it may)."""
    why = []
    if exp["scale"] != rec["scale"]:
        why.append(f"its scale {exp['scale']} is not the record's {rec['scale']}")
    if not set(rec["seeds"]) <= set(exp["seeds"]):
        why.append(f"its seeds {exp['seeds']} lack some of the record's {rec['seeds']}")
    if not str(exp["timestamp"]) > str(rec.get("timestamp") or ""):
        why.append("it is not newer than the record")
    return why


def merge(
    name: str, built: Built, stored: dict[str, Any] | None, replace: bool = False
) -> tuple[pd.DataFrame, list[str], str, list[str], dict[str, Any]]:
    """The merged table, its notes and title, one line per filled cell naming its source (and
    per experiment cell kept out, why), and the new record file. The experiments' table is the
    base (every row, the paper's columns); each filled cell is the experiments' or the
    record's by the rule of the module docstring."""
    columns = list(built.df.columns)
    lay = layout(columns, built.keys)
    records: dict[tuple[str, str], dict[str, Any]] = {}
    if stored is not None and not replace:
        if stored["columns"] != columns:
            raise ValueError(
                f"{name}: the committed records ({RECORDS.as_posix()}/{name}.json) have "
                f"columns {stored['columns']}, this table {columns}; --replace to start afresh"
            )
        records = {(c["setting"], c["column"]): c for c in stored["cells"]}
    rows, sources, kept_out, cells = [], [], [], []
    n_exp = n_rec = 0
    for fresh in built.df.to_dict("records"):
        sett, row, first = setting(fresh, lay), dict(fresh), True
        for group in lay.groups:
            rec = records.pop((sett, group), None)
            take, agrees = None, ""
            if is_filled(fresh, lay, group):
                runs = built.cell_runs.get((sett, group)) or built.runs
                take = _experiment_cell(sett, group, fresh, lay, runs)
                why = _newer_and_complete(take, rec) if rec is not None else []
                if rec is not None and printed(take["scores"]) == printed(rec["scores"]):
                    agrees, take = f"; experiment ref {', '.join(take['exp'])} agrees", None
                elif why:
                    kept_out.append(f"{sett} / {group}: experiment kept out ({'; '.join(why)})")
                    take = None
                elif first:
                    extra = [
                        c
                        for c in columns
                        if c not in lay.keys
                        and c not in {x for g in lay.groups.values() for x in g}
                    ]
                    take["row"] = {c: plain(fresh[c]) for c in extra}
            if take is None and rec is not None:
                take = rec
                row.update(rec["scores"])
                if first:
                    row.update(rec.get("row") or {})
                n_rec += 1
                sources.append(f"{sett} / {group}: committed record ({rec['source']}{agrees})")
            elif take is not None:
                n_exp += 1
                sources.append(f"{sett} / {group}: experiment ref {', '.join(take['exp'])}")
            if take is not None:
                first = False
                cells.append(take)
        rows.append(row)
    for (sett, group), rec in records.items():  # its row is gone from the table: kept on file
        kept_out.append(f"{sett} / {group}: committed record not in the table (no such row)")
        cells.append(rec)
    merged = pd.DataFrame(rows, columns=columns)
    title, notes = built.title, list(built.notes)
    if n_exp == 0 and stored is not None and not replace:
        title, notes = stored["title"], list(stored["notes"])
    elif n_rec:
        filled, total = count_filled(merged, built.keys)
        scales = sorted({c["scale"] for c in cells if not c["source"].startswith("experiments")})
        notes.append(
            f"{filled} of {total} cells filled: {n_exp} from the experiments above, {n_rec} "
            f"from the committed records at scale {', '.join(scales)} "
            f"({RECORDS.as_posix()}/{name}.json; `kdlab report` prints each cell's source)."
        )
    new = {
        "format": FORMAT,
        "report": name,
        "title": title,
        "columns": columns,
        "notes": notes,
        "merge_rule": MERGE_RULE,
        "cells": cells,
    }
    return merged, notes, title, sources + kept_out, new


MERGE_RULE = (
    "an experiment cell replaces the record of the same setting and column only when it is at "
    "the record's scale, its seeds include the record's and its runs are newer (one that prints "
    "the record's values leaves the record); a row's columns outside the cell groups follow its "
    "first filled cell"
)


def committed_filled(stem: Path, stored: dict[str, Any] | None, keys: int = 1) -> int:
    """Filled cells of the committed table: its records, or its CSV where it has none."""
    counts = [len(stored["cells"])] if stored else []
    csv = stem.with_suffix(".csv")
    if csv.exists():
        counts.append(count_filled(pd.read_csv(csv), keys)[0])
    return max(counts, default=0)


def write_report(
    name: str, built: Built, stem: Path, replace: bool = False
) -> tuple[Path, list[str]]:
    """Merge ``built`` with the records beside ``stem`` (``<stem dir>/records/<name>.json``),
    refuse to shrink the committed table, then write ``stem``.md/.csv, any extra outputs and
    the records. Returns the Markdown path and the cells' sources."""
    from kdlab.tables import write_table

    records_dir = stem.parent / "records"
    path = records_dir / f"{name}.json"
    stored = None
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("format") != FORMAT or stored.get("report") != name:
            raise ValueError(f"{path}: not a format-{FORMAT} record file of report {name!r}")
    df, notes, title, sources, new = merge(name, built, stored, replace)
    filled, total = count_filled(df, built.keys)
    before = committed_filled(stem, stored, built.keys)
    if filled < before and not replace:
        raise ReportShrinks(
            f"{name}: the new table fills {filled} of {total} cells, the committed "
            f"{stem.with_suffix('.md').name} {before}; nothing written (--replace to overwrite)"
        )
    write_table(df, stem, title, notes)
    if built.after_write is not None:
        from_experiments = stored is None or any(": experiment ref " in s for s in sources)
        built.after_write(df, stem, from_experiments)
    if new["cells"] or stored is not None:
        write_text(path, json.dumps(new, indent=1, ensure_ascii=False) + "\n")
    return stem.with_suffix(".md"), sources
