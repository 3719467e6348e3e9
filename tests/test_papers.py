"""The transcribed paper numbers against the papers' texts, and the table catalogue."""

import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from kdlab import paths
from kdlab.cli import main
from kdlab.reports import catalogue, papers, registry
from kdlab.reports.papers import published
from kdlab.reports.records import RESULTS

PAPER_TEXTS = Path("/work/shared/seeds")  # the papers (000-004), as text
needs_papers = pytest.mark.skipif(not PAPER_TEXTS.is_dir(), reason="paper texts not here")


def _seed_lines(paper: str) -> list[str]:
    return (PAPER_TEXTS / published(paper)["paper_file"]).read_text(encoding="utf-8").splitlines()


def _pattern(v) -> str:
    """Every way the seeds print a number (76.80 / 76.8, .25 for 0.25, 20m 19s)."""
    if isinstance(v, str):
        return re.escape(v)
    if isinstance(v, int):
        return rf"(?<![\d.]){v}(?![\d])"
    forms = {repr(v), f"{v:.1f}", f"{v:.2f}", f"{v:.4f}"}
    forms |= {f.replace("0.", ".", 1) for f in forms if f.startswith(("0.", "-0."))}
    alts = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return rf"(?<![\d.])(?:{alts})(?![\d])"


def _flat(row):
    out = []
    for v in row[1:]:
        if isinstance(v, list):  # [mean, std]
            out.extend(v)
        elif v is not None:
            out.append(v)
    return out


@needs_papers
@pytest.mark.parametrize("paper", papers.PAPERS)
def test_every_row_is_printed_in_order_on_one_seed_line(paper):
    lines = _seed_lines(paper)
    for key, table in papers.paper_tables(paper).items():
        for row in table["rows"]:
            regex = re.compile(".*?".join(_pattern(v) for v in _flat(row)))
            assert any(regex.search(ln) for ln in lines), f"{paper}.{key} row {row} not in seed"


@needs_papers
def test_every_numbered_table_and_figure_is_catalogued():
    keys = {(e.paper, e.table) for e in catalogue.catalogue()}
    for paper in papers.PAPERS:
        text = "\n".join(_seed_lines(paper))
        numbered = set(re.findall(r"^Table (\d+)\s*:", text, flags=re.M))
        # ReffAKD Table 1 names models only (no numbers); every other caption has cells.
        numbered -= {"1"} if paper == "reffakd" else set()
        for n in numbered:
            assert (paper, f"table{n}") in keys, f"{paper} Table {n} missing"
    assert ("simkd", "study") in keys and ("hao", "figure3") in keys


def test_cell_counts_and_statuses():
    entries = {(e.paper, e.table): e for e in catalogue.catalogue()}
    # Counted by hand from the seeds; SimKD's mean +- std is one cell, Table 10's garbled KD
    # cell and SRRL Table 11's printed 0.00 (FSP) are missing.
    assert entries["reffakd", "table10"].cells == 31
    assert entries["reffakd", "table5"].cells == entries["reffakd", "table9"].cells == 32
    assert entries["srrl", "table11"].cells == 15 * 7 + 6
    assert entries["srrl", "table12"].cells == 15 * 6
    assert entries["simkd", "study"].cells == 18
    assert entries["patel", "table2"].cells == 36
    assert sum(e.cells for e in entries.values()) == 768  # the issue counted ~766
    out = {k for k, e in entries.items() if e.status == "out_of_scope"}
    assert out == {("srrl", "table7"), ("srrl", "table8"), ("reffakd", "table7")}
    assert all(e.reason for e in entries.values() if e.status in ("out_of_scope", "not_run"))
    assert all(e.scale for e in entries.values() if e.status == "reduced_scale")
    assert all(e.command for e in entries.values() if e.status != "out_of_scope")


def test_reffakd_views_agree_with_the_transcription():
    p = published("reffakd")
    t = p["tables"]
    for n, data in ((2, "cifar100"), (3, "tiny_imagenet"), (4, "fashion_mnist")):
        rows = p["accuracy"][data]["rows"]
        want = [rows[k]["value"] for k in ("student_ce", "teacher", "kd", "reffakd")]
        assert [r[1] for r in t[f"table{n}"]["rows"]] == want
    for row in t["table6"]["rows"]:
        assert list(p["table6"][row[0]].values()) == row[1:]
    for row in t["table8"]["rows"]:
        assert list(p["table8"][row[0]].values()) == row[1:]


