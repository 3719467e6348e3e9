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
from kdlab.reports.base import ALPHA_CONVENTION, reduction_note, wall_time_note, with_devices
from kdlab.reports.records import (
    RESULTS,
    Built,
    at_scale,
    layout,
    main_scale,
    setting,
    write_report,
)
from kdlab.reports.runs import (
    exp_show,
    flatten,
    listed_methods,
    preset_of,
    run_record,
    runs_from_exp_show,
)

NAME = "hao_figure3"  # its `kdlab report` name

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
    repo: Path,
    method: str = "kd",
    preset: str = "hao",
    column: str = "test_acc",
    runs: list[dict[str, Any]] | None = None,
) -> tuple[dict[float, pd.DataFrame], list[dict[str, Any]]]:
    """Per-epoch ``column`` of ``method`` in each finished experiment of preset
    ``preset``, keyed by our alpha (the last run wins when an alpha repeats): columns ``epoch``
    (from 1) and ``column``; and the runs read. Reads the committed DVCLive step plot of each
    experiment's revision (``git show REV:metrics/distill/<method>/plots/metrics/<column>.tsv``).
    """
    out: dict[float, pd.DataFrame] = {}
    used: dict[float, dict[str, Any]] = {}
    tsv = (paths.live(f"distill/{method}") / "plots" / "metrics" / f"{column}.tsv").as_posix()
    for run in runs_from_exp_show(exp_show(repo)) if runs is None else runs:
        if preset_of(run["params"]) != preset or method not in listed_methods(run["params"]):
            continue
        flat = {k: json.loads(v) for k, v in flatten(run["params"]).items()}
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


def report_hao_figure3(
    repo: Path, method: str = "kd", column: str = "test_acc", replace: bool = False
) -> Path:
    """``results/hao_figure3.md`` (+ .csv, .png, records) from the hao preset's experiments
    merged with the committed records (:func:`kdlab.reports.records.write_report`)."""
    built = build_hao_figure3(repo, method, column)
    return write_report(NAME, built, repo / RESULTS / NAME, replace)[0]


# Which epoch the figure's numbers are: every column is its own epoch count, none final.
EPOCH = (
    "ours: test accuracy after each column's epoch count of one constant-lr run per alpha "
    "(measured there, nothing selected on the test set); the paper's figure prints no points"
)


def build_hao_figure3(
    repo: Path, method: str = "kd", column: str = "test_acc", scale: str | None = None
) -> Built:
    """The figure's table from the hao preset's experiments at one scale (``scale``, else the
    committed records' main scale), with their measured wall time; the plot is drawn when a
    cell comes from an experiment."""
    scale = scale or main_scale(repo, NAME)
    found, others = at_scale(runs_from_exp_show(exp_show(repo)), scale)
    histories, runs = histories_from_experiments(repo, method, column=column, runs=found)
    with_devices(runs, [method], repo)
    df = alpha_epochs(histories, column=column)
    if not histories:
        notes = [
            f"No finished hao experiment with a per-epoch {column} history; queue them with "
            "`kdlab papers` (hao figure3 command)."
        ]
        return Built(
            df,
            TITLE,
            notes,
            keys=2,
            after_write=_plot_if(column),
            scale=scale,
            other_scales=others,
            epoch=EPOCH,
        )
    lay = layout(list(df.columns), keys=2)
    by_alpha = {float(json.loads(flatten(r["params"])["alpha"])): r for r in runs}
    cell_runs = {
        (setting(row, lay), str(e)): [by_alpha[row["our alpha"]]]
        for row in df.to_dict("records")
        if row["our alpha"] in by_alpha
        for e in EPOCHS
    }
    missing = [f"{1.0 - a:.1f}" for a in ALPHAS if a not in histories]
    notes = [
        f"{len(histories)} of {len(ALPHAS)} alphas have a run"
        + (f"; not run: paper alpha {', '.join(missing)} (— cells)." if missing else "."),
        f"{column} of the {method} student after each epoch count, from one run per alpha "
        "(constant lr: epoch k of the long run equals a k-epoch run; tests/test_figures.py).",
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
    reduction = reduction_note(runs, [method])
    if reduction:
        notes.insert(2, reduction)
    wall = wall_time_note(runs, [method], repo)
    if wall:
        notes.append(wall)
    return Built(df, TITLE, notes, 2, cell_runs, runs, _plot_if(column), scale, others, EPOCH)


TITLE = "Hao Figure 3: student accuracy (%) over alpha x epochs (ours)"
# `kdlab report` names of this paper (kdlab.reports.registry gathers them): name -> builder
REPORTS = {NAME: lambda repo, all_commits, scale: build_hao_figure3(repo, scale=scale)}


def _plot_if(column: str):
    """Draw ``<stem>.png`` from the merged table when any cell is an experiment's (a table
    rebuilt from committed records alone keeps the committed plot)."""

    def after_write(df: pd.DataFrame, stem: Path, from_experiments: bool) -> None:
        if from_experiments:
            plot(df, stem.with_suffix(".png"), f"{column} (%)")

    return after_write
