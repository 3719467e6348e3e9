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


# --- 8: checkpoints carry the source hash ------------------------------------------------------


def test_a_checkpoint_of_other_source_code_is_ignored(tmp_path):
    import torch

    from kdlab.train import fit, source_hash
    from test_train import _setup, cfg

    d, tr, va = _setup()
    ckpt = tmp_path / "ck.pt"
    state = {"run_id": "r", "source": "0" * 16, "epoch": 0}  # same params, older losses.py
    torch.save(state, ckpt)
    logs: list[str] = []
    out = fit(d, tr, va, cfg(epochs=1), "t", checkpoint=ckpt, run_id="r", log=logs.append)
    assert "written by other kdlab source code" in logs[0] and out.resumed_from_epoch == 0
    assert len(source_hash()) == 16


# --- 9: a stage dies with its parent ------------------------------------------------------------


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_stage_dies_with_its_parent(tmp_path):
    src = Path(__file__).resolve().parents[1] / "src"
    child = (
        f"import sys, time; sys.path.insert(0, {str(src)!r}); from kdlab.cli import "
        "die_with_parent; die_with_parent(); print('ready', flush=True); time.sleep(60)"
    )
    parent = (
        "import subprocess, sys, time; "
        f"p = subprocess.Popen([sys.executable, '-c', {child!r}], stdout=subprocess.PIPE); "
        "ok = p.stdout.readline() == b'ready\\n'; print(p.pid if ok else -1, flush=True); "
        "time.sleep(60)"
    )
    dvc = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True)
    pid = int(dvc.stdout.readline())
    assert pid > 0, "the stage did not start"
    assert Path(f"/proc/{pid}").exists()  # alive while its parent lives
    dvc.kill()  # `dvc` killed
    dvc.wait()
    for _ in range(50):
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        os.kill(pid, 9)
        pytest.fail("the stage outlived its parent")


# --- 10: atomic writes, temp files outside output folders ---------------------------------------


def test_a_failed_write_leaves_the_old_file_and_no_temp_in_the_output_folder(tmp_path, monkeypatch):
    import kdlab.io as kio

    monkeypatch.chdir(tmp_path)
    out = Path("data/models/distill/kd.pt")
    kio.write_text(out, "old")
    seen = []

    def full_disk(src, dst):
        seen.append(Path(src).parent.resolve())
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(kio.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        kio.write_text(out, "new")
    assert out.read_text() == "old" and sorted(p.name for p in out.parent.iterdir()) == ["kd.pt"]
    assert seen == [(tmp_path / kio.TMP_DIR).resolve()] and not any(kio.TMP_DIR.iterdir())


def test_a_failed_checkpoint_write_costs_the_checkpoint_not_the_run(tmp_path, monkeypatch):
    import kdlab.train
    from kdlab.train import fit
    from test_train import _setup, cfg

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kdlab.train, "torch_save", full_disk)
    d, tr, va = _setup()
    logs: list[str] = []
    out = fit(d, tr, va, cfg(epochs=2), "t", checkpoint=tmp_path / "ck.pt", run_id="r",
              log=logs.append)  # fmt: skip
    assert len(out.history) == 2 and any("could not write checkpoint" in m for m in logs)


def test_epoch_log_files_are_whole_and_names_unique(tmp_path, monkeypatch):
    import json

    from kdlab.live import EpochLog
    from kdlab.reports.runs import flatten

    monkeypatch.chdir(tmp_path)
    log = EpochLog("distill/kd", "kd")
    for e in (1, 2):
        log.epoch({"epoch": e, "val_acc": 50.0 + e, "loss_kd": 1.0 / e, "epoch_time_s": 3.0})
    log.finish({"test_acc": 52.5, "best_val_acc": 52.0, "epochs": 2})
    summary = json.loads(Path("metrics/distill/kd/metrics.json").read_text())
    assert summary == {"kd": {"epoch": 2, "val_acc": 52.0, "test_acc": 52.5, "best_val_acc": 52.0}}
    tsv = Path("metrics/distill/kd/plots/metrics/loss_kd.tsv").read_text()
    assert tsv == "step\tloss_kd\n0\t1.0\n1\t0.5\n"
    assert "step" not in flatten(summary)


# --- 12: one line naming the file or key ------------------------------------------------------


def test_bad_split_and_model_files_are_named(tmp_path):
    import json

    import torch

    from kdlab.artifacts import load_model
    from kdlab.data.split import read_manifest
    from kdlab.io import torch_save

    labels = torch.arange(10) % 3
    path = tmp_path / "split.json"
    good = {"version": 1, "noisy": [], "train_indices": [0, 1], "val_indices": [2]}
    from kdlab.data.split import MANIFEST_VERSION

    good["version"] = MANIFEST_VERSION
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "val_indices"}))
    with pytest.raises(ValueError, match=r"split.json: key 'val_indices' is missing"):
        read_manifest(path, labels)
    path.write_text(json.dumps(good | {"train_indices": [0, 99]}))
    with pytest.raises(ValueError, match=r"train_indices holds index 99; allowed: 0..9"):
        read_manifest(path, labels)
    model = tmp_path / "m.pt"
    torch_save(model, {"weights": {}})
    with pytest.raises(ValueError, match=r"m.pt: not a kdlab model file \(no model, "):
        load_model(model, torch.device("cpu"))
    blob = {"model": "lenet5", "num_classes": 10, "in_channels": 1, "input_size": 28,
            "options": {}, "state_dict": {"conv.weight": torch.zeros(1)}}  # fmt: skip
    torch_save(model, blob)
    with pytest.raises(ValueError, match=r"m.pt: weights do not fit model 'lenet5'"):
        load_model(model, torch.device("cpu"))


def test_a_full_disk_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import kdlab.io as kio
    from kdlab.cli import main

    def full_disk(path, text):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(kio, "write_text", full_disk)
    target = tmp_path / "params.yaml"
    assert main(["--params", str(target), "preset", "default"]) == 2
    assert capsys.readouterr().err == (f"kdlab preset: error: {target}: No space left on device\n")


def test_benign_zips_written_by_writestr_extract(tmp_path):
    import zipfile

    from kdlab.data.archive import safe_extract

    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("d/x.txt", "hello")
    safe_extract(archive, tmp_path / "out")
    assert (tmp_path / "out/d/x.txt").read_text() == "hello"


def test_a_gamma_past_float32_fails_check(tmp_path, capsys):
    from kdlab.cli import main

    path = tmp_path / "params.yaml"
    path.write_text(_edit(lambda p: p["soft_labels"].update(gamma=1e300)))
    assert main(["--params", str(path), "check"]) == 2
    assert "soft_labels.gamma = 1e+300 is not allowed; allowed: a number in [0, 1000]" in (
        capsys.readouterr().err
    )
