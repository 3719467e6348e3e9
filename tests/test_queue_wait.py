"""scripts/queue_wait.sh: waits for two successful idle polls of `dvc queue status` in a row."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A stand-in `dvc`: answers `queue status` with the next line of the script in statuses.txt
# ("FAIL" exits 1), counting its calls.
FAKE_DVC = """#!/usr/bin/env bash
n=$(cat calls 2>/dev/null || echo 0); echo $((n + 1)) > calls
line=$(sed -n "$((n + 1))p" statuses.txt)
[ -z "$line" ] && line=$(tail -n 1 statuses.txt)
[ "$line" = FAIL ] && exit 1
printf 'Task  Name  Created  Status\\n%s\\n' "$line"
"""


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash needed")
@pytest.mark.parametrize(
    ("statuses", "polls", "failed"),
    [
        # idle, a failed poll, still running: the count restarts; then two idle polls.
        (["", "FAIL", "a x 1 Running", "a x 1 Queued", "a x 1 Success", "a x 1 Success"], 6, False),
        (["a x 1 Running", "a x 1 Failed", "a x 1 Failed"], 3, True),
    ],
    ids=["restarts", "failed"],
)
def test_queue_wait_needs_two_idle_polls_in_a_row(tmp_path, statuses, polls, failed):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    (tmp_path / "statuses.txt").write_text("\n".join(statuses) + "\n")
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "queue_wait.sh"), "0"],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert int((tmp_path / "calls").read_text()) == polls
    assert ("some experiments failed" in out.stderr) == failed
