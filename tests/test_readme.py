"""The README is an entry page that agrees with the code: short, every command it shows
parses (kdlab's and DVC's own parsers) or exists, every page of docs/ is in its index, every
relative link resolves, and its headline table is generated from the committed records."""

from __future__ import annotations

import importlib.util
import re
import shlex

import pytest

from conftest import REPO

README = (REPO / "README.md").read_text(encoding="utf-8")


def _commands() -> list[list[str]]:
    """Every command of the README's bash blocks (comments dropped, `&&` chains split)."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            for part in filter(None, (p.strip() for p in line.split("&&"))):
                out.append(shlex.split(part))
    return out


def test_readme_is_an_entry_page():
    assert len(README.splitlines()) <= 150


def test_every_docs_page_is_in_the_readme_index_and_every_link_resolves():
    pages = sorted(p.name for p in (REPO / "docs").glob("*.md"))
    index = README.split("## Documentation", 1)[1]
    assert [p for p in pages if f"(docs/{p})" not in index] == []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        text = page.read_text(encoding="utf-8")
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_every_readme_command_parses_or_exists(capsys):
    from dvc.cli import parse_args

    from kdlab.cli import build_parser

    kinds = set()
    for cmd in _commands():
        if cmd[0] == "nice":
            cmd = cmd[1:]
        kinds.add(cmd[0])
        if cmd[0] == "kdlab":
            build_parser().parse_args(cmd[1:])  # argparse exits 2 on an unknown command
        elif cmd[0] == "dvc":
            parse_args(cmd[1:])
        elif cmd[0] in ("bash", "python"):
            assert (REPO / cmd[1]).is_file(), cmd
        else:
            pytest.fail(f"README command of an unknown kind: {cmd}")
    assert kinds == {"bash", "python", "kdlab", "dvc"}


def test_readme_headline_table_is_generated_from_the_committed_records():
    spec = importlib.util.spec_from_file_location("t4", REPO / "scripts/reffakd_table4.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    from kdlab.reports import run_records

    records = run_records.read_records(mod.RESULTS) if mod.RESULTS.exists() else []
    block = README.split(mod.README_START + "\n", 1)[1].split(mod.README_END, 1)[0]
    assert block == mod.readme_block(records, mod.paper_numbers())
