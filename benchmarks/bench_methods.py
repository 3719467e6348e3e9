"""Training throughput of the logit methods on the same data: ``ce``, ``reffakd``, ``kd`` with a
live teacher, ``kd`` with cached teacher logits and ``dkd`` (cached logits).

Synthetic Fashion-MNIST-sized data (uint8 1x28x28, 10 classes) through the project's
TensorLoader (shuffle, horizontal flip, normalisation), a LeNet5 student, a ResNet18 width-16
teacher, batch 128, SGD over ``distiller.parameters()`` exactly as ``kdlab.train.fit`` steps.
Each method runs ``--batches`` batches (0: one full epoch) after ``--warmup`` untimed ones; the
methods are interleaved over ``--repeats`` rounds and each keeps its best round, so a slow
moment of the machine does not land on one method only.

    python benchmarks/bench_methods.py --batches 40 --repeats 3 --threads 2

Prints images/s per method and its ratio to ``ce``, and whether ReffAKD's overhead over CE is
within ``--max-overhead`` (5%); exits 1 when it is not.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import torch

from kdlab import presets
from kdlab.config import AugmentConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.methods import get_method
from kdlab.methods.base import Distiller, TeacherLogits
from kdlab.models import build_model

MEAN, STD = (0.2860,), (0.3530,)


def make_loader(n: int, batch_size: int) -> TensorLoader:
    """A shuffled, flipped loader over ``n`` synthetic 28x28 images."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.randint(0, 10, (n,), generator=g)
    return TensorLoader(
        images,
        labels,
        torch.arange(n),
        batch_size,
        28,
        MEAN,
        STD,
        augment=AugmentConfig(hflip=True, rotation=0.0, crop_padding=0),
        shuffle=True,
    )


def build(method: str, variant: str, n: int) -> Distiller:
    """A fresh, identically initialised student wrapped in ``method``."""
    torch.manual_seed(0)
    student = build_model("lenet5", 10, 1, input_size=28)
    teacher = soft = None
    if variant == "live":
        t_model = build_model("resnet18", 10, 1, width=16, input_size=28).eval()
        teacher = TeacherLogits(model=t_model, input_size=28)
    elif variant == "cached":
        teacher = TeacherLogits(cached=torch.randn(2, n, 10))
    if method == "reffakd":
        soft = torch.softmax(torch.randn(10, 10) * 3, dim=1)
    params = presets.method_params(method, **({"warmup_epochs": 1} if method == "dkd" else {}))
    return get_method(method)(
        student, params, alpha=0.6, temperature=4.0, teacher=teacher, soft_labels=soft
    )


def run(distiller: Distiller, loader: TensorLoader, batches: int, warmup: int) -> float:
    """Seconds for ``batches`` training steps (after ``warmup`` untimed steps)."""
    opt = torch.optim.SGD(distiller.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    distiller.train()
    t0 = 0.0
    for i, batch in enumerate(itertools.islice(itertools.cycle(loader), warmup + batches)):
        if i == warmup:
            t0 = time.perf_counter()
        _, losses = distiller.forward_train(batch, 0)
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=55000, help="training images (an epoch)")
    ap.add_argument("--batches", type=int, default=40, help="timed batches; 0: a full epoch")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-overhead", type=float, default=0.05)
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    loader = make_loader(args.n, args.batch_size)
    batches = args.batches or len(loader)
    runs = [
        ("ce", "ce", "none"),
        ("reffakd", "reffakd", "none"),
        ("kd (live teacher)", "kd", "live"),
        ("kd (cached logits)", "kd", "cached"),
        ("dkd (cached logits)", "dkd", "cached"),
    ]
    best = {label: float("inf") for label, _, _ in runs}
    for _ in range(args.repeats):
        for label, method, variant in runs:
            elapsed = run(build(method, variant, args.n), loader, batches, args.warmup)
            best[label] = min(best[label], elapsed)
    images = batches * args.batch_size
    rate = {label: images / t for label, t in best.items()}
    print(
        f"{batches} batches of {args.batch_size} (28x28, LeNet5 student, ResNet18 w16 teacher), "
        f"{args.threads} threads, best of {args.repeats}"
    )
    print(f"{'method':<22}{'images/s':>12}{'vs ce':>10}")
    for label in rate:
        print(f"{label:<22}{rate[label]:>12.0f}{rate[label] / rate['ce']:>10.3f}")
    overhead = rate["ce"] / rate["reffakd"] - 1
    ok = overhead <= args.max_overhead
    print(
        f"ReffAKD overhead over CE: {100 * overhead:+.1f}% "
        f"({'within' if ok else 'ABOVE'} the {100 * args.max_overhead:.0f}% budget)"
    )
    if args.json:
        print(json.dumps({"images_per_s": rate, "reffakd_overhead": overhead}))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
