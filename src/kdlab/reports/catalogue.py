"""The catalogue of every table and figure with numbers in the five papers.

One source: ``kdlab/papers/<paper>.yaml`` (``tables:`` holds each table's published cells and its
``status``/``command``/``output``/``reason``; read by :mod:`kdlab.reports.papers`); a table's
report is ready when every ``kdlab report NAME`` its command names is registered
(:mod:`kdlab.reports.registry`). ``kdlab papers [--json]`` prints it and
:func:`readme_results` renders the README's results section from it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdlab.reports import blocks
from kdlab.reports.papers import PAPERS, STATUSES, cell_values, count_cells, paper_tables
from kdlab.reports.registry import names

_REPORT = re.compile(r"kdlab (?:report|reproduce) (\w+)")  # reproduce ends in its report


@dataclass(frozen=True)
class Entry:
    """One catalogue row: a paper's table (or figure) and how this repository regenerates it."""

    paper: str
    table: str
    title: str
    cells: int
    status: str
    command: str
    output: str
    reason: str
    committed: bool  # the output file exists in this checkout
    report_ready: bool  # every `kdlab report NAME` in command is implemented
    # A reduced-scale direction check on the data we have offline (a separate table, labelled as
    # such, not a reproduction): its command, output and whether that output is committed.
    check_command: str = ""
    check_output: str = ""
    check_committed: bool = False
    scale: str = ""  # reduced_scale: how it is smaller than the paper's setting
    comparable_command: str = ""  # the paper-setting run of some rows, where there is one
    comparable_output: str = ""
    comparable_committed: bool = False
    comparable_cells: int = 0  # cells at the paper's setting that are committed

    @property
    def commands(self) -> list[str]:
        """The entry's command and its direction check's, where there are."""
        return [c for c in (self.command, self.check_command) if c]


def _paper_scale(path: Path) -> bool:
    """A committed run record at the paper's own setting (``"scale": "paper"``); a reduced-scale
    record, or a file that is not a record, never makes a cell comparable."""
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rec, dict) and rec.get("scale") == "paper"


def _rows_with_records(root: Path, comp: dict[str, Any]) -> set[str]:
    """Rows of a ``comparable:`` block whose arm has a committed paper-scale record
    (``<arm>_seed*.json`` under its ``records`` folder, ``"scale": "paper"``): a paper-setting
    cell counts once a run of it landed."""
    if not comp:
        return set()
    folder = root / comp["records"]
    return {
        row
        for row, arm in comp["rows"].items()
        if any(_paper_scale(f) for f in folder.glob(f"{arm}_seed*.json"))
    }


def catalogue(root: Path | None = None) -> list[Entry]:
    """Every table of every paper; ``committed`` looks for ``output`` under ``root``."""
    root = root or Path.cwd()
    known = names()
    out = []
    for paper in PAPERS:
        for key, t in paper_tables(paper).items():
            output = t.get("output") or ""
            check = t.get("direction_check") or {}
            commands = (t.get("command") or "") + " " + check.get("command", "")
            comp = t.get("comparable") or {}
            cells = count_cells(t)
            if t["status"] == "comparable":
                comp_cells = cells
            else:  # rows with at least one committed paper-setting record
                done = _rows_with_records(root, comp)
                comp_cells = sum(len(cell_values(r)) for r in t["rows"] if r[0] in done)
            comp_done = comp_cells > 0 and t["status"] != "comparable"
            out.append(
                Entry(
                    paper=paper,
                    table=key,
                    title=t["title"],
                    cells=cells,
                    status="comparable" if comp_cells else t["status"],
                    command=t.get("command") or "",
                    output=output,
                    reason=t.get("reason") or "",
                    committed=bool(output) and (root / output).exists(),
                    report_ready=all(n in known for n in _REPORT.findall(commands)),
                    check_command=check.get("command", ""),
                    check_output=check.get("output", ""),
                    check_committed=bool(check) and (root / check["output"]).exists(),
                    scale=t.get("scale") or "",
                    comparable_command=comp.get("command", ""),
                    comparable_output=comp.get("output", ""),
                    comparable_committed=comp_done,
                    comparable_cells=comp_cells,
                )
            )
    return out


def as_dicts(entries: list[Entry]) -> list[dict[str, Any]]:
    """JSON-ready rows."""
    return [asdict(e) for e in entries]


def as_json(entries: list[Entry]) -> dict[str, Any]:
    """``kdlab papers --json``: every entry (its status from what is committed) and the counts
    per status, of tables and of published cells, as :func:`status_counts` prints them."""
    return {
        "entries": as_dicts(entries),
        "tables_by_status": {s: sum(e.status == s for e in entries) for s in STATUSES},
        "cells_by_status": cell_counts(entries),
        "direction_checks_committed": sum(e.check_committed for e in entries),
    }


