"""Per-epoch metrics and step plots of a training stage, in DVCLive's standard layout.

Each training stage owns a folder, ``metrics/<stage>/`` (``metrics/distill/kd/`` for
distill@kd), laid out as DVCLive lays it out, but written by kdlab, every file atomically
(:mod:`kdlab.io`: a kill or a full disk never leaves a 0-byte or half-written file):

- ``metrics.json``: the summary that ``dvc exp show`` compares. It is rewritten after every
  epoch, so a running (or queued) experiment shows its progress; it holds only what runs are
  compared on, nested under the model's name: the epoch reached, the latest validation score
  and, once the stage ends, the test score and the best validation score. Every name is unique
  across the pipeline's summaries (no ``step`` at the top, no score repeated by another stage),
  so ``dvc exp show`` never prefixes a column with its file. Counts, timings and memory stay in
  the stage's plain record ``metrics/<stage>.json``.
- ``plots/metrics/<name>.tsv``: one step plot per logged value (every loss term, the training
  and validation scores, the learning rate); ``dvc plots show/diff`` and the VS Code extension
  read them. ``step`` is the epoch index from 0.

A stage that diverges (:class:`kdlab.errors.DivergenceError`) leaves its summary marked
``{"kd": {"diverged": <epoch>, ...}}``: readers (:mod:`kdlab.seeds`) mark such a cell instead of
printing its numbers. Epoch wall times are not logged: the same params on the same machine give
byte-identical files.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from kdlab import paths
from kdlab.io import write_json, write_text

# Per-epoch values kept in the summary (``metrics.json``) next to the epoch reached: the latest
# validation score. Every other per-epoch value is a plot only.
LIVE_SUMMARY = ("val_acc", "val_mse")
# Final values of a stage added to the summary: what experiments are compared on.
FINAL_SUMMARY = ("test_acc", "test_top5", "best_val_acc", "test_mse", "best_val_mse")
# Per-epoch values that measure the machine, not the run.
NOT_LOGGED = ("epoch", "epoch_time_s")
# The mark of a diverged stage in its summary (the epoch it diverged at).
DIVERGED = "diverged"


class EpochLog:
    """The step plots and summary of one stage (rank 0 only logs).

    The summary nests its scores under the model's name (``teacher``, ``ce``, ``cae`` or the
    method): ``{"kd": {"epoch": 12, "val_acc": 91.3, "test_acc": 91.2, "best_val_acc": 91.5}}``,
    so ``dvc exp show`` names its columns ``kd.test_acc`` rather than by file path, and readers
    find the model in the file (:func:`kdlab.seeds.model_scores`).
    """

    def __init__(self, stage: str, model: str) -> None:
        self.dir: Path = paths.live(stage)
        self.model = model
        self._plots: dict[str, dict[int, float]] = {}
        self._scores: dict[str, Any] = {}
        self._fresh = True

    @property
    def plots_dir(self) -> Path:
        return self.dir / "plots" / "metrics"

    @property
    def metrics_file(self) -> Path:
        return self.dir / "metrics.json"

    def _start(self) -> None:
        """A new run replaces the previous run's files (as DVCLive does without ``resume``)."""
        if self._fresh:
            shutil.rmtree(self.plots_dir, ignore_errors=True)
            self.metrics_file.unlink(missing_ok=True)
            self._fresh = False

    def _summarise(self) -> None:
        write_json(self.metrics_file, {self.model: dict(self._scores)})

    def epoch(self, row: dict[str, float]) -> None:
        """Log one epoch's row of ``fit``'s history (a step plot per value) and rewrite the
        summary with the epoch reached and the latest validation score."""
        self._start()
        step = int(row["epoch"]) - 1
        for key, value in row.items():
            if key in NOT_LOGGED:
                continue
            points = self._plots.setdefault(key, {})
            points[step] = float(value)
            body = "".join(f"{s}\t{v}\n" for s, v in sorted(points.items()))
            write_text(self.plots_dir / f"{key}.tsv", f"step\t{key}\n{body}")
        self._scores["epoch"] = step + 1
        self._scores.update({k: row[k] for k in LIVE_SUMMARY if k in row})
        self._summarise()

    def finish(self, record: dict[str, Any]) -> Path:
        """Add the stage's final scores (:data:`FINAL_SUMMARY` of its record) to the summary."""
        self._start()
        self._scores.update({k: record[k] for k in FINAL_SUMMARY if k in record})
        self._summarise()
        return self.metrics_file

    def diverged(self, epoch: int) -> Path:
        """Mark the summary: the stage diverged at ``epoch``; its scores are no result."""
        self._start()
        self._scores[DIVERGED] = epoch
        self._summarise()
        return self.metrics_file


def write_summary(stage: str, scores: dict[str, dict[str, Any]]) -> Path:
    """The ``dvc exp show`` summary of a stage that does not train (DVCLive's summary place,
    :func:`kdlab.paths.summary`): values nested under a name, the stage's
    (``{"soft_labels": {"gamma": ...}}``) or each model's (``{"kd": {"kl_teacher": ...}}``),
    as the training stages nest theirs under the model's."""
    return write_json(paths.summary(stage), scores)
