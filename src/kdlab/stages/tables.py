"""``profile`` and ``tables`` stages."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab import paths
from kdlab.config import Config
from kdlab.data import get_dataset
from kdlab.io import read_json, write_json
from kdlab.models import build_model
from kdlab.profiling import parse_shape, profile_model, ratios
from kdlab.tables import diff, published, write_table


def _read(path: Path) -> dict[str, Any] | None:
    return read_json(path) if path.exists() else None


def profile(cfg: Config) -> None:
    """Profile the pipeline's teacher, CAE and student and the paper's models (batch 1)."""
    t0 = time.time()
    spec = get_dataset(cfg.data.name)
    c, k = spec.shape[0], spec.num_classes
    entries: dict[str, dict[str, Any]] = {}
    for role in ("teacher", "cae", "student"):
        mc = getattr(cfg, role)
        kwargs = dict(mc.options)
        if role != "cae":
            kwargs["input_size"] = mc.input_size
        model = build_model(mc.model, 0 if role == "cae" else k, c, **kwargs)
        entries[f"ours_{role}"] = profile_model(
            model, mc.model, (c, mc.input_size, mc.input_size)
        ).as_dict()
    for name, m in (cfg.profile.get("paper_models") or {}).items():
        shape = parse_shape(m["input"])
        kwargs = dict(m.get("options") or {})
        if m["model"] != "cae":
            kwargs["input_size"] = shape[1]
        model = build_model(m["model"], m.get("num_classes", 0), shape[0], **kwargs)
        entries[name] = profile_model(model, m["model"], shape).as_dict()
    out = {"entries": entries, "counter": "fvcore", "flops_are": "2 x MACs"}
    from kdlab.profiling import Profile

    def pr(key: str) -> Profile:
        return Profile(**entries[key])

    out["ratios"] = {"ours": ratios(pr("ours_teacher"), pr("ours_cae"))}
    if "paper_teacher" in entries and "paper_cae" in entries:
        out["ratios"]["paper_models"] = ratios(pr("paper_teacher"), pr("paper_cae"))
    out["wall_time_s"] = round(time.time() - t0, 2)
    write_json(paths.metrics("profile"), out)
    for key, e in entries.items():
        print(
            f"[profile] {key:15s} {e['model']:9s} {e['input']:8s} params {e['params']:>11,} "
            f"MACs {e['macs']:>14,} memory {e['param_mib']:.3f} MiB",
            flush=True,
        )


def _acc(stage: str) -> float | None:
    m = _read(paths.metrics(stage))
    return None if m is None else m.get("test_acc")


def tables(cfg: Config) -> None:
    """Write ReffAKD Table 4, Table 6 (FMNIST row), the measured cost and the comparison."""
    pub = published("reffakd")
    profile_name = cfg.raw.get("profile_name", "default")
    note_profile = (
        f"Ours: params profile `{profile_name}` ({cfg.teacher.model} teacher "
        f"{cfg.teacher.options or ''} for {cfg.teacher.train.epochs} epochs, {cfg.student.model} "
        f"student for {cfg.student.train.epochs} epochs, alpha {cfg.alpha}, T {cfg.temperature},"
        f" seed {cfg.seed}); final-epoch top-1 test accuracy. The paper reports its best "
        "accuracy after 200 epochs of grid search over T and alpha."
    )
    # Table 4
    t4 = pub["table4_fashion_mnist"]
    rows = []
    for key, stage in (
        ("student_ce", "student"),
        ("teacher", "teacher"),
        ("kd", "distill/kd"),
        ("reffakd", "distill/reffakd"),
    ):
        ours = _acc(stage)
        rows.append(
            {
                "model": t4[key]["label"],
                "paper": t4[key]["value"],
                "ours": ours,
                "difference": diff(ours, t4[key]["value"]),
                "profile": profile_name,
            }
        )
    write_table(
        pd.DataFrame(rows),
        paths.TABLES / "reffakd_table4",
        "ReffAKD Table 4: top-1 accuracy (%) on Fashion-MNIST",
        [note_profile],
    )

    # Table 6 (FMNIST row)
    prof = _read(paths.metrics("profile"))
    t6 = pub["table6"]["fashion_mnist"]
    rows = [
        {
            "row": "paper (published)",
            **{k: float(v) for k, v in t6.items()},
            "counter": "torchscan (paper)",
        }
    ]
    if prof:
        for key, label in (
            ("paper_models", "paper's architectures (ResNet18 vs CAE, 1x32x32)"),
            ("ours", "this run's teacher vs CAE"),
        ):
            if key in prof["ratios"]:
                rows.append({"row": label, **prof["ratios"][key], "counter": "fvcore"})
    write_table(
        pd.DataFrame(rows),
        paths.TABLES / "reffakd_table6_fmnist",
        "ReffAKD Table 6, Fashion-MNIST row: teacher / CAE resource ratio (x)",
        [
            "fvcore counts one multiply-add per MAC and ConvTranspose correctly; the paper's "
            "torchscan summary counted ConvTranspose 4x too high and its FMNIST row used a CAE "
            "with 3 output channels and a 100-class ResNet18 (see docs/DESIGN-NOTES.md).",
            "fvcore mode: FLOPs = 2 x MACs, so the two ratios are equal; memory = parameters "
            "+ buffers.",
        ],
        digits=1,
    )

    # Measured cost: producing the soft labels vs training the teacher (same data, machine).
    rows = []
    for label, stages in (
        ("teacher (train_teacher)", ["teacher"]),
        ("soft labels (train_cae + soft_labels)", ["cae", "soft_labels"]),
    ):
        ms = [_read(paths.metrics(s)) for s in stages]
        if all(ms):
            rows.append(
                {
                    "work": label,
                    "wall_time_s": sum(m["wall_time_s"] for m in ms),
                    "peak_rss_mib": max(m["peak_rss_mib"] for m in ms),
                }
            )
    if len(rows) == 2:
        rows.append(
            {
                "work": "ratio teacher / soft labels",
                "wall_time_s": rows[0]["wall_time_s"] / rows[1]["wall_time_s"],
                "peak_rss_mib": rows[0]["peak_rss_mib"] / rows[1]["peak_rss_mib"],
            }
        )
    write_table(
        pd.DataFrame(rows),
        paths.TABLES / "cost",
        "Measured cost on this machine: soft labels vs teacher",
        [
            "From the stages' own metrics (wall time of the whole stage, peak resident "
            "memory of its process)."
        ],
    )

    # Comparison (layout of Table 8)
    t8 = pub["table8"]
    rows = []
    for method in ("ce", *cfg.methods):
        stage = "student" if method == "ce" else f"distill/{method}"
        rows.append(
            {
                "method": method,
                f"ours ({cfg.data.name})": _acc(stage),
                "paper FMNIST (Table 4)": {
                    "ce": t4["student_ce"]["value"],
                    "kd": t4["kd"]["value"],
                    "reffakd": t4["reffakd"]["value"],
                }.get(method),
                "paper CIFAR-100 (Table 8)": t8["cifar100"].get(method),
                "paper Tiny ImageNet (Table 8)": t8["tiny_imagenet"].get(method),
            }
        )
    write_table(
        pd.DataFrame(rows),
        paths.TABLES / "comparison",
        "Method comparison (layout of ReffAKD Table 8), top-1 accuracy (%)",
        [note_profile, "Paper Table 8 uses ResNet50 -> ResNet18, T=4, alpha=0.9."],
    )
    print(f"[tables] wrote {', '.join(sorted(p.name for p in paths.TABLES.glob('*.md')))}")
