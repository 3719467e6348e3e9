"""Committed records of long runs (results/<campaign>/*.json) and the table they make.

A long campaign (ReffAKD Table 4 at the paper's 200 epochs on a CPU, say) outlives a working
session, so each finished run's record is committed as it lands: one small JSON that names its
method, data set, seed, epochs, device and scale, with its scores and its validation curve.
Whoever continues finds what is done from git alone. This module validates such records and
summarises them (mean +- std over seeds, final and best-validation epoch, differences paired
by seed); it reads no experiment and trains nothing.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Every record carries these keys; a file without one of them is refused, not guessed.
RECORD_KEYS = (
    "arm",  # the table row: ce | a method name
    "method",
    "dataset",
    "seed",
    "epochs",
    "device",
    "scale",  # paper (the paper's own setting: comparable) | a named reduced scale
    "preset",
    "test_acc",  # final epoch (what we report first)
    "test_acc_at_best_val",  # the epoch of best validation accuracy (never selected on test)
    "best_val_epoch",
    "wall_time_s",
    "val_curve",  # validation accuracy after each epoch
)


class RecordError(ValueError):
    """A committed record that is not one (missing keys, wrong types, non-finite scores)."""


def record_path(folder: Path, arm: str, seed: int) -> Path:
    """Where the record of ``arm`` at ``seed`` lives in a campaign folder."""
    return Path(folder) / f"{arm}_seed{seed}.json"


def check_record(rec: Any, source: str) -> dict[str, Any]:
    """``rec`` if it is a complete record with finite scores; else a one-line RecordError."""
    if not isinstance(rec, dict):
        raise RecordError(f"{source}: not a JSON object")
    missing = [k for k in RECORD_KEYS if k not in rec]
    if missing:
        raise RecordError(f"{source}: missing {', '.join(missing)}; a record holds {RECORD_KEYS}")
    for key in ("test_acc", "test_acc_at_best_val", "wall_time_s"):
        v = rec[key]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise RecordError(f"{source}: {key} = {v!r}; allowed: a finite number")
    curve = rec["val_curve"]
    if not isinstance(curve, list) or len(curve) != rec["epochs"]:
        raise RecordError(f"{source}: val_curve must list one accuracy per epoch ({rec['epochs']})")
    return rec


def read_records(folder: Path) -> list[dict[str, Any]]:
    """Every record of a campaign folder, validated, sorted by arm and seed."""
    out = []
    for path in sorted(Path(folder).glob("*_seed*.json")):
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
        out.append(check_record(rec, str(path)))
    return sorted(out, key=lambda r: (r["arm"], r["seed"]))


@dataclass
class ArmSummary:
    """One row of the table: an arm's scores over its seeds."""

    arm: str
    seeds: list[int]
    final: list[float]
    best: list[float]
    wall_time_s: list[float]

    @staticmethod
    def of(arm: str, recs: list[dict[str, Any]]) -> ArmSummary:
        recs = sorted(recs, key=lambda r: r["seed"])
        return ArmSummary(
            arm,
            [r["seed"] for r in recs],
            [float(r["test_acc"]) for r in recs],
            [float(r["test_acc_at_best_val"]) for r in recs],
            [float(r["wall_time_s"]) for r in recs],
        )


def mean_std(values: list[float]) -> str:
    """``mean +- std`` (sample std, n - 1) with two decimals; one value prints alone."""
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f} (1 seed)"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def paired_differences(
    records: list[dict[str, Any]], arm: str, baseline: str, key: str = "test_acc"
) -> dict[int, float]:
    """``arm - baseline`` of ``key`` for every seed both arms have."""
    by = {(r["arm"], r["seed"]): float(r[key]) for r in records}
    seeds = sorted({s for a, s in by if a == arm} & {s for a, s in by if a == baseline})
    return {s: by[(arm, s)] - by[(baseline, s)] for s in seeds}


def summary_table(
    records: list[dict[str, Any]],
    arms: list[tuple[str, str]],
    paper: dict[str, float],
    baseline: str = "ce",
    extra: tuple[tuple[str, str], ...] = (),
) -> str:
    """Markdown: one row per arm (label, paper's number, ours final and best-val epoch as
    mean +- std, seeds, mean wall time), then the seed-paired differences of every arm to
    ``baseline`` and of each ``extra`` pair (arm, other)."""
    rows = [
        "| arm | paper | ours: final epoch | ours: best-val epoch | seeds | wall time / run |",
        "|---|---:|---:|---:|---|---:|",
    ]
    diffs = [
        "| difference (paired by seed) | seeds | final epoch: each seed | mean ± std |",
        "|---|---|---|---:|",
    ]
    names = dict(arms)
    for arm, label in arms:
        s = ArmSummary.of(arm, [r for r in records if r["arm"] == arm])
        ref = paper.get(arm)
        wall = f"{statistics.mean(s.wall_time_s) / 60:.0f} min" if s.wall_time_s else "—"
        rows.append(
            f"| {label} | {ref if ref is not None else '—'} | {mean_std(s.final)} | "
            f"{mean_std(s.best)} | {', '.join(map(str, s.seeds)) or 'not run yet'} | {wall} |"
        )
    pairs = [(arm, baseline) for arm, _ in arms if arm != baseline] + list(extra)
    for arm, other in pairs:
        d = paired_differences(records, arm, other)
        each = ", ".join(f"{v:+.2f}" for v in d.values()) or "—"
        diffs.append(
            f"| {names.get(arm, arm)} − {names.get(other, other)} | "
            f"{', '.join(map(str, d)) or '—'} | {each} | "
            f"{mean_std(list(d.values())) if d else '—'} |"
        )
    return "\n".join(rows) + "\n\n" + "\n".join(diffs) + "\n"


def curves_png(records: list[dict[str, Any]], arms: list[tuple[str, str]], path: Path) -> Path:
    """Validation accuracy per epoch of every run, one colour per arm (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (arm, label) in enumerate(arms):
        for j, r in enumerate(r for r in records if r["arm"] == arm):
            curve = r["val_curve"]
            ax.plot(
                range(1, len(curve) + 1),
                curve,
                color=colours[i % len(colours)],
                lw=0.8,
                alpha=0.8,
                label=label if j == 0 else None,
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_ylim(85, 95)
    ax.grid(alpha=0.3)
    if records:
        ax.legend(loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    tmp.replace(path)
    return path
