"""Derived training sets: a seeded subset, a held-out validation split and label noise.

Everything is recorded in a manifest (indices, flipped labels, seed) so a run can be audited.
The test split is never touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kdlab.io import read_json, write_json

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class Split:
    """Positions into the original training set, and the (possibly noisy) training labels."""

    train: torch.Tensor  # int64 positions
    val: torch.Tensor  # int64 positions
    labels: torch.Tensor  # int64, full length of the original training set; noise applied
    noisy: torch.Tensor  # int64 positions whose label was flipped


def make_split(
    labels: torch.Tensor,
    num_classes: int,
    seed: int,
    val_size: int,
    subset: int | None = None,
    label_noise: float = 0.0,
) -> Split:
    """Seeded subset -> validation split -> label noise on the training part only.

    ``label_noise`` is the fraction of training images (after the split) whose label is replaced
    by a different class, drawn uniformly; exactly ``round(fraction * n_train)`` are flipped.
    """
    n = len(labels)
    pool_size = n if subset is None else subset
    if pool_size > n:
        raise ValueError(f"data.subset = {subset} is larger than the training set ({n} images)")
    if val_size >= pool_size:
        raise ValueError(
            f"data.val_size = {val_size} leaves no training images (pool of {pool_size})"
        )
    g = torch.Generator().manual_seed(seed)
    pool = torch.randperm(n, generator=g)[:pool_size]
    val = pool[:val_size].sort().values
    train = pool[val_size:].sort().values
    noisy_labels = labels.clone()
    k = round(label_noise * len(train))
    noisy = train[torch.randperm(len(train), generator=g)[:k]].sort().values
    if k:
        shift = torch.randint(1, num_classes, (k,), generator=g)  # never 0: never the same class
        noisy_labels[noisy] = (labels[noisy] + shift) % num_classes
    return Split(train=train, val=val, labels=noisy_labels, noisy=noisy)


def write_manifest(path: str | Path, split: Split, original: torch.Tensor, meta: dict) -> None:
    """Save the split as JSON: indices, flipped labels (original -> new) and the settings."""
    write_json(
        path,
        {
            "version": MANIFEST_VERSION,
            **meta,
            "n_train": len(split.train),
            "n_val": len(split.val),
            "n_noisy": len(split.noisy),
            "train_indices": split.train.tolist(),
            "val_indices": split.val.tolist(),
            "noisy": [
                [int(i), int(original[i]), int(split.labels[i])] for i in split.noisy.tolist()
            ],
        },
    )


def read_manifest(path: str | Path, original: torch.Tensor) -> Split:
    """Rebuild a :class:`Split` from its manifest and the original training labels; a manifest
    with a missing key or an index outside the training set is refused, naming both."""
    m = read_json(path)
    if not isinstance(m, dict) or m.get("version") != MANIFEST_VERSION:
        got = m.get("version") if isinstance(m, dict) else type(m).__name__
        raise RuntimeError(f"{path}: manifest version {got} != {MANIFEST_VERSION}")
    fix = "rerun `dvc repro -f split`"
    for key in ("noisy", "train_indices", "val_indices"):
        if not isinstance(m.get(key), list):
            raise ValueError(f"{path}: key {key!r} is missing or not a list; {fix}")
    n = len(original)
    try:
        noisy = torch.tensor([row[0] for row in m["noisy"]], dtype=torch.int64)
        new = torch.tensor([row[2] for row in m["noisy"]], dtype=torch.int64)
        train = torch.tensor(m["train_indices"], dtype=torch.int64)
        val = torch.tensor(m["val_indices"], dtype=torch.int64)
    except (TypeError, ValueError, IndexError) as err:
        raise ValueError(f"{path}: malformed index lists ({err}); {fix}") from None
    for key, idx in (("noisy", noisy), ("train_indices", train), ("val_indices", val)):
        if len(idx) and (int(idx.min()) < 0 or int(idx.max()) >= n):
            bad = int(idx[(idx < 0) | (idx >= n)][0])
            raise ValueError(
                f"{path}: {key} holds index {bad}; allowed: 0..{n - 1} (the training set); {fix}"
            )
    labels = original.clone()
    if len(noisy):
        labels[noisy] = new
    return Split(train=train, val=val, labels=labels, noisy=noisy)
