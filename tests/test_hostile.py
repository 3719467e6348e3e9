"""Hostile and broken input: nothing executes, nothing is lost, every error names the culprit."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from conftest import REPO
from fixtures import cli
from kdlab import paths
from kdlab.io import UnsafeFileError, torch_load, torch_save
from kdlab.softlabels import check_soft_labels, read_soft_labels


class _RunsCode:
    """A pickle whose loading would create a marker file (what a crafted .pt file does)."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_pt_file_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "teacher.pt"
    torch.save({"state_dict": {}, "payload": _RunsCode(str(marker))}, evil)
    with pytest.raises(UnsafeFileError, match=rf"{evil}: refused \(not a plain tensor/dict"):
        torch_load(evil)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"garbage, not a torch file", b"PK\x03\x04broken"])
def test_garbage_pt_files_are_named(tmp_path, content):
    bad = tmp_path / "logits.pt"
    bad.write_bytes(content)
    with pytest.raises(UnsafeFileError, match=r"logits.pt: refused .*dvc repro -f"):
        torch_load(bad)


def test_identical_objects_save_to_identical_bytes(tmp_path):
    """Model files hold no wall time or memory, and torch's archive name is fixed."""
    torch.manual_seed(0)
    blob = {"model": "lenet5", "state_dict": {"w": torch.randn(5, 5)}, "input_size": 28}
    a, b = torch_save(tmp_path / "a.pt", blob), torch_save(tmp_path / "sub/b.pt", blob)
    assert hashlib.md5(a.read_bytes()).digest() == hashlib.md5(b.read_bytes()).digest()


