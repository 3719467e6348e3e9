"""docs/results.md cannot go stale: every number in its results section sits in a block that
``kdlab results`` generates from committed files, the committed page equals its regeneration,
and the prose between the blocks quotes no number."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd

from conftest import REPO
from kdlab.cli import main
from kdlab.reports import blocks, results_page

PAGE = REPO / "docs/results.md"
NUMBER = re.compile(r"(?<![\w.-])\d+(?:[.,]\d+)*(?![\w-])")


def prose_numbers(text: str) -> list[str]:
    """Numbers the results section states outside its generated blocks (code spans, link
    targets and table / figure names left out): each with its context."""
    inner = blocks.body(text, "results")
    for name in blocks.names(inner):
        start, end = blocks.markers(name)
        inner = inner.split(start, 1)[0] + inner.split(end, 1)[1]
    prose = re.sub(r"`[^`]*`", " ", inner)
    prose = re.sub(r"\]\([^)]*\)", "]", prose)
    prose = re.sub(r"\b(?:Tables?|Figure)\s+\d+(?:\s*(?:-|and)\s*\d+)*", " ", prose)
    return [prose[max(0, m.start() - 30) : m.end() + 10] for m in NUMBER.finditer(prose)]


def test_the_committed_page_is_its_regeneration():
    text = PAGE.read_text(encoding="utf-8")
    generated = results_page.render(REPO)
    assert {n for n in blocks.names(text) if n.startswith("results:")} == set(generated)
    for name, body in generated.items():
        assert blocks.body(text, name) == body, f"{name}: run `kdlab results`"


def test_the_catalogue_block_is_current_too(tmp_path):
    copy = tmp_path / "results.md"
    shutil.copy(PAGE, copy)
    assert results_page.update(copy, REPO, links_from=PAGE) is False
    assert copy.read_bytes() == PAGE.read_bytes()
    # a number typed into a generated block is rewritten
    copy.write_text(copy.read_text().replace("| KD | 92.30 | ", "| KD | 92.30 | 99.99 ", 1))
    assert results_page.update(copy, REPO, links_from=PAGE) is True
    assert copy.read_bytes() == PAGE.read_bytes()


def test_kdlab_results_check_passes_on_the_committed_page(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    assert main(["results", "docs/results.md", "--check"]) == 0
    assert capsys.readouterr().out == "docs/results.md: generated blocks up to date\n"


def test_the_prose_quotes_no_number():
    assert prose_numbers(PAGE.read_text(encoding="utf-8")) == []
    planted = PAGE.read_text(encoding="utf-8").replace(
        "**Method comparison**", "The queue took 47 min. **Method comparison**"
    )
    found = prose_numbers(planted)
    assert len(found) == 1 and "took 47 min" in found[0]


def _checkout(tmp_path):
    """The files the default-preset blocks read, copied (the committed run)."""
    for rel in ("metrics", "params.yaml"):
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel)
        else:
            shutil.copy(src, tmp_path / rel)
    return results_page.Page(tmp_path)


def test_table4_block_follows_the_stage_records(tmp_path):
    page = _checkout(tmp_path)
    dkd = json.loads((tmp_path / "metrics/distill/dkd.json").read_text())
    dkd.update(test_acc=90.0, device="cpu: Planted CPU, 2 torch thread(s)")
    (tmp_path / "metrics/distill/dkd.json").write_text(json.dumps(dkd))
    teacher = json.loads((tmp_path / "metrics/teacher.json").read_text())
    teacher["device"] = "auto"  # the unresolved param: must never print as the device
    (tmp_path / "metrics/teacher.json").write_text(json.dumps(teacher))
    ce = json.loads((tmp_path / "metrics/student.json").read_text())["test_acc"]
    text = results_page.table4_default(page)
    best = f"{dkd['test_acc_at_best_val']:.2f}"
    assert f"| DKD | — | 90.00 | {best} |" in text
    assert f"DKD {90.0 - ce:+.2f}," in text
    assert "T 20 (DKD its own T 4; ReffAKD + DKD its own T 4)" in text
    run = results_page.default_run(page)
    walls = [
        json.loads((tmp_path / "metrics" / f"{s}.json").read_text())["wall_time_s"]
        for s in results_page.STAGES
    ]
    total = round(sum(walls))
    assert f"measured {total // 60} min {total % 60} s of wall time over 12 stages" in run
    # each device the records name once; one without a device or with the param `auto` says
    # "not recorded", never `auto`
    devices = run.rsplit("device: ", 1)[1].removesuffix(".\n").split("; ")
    assert "cpu: Planted CPU, 2 torch thread(s)" in devices and "not recorded" in devices
    assert "auto" not in devices and len(devices) == len(set(devices))


def test_soft_label_block_reads_the_matrix_record(tmp_path):
    page = _checkout(tmp_path)
    rec = json.loads((REPO / "metrics/soft_labels.json").read_text())
    text = results_page.soft_labels(page)
    assert f"mean diagonal probability is {rec['mean_diagonal_prob']:.3f}" in text
    assert f"gamma = {rec['gamma']:g} (the paper: 0.008)" in text
    assert f"{rec['rows_own_class_max']} of {rec['num_classes']} rows peak" in text


def test_table10_summary_is_the_committed_table_recomputed():
    """The block's claims against an independent reading of results/reffakd_table10.csv."""
    df = pd.read_csv(REPO / "results/reffakd_table10.csv")
    ours = {c: pd.to_numeric(df[f"{c} ours"], errors="coerce") for c in ("reffakd", "vanilla_kd")}
    paper = {c: df[f"{c} paper"] for c in ours}
    gaps = pd.concat([ours[c] - paper[c] for c in ours]).dropna()
    behind = ours["reffakd"] - ours["vanilla_kd"]
    both = paper["reffakd"].notna() & paper["vanilla_kd"].notna()
    ahead = int((paper["reffakd"][both] > paper["vanilla_kd"][both]).sum())
    text = results_page.table10(results_page.Page(REPO))
    assert (
        f"Ours minus the paper ranges from {gaps.min():+.2f} to {gaps.max():+.2f} points over "
        f"the {len(gaps)} cells the paper prints."
    ) in text
    assert f"ReffAKD trails KD in {int((behind < 0).sum())} of {len(df)} settings, by " in text
    assert f"by {-behind.max():.2f} (" in text and f"to {-behind.min():.2f} (" in text
    worst = sorted(  # ties named, all of them, in (T, alpha) order
        df["setting"][behind.round(2) == round(behind.min(), 2)],
        key=lambda s: [float(kv.split("=")[1]) for kv in s.split(", ")],
    )
    assert f"to {-behind.min():.2f} ({'; '.join(worst)}) points" in text
    assert f"ahead in {ahead} of the {int(both.sum())} settings where it prints both" in text
