"""The registry of ``kdlab report``: every report's name is said once, in its paper's module.

Each paper's module (``reports/<paper>.py``) holds ``REPORTS``: its report names, each with a
table shape of :mod:`kdlab.reports.base` (a :class:`GridSpec`, :class:`RowsSpec` or
:class:`PairSpec`: built from DVC experiments by :mod:`kdlab.reports.experiments`) or its own
builder ``(repo, all_commits, scale) -> Built`` (Hao's figure, Patel's tables).
:mod:`kdlab.reports.writer` writes any of them; :mod:`kdlab.reports.catalogue` marks a table's
report ready when its name is here.

Adding a report: its entry in its paper's ``REPORTS``. Adding a paper's reports: one file,
``reports/<paper>.py`` with its ``REPORTS``, and one line in :data:`MODULES`.
"""

from __future__ import annotations

from kdlab.reports import hao, patel, reffakd, simkd, srrl
from kdlab.reports.base import GridSpec, PairSpec, RowsSpec

MODULES = (
    reffakd,
    simkd,
    srrl,
    hao,
    patel,
)


def _gather() -> dict:
    out: dict = {}
    for module in MODULES:
        for name, report in module.REPORTS.items():
            if name in out:
                raise ValueError(f"report {name!r} is registered twice ({module.__name__})")
            out[name] = report
    return out


# name -> a table shape (GridSpec / RowsSpec / PairSpec) or a builder, in MODULES' order.
REPORTS = _gather()
# The table shapes by kind (built by kdlab.reports.experiments; `kdlab queue` queues PAIRS).
GRIDS: dict[str, GridSpec] = {n: r for n, r in REPORTS.items() if isinstance(r, GridSpec)}
ROWS: dict[str, RowsSpec] = {n: r for n, r in REPORTS.items() if isinstance(r, RowsSpec)}
PAIRS: dict[str, PairSpec] = {n: r for n, r in REPORTS.items() if isinstance(r, PairSpec)}


def names() -> list[str]:
    """Every ``kdlab report`` name."""
    return list(REPORTS)
