"""``probe`` stage: linear-probe transfer of every student's frozen features (SRRL Table 4).

For the CE student and each distilled student of ``methods``, and each data set of
``probe.datasets``: features of its training and test images (normalised with that data set's
own mean/std, resized to the student's input size), then :func:`kdlab.probe.linear_probe`.
"""

from __future__ import annotations

import sys
import time

from kdlab import paths
from kdlab.artifacts import saved_model_outputs
from kdlab.config import Config
from kdlab.data import get_dataset, load
from kdlab.live import write_summary
from kdlab.probe import linear_probe
from kdlab.runtime import SEED_STREAMS, start, write_metrics
from kdlab.stages.common import run


def probe(cfg: Config) -> None:
    """Write ``metrics/probe.json`` (plain record) and the ``dvc exp show`` summary
    ``metrics/probe/metrics.json``, both ``{model: {probe_<data set>: top-1 %}}``."""
    t0 = time.time()
    device = start(cfg, "probe")
    models = {"ce": paths.STUDENT, **{m: paths.distilled(m) for m in cfg.methods}}
    rows: dict[str, dict[str, float]] = {name: {} for name in models}
    for ds in cfg.probe.datasets:
        spec = get_dataset(ds)
        train_x, train_y = load(ds, cfg.data.root, "train")
        test_x, test_y = load(ds, cfg.data.root, "test")
        for name, path in models.items():
            _, f_train = saved_model_outputs(path, train_x, train_y, spec.mean, spec.std, device)
            _, f_test = saved_model_outputs(path, test_x, test_y, spec.mean, spec.std, device)
            acc = linear_probe(
                f_train,
                train_y,
                f_test,
                test_y,
                spec.num_classes,
                cfg.probe,
                cfg.seed + SEED_STREAMS["probe"],
            )
            rows[name][f"probe_{ds}"] = round(acc, 2)
            print(f"[probe] {name} on {ds}: linear-probe top-1 {acc:.2f}%", flush=True)
    write_summary("probe", rows)
    write_metrics("probe", {"models": rows, "datasets": list(cfg.probe.datasets)}, t0)


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.probe``."""
    return run("kdlab.stages.probe", "probe", argv, lambda cfg, args: probe(cfg))


if __name__ == "__main__":
    sys.exit(main())
