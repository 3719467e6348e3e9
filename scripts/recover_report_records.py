"""One-off migration: per-cell records (results/records/<report>.json) of the reports committed
before records existed, recovered from the committed files themselves.

The experiments behind those reports exist only on the machine that ran them, so each record
says where it came from: "recovered from the committed report results/<name>.md at commit
<hash>" (the last commit that changed the file), with no experiment ref. The cells' values
are the committed CSV's (typed so that the Markdown and the CSV print back the same), the
scale key and seeds come from the report's own "Ours: ..." note, the title and notes from its
Markdown. After writing, each report is rebuilt from its records alone in a temporary copy
(no experiments) and compared byte for byte with the committed files.

    python scripts/recover_report_records.py [NAME ...]   # default: every committed report
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.reports import writer as reports
from kdlab.reports.records import MERGE_RULE, layout, plain, setting
from kdlab.reports.tables import to_markdown

ROOT = Path(__file__).resolve().parent.parent
KEYS = {"hao_figure3": 2}  # leading columns that name a row (default 1)


def git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


def _typed(csv_text: str, md_text: str) -> Any:
    """The value that prints ``md_text`` in the Markdown and ``csv_text`` in the CSV."""
    if csv_text == "":
        return None
    if re.fullmatch(r"-?\d+", csv_text) and md_text == csv_text:
        return int(csv_text)
    try:
        f = float(csv_text)
    except ValueError:
        return csv_text
    if repr(f) == csv_text and md_text == f"{f:.2f}":
        return f
    return csv_text


def _md_table(md: str) -> tuple[str, list[list[str]], list[str]]:
    """Title, table cells (header first) and notes of a report's Markdown."""
    lines = md.splitlines()
    title = lines[0].removeprefix("# ")
    table = [ln for ln in lines if ln.startswith("|") and not ln.startswith("|---")]
    notes = [ln[2:] for ln in lines if ln.startswith("- ")]
    return title, [[c.strip() for c in ln.strip("|").split(" | ")] for ln in table], notes


def scale_from_notes(notes: list[str]) -> tuple[str, list[int], str]:
    """(scale key as :func:`kdlab.reports.records.scale_of` writes it, seeds, device) from the
    report's "Ours: ..." note."""
    ours = next(n for n in notes if n.startswith("Ours: "))
    m = re.search(
        r"Ours: (\d+)-epoch .*?teacher \(options .*?\), (\w+)"
        r"(?: \(a seeded subset of (\d+) images\))?, device (\S+), seeds ([\d, ]+), ",
        ours,
    )
    if not m:
        raise ValueError(f"cannot read the scale from {ours!r}")
    epochs, data, subset, device, seeds = m.groups()
    scale = f"{data}{f'[{subset}]' if subset else ''}/{epochs}ep"
    return scale, sorted(int(s) for s in seeds.split(",")), device


def recover(name: str) -> dict[str, Any]:
    md_path = ROOT / "results" / f"{name}.md"
    rel = md_path.relative_to(ROOT).as_posix()
    commit = git("log", "-1", "--format=%H", "--", rel)[:12]
    when = subprocess.run(
        ["git", "log", "-1", "--format=%cd", "--date=format-local:%Y-%m-%dT%H:%M:%S", "--", rel],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    ).stdout.strip()
    title, table, notes = _md_table(md_path.read_text(encoding="utf-8"))
    csv = pd.read_csv(md_path.with_suffix(".csv"), dtype=str, keep_default_na=False)
    columns = list(csv.columns)
    if table[0] != columns:
        raise ValueError(f"{name}: the Markdown's and the CSV's columns differ")
    rows = [
        {c: _typed(t, m) for c, t, m in zip(columns, trow, mrow)}
        for trow, mrow in zip(csv.itertuples(index=False), table[1:])
    ]
    scale, seeds, device = scale_from_notes(notes)
    lay = layout(columns, KEYS.get(name, 1))
    grouped = {c for cols in lay.groups.values() for c in cols}
    extra = [c for c in columns if c not in lay.keys and c not in grouped]
    cells = []
    for row in rows:
        first = True
        for group, cols in lay.groups.items():
            count = lay.counts[group]
            n = row.get(count) if count else None
            if (count and not n) or (not count and row[cols[0]] is None):
                continue
            cells.append(
                {
                    "setting": setting(row, lay),
                    "column": group,
                    "scale": scale,
                    "seeds": seeds if n in (None, len(seeds)) else [],
                    "device": device,
                    "scores": {c: plain(row[c]) for c in cols},
                    "exp": None,
                    "timestamp": when,
                    "source": f"recovered from the committed report {rel} at commit {commit}",
                    **({"row": {c: row[c] for c in extra}} if first else {}),
                }
            )
            first = False
    # The table must print back as committed before it becomes records.
    df = pd.DataFrame(rows, columns=columns)
    if to_markdown(df) != "\n".join("| " + " | ".join(r) + " |" for r in table[:1]) + "\n" + (
        "|" + "|".join("---" for _ in columns) + "|\n"
    ) + "".join("| " + " | ".join(r) + " |\n" for r in table[1:]):
        raise ValueError(f"{name}: the recovered cells do not print back as committed")
    return {
        "format": 1,  # this migration's layout; kdlab.reports.records.upgrade reads it as 2
        "report": name,
        "title": title,
        "columns": columns,
        "notes": notes,
        "merge_rule": MERGE_RULE,
        "cells": cells,
    }


def fresh_copy(root: Path, dest: Path) -> None:
    """``dest``: what a clone of ``root`` would hold (its tracked and unignored files, one
    commit, no DVC cache, no experiments)."""
    files = git("ls-files", "-co", "--exclude-standard").splitlines()
    for f in files:
        if (root / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / f, dest / f)
    for cmd in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "clone"],
    ):
        subprocess.run(["git", *cmd], cwd=dest, check=True, capture_output=True)


def rebuilds(name: str) -> bool:
    """Does ``kdlab report NAME`` in a fresh copy (no experiments) print the committed files?"""
    from kdlab.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp)
        fresh_copy(ROOT, copy)
        if main(["report", name, "--repo", str(copy)]) != 0:
            return False
        return all(
            (copy / "results" / f"{name}{ext}").read_bytes()
            == (ROOT / "results" / f"{name}{ext}").read_bytes()
            for ext in (".md", ".csv", ".png")
            if (ROOT / "results" / f"{name}{ext}").exists()
        )


def main(names: list[str]) -> int:
    known = set(reports.names())
    names = names or sorted(p.stem for p in (ROOT / "results").glob("*.md") if p.stem in known)
    for name in names:
        data = recover(name)
        path = ROOT / "results" / "records" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        ok = rebuilds(name)
        print(f"{path.relative_to(ROOT)}: {len(data['cells'])} cells; rebuilds: {ok}")
        if not ok:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
