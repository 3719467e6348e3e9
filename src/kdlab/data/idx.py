"""IDX (gzip) files: MNIST and Fashion-MNIST, as published by LeCun et al. and Zalando."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import torch

from kdlab.data import DatasetSpec, RawFile, register

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class CorruptDataError(RuntimeError):
    """A data file is truncated or not in the expected format."""


def read_idx(path: str | Path) -> np.ndarray:
    """Parse a (gzipped) IDX file: magic ``0 0 dtype ndim``, big-endian dims, then the data."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            raw = fh.read()
    except (OSError, EOFError) as err:  # bad gzip stream, truncated archive
        raise CorruptDataError(f"{path}: cannot be read ({err}); delete it and rerun") from err
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise CorruptDataError(f"{path}: not an IDX file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CorruptDataError(f"{path}: truncated IDX header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    if len(raw) - header != expected:
        raise CorruptDataError(
            f"{path}: holds {len(raw) - header} data bytes, the header promises {expected}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)


def _reader(prefix: dict[str, str]):
    def read(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images = read_idx(folder / f"{prefix[split]}-images-idx3-ubyte.gz")
        labels = read_idx(folder / f"{prefix[split]}-labels-idx1-ubyte.gz")
        if len(images) != len(labels):
            raise CorruptDataError(f"{folder}: {len(images)} images but {len(labels)} labels")
        return (
            torch.from_numpy(images.astype(np.uint8)).unsqueeze(1).contiguous(),
            torch.from_numpy(labels.astype(np.int64)),
        )

    return read


_SPLITS = {"train": "train", "test": "t10k"}

FASHION_MNIST = register(
    DatasetSpec(
        name="fashion_mnist",
        num_classes=10,
        shape=(1, 28, 28),
        splits={"train": 60000, "test": 10000},
        # md5 of the published archives (torchvision) and of their gunzipped contents (measured
        # on the Debian package dataset-fashion-mnist, which re-gzips the same bytes).
        files=(
            RawFile(
                "train-images-idx3-ubyte.gz",
                "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            ),
            RawFile(
                "train-labels-idx1-ubyte.gz",
                "25c81989df183df01b3e8a0aad5dffbe",
                "9018921c3c673c538a1fc5bad174d6f9",
            ),
            RawFile(
                "t10k-images-idx3-ubyte.gz",
                "bef4ecab320f06d8554ea6380940ec79",
                "8181f5470baa50b63fa0f6fddb340f0a",
            ),
            RawFile(
                "t10k-labels-idx1-ubyte.gz",
                "bb300cfdad3c16e7a12a480ee83cd310",
                "15d484375f8d13e6eb1aabb0c3f46965",
            ),
        ),
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        reader=_reader(_SPLITS),
        mean=(0.2860,),
        std=(0.3530,),
        class_names=(
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        local_dirs=("/usr/share/datasets/fashion-mnist",),
        how_to_get="sudo apt-get install dataset-fashion-mnist (Debian/Ubuntu), or run with "
        "internet access so torchvision's mirror can be used",
    )
)

MNIST = register(
    DatasetSpec(
        name="mnist",
        num_classes=10,
        shape=(1, 28, 28),
        splits={"train": 60000, "test": 10000},
        files=(
            RawFile("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RawFile("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            RawFile("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
            RawFile("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "http://yann.lecun.com/exdb/mnist/",
        ),
        reader=_reader(_SPLITS),
        mean=(0.1307,),
        std=(0.3081,),
        class_names=tuple(str(i) for i in range(10)),
        how_to_get="run with internet access (torchvision's mirrors), or copy the four "
        "*-ubyte.gz files from another machine",
    )
)
