"""``kdlab report NAME``: the builder of every registered report (:mod:`kdlab.reports.registry`),
and the one write: every report goes through the same merge with the committed records and the
same refusal to shrink a committed table (:func:`kdlab.reports.records.write_report`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kdlab.reports import experiments, registry
from kdlab.reports.records import RESULTS, Built, write_report

Builder = Callable[[Path, bool, "str | None"], Built]  # (repo, all_commits, scale) -> table


def writers() -> dict[str, Builder]:
    """Every report name and its builder: a table shape's is :func:`experiments.build_report`."""
    out: dict[str, Builder] = {}
    for name, entry in registry.REPORTS.items():
        if callable(entry):  # its paper's own builder
            out[name] = entry
        else:
            out[name] = lambda repo, all_commits, scale, n=name: experiments.build_report(
                n, repo, all_commits, scale
            )
    return out


def names() -> list[str]:
    return registry.names()


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
    return write_report(name, built, repo / RESULTS / name, replace)
