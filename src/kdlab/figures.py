"""Hao et al. Figure 3 (student accuracy over alpha x epochs) from one long run per alpha.

With a constant learning rate (the hao preset: Adam, lr 1e-3, ``schedule: constant``), epoch k of
a 1,000-epoch run *is* the k-epoch run (tests/test_figures.py checks the equality on a tiny run),
so the 10 x 4 grid costs 10 runs: ``-S alpha=...`` per alpha with ``student.train.epochs=1000``.
The hao preset's ``student.train.test_epochs`` measures the test accuracy after epochs
100/300/500/1000 (reported, never selected on); the figure reads it from DVCLive's step plot
``metrics/distill/<method>/plots/metrics/test_acc.tsv`` of each experiment.

Alpha convention: Hao's alpha weighs the student's cross-entropy (Keras Distiller), ours weighs the
distillation term, so the paper's alpha = 1 - our alpha; the figure is labelled with the paper's.
"""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab import paths
from kdlab.experiments import (
    ALPHA_CONVENTION,
    REPORTS,
    run_record,
    scale_note,
    wall_time_note,
)
from kdlab.seeds import exp_show, flatten, listed_methods, runs_from_exp_show
from kdlab.tables import write_table

EPOCHS = (100, 300, 500, 1000)
# The figure's alphas: the paper's 0.0 ... 0.9, i.e. our 1.0 ... 0.1.
ALPHAS = tuple(round(1.0 - a / 10, 1) for a in range(10))


def alpha_epochs(
    histories: dict[float, pd.DataFrame],
    epochs=EPOCHS,
    column: str = "test_acc",
    alphas: tuple[float, ...] = ALPHAS,
) -> pd.DataFrame:
    """Rows: the paper's alpha (= 1 - ours), every one of ``alphas`` (ours) and any other run;
    columns: epochs; cells: ``column`` of the history row of that epoch (None where no run
    reached it: a missing cell, never another run's number)."""
    rows = []
    for our_alpha in sorted(set(alphas) | set(histories), reverse=True):
        h = histories.get(our_alpha)
        h = h.set_index("epoch") if h is not None else pd.DataFrame()
        row = {"paper alpha": round(1.0 - our_alpha, 4), "our alpha": our_alpha}
        for e in epochs:
            ok = e in h.index and column in h.columns and pd.notna(h.loc[e, column])
            row[str(e)] = float(h.loc[e, column]) if ok else None
        rows.append(row)
    return pd.DataFrame(rows)


def histories_from_experiments(
    repo: Path, method: str = "kd", profile: str = "hao", column: str = "test_acc"
) -> tuple[dict[float, pd.DataFrame], list[dict[str, Any]]]:
    """Per-epoch ``column`` of ``method`` in each finished experiment of preset
    ``profile``, keyed by our alpha (the last run wins when an alpha repeats): columns ``epoch``
    (from 1) and ``column``; and the runs read. Reads the committed DVCLive step plot of each
    experiment's revision (``git show REV:metrics/distill/<method>/plots/metrics/<column>.tsv``).
    """
    out: dict[float, pd.DataFrame] = {}
    used: dict[float, dict[str, Any]] = {}
    tsv = (paths.live(f"distill/{method}") / "plots" / "metrics" / f"{column}.tsv").as_posix()
    for run in runs_from_exp_show(exp_show(repo)):
        flat = {k: json.loads(v) for k, v in flatten(run["params"]).items()}
        if flat.get("profile_name") != profile or method not in listed_methods(run["params"]):
            continue
        proc = subprocess.run(
            ["git", "show", f"{run['rev']}:{tsv}"], cwd=repo, capture_output=True, text=True
        )
        if proc.returncode == 0:
            h = pd.read_csv(io.StringIO(proc.stdout), sep="\t")
            out[float(flat["alpha"])] = h.assign(epoch=h["step"] + 1)
            used[float(flat["alpha"])] = run
    return out, list(used.values())


def plot(df: pd.DataFrame, path: Path, ylabel: str) -> None:
    """Hao Figure 3's layout: accuracy over the paper's alpha, one line per epoch count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    epochs = [c for c in df.columns if c.isdigit()]
    long = df.melt(id_vars=["paper alpha"], value_vars=epochs, var_name="epochs", value_name="acc")
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=long.dropna(), x="paper alpha", y="acc", hue="epochs", marker="o", ax=ax)
    ax.set_xlabel("alpha (Hao: weight of the student's cross-entropy)")
    ax.set_ylabel(ylabel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)  # atomic


def report_hao_figure3(repo: Path, method: str = "kd", column: str = "test_acc") -> Path:
    """``results/hao_figure3.md`` (+ .csv, .png) from the hao preset's experiments, with the
    scale they ran at and their measured wall time."""
    histories, runs = histories_from_experiments(repo, method, column=column)
    if not histories:
        raise ValueError(
            f"no finished hao experiments with a per-epoch {column} history; queue them with "
            "`kdlab papers` (hao figure3 command) first"
        )
    df = alpha_epochs(histories, column=column)
    stem = repo / REPORTS / "hao_figure3"
    missing = [f"{1.0 - a:.1f}" for a in ALPHAS if a not in histories]
    notes = [
        f"{len(histories)} of {len(ALPHAS)} alphas have a run"
        + (f"; not run: paper alpha {', '.join(missing)} (— cells)." if missing else "."),
        f"{column} of the {method} student after each epoch count, from one run per alpha "
        "(constant lr: epoch k of the long run equals a k-epoch run; tests/test_figures.py).",
        scale_note(runs, [method]),
        ALPHA_CONVENTION["hao"] + " (rows are labelled with both).",
        "The paper's figure is an image without printed points: no paper or difference column.",
    ]
    teacher = run_record(repo, runs[0]["rev"], "teacher") if runs else None
    if teacher and "test_acc" in teacher:
        flat = {k: json.loads(v) for k, v in flatten(runs[0]["params"]).items()}
        notes.append(
            f"Data: {flat.get('data.name')}, {flat.get('data.subset')} images of which "
            f"{flat.get('data.val_size')} held out for validation, "
            f"{100 * float(flat.get('data.label_noise') or 0):g}% of the training labels "
            f"flipped; the teacher ({flat.get('teacher.model')}, trained on the same noisy "
            f"images) reaches {teacher['test_acc']:.2f}% test accuracy."
        )
    wall = wall_time_note(runs, [method], repo)
    if wall:
        notes.append(wall)
    write_table(df, stem, "Hao Figure 3: student accuracy (%) over alpha x epochs (ours)", notes)
    plot(df, stem.with_suffix(".png"), f"{column} (%)")
    return stem.with_suffix(".md")
