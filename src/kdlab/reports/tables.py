"""Our metrics beside the papers' published numbers, as Markdown and CSV tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.io import write_text


def _fmt(v: Any, digits: int = 2) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def to_markdown(df: pd.DataFrame, digits: int = 2) -> str:
    """A GitHub Markdown table (no extra dependency such as tabulate)."""
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, row in df.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c], digits) for c in cols) + " |")
    return "\n".join(lines) + "\n"


def write_table(df: pd.DataFrame, stem: Path, title: str, notes: list[str], digits=2) -> None:
    """``stem.md`` (title, table, notes) and ``stem.csv``."""
    md = f"# {title}\n\n" + to_markdown(df, digits)
    if notes:
        md += "\n" + "\n".join(f"- {n}" for n in notes) + "\n"
    write_text(stem.with_suffix(".md"), md)
    write_text(stem.with_suffix(".csv"), df.to_csv(index=False, lineterminator="\n"))


NOT_RECORDED = "not recorded"


def ran_on(devices: Any) -> str:
    """The devices records name, once each, joined by ``; ``: ``cpu: AMD EPYC, 2 torch
    thread(s)``. A record without one, or with the unresolved param ``auto``, is ``not
    recorded``: a report never prints ``auto`` as the device that ran."""
    seen: list[str] = []
    for d in devices:
        name = NOT_RECORDED if d in (None, "", "auto") else str(d)
        if name not in seen:
            seen.append(name)
    return "; ".join(seen) or NOT_RECORDED


def options_text(options: dict[str, Any] | None) -> str:
    """A model's options as prose: ``width 16``; empty for none."""
    return ", ".join(f"{k} {v}" for k, v in (options or {}).items())


def model_text(model: str, epochs: Any, params: int | None, options: dict | None, role: str) -> str:
    """``3-epoch resnet18 teacher (width 16, 701,178 params)``: what a report says a model was."""
    inside = [x for x in (options_text(options), f"{params:,} params" if params else "") if x]
    return f"{epochs}-epoch {model} {role}" + (f" ({', '.join(inside)})" if inside else "")


# The cost comparison of ReffAKD's claim: (row, the stages whose records it sums).
COST = (
    ("teacher (train_teacher)", ("teacher",)),
    ("soft labels (train_cae + soft_labels)", ("cae", "soft_labels")),
)
COST_STAGES = tuple(st for _, stages in COST for st in stages)


def cost_rows(records: dict[str, dict[str, Any] | None]) -> list[dict[str, Any]]:
    """Wall time (summed) and peak memory (max) of the teacher against the soft labels, from
    the stages' plain records (``stage -> record``), and their ratio when both are there."""
    rows = []
    for label, stages in COST:
        ms = [records.get(st) for st in stages]
        if all(ms):
            rows.append(
                {
                    "work": label,
                    "wall_time_s": sum(m["wall_time_s"] for m in ms),
                    "peak_rss_mib": max(m["peak_rss_mib"] for m in ms),
                }
            )
    if len(rows) == 2:
        rows.append(
            {
                "work": "ratio teacher / soft labels",
                "wall_time_s": rows[0]["wall_time_s"] / rows[1]["wall_time_s"],
                "peak_rss_mib": rows[0]["peak_rss_mib"] / rows[1]["peak_rss_mib"],
            }
        )
    return rows


def diff(ours: float | None, paper: float | None) -> float | None:
    """ours - paper, or None when either is missing."""
    return None if ours is None or paper is None else ours - paper
