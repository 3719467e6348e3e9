"""The catalogue of every table and figure with numbers in the five seed papers.

One source: ``kdlab/papers/<paper>.yaml`` (``tables:`` holds each table's published cells and its
``status``/``command``/``output``/``reason``). ``kdlab papers [--json]`` prints it and
:func:`readme_results` renders the README's results section from it.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from kdlab.io import write_text
from kdlab.tables import published

PAPERS = ("reffakd", "simkd", "hao", "srrl", "patel")
STATUSES = ("regenerated", "needs_gpu", "needs_data", "out_of_scope")
_REPORT = re.compile(r"kdlab report (\w+)")
# `kdlab report` names implemented so far: kdlab.reports.names() (its registry imports this
# module, so the names are repeated here; tests/test_papers.py holds the two equal).
REPORTS = (
    "reffakd_table5",
    "reffakd_table8",
    "reffakd_table9",
    "reffakd_table10",
    "simkd_study",
    "simkd_study_fmnist",
    "srrl_table1",
    "srrl_table1_fmnist",
    "srrl_table2",
    "srrl_table3",
    "srrl_table4",
    "srrl_table5",
    "srrl_table6",
    "srrl_table9",
    "srrl_table10",
    "srrl_table11",
    "srrl_table12",
    "hao_figure3",
    "patel_table1",
    "patel_table2",
    "patel_table3",
)
_TIME = re.compile(r"^(?:(\d+)h\s*)?(\d+)m\s*(\d+)s$")


@dataclass(frozen=True)
class Entry:
    """One catalogue row: a seed table (or figure) and how this repository regenerates it."""

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

    @property
    def commands(self) -> list[str]:
        """The entry's command and its direction check's, where there are."""
        return [c for c in (self.command, self.check_command) if c]


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
        if t["status"] == "out_of_scope" and not t.get("reason"):
            raise ValueError(f"{paper}.{key}: out_of_scope needs a reason")
        width = len(t["columns"])
        for row in t["rows"]:
            if len(row) != width:
                raise ValueError(
                    f"{paper}.{key}: row {row[0]!r} has {len(row)} cells, columns want {width}"
                )
    return tables


def catalogue(root: Path | None = None) -> list[Entry]:
    """Every table of every seed paper; ``committed`` looks for ``output`` under ``root``."""
    root = root or Path.cwd()
    out = []
    for paper in PAPERS:
        for key, t in paper_tables(paper).items():
            output = t.get("output") or ""
            check = t.get("direction_check") or {}
            commands = (t.get("command") or "") + " " + check.get("command", "")
            out.append(
                Entry(
                    paper=paper,
                    table=key,
                    title=t["title"],
                    cells=count_cells(t),
                    status=t["status"],
                    command=t.get("command") or "",
                    output=output,
                    reason=t.get("reason") or "",
                    committed=bool(output) and (root / output).exists(),
                    report_ready=all(n in REPORTS for n in _REPORT.findall(commands)),
                    check_command=check.get("command", ""),
                    check_output=check.get("output", ""),
                    check_committed=bool(check) and (root / check["output"]).exists(),
                )
            )
    return out


def as_dicts(entries: list[Entry]) -> list[dict[str, Any]]:
    """JSON-ready rows."""
    return [asdict(e) for e in entries]


def readme_results(entries: list[Entry]) -> str:
    """The README's results section (between ``<!-- papers:start/end -->``): per paper, what is
    regenerated here, what needs a GPU or data, and what is out of scope."""
    lines = [
        "| paper | table | cells | status | output | report | direction check (CPU) |",
        "|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        shown = _link(e.output, e.committed)
        status = e.status + (f" ({e.reason})" if e.reason else "")
        ready = "ready" if e.report_ready else "to do"
        check = _link(e.check_output, e.check_committed)
        lines.append(
            f"| {e.paper} | {e.table} | {e.cells} | {status} | {shown} | {ready} | {check} |"
        )
    total = sum(e.cells for e in entries)
    regen = sum(e.cells for e in entries if e.status == "regenerated")
    lines.append("")
    lines.append(
        f"{len(entries)} tables and figures, {total} published numeric cells; "
        f"{regen} in tables regenerated on a CPU here. `kdlab papers` lists each table's command."
    )
    return "\n".join(lines) + "\n"


def _link(output: str, committed: bool) -> str:
    return f"[{output}]({output})" if committed else (output or "—")


def to_text(entries: list[Entry]) -> str:
    """Plain listing for ``kdlab papers``."""
    rows = []
    for e in entries:
        todo = "" if e.report_ready else "  [report writer to do]"
        rows.append(f"{e.paper:8s} {e.table:8s} {e.cells:4d}  {e.status:13s} {e.title}{todo}")
        if e.command:
            rows.append(f"{'':23s}$ {e.command}")
        if e.reason:
            rows.append(f"{'':23s}reason: {e.reason}")
        if e.check_command:
            rows.append(f"{'':23s}direction check on Fashion-MNIST (CPU, not a reproduction):")
            rows.append(f"{'':23s}$ {e.check_command}")
    return "\n".join(rows) + "\n"


START, END = "<!-- papers:start -->", "<!-- papers:end -->"


def update_readme(readme: Path, entries: list[Entry]) -> bool:
    """Replace the text between ``<!-- papers:start -->`` and ``<!-- papers:end -->`` in
    ``readme`` with :func:`readme_results`; True when the file changed."""
    text = readme.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise ValueError(f"{readme}: needs the markers {START} ... {END}")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{readme_results(entries)}{END}{tail}"
    if new != text:
        write_text(readme, new)
    return new != text
