"""``download`` and ``split`` stages."""

from __future__ import annotations

import argparse
import sys
import time

from kdlab import paths
from kdlab.config import Config
from kdlab.data import get_dataset, load
from kdlab.data.fetch import fetch
from kdlab.data.split import make_split, write_manifest
from kdlab.io import write_json
from kdlab.stages.common import run


def download(cfg: Config) -> None:
    """Fetch the data set's published files into ``data.root/<name>/`` and verify them; the
    linear probe's other data sets (``probe.datasets``) likewise, from their mirrors."""
    t0 = time.time()
    d = cfg.data
    print(f"[download] {d.name} -> {d.root}/{d.name}/", flush=True)
    report = fetch(d.name, d.root, d.source_dir, d.md5)
    record = {"dataset": d.name, "files": report}
    for name in cfg.probe.datasets:
        if name != d.name:
            print(f"[download] {name} (linear probe) -> {d.root}/{name}/", flush=True)
            record.setdefault("probe_files", {})[name] = fetch(name, d.root)
    write_json(
        paths.METRICS / "download.json", {**record, "wall_time_s": round(time.time() - t0, 2)}
    )


def split(cfg: Config) -> None:
    """Seeded subset / validation split / label noise of the training set -> manifest."""
    d = cfg.data
    spec = get_dataset(d.name)
    _, labels = load(d.name, d.root, "train")
    s = make_split(labels, spec.num_classes, cfg.seed, d.val_size, d.subset, d.label_noise)
    meta = {
        "dataset": d.name,
        "seed": cfg.seed,
        "val_size": d.val_size,
        "subset": d.subset,
        "label_noise": d.label_noise,
    }
    write_manifest(paths.SPLIT, s, labels, meta)
    print(
        f"[split] {d.name}: {len(s.train)} train, {len(s.val)} validation, "
        f"{len(s.noisy)} noisy labels -> {paths.SPLIT}",
        flush=True,
    )


STAGES = {"download": download, "split": split}


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("command", choices=list(STAGES), help="the stage to run")


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.data download|split``."""
    return run("kdlab.stages.data", "data", argv, lambda cfg, a: STAGES[a.command](cfg), _arguments)


if __name__ == "__main__":
    sys.exit(main())
