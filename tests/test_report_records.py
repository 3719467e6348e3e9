"""Committed reports never lose cells and rebuild anywhere from their records
(results/records/<report>.json): the merge rule, the refusal to shrink, the sources printed,
and the byte-identical rebuild of every committed report in a fresh clone with no
experiments."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from kdlab.cli import main
from kdlab.reports import base, experiments
from kdlab.reports import writer as reports
from kdlab.reports.records import (
    count_filled,
    from_records,
    merge,
    printed,
    read_stored,
    write_report,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
RECOVERED = "recovered from the committed report results/reffakd_table10.md at commit"
# The CPU Table 10 as committed before its grid rerun (30 cells recovered from an older report,
# 2 from the default run): a frozen fixture of the merge rule, whatever results/ holds now.
FROZEN = Path(__file__).resolve().parent / "data" / "reffakd_table10_recovered"


def committed_reports() -> list[str]:
    known = set(reports.names())
    return sorted(p.stem for p in RESULTS.glob("*.md") if p.stem in known)


def test_every_committed_report_keeps_its_records():
    names = committed_reports()
    assert {"reffakd_table10", "hao_figure3", "simkd_study_fmnist", "srrl_table1_fmnist"} <= set(
        names
    )
    for name in names:
        data = json.loads((RESULTS / "records" / f"{name}.json").read_text())
        assert data["report"] == name and data["format"] == 2
        for cell in data["cells"]:
            assert {"setting", "column", "scale", "seeds", "device", "scores", "exp"} <= set(cell)
            assert cell["scale"] and "/" in cell["scale"], cell  # e.g. fashion_mnist/12ep
            # what ran: the models, never the param `auto`
            assert cell["device"] != "auto" and " params)" in cell["models"], cell
            assert data["scale"] == cell["scale"]  # one scale committed per report so far
            # recovered from a report committed before records existed, or the experiments
            # (name@rev) a later `kdlab report` merged in
            src = cell["source"]
            assert src.startswith("recovered from the committed report results/") or (
                src.startswith("experiments ") and cell["exp"] and "@" in cell["exp"][0]
            ), cell


def test_committed_table10_is_one_grid_rerun_whose_default_cell_is_the_single_runs():
    """The committed CPU Table 10 came from `kdlab reproduce reffakd_table10 --scale cpu
    --rerun` (one distill_grid of 32 cells): every cell names its grid experiment and device,
    and the T=20 / alpha=0.6 cells equal the committed default run's single stages."""
    data = json.loads((RESULTS / "records/reffakd_table10.json").read_text())
    assert len(data["cells"]) == 32
    grid = [c for c in data["cells"] if "reproduce/reffakd_table10" in str(c["exp"])]
    # a record whose numbers the grid's cell printed again is kept (the merge rule): 3 here
    assert len(grid) >= 29
    for cell in data["cells"]:
        assert cell["scale"] == "fashion_mnist/12ep" and cell["seeds"] == [0], cell
        if cell in grid:
            assert cell["source"].startswith("experiments ") and "@" in cell["exp"][0], cell
            assert cell["device"].startswith("cpu: "), cell
    for column, method in (("reffakd", "reffakd"), ("vanilla_kd", "kd")):
        cell = next(
            c for c in data["cells"] if (c["setting"], c["column"]) == ("T=20, alpha=0.6", column)
        )
        single = json.loads((ROOT / f"metrics/distill/{method}.json").read_text())["test_acc"]
        assert float(cell["scores"][f"{column} ours"]) == round(single, 2), (column, single)


def test_recovered_records_hold_32_cells_at_the_cpu_scale():
    data = json.loads((FROZEN / "records/reffakd_table10.json").read_text())
    assert len(data["cells"]) == 32
    cell = next(c for c in data["cells"] if c["setting"] == "T=1, alpha=0.9")
    assert cell["column"] == "reffakd" and cell["seeds"] == [0] and cell["exp"] is None
    assert cell["scale"] == "fashion_mnist/12ep" and cell["device"] is None  # not recorded
    assert cell["models"] == (
        "12-epoch lenet5 students (61,750 params); 3-epoch resnet18 teacher (width 16, "
        "701,178 params)"
    )
    assert cell["scores"]["reffakd ours"] == 89.25 and cell["source"].startswith(RECOVERED)
    md = (FROZEN / "reffakd_table10.md").read_text()
    assert "device auto" not in md and "seeds 0; device not recorded." in md


