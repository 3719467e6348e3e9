"""Helpers shared by the stages: data, model files, metrics/curve writing."""

from __future__ import annotations

import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdlab import distributed, paths
from kdlab.config import Config, ModelConfig
from kdlab.data import DatasetSpec, get_dataset, load
from kdlab.data.pipeline import TensorLoader
from kdlab.data.split import Split, read_manifest
from kdlab.errors import DivergenceError
from kdlab.io import torch_load, torch_save, write_json
from kdlab.live import EpochLog
from kdlab.models import build_model, check_input
from kdlab.train import (
    Divergence,
    FitResult,
    fit,
    peak_rss_mib,
    resolve_device,
    seed_everything,
    setup_threads,
)


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

# Each stage draws its random numbers from its own stream, ``seed + offset``, so that changing
# one stage (more teacher epochs, say) never shifts another stage's initialisation.
SEED_STREAMS = {
    "train_teacher": 0,
    "train_student": 1,
    "train_cae": 2,
    "soft_labels": 3,
    "teacher_logits": 4,
    "analyse": 5,  # k-means initialisation of the NMI
    "probe": 6,  # the linear probes' initialisation and shuffling
    "distill": 10,  # every distill@<method> starts from the same student initialisation
}


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo``'s model name; the platform's processor elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_name(device: torch.device, threads: int | None = None) -> str:
    """The device that ran, as records name it: ``cpu: AMD EPYC, 2 torch thread(s)``,
    ``cuda: NVIDIA H100 80GB HBM3``; never the ``device`` param (``auto``)."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    if device.type == "cpu":
        n = torch.get_num_threads() if threads is None else threads
        return f"cpu: {cpu_name()}, {n} torch thread(s)"
    return device.type


# The device this stage's process resolved (:func:`start`); :func:`write_metrics` records it.
_RAN_ON: dict[str, str] = {}


def start(cfg: Config, stream: str) -> torch.device:
    """Seed the stage's stream, set threads and pick the device at the start of a stage."""
    if stream not in SEED_STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}; allowed: {', '.join(SEED_STREAMS)}")
    setup_threads(cfg.threads)
    seed_everything(cfg.seed + SEED_STREAMS[stream])
    device = resolve_device(cfg.device)
    _RAN_ON["device"] = device_name(device)
    return device


def start_training(cfg: Config, stream: str) -> torch.device:
    """:func:`start` for a training stage: relaunched under torchrun when
    ``distributed.nproc_per_node`` > 1 (the dvc.yaml command is unchanged); each worker joins
    the process group and returns its device (``cuda:<local_rank>`` on GPUs)."""
    distributed.maybe_relaunch(cfg.distributed)
    device = start(cfg, stream)
    ctx, device = distributed.init(cfg.distributed, device)
    if ctx.enabled:
        _RAN_ON["device"] = f"{device_name(device)}, {ctx.world_size} processes (DDP)"
        if ctx.is_main:
            print(f"[distributed] {ctx.world_size} processes (DDP), this is rank 0 on {device}")
    return device


def end_training() -> None:
    """After ``fit``: every rank but 0 leaves, so rank 0 alone evaluates and writes outputs."""
    ctx = distributed.context()
    distributed.shutdown()
    if not ctx.is_main:
        sys.exit(0)


def divergence_rule(spec: DatasetSpec | None, hint: str, objective=None) -> Divergence:
    """What ``fit`` treats as divergence for a stage: a non-finite loss always; a classifier
    (``spec`` given) also at chance level, 100 / classes %, after the objective's warm-up."""
    chance = 100.0 / spec.num_classes if spec is not None else None
    warmup = getattr(objective, "warmup_epochs", 0) if objective is not None else 0
    return Divergence(chance=chance, warmup=int(warmup), hint=hint)


def fit_logged(log: EpochLog, *args, **kwargs) -> FitResult:
    """:func:`kdlab.train.fit` logging every epoch to ``log``; a diverged run marks the stage's
    summary (``diverged``) before the error ends the stage, which then writes nothing else."""
    try:
        return fit(*args, on_epoch=log.epoch, **kwargs)
    except DivergenceError as err:
        if distributed.context().is_main:
            log.diverged(err.epoch)
        raise


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
    cfg: Config, data: Data, mc: ModelConfig, device: torch.device, normalize: bool = True
) -> tuple[TensorLoader, TensorLoader, TensorLoader]:
    """Train (augmented, shuffled), validation and test loaders for one model config."""
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
        seed=cfg.seed,
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


def write_curve_png(stage: str, history: list[dict[str, float]]) -> Path:
    """A PNG of the stage's per-epoch losses and accuracy (DVCLive holds the step plots)."""
    from kdlab.plots import curve_png

    return curve_png(history, paths.PNG / f"{stage.replace('/', '_')}.png", title=stage)


def finish_training_stage(
    stage: str, log: EpochLog, result: FitResult, record: dict[str, Any], t0: float
) -> None:
    """A training stage's outputs besides its model: the PNG of its curves, the final scores
    in its DVCLive summary and its plain record.

    The record's ``wall_time_s`` counts the training time of the interrupted processes this
    one resumed (from the checkpoint) on top of this process's own: what the stage cost.
    """
    write_curve_png(stage, result.history)
    log.finish(record)
    write_metrics(stage, record, t0 - result.elapsed_before_s)


def write_metrics(stage: str, values: dict[str, Any], t0: float) -> Path:
    """A stage's plain record (:func:`kdlab.paths.metrics`), with its wall time, peak memory
    and the device that ran it (:func:`device_name`; reports name it, never ``auto``)."""
    values = dict(values)
    if "device" in _RAN_ON:
        values.setdefault("device", _RAN_ON["device"])
    values["wall_time_s"] = round(time.time() - t0, 2)
    values["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return write_json(paths.metrics(stage), values)
