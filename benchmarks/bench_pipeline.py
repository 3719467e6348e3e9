"""One epoch of CIFAR-sized images through our TensorLoader and through a torchvision DataLoader.

Both apply the same augmentation: random crop 32 with zero padding 4, random horizontal flip,
conversion to float and per-channel normalisation. The data are synthetic uint8 images held in
memory (as ``kdlab.data.load`` returns them), so only the input pipeline is measured.

    python benchmarks/bench_pipeline.py --n 10000 --workers 2

Ours runs in the main process with ``--threads`` torch threads (default 1); torchvision's loader
uses ``--workers`` worker processes (default 2) with one thread each. Each loader runs one
warm-up epoch (torchvision's workers are persistent, so their start-up is
not counted) and then ``--epochs`` timed epochs; the best epoch of each is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from kdlab.config import AugmentConfig
from kdlab.data.pipeline import TensorLoader

MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class PILDataset(torch.utils.data.Dataset):
    """Images as ``N x H x W x C`` uint8, returned as PIL images through ``transform``."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform) -> None:
        self.images = images
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def time_epochs(run_epoch, epochs: int) -> float:
    """Warm up once, then return the fastest of ``epochs`` timed epochs (seconds)."""
    run_epoch(0)
    best = float("inf")
    for e in range(1, epochs + 1):
        t0 = time.perf_counter()
        run_epoch(e)
        best = min(best, time.perf_counter() - t0)
    return best


def bench_ours(images: torch.Tensor, labels: torch.Tensor, batch_size: int, epochs: int) -> float:
    """Seconds per epoch of :class:`TensorLoader` with crop + flip + normalisation."""
    loader = TensorLoader(
        images,
        labels,
        torch.arange(len(images)),
        batch_size,
        32,
        MEAN,
        STD,
        augment=AugmentConfig(hflip=True, rotation=0.0, crop_padding=4),
        shuffle=True,
        seed=0,
    )

    def run(epoch: int) -> None:
        loader.set_epoch(epoch)
        for batch in loader:
            batch.x.sum()  # touch the batch, as a model would

    return time_epochs(run, epochs)


def bench_torchvision(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, workers: int, epochs: int
) -> float:
    """Seconds per epoch of a torchvision DataLoader with PIL transforms doing the same."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.RandomCrop(32, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(MEAN, STD),
        ]
    )
    dataset = PILDataset(images.permute(0, 2, 3, 1).numpy(), labels.numpy(), transform)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )

    def run(epoch: int) -> None:
        for x, _ in loader:
            x.sum()

    return time_epochs(run, epochs)


def main(argv: list[str] | None = None) -> dict:
    """Run both pipelines on the same synthetic data; print and return images/s and the ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10000, help="images per epoch (default 10000)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers (default 2)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for ours (default 1: batch-sized ops gain little from more, and "
        "intra-op threads stall when the machine is busy)",
    )
    p.add_argument("--epochs", type=int, default=1, help="timed epochs after the warm-up")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.n, 3, 32, 32), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (args.n,), generator=g)

    ours = args.n / bench_ours(images, labels, args.batch_size, args.epochs)
    theirs = args.n / bench_torchvision(images, labels, args.batch_size, args.workers, args.epochs)
    result = {
        "n": args.n,
        "batch_size": args.batch_size,
        "cpus": os.cpu_count(),
        "torch_threads": args.threads,
        "workers": args.workers,
        "ours_images_per_s": round(ours, 1),
        "torchvision_images_per_s": round(theirs, 1),
        "ratio": round(ours / theirs, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(
            f"{args.n} images 3x32x32, batch {args.batch_size}, {os.cpu_count()} CPUs\n"
            f"  TensorLoader ({args.threads} thread(s)):       {ours:12,.0f} images/s\n"
            f"  torchvision DataLoader ({args.workers} workers, PIL): {theirs:12,.0f} images/s\n"
            f"  ratio: {ours / theirs:.1f}x"
        )
    return result


if __name__ == "__main__":
    main()
