"""``profile`` stage: resource counts of the models (ReffAKD Table 6; batch 1, no training)."""

from __future__ import annotations

import sys
import time
from typing import Any

from kdlab import paths
from kdlab.config import Config, ProfiledModel
from kdlab.data import get_dataset
from kdlab.io import write_json
from kdlab.live import write_summary
from kdlab.models import build_model
from kdlab.profiling import Profile, parse_shape, profile_model, ratios
from kdlab.stages.common import run


def _build(entry: ProfiledModel):
    shape = parse_shape(entry.input)
    kwargs = {**entry.options, "input_size": shape[1]}
    model = build_model(entry.model, entry.num_classes, shape[0], **kwargs)
    return model, shape


def profile(cfg: Config) -> None:
    """Profile this run's teacher, CAE and student (fvcore) and every Table 6 comparison of
    ``profile.table6`` in each of ``profile.count_modes`` (batch 1; no training needed)."""
    t0 = time.time()
    spec = get_dataset(cfg.data.name)
    c, k = spec.shape[0], spec.num_classes
    ours: dict[str, dict[str, Any]] = {}
    for role in ("teacher", "cae", "student"):
        mc = getattr(cfg, role)
        model = build_model(
            mc.model, 0 if role == "cae" else k, c, input_size=mc.input_size, **mc.options
        )
        ours[role] = profile_model(model, mc.model, (c, mc.input_size, mc.input_size)).as_dict()
    out: dict[str, Any] = {
        "ours": ours,
        "ours_ratios": ratios(Profile(**ours["teacher"]), Profile(**ours["cae"])),
        "table6": {},
    }
    for row, pair in cfg.profile.table6.items():
        out["table6"][row] = {}
        for mode in cfg.profile.count_modes:
            teacher, t_shape = _build(pair["teacher"])
            cae, c_shape = _build(pair["cae"])
            tp = profile_model(teacher, pair["teacher"].model, t_shape, count_mode=mode)
            cp = profile_model(cae, pair["cae"].model, c_shape, count_mode=mode)
            out["table6"][row][mode] = {
                "teacher": tp.as_dict(),
                "cae": cp.as_dict(),
                "ratios": ratios(tp, cp),
            }
            r = out["table6"][row][mode]["ratios"]
            print(
                f"[profile] {row:28s} {mode:9s} FLOPs {r['flops']:7.1f}x MACs "
                f"{r['macs']:7.1f}x params {r['params']:6.1f}x memory {r['memory']:6.1f}x",
                flush=True,
            )
    out["wall_time_s"] = round(time.time() - t0, 2)
    write_json(paths.metrics("profile"), out)
    # Compared across experiments: this run's teacher-to-CAE reductions (its Table 6 row).
    # MACs left out: fvcore's FLOPs are 2 x MACs, so the two ratios are equal.
    summary = {f"{k}_ratio": round(v, 2) for k, v in out["ours_ratios"].items() if k != "macs"}
    write_summary("profile", {"profile": summary})
    for key, e in ours.items():
        print(
            f"[profile] this run's {key:8s} {e['model']:9s} {e['input']:8s} params "
            f"{e['params']:>11,} MACs {e['macs']:>14,} memory {e['param_mib']:.3f} MiB",
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.profile``."""
    return run("kdlab.stages.profile", "profile", argv, lambda cfg, args: profile(cfg))


if __name__ == "__main__":
    sys.exit(main())
