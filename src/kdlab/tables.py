"""Our metrics beside the papers' published numbers, as Markdown and CSV tables."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from kdlab.io import write_text


def published(paper: str) -> dict[str, Any]:
    """A paper's published numbers (``kdlab/papers/<paper>.yaml``)."""
    text = resources.files("kdlab.papers").joinpath(f"{paper}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


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


def diff(ours: float | None, paper: float | None) -> float | None:
    """ours - paper, or None when either is missing."""
    return None if ours is None or paper is None else ours - paper
