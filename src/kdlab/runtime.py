"""What every stage that computes does first and last: seed its random stream, set the CPU
threads, pick the device; write its plain record with wall time and peak memory.

Kept apart from the training loop (kdlab.train) so that the stages that never train
(soft_labels, teacher_logits, analyse, probe) neither import it nor rerun when it changes.
"""

from __future__ import annotations

import platform
import random
import resource
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from kdlab import paths
from kdlab.io import write_json

if TYPE_CHECKING:
    from kdlab.config import Config

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
# The students' streams start from ``student_seed`` (null: ``seed``): students can vary over
# seeds under one teacher (the CRD benchmark's fixed teacher) while the rest keeps ``seed``.
STUDENT_STREAMS = ("train_student", "distill")


def stream_seed(cfg: Config, stream: str) -> int:
    """The seed of stream ``stream``: its base seed (:attr:`Config.students_seed` for the
    students' streams, else ``seed``) plus its offset."""
    if stream not in SEED_STREAMS:
        raise ValueError(f"unknown seed stream {stream!r}; allowed: {', '.join(SEED_STREAMS)}")
    base = cfg.students_seed if stream in STUDENT_STREAMS else cfg.seed
    return base + SEED_STREAMS[stream]


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; an unavailable CUDA device is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"params.yaml: device = {name!r} but CUDA is not available here")
    return dev


def setup_threads(threads: int) -> None:
    """Use ``threads`` CPU threads (0: torch's default)."""
    if threads > 0:
        torch.set_num_threads(threads)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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


def ran_on(text: str) -> None:
    """Record ``text`` as the device this stage ran on (DDP: with its process count)."""
    _RAN_ON["device"] = text


def start(cfg: Config, stream: str) -> torch.device:
    """Seed the stage's stream, set threads and pick the device at the start of a stage."""
    seed = stream_seed(cfg, stream)
    setup_threads(cfg.threads)
    seed_everything(seed)
    device = resolve_device(cfg.device)
    ran_on(device_name(device))
    return device


def write_metrics(stage: str, values: dict[str, Any], t0: float) -> Path:
    """A stage's plain record (:func:`kdlab.paths.metrics`), with its wall time, peak memory
    and the device that ran it (:func:`device_name`; reports name it, never ``auto``)."""
    values = dict(values)
    if "device" in _RAN_ON:
        values.setdefault("device", _RAN_ON["device"])
    values["wall_time_s"] = round(time.time() - t0, 2)
    values["peak_rss_mib"] = round(peak_rss_mib(), 1)
    return write_json(paths.metrics(stage), values)
