"""CIFAR-10/100, Tiny ImageNet and STL-10 on tiny fixtures written in the published formats,
plus archive safety (hostile tar / zip members are refused, nothing lands outside the target).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import stat
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from kdlab.data import get_dataset, load
from kdlab.data.archive import ArchiveError, UnsafeArchiveError, safe_extract
from kdlab.data.fetch import ChecksumError, MissingDataError, fetch
from kdlab.data.idx import CorruptDataError
from kdlab.data.tiny_imagenet import WNIDS

QUIET = {"log": lambda _: None}


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def tree(path: Path) -> set[str]:
    """Every path under ``path`` (files, folders, links), relative."""
    return {str(p.relative_to(path)) for p in path.rglob("*")}


def make_tar(path: Path, src: Path, top: str) -> str:
    """``src/top`` as a gzipped tar with members ``top/...`` (as published); returns md5."""
    with tarfile.open(path, "w:gz") as tf:
        tf.add(src / top, arcname=top)
    return md5(path)


def make_zip(path: Path, src: Path, top: str) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for p in sorted((src / top).rglob("*")):
            zf.write(p, p.relative_to(src).as_posix())
    return md5(path)


# --- fixture writers: the published on-disk formats -----------------------------------------


def cifar_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """N x 3072 uint8 rows (R plane, G plane, B plane), class in the red plane's first pixel."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(len(labels), 3072), dtype=np.uint8)
    data[:, 0] = labels
    return data


