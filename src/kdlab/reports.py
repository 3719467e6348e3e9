"""The registry of ``kdlab report`` writers: every report's name is said once, by the module
that builds it (:data:`kdlab.experiments.GRIDS` / ``ROWS`` / ``PAIRS``,
:data:`kdlab.patel_report.TABLES`, :data:`kdlab.figures.FIGURES`), and every writer goes
through the same merge with the committed records and the same refusal to shrink a committed
table (:func:`kdlab.report_records.write_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kdlab import experiments, figures, patel_report
from kdlab.report_records import Built, write_report

Builder = Callable[[Path, bool, "str | None"], Built]  # (repo, all_commits, scale) -> table


def writers() -> dict[str, Builder]:
    """Every report name and its builder."""
    out: dict[str, Builder] = {}
    for name in (*experiments.GRIDS, *experiments.ROWS, *experiments.PAIRS):
        out[name] = lambda repo, all_commits, scale, n=name: experiments.build_report(
            n, repo, all_commits, scale
        )
    for name in patel_report.TABLES:
        out[name] = lambda repo, all_commits, scale, n=name: patel_report.build_patel(
            n, repo, scale
        )
    for name, build in figures.FIGURES.items():
        out[name] = lambda repo, all_commits, scale, b=build: b(repo, scale=scale)
    return out


def names() -> list[str]:
    return list(writers())


def report(
    name: str,
    repo: Path,
    all_commits: bool = False,
    replace: bool = False,
    scale: str | None = None,
) -> tuple[Path, list[str]]:
    """Write ``results/<name>.md`` (+ .csv, records) from ``repo``'s experiments merged with
    its committed records; the Markdown path and each filled cell's source. ``scale`` (e.g.
    ``fashion_mnist/200ep``) shows that scale's cells instead of the records' main scale, in
    ``results/<name>-<scale>.md``; every scale's cells stay in the records."""
    known = writers()
    if name not in known:
        raise ValueError(f"unknown report {name!r}; known: {', '.join(known)}")
    built = known[name](repo, all_commits, scale)
    return write_report(name, built, repo / experiments.REPORTS / name, replace)
