"""Fixtures written in the real on-disk formats, by the tests themselves."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as a gzipped IDX file (magic 0 0 8 ndim, big-endian dims)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fh:
        fh.write(header + array.astype(np.uint8).tobytes())  # mtime 0: reproducible md5


def make_images(labels: np.ndarray, size: int = 28, seed: int = 0) -> np.ndarray:
    """Learnable images: each class is a bright bar at its own position, plus noise."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size)).astype(np.uint8)
    for i, c in enumerate(labels):
        row = 2 + (int(c) * 2) % (size - 4)
        images[i, row : row + 3, 4 : size - 4] = 255 - int(c) * 10
        if c % 2:
            images[i, 4 : size - 4, size // 2] = 200
    return images


def write_fashion_mnist(folder: Path, n_train: int = 600, n_test: int = 200, seed: int = 0):
    """A tiny Fashion-MNIST in the published IDX gzip layout; returns {file: md5}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        rng.shuffle(labels)
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", make_images(labels, seed=seed + n))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels.astype(np.uint8))
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.gz"))}


def method_params(name: str, **overrides) -> dict:
    """Method ``name``'s ``method_params`` block of presets/default.yaml with ``overrides``:
    a method takes every parameter (no defaults in code; a method without a block: {})."""
    import yaml

    text = (Path(__file__).resolve().parents[1] / "src/kdlab/presets/default.yaml").read_text()
    block = yaml.safe_load(text)["method_params"].get(name) or {}
    return {**block, **overrides}


def tiny_params(default: dict, source_dir: Path, md5: dict[str, str]) -> dict:
    """The default params shrunk to seconds: tiny models, one or two epochs, the fixture data."""
    import copy

    p = copy.deepcopy(default)
    p["threads"] = 1
    p["device"] = "cpu"
    p["data"].update(source_dir=str(source_dir), md5=md5, val_size=100)
    p["teacher"]["options"] = {"width": 4}
    p["teacher"]["channels_last"] = False
    for role, epochs in (("teacher", 1), ("student", 2), ("cae", 1)):
        p[role]["train"].update(epochs=epochs, batch_size=64)
    p["soft_labels"]["samples_per_class"] = 5
    return p


def cli(argv, capsys):
    """``kdlab *argv`` in this process (``kdlab.cli.main``): a ``CompletedProcess`` with the
    exit status, stdout and stderr a subprocess would give, without its ~5 s of imports. One
    test per exit-status contract runs the real command (tests/test_hostile.py)."""
    import subprocess

    from kdlab.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse's usage errors and --help
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    out = capsys.readouterr()
    return subprocess.CompletedProcess(["kdlab", *map(str, argv)], code, out.out, out.err)


def git_dvc_repo(path: Path):
    """``git init`` (branch ``main``) + ``dvc init`` in ``path``; returns ``sh(*cmd)``, which
    runs a command there and fails the test on a non-zero exit (``sh.dvc`` is the
    ``python -m dvc`` prefix)."""
    import subprocess
    import sys

    def sh(*cmd: str) -> str:
        proc = subprocess.run(cmd, cwd=path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    sh.dvc = (sys.executable, "-m", "dvc")
    sh("git", "init", "-q", "-b", "main")
    sh("git", "config", "user.email", "t@t")
    sh("git", "config", "user.name", "t")
    sh(*sh.dvc, "init", "-q")
    return sh


def copy_pipeline(work: Path) -> None:
    """dvc.yaml and the source its stages depend on (hashed there; the installed kdlab runs)."""
    import shutil

    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "dvc.yaml", work / "dvc.yaml")
    shutil.copy(repo / ".dvcignore", work / ".dvcignore")
    shutil.copytree(
        repo / "src/kdlab", work / "src/kdlab", ignore=shutil.ignore_patterns("__pycache__")
    )


def init_repo(work: Path) -> None:
    """git + DVC repository of the copied pipeline with one commit on ``main`` (as a clone
    has: DVCLive reads HEAD)."""
    sh = git_dvc_repo(work)
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "pipeline")


def one_stage_repo(
    path: Path,
    stage: str,
    params: str,
    declared: list[str],
    outs: list[str] = (),
    metrics: list[str] = (),
):
    """A git + DVC repository whose pipeline is one ``distill`` stage running the Python code
    ``stage`` on ``params`` (params.yaml text), declaring ``declared`` params and the uncached
    ``outs`` / ``metrics``; reproduced and committed. Returns :func:`git_dvc_repo`'s ``sh``."""
    import sys

    import yaml

    sh = git_dvc_repo(path)
    (path / "stage.py").write_text(stage)
    (path / "params.yaml").write_text(params)
    spec = {
        "cmd": f"{sys.executable} stage.py",
        "deps": ["stage.py"],
        "params": list(declared),
        "outs": [{o: {"cache": False}} for o in outs],
        "metrics": [{m: {"cache": False}} for m in metrics],
    }
    spec = {k: v for k, v in spec.items() if v}
    (path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"distill": spec}}))
    sh(*sh.dvc, "repro", "-q")
    sh("git", "add", "-A")
    sh("git", "commit", "-qm", "base")
    return sh


def run_stages_in_process(work: Path, stages: list[str]) -> None:
    """Run ``stages`` of ``work``'s dvc.yaml in this process (each command's stage module's
    ``main`` with the command's own arguments, in ``work``), then ``dvc commit`` them: dvc.lock
    records them as ``dvc repro`` would, without a process (~3 s of imports) per stage."""
    import importlib
    import os
    import subprocess
    import sys

    import yaml

    spec = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    old = os.getcwd()
    os.chdir(work)
    try:
        for stage in stages:
            env, python, flag, module, *args = spec[stage]["cmd"].split()
            assert (env, python, flag) == ("PYTHONPATH=src", "python", "-m"), spec[stage]["cmd"]
            assert importlib.import_module(module).main(args) == 0, stage
    finally:
        os.chdir(old)
    cmd = [sys.executable, "-m", "dvc", "commit", "-f", "-q", *stages]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
