"""Per-cell records of committed reports (``results/records/<report>.json``) and the merge of
those records with the cells a report finds in DVC experiments.

A report's table is rows (a *setting*: the row label) x cell groups (a *column*: ``reffakd``,
``top1``, an epoch count ...). One record is one filled cell: its setting, column, scale,
seeds, the device that ran it (``None``: not recorded), the models that ran (with widths and
parameter counts), the rendered values of the cell's columns (``scores``: exactly what the
table prints, e.g. ``{"top1 ours": "86.59 ± 0.31", "top1 n": 3, ...}``), the experiments it
came from (``exp``: run names and revisions) and its ``source``. Records are kept in git, so
any clone rebuilds a committed table from them alone; the file also keeps the report's title,
columns, header notes and the scale its main table shows, so the rebuild is byte-identical.

Scales (``scale_of``: data set, subset, student epochs) never mix: a cell is keyed by
(setting, column, scale). A table shows one scale: ``results/<report>.md`` the records' main
scale (the first committed), ``results/<report>-<scale>.md`` any other one chosen with
``kdlab report NAME --scale SCALE``. Cells of the other scales stay in the records file,
never overwritten; runs at another scale are left out of the table, and the cell sources say
so. The table's "What ran" note is built from the shown cells' records on every write.

Merge rule (:func:`merge`): a cell found in the experiments replaces the record of the same
setting, column and scale only when it is complete (its seeds include the record's) and newer
(its runs' timestamp is later than the record's); otherwise the record stays and the
experiment cell is reported as kept out. An experiment cell that prints exactly the record's
values is the same result (e.g. a fresh clone's HEAD commit, which carries the run a grid
started from): the record stays, and the source line says the experiment agrees. A cell with
no record takes the experiments' cell. ``replace=True`` drops every record: the table is the
experiments' alone.
A row's columns outside any cell group (best lr, difference with the baseline, direction)
follow the source of the row's first filled cell.

Refusal (:func:`check_not_shrinking`): a table with fewer filled cells than the committed one
is never written unless ``replace`` is given.
"""

from __future__ import annotations

import ast
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.io import write_text

# Where reports built from finished experiments go: outside `tables/` (the `tables` stage's
# output), which DVC empties whenever that stage reruns; their per-cell records under it.
RESULTS = Path("results")
RECORDS = RESULTS / "records"
FORMAT = 2


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
# What ran: scale, models, device


# What a report's numbers are, per paper (the "What ran" note ends with it).
FINAL_EPOCH = (
    "ours: final-epoch test accuracy, nothing selected on the test set; the paper: its best "
    "epoch, selected on the test set"
)


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
    scale: str | None = None  # the scale the table shows (None: the runs' own, one at most)
    other_scales: dict[str, int] = field(default_factory=dict)  # runs left out, per scale
    epoch: str = FINAL_EPOCH  # which epoch ours and the paper's numbers are


def scale_of(params: dict[str, Any]) -> str:
    """A run's scale key: data set (and subset size), student epochs: ``fashion_mnist/12ep``,
    ``fashion_mnist[25000]/3ep``. Cells of different scales never replace one another."""
    data = params.get("data") or {}
    epochs = ((params.get("student") or {}).get("train") or {}).get("epochs")
    subset = data.get("subset")
    return f"{data.get('name')}{f'[{subset}]' if subset else ''}/{epochs}ep"