def fresh_clone(dest: Path) -> Path:
    """What a clone of this checkout holds: its tracked and unignored files, one commit, no DVC
    cache and no experiments (the checkout's own may be uncommitted)."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    for f in files:
        if (ROOT / f).is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, dest / f)
    for cmd in (["init", "-q"], ["add", "-A"]):
        subprocess.run(["git", *cmd], cwd=dest, check=True)
    ident = ["-c", "user.name=t", "-c", "user.email=t@example.com"]
    subprocess.run(["git", *ident, "commit", "-qm", "clone"], cwd=dest, check=True)
    return dest


# Committed reports whose writer has since changed layout: simkd_study_fmnist now compares each
# variant with plain SimKD (the study's baseline, issue 22 item 10); the committed table compares
# with the CE student and awaits the rerun of scripts/direction_checks.sh.
SUPERSEDED = {"simkd_study_fmnist"}


@pytest.mark.skipif(shutil.which("git") is None, reason="git needed")
def test_committed_reports_rebuild_byte_identically_in_a_fresh_clone(tmp_path, capsys):
    clone = fresh_clone(tmp_path / "clone")
    for name in committed_reports():
        if name in SUPERSEDED:  # refused, not silently rewritten in the new layout ...
            assert main(["report", name, "--repo", str(clone)]) == 2
            assert "have columns" in capsys.readouterr().err
            assert (clone / "results" / f"{name}.md").read_bytes() == (
                RESULTS / f"{name}.md"
            ).read_bytes()
            # ... but it rebuilds from its records alone, in its committed layout
            stem = clone / "results" / name
            stored = read_stored(clone / "results/records" / f"{name}.json", name)
            write_report(name, from_records(name, stored), stem)
            for rel in (f"{name}.md", f"{name}.csv", f"records/{name}.json"):
                assert (clone / "results" / rel).read_bytes() == (RESULTS / rel).read_bytes(), rel
            continue
        assert main(["report", name, "--repo", str(clone)]) == 0, capsys.readouterr().err
        out = capsys.readouterr().out
        assert "Cell sources (" in out and "committed record (" in out
        for rel in (f"{name}.md", f"{name}.csv", f"{name}.png", f"records/{name}.json"):
            if (RESULTS / rel).exists():
                assert (clone / "results" / rel).read_bytes() == (RESULTS / rel).read_bytes(), rel


def run_(t: float, a: float, seed: int, reffakd: float, kd: float, epochs=12, stamp="2027-01-01"):
    return {
        "name": f"exp-{t:g}-{a:g}-{seed}",
        "rev": f"{int(t * 100 + a * 10 + seed):07d}abc",
        "timestamp": f"{stamp}T00:00:00",
        "params": {
            "preset": "default",
            "temperature": t,
            "alpha": a,
            "seed": seed,
            "device": "cpu",
            "methods": {"kd": "teacher", "reffakd": "soft_labels"},
            "data": {"name": "fashion_mnist"},
            "student": {"model": "lenet5", "train": {"epochs": epochs}},
        },
        "scores": {"reffakd": {"test_acc": reffakd}, "kd": {"test_acc": kd}},
    }


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A repository holding the frozen reffakd_table10 (md, csv, records) and the runs that
    ``dvc exp show`` would list (set ``repo.runs``)."""
    (tmp_path / "results/records").mkdir(parents=True)
    for rel in ("reffakd_table10.md", "reffakd_table10.csv", "records/reffakd_table10.json"):
        shutil.copy(FROZEN / rel, tmp_path / "results" / rel)
    runs: list = []
    monkeypatch.setattr(experiments, "exp_show", lambda repo, all_commits: None)
    monkeypatch.setattr(experiments, "runs_from_exp_show", lambda data: runs)
    monkeypatch.setattr(base, "run_record", lambda repo, rev, stage: None)  # its devices, times
    return tmp_path, runs


