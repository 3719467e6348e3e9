"""A tiny training run for tests/test_distributed.py, started as a plain script.

``python tests/ddp_worker.py OUT NPROC [crash]`` relaunches itself under torchrun when
NPROC > 1 (the path a stage takes), trains LeNet5 through ``kdlab.train.fit`` and leaves in
OUT: each rank's batch indices and final weight checksum (test instrumentation), and, from
rank 0 only, the result and the log. ``crash``: every rank fails in the third epoch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from kdlab import distributed
from kdlab.config import TrainConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.methods import get_method
from kdlab.models import build_model
from kdlab.train import fit

BATCH = 16  # the global batch: 2 ranks x 8 or 1 process x 16


def setup(seed: int = 0):
    """Learnable 4-class images: a bright bar whose row is the class."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(160) % 4
    images = (torch.rand(160, 1, 28, 28, generator=g) * 60).to(torch.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 4 + 5 * c : 7 + 5 * c, 4:24] = 250
    common = dict(input_size=28, mean=(0.2,), std=(0.3,))
    train = TensorLoader(
        images, labels, torch.arange(128), BATCH, shuffle=True, seed=seed, **common
    )
    val = TensorLoader(images, labels, torch.arange(128, 160), 32, **common)
    model = build_model("lenet5", 4, 1, input_size=28)
    return get_method("ce")(model), train, val


def train_cfg() -> TrainConfig:
    from kdlab.config import NO_AUGMENT

    return TrainConfig(
        epochs=3,
        batch_size=BATCH,
        optimizer="sgd",
        lr=0.05,
        momentum=0.9,
        weight_decay=0.0,
        schedule="constant",
        milestones=(),
        lr_decay=0.1,
        augment=NO_AUGMENT,
    )


def main(out: Path, nproc: int, crash: bool = False) -> None:
    cfg = distributed.DistributedConfig(nproc_per_node=nproc)
    distributed.maybe_relaunch(cfg)
    torch.set_num_threads(1)
    ctx, device = distributed.init(cfg, torch.device("cpu"))
    objective, train, val = setup()
    if crash:  # every rank fails in the third epoch, after the second epoch's checkpoint
        original = objective.forward_train

        def crash_in_epoch_3(batch, epoch):
            if epoch == 2:
                raise RuntimeError("simulated crash")
            return original(batch, epoch)

        objective.forward_train = crash_in_epoch_3
    lines: list[str] = []
    result = fit(
        objective, train, val, train_cfg(), "ddp", out / "ckpt.pt", log=lines.append, dist_cfg=cfg
    )
    seen = {}
    for epoch in range(train_cfg().epochs):
        train.set_epoch(epoch)
        seen[epoch] = [[int(i) for i in b.index] for b in train]
    checksum = sum(float(p.detach().double().sum()) for p in objective.parameters())
    (out / f"rank{ctx.rank}.json").write_text(
        json.dumps({"world": ctx.world_size, "batches": seen, "checksum": checksum})
    )
    if distributed.is_main():
        (out / "result.json").write_text(json.dumps({"history": result.history}))
        (out / "log.txt").write_text("\n".join(lines))
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:] == ["crash"])