def at_scale(
    runs: list[dict[str, Any]], scale: str | None
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """The runs at ``scale`` (all of them for None) and how many runs each other scale has."""
    if scale is None:
        return list(runs), {}
    kept, others = [], {}
    for run in runs:
        s = scale_of(run.get("params") or {})
        if s == scale:
            kept.append(run)
        else:
            others[s] = others.get(s, 0) + 1
    return kept, dict(sorted(others.items()))


def scale_slug(scale: str) -> str:
    """A scale as part of a file name: ``fashion_mnist/200ep`` -> ``fashion_mnist-200ep``."""
    return re.sub(r"[^A-Za-z0-9_]+", "-", scale).strip("-")


def param_count(model: str, options: dict[str, Any], data: str | None, input_size=None):
    """Parameters of ``model`` as built for data set ``data`` (None when it cannot be built:
    an unknown model or data set)."""
    try:
        import torch

        from kdlab.data import get_dataset
        from kdlab.models import build_model, count_params

        spec = get_dataset(str(data))
        kw = dict(options or {})
        if input_size:
            kw["input_size"] = int(input_size)
        with torch.device("meta"):
            return count_params(build_model(model, spec.num_classes, spec.shape[0], **kw))
    except Exception:  # a report still prints without the count
        return None


def models_of(params: dict[str, Any]) -> str | None:
    """``12-epoch lenet5 students (61,750 params); 3-epoch resnet18 teacher (width 16, 701,178
    params)``: the models a run trained, from its params."""
    from kdlab.reports.tables import model_text

    data = (params.get("data") or {}).get("name")
    parts = []
    for key, role in (("student", "students"), ("teacher", "teacher")):
        mc = params.get(key) or {}
        if not mc.get("model"):
            continue
        options = mc.get("options") or {}
        n = param_count(mc["model"], options, data, mc.get("input_size"))
        epochs = (mc.get("train") or {}).get("epochs")
        parts.append(model_text(mc["model"], epochs, n, options, role))
    return "; ".join(parts) or None


def _recorded_device(run: dict[str, Any]) -> str | None:
    """The device a run's records name (``run["device"]``, filled by the writer from its stage
    records), else its ``device`` param when that names one (not ``auto``); None: unknown."""
    if run.get("device"):
        return str(run["device"])
    param = (run.get("params") or {}).get("device")
    return None if param in (None, "", "auto") else str(param)


WHAT_RAN = "What ran (each shown cell's record): "


def what_ran(cells: list[dict[str, Any]], epoch: str) -> str:
    """The note naming, for the shown cells, their scale, models (widths, parameter counts,
    epochs), seeds and the device that ran, grouped; then which epoch the numbers are."""
    from kdlab.reports.tables import ran_on

    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for c in cells:
        key = (c["scale"], c.get("models") or "models not recorded", ran_on([c.get("device")]))
        groups.setdefault(key, []).append(c)
    parts = []
    for (scale, models, device), cs in groups.items():
        seeds = sorted({s for c in cs for s in c["seeds"]})
        parts.append(
            f"{scale}: {models}; seeds {', '.join(map(str, seeds))}; device {device}"
            + (f" ({len(cs)} of {len(cells)} cells)" if len(groups) > 1 else "")
        )
    body = " | ".join(parts) if parts else "no filled cell"
    return f"{WHAT_RAN}{body}. {epoch[0].upper()}{epoch[1:]}."


# ---------------------------------------------------------------------------------------------
# The merge


def _run_ref(run: dict[str, Any]) -> str:
    return f"{run.get('name')}@{str(run.get('rev'))[:7]}"


def _experiment_cell(
    sett: str, group: str, row: dict[str, Any], lay: Layout, runs: list[dict[str, Any]]
) -> dict[str, Any]:
    params = [r.get("params") or {} for r in runs]
    refs = [_run_ref(r) for r in runs] or ["(runs not known)"]
    devices = sorted({d for d in map(_recorded_device, runs) if d})
    models = []
    for p in params:
        m = models_of(p)
        if m and m not in models:
            models.append(m)
    return {
        "setting": sett,
        "column": group,
        "scale": ", ".join(sorted({scale_of(p) for p in params})) or "unknown",
        "seeds": sorted({int(p.get("seed", 0)) for p in params}),
        "device": "; ".join(devices) if devices else None,
        "models": " | ".join(models) or None,
        "scores": {c: plain(row[c]) for c in lay.groups[group]},
        "exp": refs,
        "timestamp": max((str(r.get("timestamp") or "") for r in runs), default=""),
        "source": "experiments " + ", ".join(refs),
    }


def number(v: Any) -> float | None:
    """A printed cell as a number: ``"90.73"`` or ``"90.73 ± 0.12"`` -> 90.73; None when it
    holds none (``—``, ``diverged``, empty)."""
    try:
        return float(str(v).split(" ")[0])
    except ValueError:
        return None


def printed(scores: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """How each value prints in the Markdown and in the CSV (``"90.64"`` and ``90.64`` are the
    same cell)."""
    from kdlab.reports.tables import _fmt

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


def _scales(cells) -> list[str]:
    return sorted({c["scale"] for c in cells})


def shown_scale(name: str, built: Built, stored: dict[str, Any] | None) -> str | None:
    """The scale the table shows: the writer's (``--scale``), else the records' main scale,
    else the one scale of the experiments' cells; several with nothing chosen is an error."""
    if built.scale:
        return built.scale
    if stored is not None and stored.get("scale"):
        return stored["scale"]
    found = {s for (sett, g), runs in built.cell_runs.items() for s in map(scale_of, _params(runs))}
    if len(found) > 1:
        raise ValueError(
            f"{name}: the experiments ran at {len(found)} scales ({', '.join(sorted(found))}); "
            f"choose one: kdlab report {name} --scale SCALE"
        )
    return next(iter(found), None)


def _params(runs):
    return [r.get("params") or {} for r in runs]


def merge(
    name: str, built: Built, stored: dict[str, Any] | None, replace: bool = False
) -> tuple[pd.DataFrame, list[str], str, list[str], dict[str, Any]]:
    """The merged table, its notes and title, one line per filled cell naming its source (and
    per experiment cell kept out, why), and the new record file. The experiments' table is the
    base (every row, the paper's columns); each filled cell is the experiments' or the
    record's by the rule of the module docstring; only cells at the shown scale are shown,
    records of every other scale are kept as they are (``replace`` drops the shown scale's
    records only, or every record when the table's columns changed)."""
    columns = list(built.df.columns)
    lay = layout(columns, built.keys)
    if stored is not None and stored["columns"] != columns:
        if not replace:
            raise ValueError(
                f"{name}: the committed records ({RECORDS.as_posix()}/{name}.json) have "
                f"columns {stored['columns']}, this table {columns}; --replace to start afresh"
            )
        stored = None  # another layout: nothing of it can be kept
    sel = shown_scale(name, built, None if replace else stored)
    main = (stored or {}).get("scale") or sel
    kept = [c for c in (stored or {}).get("cells", []) if not (replace and c["scale"] == sel)]
    records = {(c["setting"], c["column"], c["scale"]): c for c in kept}
    rows, sources, kept_out, cells = [], [], [], []
    from_records: list[dict[str, Any]] = []
    n_exp = n_rec = 0
    for fresh in built.df.to_dict("records"):
        sett, row, first = setting(fresh, lay), dict(fresh), True
        for group in lay.groups:
            rec = records.pop((sett, group, sel), None)
            take, agrees = None, ""
            if is_filled(fresh, lay, group):
                runs = built.cell_runs.get((sett, group)) or built.runs
                take = _experiment_cell(sett, group, fresh, lay, runs)
                why = _newer_and_complete(take, rec) if rec is not None else []
                if sel is not None and take["scale"] != sel and not why:
                    why = [f"its scale {take['scale']} is not the table's {sel}"]
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
                from_records.append(rec)
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
    shown = list(cells)
    other: dict[str, int] = {}
    for (sett, group, scale), rec in records.items():  # kept on file, never overwritten
        if scale == sel:
            kept_out.append(f"{sett} / {group}: committed record not in the table (no such row)")
        else:
            other[scale] = other.get(scale, 0) + 1
        cells.append(rec)
    for scale, n in sorted(other.items()):
        kept_out.append(
            f"{n} committed cells at scale {scale} kept in the records, not shown "
            f"(kdlab report {name} --scale {scale})"
        )
    for scale, n in built.other_scales.items():
        kept_out.append(
            f"{n} experiment runs at scale {scale} left out (kdlab report {name} --scale {scale})"
        )
    merged = pd.DataFrame(rows, columns=columns)
    title, notes = built.title, list(built.notes)
    others = dict((stored or {}).get("others") or {})
    if replace:
        others.pop(sel, None)
    saved = None  # the title and notes committed with this scale's table
    if stored is not None and not replace:
        saved = stored if sel == main else others.get(sel)
    if n_exp == 0 and saved is not None:
        title, notes = saved["title"], list(saved["notes"])
    elif n_rec:
        filled, total = count_filled(merged, built.keys)
        scales = _scales(from_records)
        notes.append(
            f"{filled} of {total} cells filled: {n_exp} from the experiments above, {n_rec} "
            f"from the committed records at scale {', '.join(scales)} "
            f"({RECORDS.as_posix()}/{name}.json; `kdlab report` prints each cell's source)."
        )
    notes = [n for n in notes if not n.startswith(WHAT_RAN)]
    notes.insert(min(1, len(notes)), what_ran(shown, built.epoch))
    if sel != main:
        others[sel] = {"title": title, "notes": notes}
    top = stored if sel != main and stored is not None else {"title": title, "notes": notes}
    # (with ``replace`` the main scale's title and notes are the new table's)
    new = {
        "format": FORMAT,
        "report": name,
        "title": top["title"],
        "columns": columns,
        "notes": top["notes"],
        "merge_rule": MERGE_RULE,
        "scale": main,
        **({"others": dict(sorted(others.items()))} if others else {}),
        "cells": cells,
    }
    return merged, notes, title, sources + kept_out, new


MERGE_RULE = (
    "cells are keyed by setting, column and scale; an experiment cell replaces the record of "
    "the same key only when its seeds include the record's and its runs are newer (one that "
    "prints the record's values leaves the record); a row's columns outside the cell groups "
    "follow its first filled cell; a table shows one scale and keeps every other scale's "
    "records"
)


def committed_filled(
    stem: Path, stored: dict[str, Any] | None, keys: int = 1, scale: str | None = None
) -> int:
    """Filled cells of the committed table at ``scale``: its records, or its CSV where it has
    none."""
    cells = [c for c in (stored or {}).get("cells", []) if scale is None or c["scale"] == scale]
    counts = [len(cells)] if stored else []
    csv = stem.with_suffix(".csv")
    if csv.exists():
        counts.append(count_filled(pd.read_csv(csv), keys)[0])
    return max(counts, default=0)


# ---------------------------------------------------------------------------------------------
# Format 1 -> 2: the "Ours: ..." note becomes each cell's models and the generated "What ran"
# note; the unresolved device param ``auto`` becomes "not recorded" (None).

_OURS = re.compile(
    r"^Ours: (?P<se>[^,]+?)-epoch (?P<s>\S+) students, (?P<te>[^,]+?)-epoch (?P<t>\S+) teacher "
    r"\(options (?P<o>\{.*?\})\), (?P<data>\w+)"
)


def upgrade(stored: dict[str, Any]) -> dict[str, Any]:
    """A format-1 record file in format 2 (a format-2 one unchanged)."""
    if stored.get("format") == FORMAT:
        return stored
    if stored.get("format") != 1:
        raise ValueError(f"records of format {stored.get('format')!r}: not 1 or {FORMAT}")
    out = dict(stored, format=FORMAT, merge_rule=MERGE_RULE)
    notes, models = [], None
    for note in stored["notes"]:
        m = _OURS.match(note)
        if not m:
            notes.append(note)
            continue
        params = {
            "data": {"name": m["data"]},
            "student": {"model": m["s"], "train": {"epochs": m["se"]}},
            "teacher": {
                "model": m["t"],
                "options": ast.literal_eval(m["o"]),
                "train": {"epochs": m["te"]},
            },
        }
        models = models_of(params)
        if "; KL reduction: " in note:
            notes.append("KL reduction: " + note.split("; KL reduction: ", 1)[1])
    out["notes"] = notes
    out["cells"] = [
        {
            **c,
            "device": None if c.get("device") in (None, "", "auto") else c["device"],
            "models": c.get("models") or models,
        }
        for c in stored["cells"]
    ]
    scales = _scales(out["cells"])
    out["scale"] = scales[0] if len(scales) == 1 else None
    return out


def read_stored(path: Path, name: str) -> dict[str, Any] | None:
    """The record file of report ``name`` at ``path`` (upgraded to this format), or None."""
    if not path.exists():
        return None
    stored = json.loads(path.read_text(encoding="utf-8"))
    if stored.get("report") != name or stored.get("format") not in (1, FORMAT):
        raise ValueError(f"{path}: not a format-{FORMAT} record file of report {name!r}")
    return upgrade(stored)


def from_records(name: str, stored: dict[str, Any]) -> Built:
    """The table of a record file alone, in the layout it was committed in (one key column):
    a report whose writer has changed layout since (awaiting its rerun) still rebuilds from
    its records, notes included, while ``kdlab report`` refuses it."""
    stored = upgrade(stored)
    columns = stored["columns"]
    if len(layout(columns).keys) != 1 or any(", " in c["setting"] for c in stored["cells"]):
        raise ValueError(f"{name}: from_records rebuilds tables with one key column only")
    settings = [c["setting"] for c in stored["cells"] if c["scale"] == stored.get("scale")]
    rows = [{columns[0]: s} for s in dict.fromkeys(settings)]
    return Built(pd.DataFrame(rows, columns=columns), stored["title"], stored["notes"])


def main_scale(repo: Path, name: str) -> str | None:
    """The scale ``results/<name>.md`` shows (its records'), or None before any record."""
    stored = read_stored(Path(repo) / RECORDS / f"{name}.json", name)
    return None if stored is None else stored.get("scale")


def write_report(
    name: str, built: Built, stem: Path, replace: bool = False
) -> tuple[Path, list[str]]:
    """Merge ``built`` with the records beside ``stem`` (``<stem dir>/records/<name>.json``),
    refuse to shrink the committed table, then write the shown scale's table (``stem``.md/.csv
    for the records' main scale, ``<stem>-<scale>`` for another), any extra outputs and the
    records. Returns the Markdown path and the cells' sources."""
    from kdlab.reports.tables import write_table

    records_dir = stem.parent / "records"
    path = records_dir / f"{name}.json"
    stored = read_stored(path, name)
    df, notes, title, sources, new = merge(name, built, stored, replace)
    sel = shown_scale(name, built, None if replace else stored)
    if sel is not None and new["scale"] is not None and sel != new["scale"]:
        stem = stem.with_name(f"{stem.name}-{scale_slug(sel)}")
    filled, total = count_filled(df, built.keys)
    before = committed_filled(stem, stored, built.keys, sel)
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
