"""Issue 23 drills: every value that can fail a stage fails `kdlab check` first (one line, the
key named, exit 2); checkpoints of other code are ignored; a stage dies with its parent; writes
are atomic with temp files outside output folders; producers refuse non-finite outputs; the
remaining tracebacks are one line naming the file or key."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_hostile import DEFAULT, _edit

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [{', '.join(['*' + p] * 9)}]\n" for p, c in zip("abcdefgh", "bcdefghi")
)


def _bad_source(tmp_path: Path) -> str:
    from fixtures import write_fashion_mnist

    src = tmp_path / "src"
    md5 = write_fashion_mnist(src, n_train=20, n_test=10)
    bad = src / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-4] + b"\x00" * 4)  # corrupt after the md5 was taken
    return _edit(lambda p: p["data"].update(source_dir=str(src), md5=md5))


@pytest.mark.parametrize(
    "make, message",
    [
        (
            lambda t: _edit(lambda p: p["student"].update(options={"widht": 8})),
            "student.options = {'widht': 8} (model lenet5, input 28): ",
        ),
        (
            lambda t: _edit(lambda p: p["student"]["train"].update(lr=1e10)),
            "student.train.lr = 10000000000.0 is not allowed; allowed: a number in (0, 10.0]",
        ),
        (
            lambda t: _edit(lambda p: p.update(seed=10**30)),
            f"seed = {10**30} is not allowed; allowed: an integer in [0, 2147483647]",
        ),
        (
            lambda t: _edit(lambda p: p["data"].update(root="../elsewhere")),
            "data.root = '../elsewhere' is not allowed; allowed: a relative folder inside",
        ),
        (
            lambda t: _edit(lambda p: p["data"].update(root="/tmp/raw")),
            "data.root = '/tmp/raw' is not allowed",
        ),
        (
            lambda t: _edit(lambda p: p["data"].update(source_dir=str(t / "nowhere"))),
            "data.source_dir = '",
        ),
        (_bad_source, "params.yaml: data.source_dir: "),
        (lambda t: BOMB, "params.yaml line 2: alias *a refused"),
    ],
    ids=[
        "options_typo",
        "huge_lr",
        "huge_seed",
        "root_up",
        "root_abs",
        "no_source",
        "corrupt",
        "yaml_aliases",
    ],
)
def test_values_that_fail_a_stage_fail_check_first(tmp_path, capsys, make, message):
    """Each value used to pass `check` and fail in its stage after DVC deleted its outputs
    (a typo under student.options, lr 1e10, seed 10**30, a corrupt source_dir: data/raw
    emptied) or escape the repository (data.root); 4 KB of YAML aliases hung `check`."""
    from kdlab.cli import main

    path = tmp_path / "params.yaml"
    path.write_text(make(tmp_path))
    t0 = time.time()
    assert main(["--params", str(path), "check"]) == 2
    assert time.time() - t0 < 10
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_params_pointing_at_a_folder_is_one_line(tmp_path, capsys):
    from kdlab.cli import main

    assert main(["--params", str(tmp_path), "check"]) == 2
    assert f"{tmp_path} is not a file" in capsys.readouterr().err


def test_default_params_still_pass_check(tmp_path, capsys):
    from kdlab.cli import main

    (tmp_path / "params.yaml").write_text(DEFAULT)
    assert main(["--params", str(tmp_path / "params.yaml"), "check"]) == 0
    assert yaml.safe_load(DEFAULT)["data"]["root"] == "data/raw"
