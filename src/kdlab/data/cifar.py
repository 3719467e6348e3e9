"""CIFAR-10 and CIFAR-100, the "python version" published by Krizhevsky (pickled batches).

The archive ``cifar-10-python.tar.gz`` unpacks to ``cifar-10-batches-py/`` holding
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``;
``cifar-100-python.tar.gz`` unpacks to ``cifar-100-python/`` holding ``train``, ``test`` and
``meta``. Each batch is a pickled dict (written by Python 2) with ``data``, a uint8
``N x 3072`` array (1024 red, 1024 green, 1024 blue values, row-major 32 x 32), and
``labels`` (CIFAR-10) or ``fine_labels`` / ``coarse_labels`` (CIFAR-100).

Checksums: torchvision's ``torchvision/datasets/cifar.py`` (archive and per-file md5s).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from kdlab.data import DatasetSpec, RawFile, register
from kdlab.data.idx import CorruptDataError

# The only globals a CIFAR batch needs (numpy arrays, written by numpy 1.x or 2.x).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _BatchUnpickler(pickle.Unpickler):
    """Unpickle numpy arrays, lists, dicts and strings only: no arbitrary code."""

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a batch")
        return super().find_class(module, name)


def read_batch(path: str | Path) -> dict:
    """Read one pickled CIFAR batch as a dict with ``str`` keys (Python 2 strings: latin-1)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; fetch the data set first")
    try:
        with open(path, "rb") as fh:
            batch = _BatchUnpickler(fh, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, TypeError) as err:
        raise CorruptDataError(f"{path}: not a CIFAR batch or truncated ({err})") from err
    if not isinstance(batch, dict):
        raise CorruptDataError(f"{path}: holds a {type(batch).__name__}, not a dict")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _images_labels(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    batch = read_batch(path)
    if "data" not in batch or label_key not in batch:
        raise CorruptDataError(f"{path}: has keys {sorted(batch)}, expected 'data', {label_key!r}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise CorruptDataError(f"{path}: data is {data.dtype} {data.shape}, not uint8 N x 3072")
    if len(data) != len(labels):
        raise CorruptDataError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _reader(folder_name: str, files: dict[str, tuple[str, ...]], label_key: str, classes: int):
    def read(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_images_labels(folder / folder_name / f, label_key) for f in files[split]]
        images = np.concatenate([p[0] for p in parts])
        labels = np.concatenate([p[1] for p in parts])
        if len(labels) and (labels.min() < 0 or labels.max() >= classes):
            raise CorruptDataError(
                f"{folder / folder_name}: labels span {labels.min()}..{labels.max()}, "
                f"expected 0..{classes - 1}"
            )
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)

    return read


_C10 = "cifar-10-batches-py"
_C100 = "cifar-100-python"

CIFAR10 = register(
    DatasetSpec(
        name="cifar10",
        num_classes=10,
        shape=(3, 32, 32),
        splits={"train": 50000, "test": 10000},
        files=(
            RawFile(
                "cifar-10-python.tar.gz",
                "c58f30108f718f92721af3b95e74349a",
                extract=_C10,
                members=(
                    RawFile(f"{_C10}/data_batch_1", "c99cafc152244af753f735de768cd75f"),
                    RawFile(f"{_C10}/data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
                    RawFile(f"{_C10}/data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
                    RawFile(f"{_C10}/data_batch_4", "634d18415352ddfa80567beed471001a"),
                    RawFile(f"{_C10}/data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb"),
                    RawFile(f"{_C10}/test_batch", "40351d587109b95175f43aff81a1287e"),
                    RawFile(f"{_C10}/batches.meta", "5ff9c542aee3614f3951f8cda6e48888"),
                ),
            ),
        ),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        reader=_reader(
            _C10,
            {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)},
            "labels",
            10,
        ),
        # Per-channel mean and standard deviation of the 50,000 training images.
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        class_names=(
            "airplane",
            "automobile",
            "bird",
            "cat",
            "deer",
            "dog",
            "frog",
            "horse",
            "ship",
            "truck",
        ),
        how_to_get="run with internet access (https://www.cs.toronto.edu/~kriz/cifar.html), or "
        "copy cifar-10-python.tar.gz (163 MB) from another machine",
    )
)

_CIFAR100_NAMES = (
    "apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus "
    "butterfly camel can castle caterpillar cattle chair chimpanzee clock cloud cockroach couch "
    "crab crocodile cup dinosaur dolphin elephant flatfish forest fox girl hamster house "
    "kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle "
    "mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree "
    "plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal shark shrew "
    "skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank "
    "telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf "
    "woman worm"
)
CIFAR100_CLASSES = tuple(_CIFAR100_NAMES.split())

CIFAR100 = register(
    DatasetSpec(
        name="cifar100",
        num_classes=100,
        shape=(3, 32, 32),
        splits={"train": 50000, "test": 10000},
        files=(
            RawFile(
                "cifar-100-python.tar.gz",
                "eb9058c3a382ffc7106e4002c42a8d85",
                extract=_C100,
                members=(
                    RawFile(f"{_C100}/train", "16019d7e3df5f24257cddd939b257f8d"),
                    RawFile(f"{_C100}/test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),
                    RawFile(f"{_C100}/meta", "7973b15100ade9c7d40fb424638fde48"),
                ),
            ),
        ),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        reader=_reader(_C100, {"train": ("train",), "test": ("test",)}, "fine_labels", 100),
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        class_names=CIFAR100_CLASSES,
        how_to_get="run with internet access (https://www.cs.toronto.edu/~kriz/cifar.html), or "
        "copy cifar-100-python.tar.gz (161 MB) from another machine",
    )
)
