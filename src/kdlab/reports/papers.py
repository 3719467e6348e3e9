"""The five papers' published numbers (``kdlab/papers/<paper>.yaml``): each table's cells
and catalogue fields, validated. What the report writers put beside ours, and what the catalogue
(:mod:`kdlab.reports.catalogue`) counts.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import yaml

PAPERS = ("reffakd", "simkd", "hao", "srrl", "patel")
# What a committed table is (per entry): comparable = at the paper's own setting;
# reduced_scale = the same experiment smaller (its `scale` says how); not_run (its `reason`
# says what it needs); out_of_scope (its `reason` says why). A reduced_scale entry with a
# `comparable:` block becomes comparable for those rows once that block's output is committed.
# Direction checks (`direction_check:`) are separate, reduced-scale tables: never comparable.
STATUSES = ("comparable", "reduced_scale", "not_run", "out_of_scope")
_TIME = re.compile(r"^(?:(\d+)h\s*)?(\d+)m\s*(\d+)s$")


def published(paper: str) -> dict[str, Any]:
    """A paper's published numbers (``kdlab/papers/<paper>.yaml``)."""
    text = resources.files("kdlab.papers").joinpath(f"{paper}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def seconds(text: str) -> int:
    """A printed duration such as ``"17m 57s"`` or ``"1h 4m 3s"`` in seconds."""
    m = _TIME.match(text.strip())
    if not m:
        raise ValueError(f"not a duration like '17m 57s': {text!r}")
    h, mins, s = (int(g) if g else 0 for g in m.groups())
    return 3600 * h + 60 * mins + s


def cell_values(row: list[Any]) -> list[Any]:
    """The printed numbers of one row (``[mean, std]`` counts as one cell); None = not printed."""
    return [v for v in row[1:] if v is not None]


def count_cells(table: dict[str, Any]) -> int:
    """Numeric cells of one transcribed table."""
    return sum(len(cell_values(r)) for r in table["rows"])


def paper_tables(paper: str) -> dict[str, dict[str, Any]]:
    """``tables:`` of one paper's yaml, validated (known status, reason when out of scope)."""
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)}")
    tables = published(paper)["tables"]
    for key, t in tables.items():
        if t["status"] not in STATUSES:
            raise ValueError(f"{paper}.{key}: status {t['status']!r} not in {STATUSES}")
        if t["status"] in ("out_of_scope", "not_run") and not t.get("reason"):
            raise ValueError(f"{paper}.{key}: {t['status']} needs a reason")
        if t["status"] == "reduced_scale" and not t.get("scale"):
            raise ValueError(f"{paper}.{key}: reduced_scale needs a scale (how it is smaller)")
        width = len(t["columns"])
        for row in t["rows"]:
            if len(row) != width:
                raise ValueError(
                    f"{paper}.{key}: row {row[0]!r} has {len(row)} cells, columns want {width}"
                )
    return tables
