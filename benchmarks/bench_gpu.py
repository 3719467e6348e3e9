"""Epoch time of a CIFAR-100-shaped ResNet18 student: a RepDistiller-style loop vs ours.

The data are synthetic uint8 images of CIFAR-100's shape (3 x 32 x 32, 100 classes); the
model is kdlab's CIFAR-style ResNet18 (width 64, as the papers train it). Every variant
trains with SGD (lr 0.05, momentum 0.9, weight decay 5e-4) on cross-entropy:

- ``repdistiller``: the reference repositories' input path -- a torchvision ``Dataset`` of
  PIL images with ``RandomCrop(32, 4)``, ``RandomHorizontalFlip``, ``ToTensor``,
  ``Normalize``, a ``DataLoader`` with ``--workers`` worker processes (pinned memory on CUDA),
  fp32;
- ``ours-fp32`` / ``ours-bf16`` / ``ours-bf16-compile``: kdlab's ``TensorLoader`` (the split
  held on the device, augmented as tensors) and ``kdlab.accel`` (autocast, TF32 and
  ``cudnn.benchmark`` on CUDA, optional ``torch.compile``), channels_last on CUDA.

Each variant runs ``--warmup`` batches first (compilation, cuDNN autotuning, worker start-up
are not timed), then one timed epoch of ``--batches`` batches; ratios are repdistiller's
epoch time over each variant's (> 1: ours is faster).

    python benchmarks/bench_gpu.py                          # full epoch (390 batches of 128)
    python benchmarks/bench_gpu.py --batches 4 --batch-size 32 --device cpu   # seconds on CPU
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch import nn

from kdlab.accel import AccelConfig, Accelerator
from kdlab.config import AugmentConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.models import build_model

MEAN = (0.5071, 0.4865, 0.4409)  # CIFAR-100's channel statistics
STD = (0.2673, 0.2564, 0.2762)
VARIANTS = ("repdistiller", "ours-fp32", "ours-bf16", "ours-bf16-compile")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_model(device: torch.device, channels_last: bool) -> nn.Module:
    torch.manual_seed(0)
    model = build_model("resnet18", 100, 3, input_size=32).to(device)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def optimizer(model: nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)


def repdistiller_epoch(images: np.ndarray, labels: np.ndarray, args, device) -> float:
    """RepDistiller's train_vanilla input path and loop, fp32."""
    from PIL import Image
    from torchvision import transforms

    tf = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )

    class Cifar(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return len(labels)

        def __getitem__(self, i: int):
            return tf(Image.fromarray(images[i])), int(labels[i])

    loader = torch.utils.data.DataLoader(
        Cifar(),
        batch_size=args.batch_size,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
        drop_last=True,
    )
    model = make_model(device, False)
    opt = optimizer(model)
    crit = nn.CrossEntropyLoss()

    def epoch(limit: int) -> None:
        for i, (x, y) in enumerate(loader):
            if i == limit:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = crit(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    model.train()
    epoch(args.warmup)
    sync(device)
    t = time.perf_counter()
    epoch(args.batches)
    sync(device)
    return time.perf_counter() - t


def ours_epoch(images: np.ndarray, labels: np.ndarray, args, device, precision, compile_):
    """kdlab's TensorLoader + Accelerator."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    cl = device.type == "cuda"
    loader = TensorLoader(
        x,
        torch.from_numpy(labels).long(),
        torch.arange(len(labels)),
        args.batch_size,
        32,
        MEAN,
        STD,
        augment=AugmentConfig(hflip=True, rotation=0.0, crop_padding=4),
        shuffle=True,
        device=device,
        channels_last=cl,
    )
    model = make_model(device, cl)
    opt = optimizer(model)
    acc = Accelerator(AccelConfig(precision=precision, compile=compile_), device)
    crit = nn.CrossEntropyLoss()
    step = acc.prepare(lambda xb, yb: crit(model(xb), yb))

    def epoch(limit: int) -> None:
        loader.set_epoch(limit)
        for i, batch in enumerate(loader):
            if i == limit:
                break
            with acc.autocast():
                loss = step(batch.x, batch.y)
            opt.zero_grad(set_to_none=True)
            acc.backward_step(loss, opt)

    model.train()
    epoch(args.warmup)
    sync(device)
    t = time.perf_counter()
    epoch(args.batches)
    sync(device)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, default=390, help="timed batches (an epoch: 390)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=10, help="untimed batches before each epoch")
    ap.add_argument("--workers", type=int, default=4, help="repdistiller's DataLoader workers")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    n = (args.batches + args.warmup) * args.batch_size
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 100, size=n).astype(np.int64)
    times: dict[str, float] = {}
    for v in args.variants:
        if v == "repdistiller":
            times[v] = repdistiller_epoch(images, labels, args, device)
        else:
            precision = "fp32" if v == "ours-fp32" else "bf16"
            times[v] = ours_epoch(images, labels, args, device, precision, v.endswith("compile"))
        print(f"{v:>18}: {times[v]:8.2f} s for {args.batches} batches", flush=True)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"\ndevice {name}, batch {args.batch_size}, {args.batches} batches, ResNet18 (CIFAR-100)")
    base = times.get("repdistiller")
    for v, t in times.items():
        ratio = f"{base / t:5.2f}x" if base else "-"
        print(f"| {v} | {t:.2f} s | {ratio} vs repdistiller |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"device": name, "args": vars(args), "epoch_s": times}, fh, indent=1)


if __name__ == "__main__":
    main()
