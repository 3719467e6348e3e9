"""STL-10 (Coates, Lee and Ng, 2011), the binary version ``stl10_binary.tar.gz``.

The archive unpacks to ``stl10_binary/`` holding ``train_X.bin`` / ``train_y.bin`` (5,000
labelled images), ``test_X.bin`` / ``test_y.bin`` (8,000), ``unlabeled_X.bin`` (100,000, not
used here), ``class_names.txt`` and ``fold_indices.txt``. ``*_X.bin`` is raw uint8, each image
3 x 96 x 96 with every channel stored column-major (Matlab order); ``*_y.bin`` is one uint8 per
image, classes numbered 1..10 (returned here as 0..9).

Checksums: torchvision's ``torchvision/datasets/stl10.py`` (archive and per-file md5s).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from kdlab.data import DatasetSpec, RawFile, register
from kdlab.data.idx import CorruptDataError

_DIR = "stl10_binary"
_SIDE = 96
_IMAGE_BYTES = 3 * _SIDE * _SIDE


def read_images(path: str | Path) -> np.ndarray:
    """``*_X.bin`` -> uint8 ``N x 3 x 96 x 96`` in row-major (C, H, W) order."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) == 0 or len(raw) % _IMAGE_BYTES:
        raise CorruptDataError(
            f"{path}: {len(raw)} bytes is not a whole number of 3x96x96 images "
            f"({_IMAGE_BYTES} bytes each): truncated or not an STL-10 file"
        )
    # Each channel is stored column by column: read as (C, W, H) and swap the last two axes.
    return raw.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 1, 3, 2)


def read_labels(path: str | Path) -> np.ndarray:
    """``*_y.bin`` (uint8 classes 1..10) -> int64 classes 0..9."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8).astype(np.int64)
    if len(raw) and (raw.min() < 1 or raw.max() > 10):
        raise CorruptDataError(f"{path}: labels span {raw.min()}..{raw.max()}, expected 1..10")
    return raw - 1


def _read(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    base = folder / _DIR
    for f in (f"{split}_X.bin", f"{split}_y.bin"):
        if not (base / f).exists():
            raise FileNotFoundError(f"{base / f} is missing; fetch the data set first")
    images = read_images(base / f"{split}_X.bin")
    labels = read_labels(base / f"{split}_y.bin")
    if len(images) != len(labels):
        raise CorruptDataError(f"{base}: {split} has {len(images)} images but {len(labels)} labels")
    return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)


STL10 = register(
    DatasetSpec(
        name="stl10",
        num_classes=10,
        shape=(3, 96, 96),
        splits={"train": 5000, "test": 8000},
        files=(
            RawFile(
                "stl10_binary.tar.gz",
                "91f7769df0f17e558f3565bffb0c7dfb",
                extract=_DIR,
                members=(
                    RawFile(f"{_DIR}/train_X.bin", "918c2871b30a85fa023e0c44e0bee87f"),
                    RawFile(f"{_DIR}/train_y.bin", "5a34089d4802c674881badbb80307741"),
                    RawFile(f"{_DIR}/test_X.bin", "7f263ba9f9e0b06b93213547f721ac82"),
                    RawFile(f"{_DIR}/test_y.bin", "36f9794fa4beb8a2c72628de14fa638e"),
                ),
            ),
        ),
        mirrors=("http://ai.stanford.edu/~acoates/stl10/",),
        reader=_read,
        # Commonly used per-channel statistics of STL-10 (not re-measured here).
        mean=(0.4467, 0.4398, 0.4066),
        std=(0.2603, 0.2566, 0.2713),
        class_names=(
            "airplane",
            "bird",
            "car",
            "cat",
            "deer",
            "dog",
            "horse",
            "monkey",
            "ship",
            "truck",
        ),
        how_to_get="run with internet access (https://cs.stanford.edu/~acoates/stl10/), or "
        "copy stl10_binary.tar.gz (2.6 GB) from another machine",
    )
)