def readme_results(entries: list[Entry], prefix: str = "") -> str:
    """The results page's catalogue (between ``<!-- papers:start/end -->``): per paper, what is
    regenerated here, what needs a GPU or data, and what is out of scope. Links to committed
    outputs are prefixed with ``prefix`` (``../`` for a page in docs/)."""
    lines = [
        "| paper | table | cells | status | output | report | direction check (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        shown = _link(e.output, e.committed, prefix)
        if e.comparable_output:
            shown += f"; paper scale: {_link(e.comparable_output, e.comparable_committed, prefix)}"
        status = e.status + (f" ({e.reason})" if e.reason else "")
        if e.status == "comparable" and e.comparable_cells < e.cells:
            status += f" ({e.comparable_cells} of {e.cells} cells; the rest at {e.scale})"
        elif e.status == "reduced_scale":
            status += f" ({e.scale})"
        ready = "ready" if e.report_ready else "to do"
        check = _link(e.check_output, e.check_committed, prefix)
        lines.append(
            f"| {e.paper} | {e.table} | {e.cells} | {status} | {shown} | {ready} | {check} |"
        )
    lines.append("")
    lines.append(status_counts(entries) + " `kdlab papers` lists each table's command.")
    return "\n".join(lines) + "\n"


def cell_counts(entries: list[Entry]) -> dict[str, int]:
    """Published cells per status; a partly comparable entry's other cells are counted at
    its reduced scale."""
    out = dict.fromkeys(STATUSES, 0)
    for e in entries:
        out["comparable"] += e.comparable_cells
        rest = e.cells - e.comparable_cells
        if rest:
            out["reduced_scale" if e.status == "comparable" else e.status] += rest
    return out


def status_counts(entries: list[Entry]) -> str:
    """One line: tables per status and published cells per status (what is committed)."""
    tables = {s: sum(e.status == s for e in entries) for s in STATUSES}
    cells = cell_counts(entries)
    checks = sum(e.check_committed for e in entries)
    parts = ", ".join(f"{s} {tables[s]} ({cells[s]} cells)" for s in STATUSES)
    return (
        f"{len(entries)} tables and figures, {sum(e.cells for e in entries)} published numeric "
        f"cells; tables by status: {parts}; {checks} reduced-scale direction checks beside them."
    )


def _link(output: str, committed: bool, prefix: str = "") -> str:
    return f"[{output}]({prefix}{output})" if committed else (output or "—")


def to_text(entries: list[Entry]) -> str:
    """Plain listing for ``kdlab papers``."""
    rows = []
    for e in entries:
        todo = "" if e.report_ready else "  [report writer to do]"
        rows.append(f"{e.paper:8s} {e.table:8s} {e.cells:4d}  {e.status:13s} {e.title}{todo}")
        if e.scale:
            rows.append(f"{'':23s}scale: {e.scale}")
        if e.command:
            rows.append(f"{'':23s}$ {e.command}")
        if e.comparable_command:
            rows.append(f"{'':23s}at the paper's setting ({e.comparable_cells} cells committed):")
            rows.append(f"{'':23s}$ {e.comparable_command}")
        if e.reason:
            rows.append(f"{'':23s}reason: {e.reason}")
        if e.check_command:
            rows.append(f"{'':23s}direction check on Fashion-MNIST (CPU, not a reproduction):")
            rows.append(f"{'':23s}$ {e.check_command}")
    rows.append(status_counts(entries))
    return "\n".join(rows) + "\n"


def page_prefix(page: Path, root: Path | None = None) -> str:
    """How a Markdown page at ``page`` links to a path relative to ``root`` (default the
    working directory): ``../`` for a page in docs/, ``""`` beside it."""
    rel = os.path.relpath((root or Path.cwd()).resolve(), Path(page).resolve().parent)
    return "" if rel == "." else f"{Path(rel).as_posix()}/"


def update_readme(readme: Path, entries: list[Entry], root: Path | None = None) -> bool:
    """Replace the ``papers`` block (``<!-- papers:start -->`` ... ``<!-- papers:end -->``) of
    ``readme`` (any Markdown page) with :func:`readme_results`, its links relative to the
    page's folder (outputs are relative to ``root``, default the working directory, as
    :func:`catalogue`); True when the file changed."""
    text = readme_results(entries, page_prefix(readme, root))
    return blocks.update(readme, {"papers": text})