def test_seconds():
    assert papers.seconds("17m 57s") == 1077
    assert papers.seconds("104m 3s") == 6243
    assert papers.seconds("1h 2m 3s") == 3723
    with pytest.raises(ValueError, match="17m 57s"):
        papers.seconds("17 minutes")


def test_unknown_paper_is_named():
    with pytest.raises(ValueError, match="unknown paper 'nope'"):
        papers.paper_tables("nope")


def test_papers_command_json_and_readme(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["papers", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = data["entries"]
    # per-status counts, tables and published cells, as `kdlab papers` prints them
    assert set(data["tables_by_status"]) == set(data["cells_by_status"]) == set(papers.STATUSES)
    for status, n in data["tables_by_status"].items():
        assert n == sum(r["status"] == status for r in rows)
    assert sum(data["cells_by_status"].values()) == sum(r["cells"] for r in rows)
    assert {r["paper"] for r in rows} == set(papers.PAPERS)
    assert set(rows[0]) == {
        "paper",
        "table",
        "title",
        "cells",
        "status",
        "command",
        "output",
        "reason",
        "committed",
        "report_ready",
        "check_command",
        "check_output",
        "check_committed",
        "scale",
        "comparable_command",
        "comparable_output",
        "comparable_committed",
        "comparable_cells",
    }
    assert not any(r["committed"] for r in rows)  # nothing under an empty directory
    (tmp_path / "tables").mkdir()
    (tmp_path / "tables/reffakd_table4.md").write_text("x")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- papers:start -->\nold\n<!-- papers:end -->\nrest\n")
    assert main(["papers", "--readme", str(readme)]) == 0
    assert "updated" in capsys.readouterr().out
    md = readme.read_text()
    assert md.startswith("intro\n<!-- papers:start -->\n| paper |") and "old" not in md
    assert md.endswith("<!-- papers:end -->\nrest\n")
    assert main(["papers", "--readme", str(readme)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert "| reffakd | table4 | 4 | reduced_scale (default CPU preset" in md
    assert "| reffakd | table10 | 31 | reduced_scale (default CPU preset" in md
    assert (
        "| srrl | table1 | 16 | not_run (needs a GPU at the paper's scale) | "
        "results/srrl_table1.md | ready | results/srrl_table1_fmnist.md |"
    ) in md
    assert main(["papers"]) == 0
    assert "$ bash scripts/direction_checks.sh srrl\n" in capsys.readouterr().out
    assert "| srrl | table2 | 18 | not_run (needs a GPU at the paper's scale) | results/srrl" in md
    assert "| srrl | table7 | 32 | out_of_scope (ImageNet-1K" in md


def test_report_names_are_said_once_in_the_registry():
    """Every `kdlab report` name is a key of one paper module's REPORTS, gathered by the
    registry (which refuses a name said twice); `kdlab report` dispatches on exactly those, and
    the catalogue marks a table's report ready only when its command names registered ones."""
    from kdlab.reports import writer

    said = [name for module in registry.MODULES for name in module.REPORTS]
    assert len(said) == len(set(said)) == 21
    assert writer.names() == registry.names() == said
    assert set(writer.writers()) == set(said)
    ready = [e for e in catalogue.catalogue(REPO) if e.report_ready]
    named = {n for e in ready for c in e.commands for n in catalogue._REPORT.findall(c)}
    assert named and named <= set(said)


def test_committed_statuses_mean_committed_here():
    """A table marked comparable or reduced_scale has its output committed in this repository
    (not merely regenerable): the results page links a real file."""
    entries = catalogue.catalogue(REPO)
    done = [e for e in entries if e.status in ("comparable", "reduced_scale")]
    assert {(e.paper, e.table) for e in done} >= {("reffakd", "table4"), ("reffakd", "table6")}
    missing = [f"{e.paper} {e.table}: {e.output}" for e in done if not e.committed]
    assert not missing, f"marked done, but not committed: {missing}"


def test_a_cpu_scale_table_is_comparable_only_for_rows_whose_paper_setting_runs_landed(
    tmp_path, capsys
):
    """Table 4 at the default CPU preset is reduced_scale; once a paper-setting record of
    an arm is committed, that row's cells (and only those) count as comparable."""
    entry = {(e.paper, e.table): e for e in catalogue.catalogue(tmp_path)}["reffakd", "table4"]
    assert (entry.status, entry.comparable_cells) == ("reduced_scale", 0)
    (tmp_path / "results/reffakd_table4").mkdir(parents=True)
    # a CPU-scale record of the arm (or a file that is no record) is never comparable
    (tmp_path / "results/reffakd_table4/ce_seed0.json").write_text('{"scale": "default"}')
    (tmp_path / "results/reffakd_table4/ce_seed1.json").write_text("{")
    entry = {(e.paper, e.table): e for e in catalogue.catalogue(tmp_path)}["reffakd", "table4"]
    assert (entry.status, entry.comparable_cells) == ("reduced_scale", 0)
    (tmp_path / "results/reffakd_table4/ce_seed0.json").write_text('{"scale": "paper"}')
    entries = catalogue.catalogue(tmp_path)
    entry = {(e.paper, e.table): e for e in entries}["reffakd", "table4"]
    assert (entry.status, entry.comparable_cells, entry.cells) == ("comparable", 1, 4)
    counts = catalogue.cell_counts(entries)
    assert counts["comparable"] == 12 + 1  # Table 6's 12 cells + the CE row
    assert sum(counts.values()) == sum(e.cells for e in entries)
    line = catalogue.status_counts(entries)
    assert "comparable 2 (13 cells)" in line


def test_experiment_reports_live_outside_the_tables_stage_output():
    """DVC empties the `tables` stage's output folder before the stage runs, so a table built
    from experiments (`kdlab report`) must be written elsewhere or the next `dvc repro` would
    delete it."""
    import yaml

    stage_outs = {
        next(iter(o)) if isinstance(o, dict) else o
        for o in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["tables"]["outs"]
    }
    assert stage_outs == {paths.TABLES.as_posix()}
    # `kdlab reproduce NAME` ends in `kdlab report NAME` (catalogue._REPORT reads both)
    reports = [
        e for e in catalogue.catalogue(REPO) if catalogue._REPORT.search(e.command) and e.output
    ]
    assert len(reports) >= 10
    for e in reports:
        assert Path(e.output).parts[0] == RESULTS.as_posix() != paths.TABLES.as_posix(), e


def _expand(command: str, text: str) -> list[str]:
    """``text`` with each shell loop variable of ``command`` (``for m in a b; do``) replaced
    by each of its values (every combination of the variables it uses)."""
    import itertools

    loops = {v: vals.split() for v, vals in re.findall(r"for (\w+) in ([^;]+);", command)}
    used = [v for v in loops if f"${v}" in text or f"${{{v}}}" in text]
    out = []
    for combo in itertools.product(*(loops[v] for v in used)):
        t = text
        for v, value in zip(used, combo):
            t = t.replace(f"${{{v}}}", value).replace(f"${v}", value)
        out.append(t)
    return out


def test_catalogue_commands_name_registered_models_and_presets():
    """Every model a catalogue command sets (`-S teacher.model=...`, loops expanded) and every
    preset it applies exist: the printed commands run."""
    from kdlab import presets
    from kdlab.models import model_names

    known = set(model_names())
    checked = 0
    for e in catalogue.catalogue(REPO):
        for command in e.commands:
            for found in re.findall(r"kdlab preset (\S+)", command):
                for preset in _expand(command, found):
                    assert preset in presets.names(), (e.paper, e.table, preset)
            for value in re.findall(r"-S (?:teacher|student)\.model=([^\s;]+)", command):
                for name in _expand(command, value):
                    assert name in known, (e.paper, e.table, name)
                    checked += 1
    assert checked >= 12  # Patel's tables set teacher and student models per experiment
    assert _expand("for m in a b; do x=p_${m}_half", "p_${m}_half") == ["p_a_half", "p_b_half"]


def test_catalogue_command_overrides_name_existing_params():
    """Every `-S key=value` (and `-S '~key'` deletion) of a catalogue command names a key of
    the params its preset resolves to, and every `-S '+key=value'` adds one that is new under
    an existing parent (without the `+`, DVC refuses a new key: "Could not override")."""
    import yaml

    from kdlab import presets

    checked = 0
    commands = [(e, c) for e in catalogue.catalogue(REPO) for c in e.commands]
    for e, command in commands:
        preset = re.findall(r"kdlab preset (\S+)", command)
        if not preset:
            continue
        params = yaml.safe_load(presets.resolve(_expand(command, preset[0])[0]))
        for op, key in re.findall(r"-S '?([+~]?)([\w.]+)[=' ]", command + " "):
            node = params
            *parents, leaf = key.split(".")
            for part in parents:
                assert isinstance(node, dict) and part in node, (e.paper, e.table, key)
                node = node[part]
            assert isinstance(node, dict) and (leaf in node) == (op != "+"), (
                e.paper,
                e.table,
                op + key,
            )
            checked += 1
    assert checked >= 20


@pytest.mark.skipif(shutil.which("git") is None, reason="git needed")
def test_direction_checks_script_queues_every_row_on_its_seeds_baseline():
    """`scripts/direction_checks.sh --dry-run` prints what it runs: per seed, a baseline commit
    that trains the seed's teacher and CE student, then one queued experiment per report row,
    every `-S` naming a key of the preset; and the two reports it ends with exist."""
    import subprocess

    import yaml

    from kdlab import presets
    from kdlab.reports import experiments

    entries = {(e.paper, e.table): e for e in catalogue.catalogue(REPO)}
    assert entries["simkd", "study"].check_command == "bash scripts/direction_checks.sh simkd"
    assert entries["srrl", "table1"].check_command == "bash scripts/direction_checks.sh srrl"
    out = subprocess.run(
        ["bash", "scripts/direction_checks.sh", "both", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    params = yaml.safe_load(presets.resolve("fmnist_direction"))
    # each seed's branch takes the preset; nothing is committed on the start branch
    assert out[0] == "git checkout -q -B direction-seed0 " + out[0].split()[-1]
    assert out.count("kdlab preset fmnist_direction") == 3
    queued = [line for line in out if line.startswith("dvc exp run --queue")]
    assert len(queued) == 3 * 13
    for s in (0, 1, 2):
        sed = out.index(f"sed -i s/^seed: [0-9]* /seed: {s} / params.yaml")
        assert out[sed - 1] == "kdlab preset fmnist_direction"
        assert out[sed - 2].startswith(f"git checkout -q -B direction-seed{s} ")
        repro = out.index("dvc repro train_student teacher_logits", sed)
        mine = [i for i, line in enumerate(out) if f"-S seed={s} " in line]
        assert len(mine) == 13 and min(mine) > repro  # queued after the seed's baseline
    for line in queued:
        for key in re.findall(r"-S ~?([\w.]+)", line):
            node = params
            for part in key.split("."):
                assert isinstance(node, dict) and part in node, (line, key)
                node = node[part]
    # every SRRL Table 1 / SimKD study row of the reports is one queued setting
    srrl = [line for line in queued if "distill@srrl" in line and "seed=0" in line]
    simkd = [line for line in queued if "distill@simkd" in line and "seed=0" in line]
    assert len(srrl) == len(experiments.ROWS["srrl_table1_fmnist"].rows) - 2  # not student, teacher
    # every row, plus plain SimKD: the study's baseline
    assert len(simkd) == len(experiments.ROWS["simkd_study_fmnist"].rows) + 1
    plain = experiments.ROWS["simkd_study_fmnist"].baseline_params
    words = [f"-S {k}={v:g} " if isinstance(v, float) else f"-S {k}={v} " for k, v in plain]
    assert sum(all(w in line for w in words) for line in simkd) == 1
    assert all("-S alpha=1 " in line for line in simkd)  # SimKD trains on its loss alone
    reports = [line.split()[2] for line in out if line.startswith("kdlab report")]
    assert reports == ["simkd_study_fmnist", "srrl_table1_fmnist"]
    assert set(reports) <= set(registry.names())


@pytest.mark.skipif(shutil.which("git") is None, reason="git needed")
def test_hao_figure3_script_trains_the_teacher_once_then_queues_each_alpha(tmp_path):
    """`scripts/hao_figure3.sh --dry-run` on a repository without the `hao-figure3` branch:
    a baseline commit whose dvc.lock gets the teacher (threads 1, as every queued run), then
    one queued 1,000-epoch KD run per alpha with keys of the hao preset, then the report; an
    argument that is no alpha is refused by name."""
    import subprocess

    import yaml

    from kdlab import presets

    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "hao_figure3.sh", tmp_path / "scripts")
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=tmp_path, check=True)
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=tmp_path, check=True)

    def dry(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", "scripts/hao_figure3.sh", "--dry-run", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )

    out = dry().stdout.splitlines()
    assert out[:6] == [
        "git checkout -q -b hao-figure3",
        "kdlab preset hao",
        "sed -i s/^threads: [0-9]* /threads: 1 / params.yaml",
        "dvc repro teacher_logits",
        "git add params.yaml dvc.lock metrics plots",
        "git commit -qm hao preset, threads 1: the Figure 3 teacher",
    ]
    queued = [line for line in out if line.startswith("dvc exp run --queue")]
    alphas = [re.search(r"-S alpha=(\S+)", line).group(1) for line in queued]
    assert alphas == [f"{a / 10:.1f}" for a in range(10, 0, -1)]
    text = presets.resolve("hao")
    params = yaml.safe_load(text)
    assert re.search(r"^threads: \d+ ", text, re.M)  # what the sed edits
    assert "reffakd" in params["methods"] and "epochs" in params["student"]["train"]
    for line in queued:
        assert line.endswith("-S student.train.epochs=1000 -S ~methods.reffakd distill@kd")
    assert out[-3:] == [
        "dvc queue start -j 2",
        "kdlab report hao_figure3 --all-commits",
        "git checkout -q main",
    ]
    assert [line for line in dry("0.4", "0.2").stdout.splitlines() if "--queue" in line] == [
        q.replace("alpha=1.0", "alpha=0.4") for q in queued[:1]
    ] + [queued[8]]
    bad = dry("fast")
    assert bad.returncode == 2 and "unknown argument 'fast'" in bad.stderr


def test_nothing_cpu_scale_is_called_comparable(capsys, monkeypatch):
    """`kdlab papers --json` on this repository: an entry is comparable only when its yaml says
    the committed table is at the paper's own setting (no reduced `scale`), or for the rows
    whose committed run records are at the paper's scale; every other comparable cell count
    is zero, and the counts per status add up to the entries'."""
    monkeypatch.chdir(REPO)
    assert main(["papers", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for e in data["entries"]:
        yaml_status = papers.paper_tables(e["paper"])[e["table"]]["status"]
        if e["status"] != "comparable":
            assert e["comparable_cells"] == 0, e["table"]
        elif yaml_status == "comparable":
            assert not e["scale"] and e["comparable_cells"] == e["cells"], e
        else:  # comparable by its paper-scale records only: read them independently
            block = papers.paper_tables(e["paper"])[e["table"]]["comparable"]
            landed = [
                row
                for row, arm in block["rows"].items()
                for f in sorted((REPO / block["records"]).glob(f"{arm}_seed*.json"))
                if json.loads(f.read_text())["scale"] == "paper"
            ]
            assert landed and e["comparable_cells"] == len(set(landed)), e
            assert e["comparable_cells"] < e["cells"] and e["scale"]  # the rest stays reduced
    reduced = [e for e in data["entries"] if e["status"] == "reduced_scale"]
    assert {(e["paper"], e["table"]) for e in reduced} >= {
        ("reffakd", "table10"),
        ("hao", "figure3"),
    }
    assert data["cells_by_status"]["comparable"] == sum(
        e["comparable_cells"] for e in data["entries"]
    )


@pytest.mark.skipif(shutil.which("git") is None, reason="git needed")
def test_direction_checks_grid_mode_fills_every_row_from_one_grid_per_seed():
    """`--grid`: per seed one queued `distill_grid` experiment whose cells (one JSON line that
    params.yaml takes) are valid cells of the preset and, read as single runs, fill every
    distilled row of both reports exactly once."""
    import json
    import subprocess

    import yaml

    from kdlab import presets
    from kdlab.config import parse_config
    from kdlab.reports import experiments
    from kdlab.reports.runs import grid_cell_runs

    out = subprocess.run(
        ["bash", "scripts/direction_checks.sh", "both", "--grid", "--dry-run"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert out.count("dvc exp run --queue distill_grid") == 3
    assert not [line for line in out if line.startswith("dvc exp run --queue -S")]
    seds = [line for line in out if line.startswith("sed -i s|^  cells: .*|  cells: ")]
    assert len(seds) == 3 and len(set(seds)) == 1
    cells = json.loads(seds[0].split("|  cells: ", 1)[1].rsplit("| params.yaml", 1)[0])
    assert len(cells) == 13
    params = yaml.safe_load(presets.resolve("fmnist_direction"))
    params["grid"]["cells"] = cells
    assert len(parse_config(params).grid) == 13  # each a valid cell of the preset
    run = {
        "name": "exp",
        "rev": "abc",
        "params": params,
        "scores": {"ce": {"test_acc": 80.0}, **{f"grid_{c}": {"test_acc": 81.0} for c in cells}},
    }
    runs = [run, *grid_cell_runs(run)]
    for name in ("srrl_table1_fmnist", "simkd_study_fmnist"):
        df = experiments.build_rows(runs, name)
        n = df[[c for c in df.columns if c.endswith(" n")][0]].tolist()
        assert all(v == 1 for v in n[2 if name.startswith("srrl") else 0 :]), (name, n)