def write_batch(path: Path, batch: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(batch, fh, protocol=2)


def write_cifar10(src: Path, per_batch: int = 20) -> dict[str, np.ndarray]:
    folder = src / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for k, name in enumerate(names):
        labels = np.arange(per_batch) % 10
        data = cifar_images(labels, k)
        write_batch(
            folder / name,
            {"batch_label": name, "labels": labels.tolist(), "data": data, "filenames": []},
        )
        written[name] = data
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"]
    write_batch(folder / "batches.meta", {"label_names": [*names, "truck"]})
    return written


def write_cifar100(src: Path, n: int = 200) -> dict[str, np.ndarray]:
    folder = src / "cifar-100-python"
    folder.mkdir(parents=True)
    written = {}
    for k, name in enumerate(("train", "test")):
        fine = np.arange(n) % 100
        data = cifar_images(fine, 10 + k)
        write_batch(
            folder / name,
            {
                "filenames": [],
                "batch_label": name,
                "fine_labels": fine.tolist(),
                "coarse_labels": (fine // 5).tolist(),
                "data": data,
            },
        )
        written[name] = data
    write_batch(folder / "meta", {"fine_label_names": [], "coarse_label_names": []})
    return written


def write_stl10(src: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """``*_X.bin`` column-major per channel, ``*_y.bin`` labels 1..10; returns N x 3 x H x W."""
    folder = src / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        x[:, 0, 0, :] = 255  # top row of the red channel: orientation check
        x[:, 0, 1:, :] = 0
        labels = (np.arange(n) % 10 + 1).astype(np.uint8)
        (folder / f"{split}_X.bin").write_bytes(np.transpose(x, (0, 1, 3, 2)).tobytes())
        (folder / f"{split}_y.bin").write_bytes(labels.tobytes())
        images[split] = x
    (folder / "class_names.txt").write_text("\n".join(get_dataset("stl10").class_names) + "\n")
    return images


def colour(label: int) -> tuple[int, int, int]:
    return (label, 255 - label, 128)


def write_tiny_imagenet(src: Path, reorganised_val: bool = False) -> Path:
    """wnids.txt (unsorted), one train JPEG per class (one greyscale), one val JPEG per class."""
    from PIL import Image

    base = src / "tiny-imagenet-200"
    base.mkdir(parents=True)
    shuffled = list(WNIDS)
    np.random.default_rng(0).shuffle(shuffled)
    (base / "wnids.txt").write_text("\n".join(shuffled) + "\n")
    annotations = []
    for label, wnid in enumerate(WNIDS):
        img = Image.new("RGB", (64, 64), colour(label))
        train = base / "train" / wnid / "images"
        train.mkdir(parents=True)
        (img.convert("L") if label == 0 else img).save(train / f"{wnid}_0.JPEG", quality=95)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text(f"{wnid}_0.JPEG\t0\t0\t63\t63\n")
        name = f"val_{(label * 7) % 200}.JPEG"
        val = base / "val" / wnid / "images" if reorganised_val else base / "val" / "images"
        val.mkdir(parents=True, exist_ok=True)
        img.save(val / name, quality=95)
        annotations.append(f"{name}\t{wnid}\t0\t0\t63\t63")
    if not reorganised_val:
        (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    (base / "test" / "images").mkdir(parents=True)
    return base


# --- loading each data set ------------------------------------------------------------------


def test_cifar10_from_tarball(tmp_path):
    src = tmp_path / "src"
    written = write_cifar10(src / "tree")
    archive = src / "cifar-10-python.tar.gz"
    m = make_tar(archive, src / "tree", "cifar-10-batches-py")
    raw = tmp_path / "raw"
    report = fetch("cifar10", raw, source_dir=src, md5_overrides={archive.name: m}, **QUIET)
    assert "extracted to cifar-10-batches-py/" in report[archive.name]
    x, y = load("cifar10", raw, "train")
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.uint8
    assert y.shape == (100,) and y.dtype == torch.int64
    assert int(y.min()) == 0 and int(y.max()) == 9
    assert torch.equal(x[0].flatten(), torch.from_numpy(written["data_batch_1"][0]))
    assert torch.equal(x[:, 0, 0, 0].long(), y)  # planes and order kept
    xt, yt = load("cifar10", raw, "test")
    assert xt.shape == (20, 3, 32, 32) and yt.tolist() == [i % 10 for i in range(20)]
    again = fetch("cifar10", raw, md5_overrides={archive.name: m}, **QUIET)
    assert "already extracted" in again[archive.name]


def test_cifar100_fine_labels(tmp_path):
    src = tmp_path / "src"
    written = write_cifar100(src / "tree")
    archive = src / "cifar-100-python.tar.gz"
    m = make_tar(archive, src / "tree", "cifar-100-python")
    raw = tmp_path / "raw"
    fetch("cifar100", raw, source_dir=src, md5_overrides={archive.name: m}, **QUIET)
    for split in ("train", "test"):
        x, y = load("cifar100", raw, split)
        assert x.shape == (200, 3, 32, 32) and x.dtype == torch.uint8
        assert y.dtype == torch.int64 and int(y.min()) == 0 and int(y.max()) == 99
        assert torch.equal(x.reshape(200, -1), torch.from_numpy(written[split]))
    assert len(get_dataset("cifar100").class_names) == 100


def test_stl10_column_major_and_labels(tmp_path):
    src = tmp_path / "src"
    images = write_stl10(src / "tree")
    archive = src / "stl10_binary.tar.gz"
    m = make_tar(archive, src / "tree", "stl10_binary")
    raw = tmp_path / "raw"
    fetch("stl10", raw, source_dir=src, md5_overrides={archive.name: m}, **QUIET)
    x, y = load("stl10", raw, "train")
    assert x.shape == (20, 3, 96, 96) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == [i % 10 for i in range(20)]
    assert torch.equal(x, torch.from_numpy(images["train"]))
    assert bool((x[:, 0, 0, :] == 255).all()) and bool((x[:, 0, 1:, 0] == 0).all())
    xt, yt = load("stl10", raw, "test")
    assert xt.shape == (10, 3, 96, 96) and int(yt.max()) == 9


def _check_tiny(raw: Path) -> None:
    x, y = load("tiny_imagenet", raw, "train")
    assert x.shape == (200, 3, 64, 64) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == list(range(200))  # sorted wnids order
    red = x[:, 0].float().mean(dim=(1, 2))
    assert torch.allclose(red[1:], y[1:].float(), atol=3)  # the colour encodes the class
    assert bool((x[0, 0] == x[0, 1]).all())  # the greyscale JPEG became RGB
    xt, yt = load("tiny_imagenet", raw, "test")
    assert xt.shape == (200, 3, 64, 64) and sorted(yt.tolist()) == list(range(200))
    assert torch.allclose(xt[:, 0].float().mean(dim=(1, 2)), yt.float(), atol=3)


def test_tiny_imagenet_from_zip(tmp_path):
    src = tmp_path / "src"
    write_tiny_imagenet(src / "tree")
    archive = src / "tiny-imagenet-200.zip"
    m = make_zip(archive, src / "tree", "tiny-imagenet-200")
    raw = tmp_path / "raw"
    report = fetch("tiny_imagenet", raw, source_dir=src, md5_overrides={archive.name: m}, **QUIET)
    assert "extracted to tiny-imagenet-200/" in report[archive.name]
    _check_tiny(raw)


def test_tiny_imagenet_from_folder_tree(tmp_path):
    """An unpacked folder (val/ already reorganised into classes) is accepted, unverified."""
    write_tiny_imagenet(tmp_path / "src", reorganised_val=True)
    raw = tmp_path / "raw"
    report = fetch("tiny_imagenet", raw, source_dir=tmp_path / "src", **QUIET)
    assert "not verified" in report["tiny-imagenet-200.zip"]
    _check_tiny(raw)


# --- checksums, truncation, missing files ---------------------------------------------------


def test_checksum_failure_extracts_nothing(tmp_path):
    src = tmp_path / "src"
    write_cifar10(src / "tree", per_batch=10)
    make_tar(src / "cifar-10-python.tar.gz", src / "tree", "cifar-10-batches-py")
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError, match="matches neither the published c58f30108f"):
        fetch("cifar10", raw, source_dir=src, **QUIET)
    bad = {"cifar-10-python.tar.gz": "0" * 32}
    with pytest.raises(ChecksumError, match=r"cifar-10-python.tar.gz: md5 \w+ != 0{32}"):
        fetch("cifar10", raw, source_dir=src, md5_overrides=bad, **QUIET)
    assert not (raw / "cifar10" / "cifar-10-batches-py").exists()


def test_unpacked_cifar_folder_checked_against_published_member_md5s(tmp_path):
    src = tmp_path / "src"
    write_cifar10(src, per_batch=10)  # src/cifar-10-batches-py/, no archive
    with pytest.raises(ChecksumError, match="data_batch_1: md5 .* matches neither the published"):
        fetch("cifar10", tmp_path / "raw", source_dir=src, **QUIET)
    folder = src / "cifar-10-batches-py"
    overrides = {f"cifar-10-batches-py/{p.name}": md5(p) for p in folder.iterdir()}
    report = fetch("cifar10", tmp_path / "raw2", source_dir=src, md5_overrides=overrides, **QUIET)
    assert "md5 of its 7 published files" in report["cifar-10-python.tar.gz"]
    assert load("cifar10", tmp_path / "raw2", "test")[0].shape == (10, 3, 32, 32)


def test_missing_archive_says_which_file_and_where(tmp_path):
    raw = tmp_path / "raw"
    with pytest.raises(MissingDataError) as err:
        fetch("cifar100", raw, allow_download=False, **QUIET)
    msg = str(err.value)
    assert f"{raw}/cifar100/cifar-100-python.tar.gz is missing" in msg
    assert f"put cifar-100-python.tar.gz in {raw}/cifar100/" in msg
    assert "eb9058c3a382ffc7106e4002c42a8d85" in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(MissingDataError, match="has neither stl10_binary.tar.gz nor the folder"):
        fetch("stl10", raw, source_dir=tmp_path / "empty", **QUIET)


def test_truncated_files_are_reported(tmp_path):
    src = tmp_path / "src"
    write_cifar10(src, per_batch=10)
    batch = src / "cifar-10-batches-py" / "data_batch_1"
    batch.write_bytes(batch.read_bytes()[:-500])
    with pytest.raises(CorruptDataError, match="data_batch_1: not a CIFAR batch or truncated"):
        _load_folder("cifar10", src, "train")

    write_stl10(tmp_path / "stl", n_train=2, n_test=2)
    xb = tmp_path / "stl" / "stl10_binary" / "train_X.bin"
    xb.write_bytes(xb.read_bytes()[:-7])
    with pytest.raises(CorruptDataError, match="train_X.bin: .* not a whole number"):
        _load_folder("stl10", tmp_path / "stl", "train")

    base = write_tiny_imagenet(tmp_path / "tin")
    jpeg = base / "train" / WNIDS[5] / "images" / f"{WNIDS[5]}_0.JPEG"
    jpeg.write_bytes(jpeg.read_bytes()[:300])
    with pytest.raises(CorruptDataError, match=f"{WNIDS[5]}_0.JPEG: cannot be decoded"):
        _load_folder("tiny_imagenet", tmp_path / "tin", "train")

    # A truncated archive whose md5 was (wrongly) vouched for: the copy is checked before it
    # replaces anything; the error names the source (not the copy) and nothing lands in raw.
    archive = tmp_path / "arch" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    make_tar(archive, src, "cifar-10-batches-py")
    archive.write_bytes(archive.read_bytes()[:2000])
    raw = tmp_path / "raw"
    with pytest.raises(ChecksumError, match=f"^{archive}: corrupt cifar-10-python.tar.gz"):
        fetch("cifar10", raw, archive.parent, {archive.name: md5(archive)}, **QUIET)
    assert tree(raw / "cifar10") == set()  # no .part, no half-extracted folder


def _load_folder(name: str, folder: Path, split: str):
    """Read a data set from ``folder`` (which holds the unpacked tree) without fetching."""
    return get_dataset(name).reader(folder, split)


def test_data_list_json_lists_every_data_set(capsys):
    from kdlab.cli import main

    assert main(["data", "list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert {"mnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet", "stl10"} <= set(rows)
    assert rows["tiny_imagenet"]["classes"] == 200 and rows["stl10"]["shape"] == [3, 96, 96]
    assert rows["cifar100"]["files"] == ["cifar-100-python.tar.gz"]


# --- hostile archives ------------------------------------------------------------------------


def _tar(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    """members: (kind, name, data or link target); kind in file / symlink / hardlink / dir."""
    with tarfile.open(path, "w:gz") as tf:
        for kind, name, payload in members:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
                continue
            info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}.get(
                kind, tarfile.DIRTYPE
            )
            info.linkname = payload if kind != "dir" else ""
            tf.addfile(info)
    return path


def _zip(path: Path, members: list[tuple[str, str, bytes | str]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for kind, name, payload in members:
            info = zipfile.ZipInfo(name)
            if kind == "symlink":
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(info, payload)
            else:
                info.external_attr = (stat.S_IFREG | 0o644) << 16
                zf.writestr(info, payload)
    return path


HOSTILE = [
    ("tar", [("file", "ok.txt", b"fine"), ("file", "../evil", b"x")], "'../evil'"),
    ("tar", [("file", "a/../../evil", b"x")], "'a/../../evil'"),
    ("tar", [("file", "/tmp/kdlab-evil-abs", b"x")], "'/tmp/kdlab-evil-abs'"),
    ("tar", [("symlink", "link", "../../outside")], "'link' is a symlink to '../../outside'"),
    ("tar", [("symlink", "etc", "/etc")], "'etc' is a symlink to '/etc' \\(absolute\\)"),
    ("tar", [("hardlink", "hard", "../outside")], "'hard' is a hardlink to '../outside'"),
    ("zip", [("file", "../evil", b"x")], "'../evil' contains '..'"),
    ("zip", [("file", "/tmp/kdlab-evil-abs", b"x")], "'/tmp/kdlab-evil-abs' has an absolute"),
    ("zip", [("file", "sub/..\\..\\evil", b"x")], "contains '..'"),
    ("zip", [("symlink", "up", "../..")], "'up' is a symlink to '../..'"),
]


@pytest.mark.parametrize("kind,members,named", HOSTILE)
def test_hostile_archive_refused_before_writing(tmp_path, kind, members, named):
    target = tmp_path / "box" / "target"
    target.parent.mkdir()
    archive = (_tar if kind == "tar" else _zip)(tmp_path / f"bad.{kind}", members)
    before = tree(tmp_path)
    with pytest.raises(UnsafeArchiveError, match=named):
        safe_extract(archive, target)
    after = tree(tmp_path)
    assert after - before <= {"box/target"} and not any(target.rglob("*"))
    assert not os.path.lexists("/tmp/kdlab-evil-abs")


def test_link_redirected_by_a_later_member_is_caught(tmp_path):
    """x -> a/../y looks inside while a does not exist; once a -> . it points outside."""
    target = tmp_path / "box" / "target"
    archive = _tar(
        tmp_path / "chain.tar.gz",
        [("dir", "d", ""), ("symlink", "d/x", "a/../../y"), ("symlink", "d/a", ".")],
    )
    with pytest.raises(UnsafeArchiveError, match="'d/x'"):
        safe_extract(archive, target)
    assert tree(tmp_path / "box") <= {"target", "target/d", "target/d/a"}


def test_write_through_symlink_refused(tmp_path):
    """A member written below a link that leads outside is refused (the link is caught first)."""
    target = tmp_path / "target"
    (tmp_path / "outside").mkdir()
    archive = _tar(tmp_path / "t.tar.gz", [("symlink", "l", "../outside"), ("file", "l/f", b"x")])
    with pytest.raises(UnsafeArchiveError, match="'l'"):
        safe_extract(archive, target)
    assert not any((tmp_path / "outside").iterdir())


def test_hostile_archive_through_fetch_leaves_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    archive = _tar(
        src / "cifar-10-python.tar.gz",
        [("file", "cifar-10-batches-py/test_batch", b"x"), ("file", "../../evil", b"x")],
    )
    raw = tmp_path / "raw"
    with pytest.raises(UnsafeArchiveError, match="'../../evil'"):
        fetch("cifar10", raw, src, {archive.name: md5(archive)}, **QUIET)
    assert tree(raw) == {"cifar10", "cifar10/cifar-10-python.tar.gz"}
    assert tree(tmp_path) == {"src", "raw", *(f"raw/{p}" for p in tree(raw)), f"src/{archive.name}"}


def test_safe_extract_keeps_internal_links(tmp_path):
    archive = _tar(
        tmp_path / "ok.tar.gz",
        [
            ("dir", "top", ""),
            ("file", "top/data.bin", b"123"),
            ("symlink", "top/alias", "data.bin"),
            ("hardlink", "top/copy", "top/data.bin"),
        ],
    )
    written = safe_extract(archive, tmp_path / "t")
    assert written == ["top/data.bin", "top/alias", "top/copy"]
    assert (tmp_path / "t/top/alias").read_bytes() == b"123"
    assert (tmp_path / "t/top/copy").read_bytes() == b"123"
    with pytest.raises(ArchiveError, match="not a known archive type"):
        safe_extract(tmp_path / "x.rar", tmp_path / "t")
