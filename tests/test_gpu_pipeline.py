"""scripts/gpu_pipeline.sh: the stage commands in dependency order, finished stages skipped.

The script's `kdlab` runs go through a stand-in interpreter (``PYTHON``) that records each
call and writes the output the stage would write, so the test checks the order and the skips
without training anything; the interpreter's ``-c`` calls (reading ``methods``) are real.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# What each stand-in stage writes: the output the script checks before running it again.
FAKE = """#!/usr/bin/env bash
if [ "$1" = -c ]; then exec {python} "$@"; fi
shift 2  # -m kdlab
echo "$*" >> calls.log
case "$1 $2" in
  "check --write") mkdir -p data && touch data/params.ok ;;
  "split "*) mkdir -p data && touch data/split.json ;;
  "train teacher") mkdir -p data/teacher && touch data/teacher/model.pt ;;
  "teacher-logits "*) touch data/teacher/logits.pt ;;
  "train cae") mkdir -p data/models && touch data/models/cae.pt ;;
  "soft-labels "*) mkdir -p data/soft_labels && touch data/soft_labels/matrix.csv ;;
  "train student") mkdir -p data/models && touch data/models/student.pt ;;
  "distill "*) mkdir -p data/models/distill && touch "data/models/distill/$2.pt" ;;
esac
"""


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "gpu_pipeline.sh", tmp_path / "scripts")
    (tmp_path / "params.yaml").write_text(
        "methods:\n  kd: teacher\n  reffakd: soft_labels\n  dkd: teacher\n"
    )
    fake = tmp_path / "fakepython"
    fake.write_text(FAKE.format(python=sys.executable))
    fake.chmod(0o755)
    return tmp_path


def _run(tree: Path, *args: str) -> tuple[list[str], str, int]:
    (tree / "calls.log").unlink(missing_ok=True)
    out = subprocess.run(
        ["bash", "scripts/gpu_pipeline.sh", *args],
        cwd=tree,
        env={"PATH": "/usr/bin:/bin", "PYTHON": str(tree / "fakepython")},
        capture_output=True,
        text=True,
    )
    calls = (tree / "calls.log").read_text().splitlines() if (tree / "calls.log").exists() else []
    return calls, out.stdout + out.stderr, out.returncode


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="bash")
def test_stages_run_after_their_inputs_and_finished_ones_are_skipped(tree: Path):
    calls, out, rc = _run(tree)
    assert rc == 0 and calls[:2] == ["check --write data/params.ok", "split"]
    assert sorted(calls[2:]) == sorted(
        [
            "train teacher",
            "teacher-logits",
            "distill kd",
            "distill dkd",
            "train cae",
            "soft-labels",
            "distill reffakd",
            "train student",
        ]
    )
    position = {c: i for i, c in enumerate(calls)}
    for before, after in [
        ("train teacher", "teacher-logits"),
        ("teacher-logits", "distill kd"),
        ("teacher-logits", "distill dkd"),
        ("train cae", "soft-labels"),
        ("soft-labels", "distill reffakd"),
    ]:
        assert position[before] < position[after], (before, after)
    assert out.rstrip().endswith("gpu_pipeline: exit 0")

    # A rerun validates the params again and skips every stage whose output exists.
    (tree / "data/models/distill/kd.pt").unlink()
    calls, out, rc = _run(tree)
    assert rc == 0 and calls == ["check --write data/params.ok", "distill kd"]
    assert "[train_teacher] done already (data/teacher/model.pt)" in out


@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="bash")
def test_past_the_deadline_nothing_starts_and_the_run_fails(tree: Path):
    calls, out, rc = _run(tree, "0")
    assert rc == 1 and calls == ["check --write data/params.ok"]
    assert "[split] not started: deadline passed" in out
