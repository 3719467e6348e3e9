"""Mean +- std over repeated seeds, from the DVC experiments of this repository.

A seed sweep is a DVC queue (``dvc exp run --queue -S seed=1`` ...); this module takes the
finished runs of ``dvc exp show --json`` (read by :mod:`kdlab.reports.runs`), groups them by
every parameter except ``seed`` and reports, per group and per trained model (teacher, CE
student, each distillation method), the mean, the sample standard deviation (n - 1) and the
seeds behind them.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.io import write_text
from kdlab.reports.runs import flatten, preset_of

# Labels longer than this become "config N"; to_markdown lists what each one sets.
MAX_LABEL = 100


def config_label(flat: dict[str, str], varying: list[str]) -> str:
    """``"alpha=0.8, temperature=4.0"``: the params that differ between configurations."""
    return ", ".join(f"{k}={flat.get(k, 'null')}" for k in varying) or "all runs"


def _configuration(params: dict[str, Any]) -> dict[str, Any]:
    """A run's params without ``seed``, its preset under one key however the run spelt it."""
    out = {k: v for k, v in params.items() if k not in ("seed", "preset", "profile_name")}
    return {**out, "preset": preset_of(params)}


def summarize(runs: list[dict[str, Any]], metric: str = "test_acc") -> pd.DataFrame:
    """One row per (configuration, model): n, seeds, mean and sample std of ``metric``.

    A configuration is the set of all params except ``seed``; its label lists only the params
    that differ between the configurations found (``all runs`` when there is one).
    """
    if not runs:
        raise ValueError("no finished DVC runs found; run `dvc repro` or `dvc exp run` first")
    flat = [flatten(_configuration(r["params"])) for r in runs]
    keys = sorted(set().union(*flat))
    varying = [k for k in keys if len({f.get(k) for f in flat}) > 1]
    groups: dict[str, dict[str, list[tuple[int, float]]]] = {}
    for run, f in zip(runs, flat):
        label = config_label(f, varying)
        per_model = groups.setdefault(label, {})
        for model, values in run["scores"].items():
            value = values.get(metric)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            per_model.setdefault(model, []).append((int(run["params"].get("seed", 0)), value))
    rows = []
    for label, per_model in groups.items():
        for model, pairs in per_model.items():
            # One value per seed: the same seed twice (a rerun) is the same measurement.
            by_seed = dict(sorted(pairs))
            values = list(by_seed.values())
            rows.append(
                {
                    "config": label,
                    "model": model,
                    "n": len(values),
                    "seeds": " ".join(map(str, by_seed)),
                    "mean": statistics.fmean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else math.nan,
                }
            )
    if not rows:
        raise ValueError(f"no run reports the metric {metric!r}")
    order = {"teacher": 0, "ce": 1}
    rows.sort(key=lambda r: (r["config"], order.get(r["model"], 2), r["model"]))
    df = pd.DataFrame(rows)
    df["params"] = df["config"]
    long = sorted({c for c in df["config"] if len(c) > MAX_LABEL})
    names = {c: f"config {i + 1}" for i, c in enumerate(long)}
    df["config"] = [names.get(c, c) for c in df["config"]]
    return df


def to_markdown(df: pd.DataFrame, metric: str) -> str:
    """The summary as a Markdown table (``mean +- std``; ``-`` where n = 1)."""
    lines = [
        f"| configuration | model | {metric} (mean +- std) | n | seeds |",
        "|---|---|---:|---:|---|",
    ]
    for r in df.itertuples():
        spread = "-" if math.isnan(r.std) else f"{r.std:.2f}"
        shown = "diverged" if math.isnan(r.mean) else f"{r.mean:.2f} +- {spread}"
        lines.append(f"| {r.config} | {r.model} | {shown} | {r.n} | {r.seeds} |")
    legend = df[df["config"] != df["params"]].drop_duplicates("config")
    if len(legend):
        lines.append("")
        lines += [f"- {r.config}: {r.params}" for r in legend.itertuples()]
    return "\n".join(lines) + "\n"


def write_summary(df: pd.DataFrame, metric: str, out: Path) -> None:
    """``out`` (.md) and the same table as CSV beside it, written atomically."""
    write_text(out, to_markdown(df, metric))
    write_text(out.with_suffix(".csv"), df.to_csv(index=False))
