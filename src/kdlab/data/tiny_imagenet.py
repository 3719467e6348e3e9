"""Tiny ImageNet (Stanford CS231n): 200 ImageNet classes at 64 x 64, ``tiny-imagenet-200.zip``.

The archive unpacks to ``tiny-imagenet-200/`` holding ``wnids.txt`` (the 200 WordNet ids),
``words.txt``, ``train/<wnid>/images/<wnid>_<k>.JPEG`` (500 per class, with
``train/<wnid>/<wnid>_boxes.txt``), ``val/images/val_<k>.JPEG`` with
``val/val_annotations.txt`` (tab-separated: file, wnid, bounding box) and ``test/images/``
(unlabelled, not used). Class ``i`` is the ``i``-th wnid of ``wnids.txt`` sorted.

The labelled validation set (50 per class) is this data set's ``test`` split. Its images are
grouped into classes by ``val_annotations.txt`` when read; a ``val/`` folder already
reorganised into ``val/<wnid>/images/*.JPEG`` (or ``val/<wnid>/*.JPEG``) is read as well.
JPEGs are decoded with PIL (a few are greyscale: converted to RGB).

Checksum of the zip: as used by many public loaders (e.g. Avalanche); no per-file md5s are
published.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from kdlab.data import DatasetSpec, RawFile, register
from kdlab.data.idx import CorruptDataError

_DIR = "tiny-imagenet-200"
_SIDE = 64
_EXTENSIONS = (".jpeg", ".jpg")

_WNID_TEXT = (
    "n01443537 n01629819 n01641577 n01644900 n01698640 n01742172 n01768244 n01770393 "
    "n01774384 n01774750 n01784675 n01855672 n01882714 n01910747 n01917289 n01944390 "
    "n01945685 n01950731 n01983481 n01984695 n02002724 n02056570 n02058221 n02074367 "
    "n02085620 n02094433 n02099601 n02099712 n02106662 n02113799 n02123045 n02123394 "
    "n02124075 n02125311 n02129165 n02132136 n02165456 n02190166 n02206856 n02226429 "
    "n02231487 n02233338 n02236044 n02268443 n02279972 n02281406 n02321529 n02364673 "
    "n02395406 n02403003 n02410509 n02415577 n02423022 n02437312 n02480495 n02481823 "
    "n02486410 n02504458 n02509815 n02666196 n02669723 n02699494 n02730930 n02769748 "
    "n02788148 n02791270 n02793495 n02795169 n02802426 n02808440 n02814533 n02814860 "
    "n02815834 n02823428 n02837789 n02841315 n02843684 n02883205 n02892201 n02906734 "
    "n02909870 n02917067 n02927161 n02948072 n02950826 n02963159 n02977058 n02988304 "
    "n02999410 n03014705 n03026506 n03042490 n03085013 n03089624 n03100240 n03126707 "
    "n03160309 n03179701 n03201208 n03250847 n03255030 n03355925 n03388043 n03393912 "
    "n03400231 n03404251 n03424325 n03444034 n03447447 n03544143 n03584254 n03599486 "
    "n03617480 n03637318 n03649909 n03662601 n03670208 n03706229 n03733131 n03763968 "
    "n03770439 n03796401 n03804744 n03814639 n03837869 n03838899 n03854065 n03891332 "
    "n03902125 n03930313 n03937543 n03970156 n03976657 n03977966 n03980874 n03983396 "
    "n03992509 n04008634 n04023962 n04067472 n04070727 n04074963 n04099969 n04118538 "
    "n04133789 n04146614 n04149813 n04179913 n04251144 n04254777 n04259630 n04265275 "
    "n04275548 n04285008 n04311004 n04328186 n04356056 n04366367 n04371430 n04376876 "
    "n04398044 n04399382 n04417672 n04456115 n04465501 n04486054 n04487081 n04501370 "
    "n04507155 n04532106 n04532670 n04540053 n04560804 n04562935 n04596742 n04597913 "
    "n06596364 n07579787 n07583066 n07614500 n07615774 n07695742 n07711569 n07715103 "
    "n07720875 n07734744 n07747607 n07749582 n07753592 n07768694 n07871810 n07873807 "
    "n07875152 n07920052 n09193705 n09246464 n09256479 n09332890 n09428293 n12267677"
)
WNIDS = tuple(_WNID_TEXT.split())  # sorted, as published in wnids.txt (there unsorted)


def read_wnids(base: str | Path) -> list[str]:
    """The class ids of ``base/wnids.txt``, sorted: position = class index."""
    path = Path(base) / "wnids.txt"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; fetch the data set first")
    wnids = sorted({line.strip() for line in path.read_text().splitlines() if line.strip()})
    if len(wnids) != len(WNIDS):
        raise CorruptDataError(f"{path}: {len(wnids)} class ids, expected {len(WNIDS)}")
    return wnids


def _jpegs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in _EXTENSIONS)


def decode(path: str | Path) -> np.ndarray:
    """One JPEG -> uint8 ``64 x 64 x 3`` (RGB); :class:`CorruptDataError` if unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"))
    except (OSError, SyntaxError, ValueError) as err:  # PIL: truncated / not an image
        raise CorruptDataError(f"{path}: cannot be decoded ({err})") from err
    if array.shape != (_SIDE, _SIDE, 3):
        raise CorruptDataError(f"{path}: image is {array.shape[1]}x{array.shape[0]}, not 64x64")
    return array


def decode_all(paths: list[Path], threads: int | None = None) -> torch.Tensor:
    """Decode JPEGs in parallel threads (PIL releases the GIL) -> uint8 ``N x 3 x 64 x 64``."""
    out = np.empty((len(paths), _SIDE, _SIDE, 3), dtype=np.uint8)
    threads = threads or min(8, os.cpu_count() or 1)

    def one(i: int) -> None:
        out[i] = decode(paths[i])

    if threads > 1 and len(paths) > 64:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(len(paths)), chunksize=256))
    else:
        for i in range(len(paths)):
            one(i)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _val_files(base: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    val = base / "val"
    index = {w: i for i, w in enumerate(wnids)}
    annotations = val / "val_annotations.txt"
    if annotations.exists() and (val / "images").is_dir():
        paths, labels = [], []
        for n, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 2 or fields[1] not in index:
                raise CorruptDataError(f"{annotations}:{n}: no known class id in {line!r}")
            path = val / "images" / fields[0]
            if not path.exists():
                raise FileNotFoundError(f"{path} (listed in {annotations}:{n}) is missing")
            paths.append(path)
            labels.append(index[fields[1]])
        order = sorted(range(len(paths)), key=lambda i: paths[i].name)
        return [paths[i] for i in order], [labels[i] for i in order]
    if all((val / w).is_dir() for w in wnids):  # already reorganised into class folders
        return _class_tree(val, wnids)
    raise FileNotFoundError(
        f"{val}/ holds neither images/ with val_annotations.txt nor one folder per class"
    )


def _class_tree(root: Path, wnids: list[str]) -> tuple[list[Path], list[int]]:
    """``root/<wnid>/images/*.JPEG`` (or ``root/<wnid>/*.JPEG``) -> paths and class indices."""
    paths, labels = [], []
    for label, wnid in enumerate(wnids):
        folder = root / wnid
        folder = folder / "images" if (folder / "images").is_dir() else folder
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is missing: the {root.name} set is incomplete")
        files = _jpegs(folder)
        paths += files
        labels += [label] * len(files)
    return paths, labels


def _read(folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    base = folder / _DIR
    wnids = read_wnids(base)
    if split == "train":
        paths, labels = _class_tree(base / "train", wnids)
    else:
        paths, labels = _val_files(base, wnids)
    if not paths:
        raise CorruptDataError(f"{base}: no JPEG images for the {split} split")
    return decode_all(paths), torch.tensor(labels, dtype=torch.int64)


TINY_IMAGENET = register(
    DatasetSpec(
        name="tiny_imagenet",
        num_classes=200,
        shape=(3, 64, 64),
        splits={"train": 100000, "test": 10000},
        files=(RawFile("tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de", extract=_DIR),),
        mirrors=("http://cs231n.stanford.edu/",),
        reader=_read,
        # Commonly used per-channel statistics of the training images (not re-measured here).
        mean=(0.4802, 0.4481, 0.3975),
        std=(0.2770, 0.2691, 0.2821),
        class_names=WNIDS,
        how_to_get="run with internet access (http://cs231n.stanford.edu/tiny-imagenet-200.zip), "
        "or copy tiny-imagenet-200.zip (248 MB) from another machine",
    )
)