def _cell(md: str, setting: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| {setting} |"))
    return [c.strip() for c in line.strip("|").split(" | ")]


def test_a_newer_complete_experiment_cell_replaces_its_record_and_others_stay(repo, capsys):
    tmp, runs = repo
    runs.append(run_(5, 0.8, 0, 93.0, 94.0))  # newer, same scale, seed 0: replaces
    runs.append(run_(1, 0.9, 0, 10.0, 11.0, stamp="2020-01-01"))  # older: kept out
    runs.append(run_(10, 0.6, 0, 50.0, 51.0, epochs=200))  # another scale: kept out
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 0
    out = capsys.readouterr().out
    md = (tmp / "results/reffakd_table10.md").read_text()
    assert _cell(md, "T=5, alpha=0.8")[1] == "93.00" and _cell(md, "T=5, alpha=0.8")[5] == "94.00"
    assert _cell(md, "T=1, alpha=0.9")[1] == "89.25"  # the record
    assert _cell(md, "T=10, alpha=0.6")[1] == "90.76"  # the record (paper scale kept out)
    assert (
        "32 of 32 cells filled: 2 from the experiments above, 30 from the committed records at "
        "scale fashion_mnist/12ep (results/records/reffakd_table10.json;"
    ) in md
    assert "T=5, alpha=0.8 / reffakd: experiment ref exp-5-0.8-0@" in out
    assert "T=1, alpha=0.9 / reffakd: committed record (recovered from" in out
    assert "T=1, alpha=0.9 / reffakd: experiment kept out (it is not newer than the record)" in out
    assert (  # the 200-epoch run is not averaged into the 12-epoch cell, nor shown
        "1 experiment runs at scale fashion_mnist/200ep left out (kdlab report reffakd_table10 "
        "--scale fashion_mnist/200ep)"
    ) in out
    # The new records keep the experiment's cell with its ref, the others as recovered.
    data = json.loads((tmp / "results/records/reffakd_table10.json").read_text())
    key = ("T=5, alpha=0.8", "reffakd")
    cell = next(c for c in data["cells"] if (c["setting"], c["column"]) == key)
    assert cell["exp"] == ["exp-5-0.8-0@0000508"] and cell["scale"] == "fashion_mnist/12ep"
    assert len(data["cells"]) == 32
    # ... so the same table rebuilds from the records once the experiments are gone.
    before = (tmp / "results/reffakd_table10.md").read_bytes()
    runs.clear()
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 0
    assert (tmp / "results/reffakd_table10.md").read_bytes() == before


def test_an_experiment_missing_a_seed_of_the_record_does_not_replace_it(repo, capsys):
    tmp, runs = repo
    data = json.loads((tmp / "results/records/reffakd_table10.json").read_text())
    for c in data["cells"]:
        c["seeds"] = [0, 1]
    (tmp / "results/records/reffakd_table10.json").write_text(json.dumps(data))
    runs.append(run_(5, 0.8, 0, 93.0, 94.0))
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 0
    assert "its seeds [0] lack some of the record's [0, 1]" in capsys.readouterr().out
    assert _cell((tmp / "results/reffakd_table10.md").read_text(), "T=5, alpha=0.8")[1] == "90.15"


def test_report_refuses_to_shrink_the_committed_table_without_replace(repo, capsys):
    """The issue's case: the committed table without its records, and a clone that finds two
    cells: exit 2, one line naming the report and the counts, nothing written."""
    tmp, runs = repo
    (tmp / "results/records/reffakd_table10.json").unlink()
    runs.append(run_(20, 0.6, 0, 90.64, 91.24))
    committed = (tmp / "results/reffakd_table10.md").read_bytes()
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 2
    err = capsys.readouterr().err
    assert err == (
        "kdlab report: error: reffakd_table10: the new table fills 2 of 32 cells, the "
        "committed reffakd_table10.md 32; nothing written (--replace to overwrite)\n"
    )
    assert (tmp / "results/reffakd_table10.md").read_bytes() == committed
    assert not (tmp / "results/records/reffakd_table10.json").exists()
    assert main(["report", "reffakd_table10", "--repo", str(tmp), "--replace"]) == 0
    md = (tmp / "results/reffakd_table10.md").read_text()
    assert "2 of 32 cells have a run" in md and _cell(md, "T=1, alpha=0.9")[1] == "—"


def test_replace_drops_the_records(repo):
    tmp, runs = repo
    runs.append(run_(5, 0.8, 0, 93.0, 94.0, stamp="2020-01-01"))  # older than the records
    assert main(["report", "reffakd_table10", "--repo", str(tmp), "--replace"]) == 0
    md = (tmp / "results/reffakd_table10.md").read_text()
    assert _cell(md, "T=5, alpha=0.8")[1] == "93.00" and "2 of 32 cells have a run" in md
    data = json.loads((tmp / "results/records/reffakd_table10.json").read_text())
    assert len(data["cells"]) == 2


def test_merge_of_a_table_without_records_is_the_experiments_table():
    runs = [run_(5, 0.8, 0, 93.0, 94.0)]
    where: dict = {}
    df = experiments.build(runs, "reffakd_table10", where)
    built = experiments.Built(df, "t", ["n"], cell_runs=where)
    df, notes, title, sources, new = merge("reffakd_table10", built, None)
    assert count_filled(df) == (2, 32) and title == "t"
    assert notes == [
        "n",
        "What ran (each shown cell's record): fashion_mnist/12ep: 12-epoch lenet5 students "
        "(61,750 params); seeds 0; device cpu. Ours: final-epoch test accuracy, nothing "
        "selected on the test set; the paper: its best epoch, selected on the test set.",
    ]
    assert [c["seeds"] for c in new["cells"]] == [[0], [0]]
    assert sources == [
        "T=5, alpha=0.8 / reffakd: experiment ref exp-5-0.8-0@0000508",
        "T=5, alpha=0.8 / vanilla_kd: experiment ref exp-5-0.8-0@0000508",
    ]


def test_printed_values_compare_as_the_tables_print_them():
    assert printed({"a": "90.64", "n": 1}) == printed({"a": 90.64, "n": 1})
    assert printed({"a": "90.10"}) != printed({"a": 90.1})  # the CSV prints 90.1


def test_recovered_values_print_back_as_committed():
    """The migration types each committed CSV cell so that both files print it unchanged."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "recover", ROOT / "scripts/recover_report_records.py"
    )
    recover = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recover)
    assert recover._typed("90.64", "90.64") == 90.64
    assert recover._typed("-2.1", "-2.10") == -2.1 and recover._typed("3", "3") == 3
    assert recover._typed("90.10", "90.10") == "90.10"  # a float would print 90.1 in the CSV
    assert recover._typed("", "—") is None and recover._typed("—", "—") == "—"
    assert recover._typed("89.19 ± 0.36", "89.19 ± 0.36") == "89.19 ± 0.36"
    notes = [
        "Ours: 3-epoch resnet8 students, 5-epoch resnet18 teacher (options {'width': 16}), "
        "fashion_mnist (a seeded subset of 25000 images), device auto, seeds 2, 1, 0, final-epoch "
        "test accuracy."
    ]
    assert recover.scale_from_notes(notes) == ("fashion_mnist[25000]/3ep", [0, 1, 2], "auto")


def test_a_paper_scale_cell_beside_the_cpu_cell_never_overwrites_it(repo, capsys):
    """Cells are keyed by (setting, column, scale): a newer 200-epoch run of a committed
    12-epoch cell leaves the 12-epoch table and its record as they were; `--scale` shows the
    200-epoch cells in a table of their own, and both scales' records survive every rebuild."""
    tmp, runs = repo
    committed = (tmp / "results/reffakd_table10.md").read_bytes()
    runs.append(run_(20, 0.6, 0, 92.5, 92.9, epochs=200, stamp="2030-01-01"))
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 0
    assert (tmp / "results/reffakd_table10.md").read_bytes() == committed
    assert not (tmp / "results/reffakd_table10-fashion_mnist-200ep.md").exists()
    capsys.readouterr()
    scale = "fashion_mnist/200ep"
    assert main(["report", "reffakd_table10", "--repo", str(tmp), "--scale", scale]) == 0
    out = capsys.readouterr().out
    assert "32 committed cells at scale fashion_mnist/12ep kept in the records, not shown" in out
    paper = (tmp / "results/reffakd_table10-fashion_mnist-200ep.md").read_text()
    assert _cell(paper, "T=20, alpha=0.6")[1:3] == ["92.50", "1"]
    assert _cell(paper, "T=20, alpha=0.6")[5:7] == ["92.90", "1"]
    assert _cell(paper, "T=1, alpha=0.9")[1] == "—"  # no 200-epoch run: missing, not 12-ep
    assert "fashion_mnist/200ep: 200-epoch lenet5 students (61,750 params)" in paper
    assert (tmp / "results/reffakd_table10.md").read_bytes() == committed
    data = json.loads((tmp / "results/records/reffakd_table10.json").read_text())
    by_scale = {}
    for c in data["cells"]:
        by_scale.setdefault(c["scale"], {})[(c["setting"], c["column"])] = c["scores"]
    assert {s: len(v) for s, v in by_scale.items()} == {
        "fashion_mnist/12ep": 32,
        "fashion_mnist/200ep": 2,
    }
    assert by_scale["fashion_mnist/12ep"][("T=20, alpha=0.6", "reffakd")]["reffakd ours"] == (
        "90.73"
    )
    assert data["scale"] == "fashion_mnist/12ep"  # results/reffakd_table10.md's scale
    # Without the experiments both tables rebuild from the records alone, byte for byte.
    before = paper
    runs.clear()
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 0
    assert (tmp / "results/reffakd_table10.md").read_bytes() == committed
    assert main(["report", "reffakd_table10", "--repo", str(tmp), "--scale", scale]) == 0
    assert (tmp / "results/reffakd_table10-fashion_mnist-200ep.md").read_text() == before


def test_runs_at_two_scales_without_records_need_a_chosen_scale(repo, capsys):
    tmp, runs = repo
    for rel in ("reffakd_table10.md", "reffakd_table10.csv", "records/reffakd_table10.json"):
        (tmp / "results" / rel).unlink()
    runs.append(run_(20, 0.6, 0, 90.0, 91.0, epochs=12))
    runs.append(run_(20, 0.6, 1, 92.5, 92.9, epochs=200))
    assert main(["report", "reffakd_table10", "--repo", str(tmp)]) == 2
    assert capsys.readouterr().err == (
        "kdlab report: error: reffakd_table10: the experiments ran at 2 scales "
        "(fashion_mnist/12ep, fashion_mnist/200ep); choose one: kdlab report reffakd_table10 "
        "--scale SCALE\n"
    )
    assert not (tmp / "results/reffakd_table10.md").exists()
    assert (
        main(["report", "reffakd_table10", "--repo", str(tmp), "--scale", "fashion_mnist/12ep"])
        == 0
    )
    md = (tmp / "results/reffakd_table10.md").read_text()
    assert _cell(md, "T=20, alpha=0.6")[1:3] == ["90.00", "1"]  # seed 1 at 200 epochs left out


def test_format_1_records_upgrade_to_models_and_no_auto_device():
    from kdlab.reports.records import upgrade

    v1 = {
        "format": 1,
        "report": "x",
        "title": "t",
        "columns": ["setting", "a ours", "a n"],
        "notes": [
            "From 3 runs.",
            "Ours: 3-epoch resnet8 students, 5-epoch resnet18 teacher (options {'width': 16}), "
            "fashion_mnist (a seeded subset of 25000 images), device auto, seeds 2, 1, 0, "
            "final-epoch test accuracy; KL reduction: kd mean.",
            "Other.",
        ],
        "merge_rule": "old",
        "cells": [
            {
                "setting": "s",
                "column": "a",
                "scale": "fashion_mnist[25000]/3ep",
                "seeds": [0],
                "device": "auto",
                "scores": {"a ours": 1.0, "a n": 1},
                "exp": None,
            },
        ],
    }
    v2 = upgrade(v1)
    assert v2["format"] == 2 and v2["scale"] == "fashion_mnist[25000]/3ep"
    assert v2["notes"] == ["From 3 runs.", "KL reduction: kd mean.", "Other."]
    cell = v2["cells"][0]
    assert cell["device"] is None
    assert cell["models"] == (
        "3-epoch resnet8 students (77,754 params); 5-epoch resnet18 teacher (width 16, "
        "701,178 params)"
    )
    assert upgrade(v2) is v2


def test_replace_at_one_scale_keeps_every_other_scale(repo):
    tmp, runs = repo
    committed = (tmp / "results/reffakd_table10.md").read_bytes()
    scale = "fashion_mnist/200ep"
    runs.append(run_(20, 0.6, 0, 92.5, 92.9, epochs=200))
    assert main(["report", "reffakd_table10", "--repo", str(tmp), "--scale", scale]) == 0
    runs[:] = [run_(5, 0.8, 0, 93.0, 93.5, epochs=200)]
    args = ["report", "reffakd_table10", "--repo", str(tmp), "--scale", scale, "--replace"]
    assert main(args) == 0
    data = json.loads((tmp / "results/records/reffakd_table10.json").read_text())
    kept = sorted((c["scale"], c["setting"]) for c in data["cells"] if "200ep" in c["scale"])
    assert kept == [(scale, "T=5, alpha=0.8")] * 2  # the 200-epoch table is the new run's
    assert sum(c["scale"] == "fashion_mnist/12ep" for c in data["cells"]) == 32
    assert (tmp / "results/reffakd_table10.md").read_bytes() == committed