def _matrix_csv(path: Path, rows: list[list[str]]) -> Path:
    header = "label," + ",".join(f"c{i}" for i in range(len(rows[0])))
    body = "\n".join(f"c{i}," + ",".join(r) for i, r in enumerate(rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + "\n" + body + "\n")
    return path


def test_soft_label_matrix_is_validated_before_use(tmp_path):
    good = [["0.8", "0.1", "0.1"], ["0.1", "0.8", "0.1"], ["0.1", "0.1", "0.8"]]
    path = _matrix_csv(tmp_path / "m.csv", good)
    assert read_soft_labels(3, path).shape == (3, 3)
    nan = [r[:] for r in good]
    nan[1][2] = "nan"
    with pytest.raises(ValueError, match=r"m.csv: row 1, column 2 = nan; allowed: a finite"):
        read_soft_labels(3, _matrix_csv(tmp_path / "m.csv", nan))
    with pytest.raises(ValueError, match=r"shape \(2, 3\); allowed: 3 x 3"):
        read_soft_labels(3, _matrix_csv(tmp_path / "m.csv", good[:2]))
    neg = [["1.2", "-0.1", "-0.1"], *good[1:]]
    with pytest.raises(ValueError, match=r"row 0, column 1 = -0.1"):
        read_soft_labels(3, _matrix_csv(tmp_path / "m.csv", neg))
    with pytest.raises(ValueError, match=r"row 2 sums to 1.300000; allowed: 1"):
        check_soft_labels(torch.tensor([[1.0, 0, 0], [0, 1, 0], [0.5, 0.5, 0.3]]), 3, "x")
    ragged = [["0.8", "0.1", "0.1"], ["0.1", "0.9"], ["0.1", "0.1", "0.8"]]
    with pytest.raises(ValueError, match=r"m.csv: not a numeric matrix"):
        read_soft_labels(3, _matrix_csv(tmp_path / "m.csv", ragged))


def test_teacher_logits_are_validated_where_read(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from kdlab.knowledge import read_teacher_logits

    monkeypatch.chdir(tmp_path)
    data = SimpleNamespace(
        labels=torch.zeros(6, dtype=torch.long),
        spec=SimpleNamespace(num_classes=3),
        split=SimpleNamespace(train=torch.tensor([0, 2, 4])),
    )
    logits = torch.full((2, 6, 3), float("nan"))
    logits[:, data.split.train] = torch.randn(2, 3, 3)
    torch_save(paths.TEACHER_LOGITS, {"logits": logits})
    assert torch.equal(read_teacher_logits(data)[:, [0, 2, 4]], logits[:, [0, 2, 4]])
    logits[1, 4, 2] = float("inf")
    torch_save(paths.TEACHER_LOGITS, {"logits": logits})
    with pytest.raises(ValueError, match=r"non-finite logits for training image 4 \(view 1\)"):
        read_teacher_logits(data)
    torch_save(paths.TEACHER_LOGITS, {"logits": torch.zeros(2, 5, 3)})
    with pytest.raises(ValueError, match=r"logits \(2, 5, 3\); allowed: a tensor of shape"):
        read_teacher_logits(data)


def test_corrupt_resume_checkpoint_is_reported_and_training_starts_over(tmp_path):
    from kdlab.train import fit
    from test_train import _setup, cfg

    ckpt = tmp_path / "ck.pt"
    ckpt.write_bytes(b"half-written")
    d, tr, va = _setup()
    logs: list[str] = []
    out = fit(d, tr, va, cfg(epochs=2), "t", checkpoint=ckpt, run_id="r", log=logs.append)
    assert "ignoring unreadable checkpoint" in logs[0] and str(ckpt) in logs[0]
    assert out.resumed_from_epoch == 0 and len(out.history) == 2
    assert not ckpt.exists()  # removed after the finished run, like any checkpoint


def _check(tmp_path: Path, text: str, capsys, monkeypatch) -> subprocess.CompletedProcess:
    """`kdlab --params <tmp>/params.yaml check`, in this process, from ``tmp_path``."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    monkeypatch.chdir(tmp_path)
    return cli(["--params", path, "check"], capsys)


DEFAULT = (REPO / "src/kdlab/presets/default.yaml").read_text()


def _edit(edit) -> str:
    p = yaml.safe_load(DEFAULT)
    edit(p)
    return yaml.safe_dump(p, sort_keys=False)


@pytest.mark.parametrize(
    "text, message",
    [
        (DEFAULT.replace("\nalpha:", "\nalpah:"), "unknown key alpah; did you mean alpha?"),
        (
            DEFAULT.replace("    epochs: 12", "    epcohs: 12"),
            "unknown key student.train.epcohs; did you mean student.train.epochs?",
        ),
        (DEFAULT.replace("alpha: 0.6", "alpha: .nan"), "alpha = nan is not allowed; allowed: a"),
        (
            DEFAULT.replace("temperature: 20.0", "temperature: .inf"),
            "temperature = inf is not allowed; allowed: a finite number",
        ),
        (DEFAULT + "\nalpha: 0.9\n", "key 'alpha' is repeated (first on line"),
        (DEFAULT.replace("seed: 0 ", "seed: [0 "), "line 9, column 1: not valid YAML (expected"),
        (DEFAULT.replace("device: auto", "device: cuda:7"), "device = 'cuda:7' is not allowed"),
        (
            _edit(lambda p: p["methods"].update(nosuch="teacher")),
            "methods = 'nosuch' is not allowed; allowed: ab, at,",
        ),
        (
            _edit(lambda p: p["method_params"].update(reffakdd={})),
            "unknown method under method_params: 'reffakdd'; did you mean reffakd?",
        ),
        (
            _edit(lambda p: p["method_params"]["kd"].update(reduce="mean")),
            "method_params.kd.reduce is not a parameter of method 'kd'; did you mean "
            "method_params.kd.reduction?",
        ),
        (DEFAULT.replace("alpha: 0.6", "alpha: 1.5"), "alpha = 1.5 is not allowed"),
        (
            # Model-dependent: LeNet5 -> ResNet18 gives 2 stage pairs, so index 99 is refused.
            _edit(
                lambda p: (
                    p.update(methods={"srrl": "teacher"}),
                    p["method_params"]["srrl"].update(stage=99),
                )
            ),
            "method_params.srrl.stage = 99 is not allowed; allowed: -1 (the end of the network) "
            "or a stage pair index 0..1",
        ),
    ],
)
def test_bad_params_get_one_line_and_exit_2(tmp_path, text, message, capsys, monkeypatch):
    r = _check(tmp_path, text, capsys, monkeypatch)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert r.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]  # nothing written


@pytest.mark.parametrize(
    ("text", "status"),
    [(DEFAULT, 0), (DEFAULT.replace("alpha: 0.6", "alpha: 1.5"), 2)],
    ids=["ok", "bad_params"],
)
def test_the_kdlab_command_exit_status(tmp_path, text, status):
    """The real command (`python -m kdlab`, as dvc.yaml runs it), once per exit-status
    contract: 0 and a report on stdout for valid params; 2, one line on stderr, nothing on
    stdout and nothing written for a bad value. Every other CLI test calls kdlab.cli.main in
    process (fixtures.cli)."""
    path = tmp_path / "params.yaml"
    path.write_text(text)
    env = dict(os.environ, KDLAB_PROGRESS="0")
    r = subprocess.run(
        [sys.executable, "-m", "kdlab", "--params", str(path), "check"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert r.returncode == status, r.stderr
    assert "Traceback" not in r.stderr
    if status == 0:
        assert r.stdout.startswith(f"{path}: OK (fashion_mnist; teacher resnet18")
    else:
        assert r.stdout == "" and r.stderr.strip().splitlines() == [
            "kdlab check: error: params.yaml: alpha = 1.5 is not allowed; allowed: a number "
            "in [0, 1]"
        ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


# --- download ---------------------------------------------------------------------------------


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _digest(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (including stray ``.part`` copies) with its md5."""
    return {str(p.relative_to(folder)): _md5(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def test_corrupt_source_never_replaces_good_copy(tmp_path):
    from fixtures import write_fashion_mnist
    from kdlab.data.fetch import ChecksumError, fetch

    src, raw = tmp_path / "src", tmp_path / "raw"
    md5 = write_fashion_mnist(src, n_train=20, n_test=10)
    fetch("fashion_mnist", raw, src, md5, allow_download=False, log=lambda *_: None)
    good = _digest(raw)
    assert good  # the first fetch copied the files
    # A corrupt gzip whose md5 is (wrongly) vouched for: decompression fails on the copy.
    bad = src / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(bad.read_bytes()[:-12] + b"\x00" * 12)
    md5[bad.name] = _md5(bad)
    with pytest.raises(ChecksumError) as err:
        fetch("fashion_mnist", raw, src, md5, allow_download=False, log=lambda *_: None)
    msg = str(err.value)
    assert msg.startswith(f"{bad}: corrupt {bad.name}") and "Replace it with the published" in msg
    assert _digest(raw) == good  # nothing replaced, no .part left


def test_truncated_source_leaves_nothing_half_written(tmp_path):
    from fixtures import write_fashion_mnist
    from kdlab.data.fetch import ChecksumError, fetch

    src, raw = tmp_path / "src", tmp_path / "raw"
    md5 = write_fashion_mnist(src, n_train=20, n_test=10)
    fetch("fashion_mnist", raw, src, md5, allow_download=False, log=lambda *_: None)
    good = _digest(raw)
    # New data for every file, but the last one is truncated: no file may be replaced.
    md5 = write_fashion_mnist(src, n_train=30, n_test=10, seed=1)
    last = src / "t10k-labels-idx1-ubyte.gz"
    last.write_bytes(last.read_bytes()[:20])
    with pytest.raises(ChecksumError, match=f"^{last}: md5 "):
        fetch("fashion_mnist", raw, src, md5, allow_download=False, log=lambda *_: None)
    assert _digest(raw) == good


def test_srrl_stage_within_the_models_is_accepted(tmp_path, capsys, monkeypatch):
    text = _edit(
        lambda p: (
            p.update(methods={"srrl": "teacher"}),
            p["method_params"]["srrl"].update(stage=1),
        )
    )
    r = _check(tmp_path, text, capsys, monkeypatch)
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr
