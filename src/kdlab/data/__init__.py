"""Data set registry: ``load(name, root, split)`` -> ``(uint8 N x C x H x W, int64 N)``.

Adding a data set is one module defining a :class:`DatasetSpec` and calling :func:`register`,
plus one import line at the bottom of this file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch


@dataclass(frozen=True)
class RawFile:
    """One file of a data set as published: name, md5 of the file, md5 of its gunzipped bytes.

    ``content_md5`` lets a re-compressed copy (e.g. Debian's, gzipped without the file name, so
    the archive's md5 differs) be verified on what it holds.

    An archive (``.tar.gz``, ``.zip``) names in ``extract`` the folder it unpacks to, relative
    to ``root/<name>/`` (e.g. ``cifar-10-batches-py``); it is extracted safely after its md5 is
    checked. ``members`` are published md5s of extracted files (names relative to
    ``root/<name>/``), used when the folder was placed by hand without the archive.
    """

    name: str
    md5: str
    content_md5: str | None = None
    extract: str | None = None
    members: tuple[RawFile, ...] = ()


@dataclass(frozen=True)
class DatasetSpec:
    """What the pipeline needs to know about a data set."""

    name: str
    num_classes: int
    shape: tuple[int, int, int]  # C, H, W
    splits: dict[str, int]  # split -> number of images
    files: tuple[RawFile, ...]
    mirrors: tuple[str, ...]
    reader: Callable[[Path, str], tuple[torch.Tensor, torch.Tensor]]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...] = ()
    local_dirs: tuple[str, ...] = field(default_factory=tuple)  # system packages that ship it
    how_to_get: str = ""


_REGISTRY: dict[str, DatasetSpec] = {}


def register(spec: DatasetSpec) -> DatasetSpec:
    """Add a data set to the registry."""
    if spec.name in _REGISTRY:
        raise ValueError(f"data set {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def dataset_names() -> list[str]:
    """Names of all registered data sets."""
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    """Look up a data set by name."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; allowed: {', '.join(dataset_names())}")
    return _REGISTRY[name]


def load(name: str, root: str | Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Read a split from ``root/<name>/`` in its real on-disk format.

    Returns a uint8 tensor ``N x C x H x W`` and an int64 label tensor ``N``.
    """
    spec = get_dataset(name)
    if split not in spec.splits:
        raise ValueError(f"data set {name!r} has no split {split!r}; allowed: {list(spec.splits)}")
    images, labels = spec.reader(Path(root) / name, split)
    if images.dtype != torch.uint8 or images.ndim != 4 or labels.dtype != torch.int64:
        raise RuntimeError(f"reader of {name!r} returned {images.dtype} {tuple(images.shape)}")
    return images, labels


# Data set modules: each registers its specs on import.
from kdlab.data import idx  # noqa: E402,F401,I001
from kdlab.data import cifar  # noqa: E402,F401,I001
from kdlab.data import tiny_imagenet  # noqa: E402,F401,I001
from kdlab.data import stl10  # noqa: E402,F401,I001
