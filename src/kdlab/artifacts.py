"""The files stages pass each other, as objects: the data set with its split, model files
(saved with everything needed to rebuild them) and a saved model's outputs.

Training stages and the stages that only read models (soft_labels, teacher_logits, analyse,
probe) share these; nothing here trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kdlab import paths
from kdlab.data import DatasetSpec, get_dataset, load
from kdlab.data.pipeline import TensorLoader
from kdlab.data.split import Split, read_manifest
from kdlab.io import torch_load, torch_save
from kdlab.models import build_model, check_input

if TYPE_CHECKING:
    from kdlab.config import Config, ModelConfig


@dataclass
class Data:
    """The training split (with noise applied), validation positions and the test set."""

    spec: DatasetSpec
    images: torch.Tensor
    labels: torch.Tensor
    split: Split
    test_images: torch.Tensor
    test_labels: torch.Tensor


def load_data(cfg: Config) -> Data:
    """Read the fetched data set and the split manifest written by the ``split`` stage."""
    spec = get_dataset(cfg.data.name)
    images, labels = load(cfg.data.name, cfg.data.root, "train")
    if not paths.SPLIT.exists():
        raise FileNotFoundError(f"{paths.SPLIT} is missing: run `dvc repro split` first")
    split = read_manifest(paths.SPLIT, labels)
    test_images, test_labels = load(cfg.data.name, cfg.data.root, "test")
    return Data(spec, images, split.labels, split, test_images, test_labels)


# Batch size of every pass without gradients (validation, test, cached teacher logits): it
# changes speed and memory only, never a result, so it is not a param.
EVAL_BATCH_SIZE = 1024


def make_model(mc: ModelConfig, spec: DatasetSpec, device: torch.device) -> nn.Module:
    """Build a classifier from its config and check it takes the data's input shape."""
    model = build_model(
        mc.model, spec.num_classes, spec.shape[0], input_size=mc.input_size, **mc.options
    )
    check_input(model, mc.model, (spec.shape[0], mc.input_size, mc.input_size))
    model = model.to(device)
    if mc.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def loaders(
    cfg: Config,
    data: Data,
    mc: ModelConfig,
    device: torch.device,
    normalize: bool = True,
    seed: int | None = None,
) -> tuple[TensorLoader, TensorLoader, TensorLoader]:
    """Train (augmented, shuffled), validation and test loaders for one model config; the
    training loader's shuffling and augmentation draw from ``seed`` (default ``cfg.seed``;
    the students pass :attr:`Config.students_seed`)."""
    cl = mc.channels_last
    common = dict(
        input_size=mc.input_size,
        mean=data.spec.mean,
        std=data.spec.std,
        normalize=normalize,
        device=device,
        channels_last=cl,
    )
    bs = mc.train.batch_size
    train = TensorLoader(
        data.images,
        data.labels,
        data.split.train,
        bs,
        augment=mc.train.augment,
        shuffle=True,
        seed=cfg.seed if seed is None else seed,
        **common,
    )
    val = TensorLoader(data.images, data.labels, data.split.val, EVAL_BATCH_SIZE, **common)
    test = TensorLoader(
        data.test_images,
        data.test_labels,
        torch.arange(len(data.test_labels)),
        EVAL_BATCH_SIZE,
        **common,
    )
    return train, val, test


def save_model(path: Path, model: nn.Module, mc: ModelConfig, spec: DatasetSpec, **extra) -> None:
    """Weights plus everything needed to rebuild the model.

    Nothing run-dependent (wall time, memory, metrics) goes in: an identical retrain writes
    a byte-identical file, so DVC sees the same output hash. Those live in metrics/.
    """
    torch_save(
        path,
        {
            "model": mc.model,
            "options": mc.options,
            "input_size": mc.input_size,
            "num_classes": spec.num_classes,
            "in_channels": spec.shape[0],
            "channels_last": mc.channels_last,
            "state_dict": {k: v.cpu() for k, v in model.state_dict().items()},
            **extra,
        },
    )


def load_model(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that trains it first")
    blob = torch_load(path)
    fix = "rerun the stage that writes it (`dvc repro -f <stage>`)"
    keys = ("model", "num_classes", "in_channels", "input_size", "options", "state_dict")
    missing = [k for k in keys if not isinstance(blob, dict) or k not in blob]
    if missing:
        raise ValueError(f"{path}: not a kdlab model file (no {', '.join(missing)}); {fix}")
    try:
        model = build_model(
            blob["model"],
            blob["num_classes"],
            blob["in_channels"],
            input_size=blob["input_size"],
            **blob["options"],
        )
        model.load_state_dict(blob["state_dict"])
    except (TypeError, RuntimeError, KeyError) as err:
        first = str(err).strip().splitlines()[0]
        raise ValueError(
            f"{path}: weights do not fit model {blob['model']!r} ({first}); {fix}"
        ) from None
    return model.to(device).eval(), blob


def saved_model_outputs(
    path: Path,
    images: torch.Tensor,
    labels: torch.Tensor,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and pooled penultimate features of the saved model ``path`` on ``images``
    (un-augmented, resized to its input size, normalised with ``mean``/``std``), validated:
    one row per image, the model's classes, every value finite."""
    model, blob = load_model(path, device)
    cl = bool(blob.get("channels_last"))  # as the stage that trained it evaluated it
    if cl:
        model = model.to(memory_format=torch.channels_last)
    loader = TensorLoader(
        images,
        labels,
        torch.arange(len(labels)),
        EVAL_BATCH_SIZE,
        blob["input_size"],
        mean,
        std,
        device=device,
        channels_last=cl,
    )
    logits, feats = [], []
    with torch.no_grad():
        for b in loader:
            out = model.forward_features(b.x)
            logits.append(out["logits"].float().cpu())
            feats.append(out["pooled"].float().cpu())
    z, h = torch.cat(logits), torch.cat(feats)
    n, c = len(labels), blob["num_classes"]
    finite = bool(z.isfinite().all() and h.isfinite().all())
    if z.shape != (n, c) or h.shape[0] != n or not finite:
        raise ValueError(
            f"{path}: outputs of shape {tuple(z.shape)} / features {tuple(h.shape)} (expected "
            f"({n}, {c}) and {n} rows), all finite: {finite}; retrain it"
        )
    return z, h
