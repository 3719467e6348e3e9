"""scripts/queue_wait.sh: waits for two successful idle polls of `dvc queue status` in a row."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A stand-in `dvc`: answers `queue status` with the next line of the script in statuses.txt
# ("FAIL" exits 1; "|" prints a line break), counting its calls; logs `queue start` calls.
FAKE_DVC = """#!/usr/bin/env bash
if [ "$1 $2" = "queue start" ]; then echo "$*" >> starts; exit 0; fi
n=$(cat calls 2>/dev/null || echo 0); echo $((n + 1)) > calls
line=$(sed -n "$((n + 1))p" statuses.txt)
[ -z "$line" ] && line=$(tail -n 1 statuses.txt)
[ "$line" = FAIL ] && exit 1
printf 'Task  Name  Created  Status\\n%s\\n' "${line//|/$'\\n'}"
"""


def wait_with(tmp_path: Path, statuses: list[str], *args: str) -> subprocess.CompletedProcess:
    """Run queue_wait.sh ``args`` in ``tmp_path`` against the stand-in answering ``statuses``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC)
    (bin_dir / "dvc").chmod(0o755)
    (tmp_path / "statuses.txt").write_text("\n".join(statuses) + "\n")
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "queue_wait.sh"), *args],
        cwd=tmp_path,
        env={"PATH": f"{bin_dir}:/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


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
    out = wait_with(tmp_path, statuses, "0")
    assert out.returncode == 0
    assert int((tmp_path / "calls").read_text()) == polls
    assert ("some experiments failed" in out.stderr) == failed
    assert not (tmp_path / "starts").exists()  # workers were active: none started


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash needed")
def test_queue_wait_restarts_workers_that_exited_with_tasks_queued(tmp_path):
    """DVC's workers exit when the queue is empty for a moment, so a task queued later waits
    with no worker (the direction checks' second seed did): the wait starts `jobs` again."""
    statuses = [
        "a x 1 Queued\nWorker status: 1 active, 0 idle",  # its worker is starting: leave it
        "a x 1 Queued\nWorker status: 0 active, 0 idle",  # nobody will run it
        "a x 1 Running\nWorker status: 1 active, 0 idle",
        "a x 1 Success\nWorker status: 0 active, 0 idle",
        "a x 1 Success\nWorker status: 0 active, 0 idle",
    ]
    out = wait_with(tmp_path, [s.replace("\n", "|") for s in statuses], "0", "2")
    assert out.returncode == 0
    assert int((tmp_path / "calls").read_text()) == 5
    assert (tmp_path / "starts").read_text() == "queue start -j 2\n"  # once, with the jobs
    assert "no worker active" in out.stderr
