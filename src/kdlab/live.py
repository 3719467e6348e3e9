"""Per-epoch metrics and step plots of a training stage, logged with DVCLive.

Each training stage owns a DVCLive folder, ``metrics/<stage>/`` (``metrics/distill/kd/`` for
distill@kd), in DVCLive's standard layout:

- ``metrics.json``: the summary that ``dvc exp show`` compares. It is rewritten after every
  epoch, so a running (or queued) experiment shows its progress; it holds only what runs are
  compared on (the latest validation score and, once the stage ends, the test score and the
  best validation score). Counts, timings and memory stay in the stage's plain record
  ``metrics/<stage>.json``.
- ``plots/metrics/<name>.tsv``: one step plot per logged value (every loss term, the training
  and validation scores, the learning rate); ``dvc plots show/diff`` and the VS Code extension
  read them. ``step`` is the epoch index from 0.

Epoch wall times are not logged: the same params on the same machine give byte-identical files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kdlab import paths
from kdlab.io import write_json

# Per-epoch values kept in the summary (``metrics.json``) next to ``step``: the latest
# validation score. Every other per-epoch value is a plot only.
LIVE_SUMMARY = ("val_acc", "val_mse")
# Final values of a stage added to the summary: what experiments are compared on.
FINAL_SUMMARY = ("test_acc", "test_top5", "best_val_acc", "test_mse", "best_val_mse")
# Per-epoch values that measure the machine, not the run.
NOT_LOGGED = ("epoch", "epoch_time_s")


class EpochLog:
    """A DVCLive run for one stage, created on the first logged epoch (rank 0 only logs).

    The summary nests its scores under the model's name (``teacher``, ``ce``, ``cae`` or the
    method): ``{"step": 11, "kd": {"val_acc": 91.3, "test_acc": 91.2, "best_val_acc": 91.5}}``,
    so ``dvc exp show`` names its columns ``kd.test_acc`` rather than by file path, and readers
    find the model in the file (:func:`kdlab.seeds.model_scores`).
    """

    def __init__(self, stage: str, model: str) -> None:
        self.dir: Path = paths.live(stage)
        self.model = model
        self._live = None
        self._scores: dict[str, Any] = {}

    def _open(self):
        if self._live is None:
            from dvclive import Live  # imported here: only training stages need it
            from scmrepo.exceptions import SCMError

            # No dvc.yaml edits, no commits, no HTML report: dvc.yaml declares the outputs
            # and DVC itself records the experiment.
            try:
                self._live = Live(
                    dir=self.dir.as_posix(), save_dvc_exp=False, dvcyaml=None, report=None
                )
            except SCMError as err:  # DVCLive 3.49 reads HEAD even when nothing is committed
                raise RuntimeError(
                    f"DVCLive cannot log to {self.dir} ({err}): the git repository needs at "
                    "least one commit; run `git add -A && git commit -m init` first"
                ) from None
        return self._live

    def _summarise(self) -> None:
        # Keep DVCLive's ``step`` (the last finished epoch): end() would otherwise count one on.
        step = {"step": self._live.summary["step"]} if "step" in self._live.summary else {}
        self._live.summary = {**step, self.model: dict(self._scores)}

    def epoch(self, row: dict[str, float]) -> None:
        """Log one epoch's row of ``fit``'s history (a step plot per value) and rewrite the
        summary with the latest validation score."""
        live = self._open()
        for key, value in row.items():
            if key not in NOT_LOGGED:
                live.log_metric(key, float(value))
        self._scores.update({k: row[k] for k in LIVE_SUMMARY if k in row})
        self._summarise()
        live.next_step()  # writes the summary (with DVCLive's ``step``)

    def finish(self, record: dict[str, Any]) -> Path:
        """Add the stage's final scores (:data:`FINAL_SUMMARY` of its record) to the summary."""
        live = self._open()
        self._scores.update({k: record[k] for k in FINAL_SUMMARY if k in record})
        self._summarise()
        live.end()
        return Path(live.metrics_file)


def write_summary(stage: str, scores: dict[str, dict[str, Any]]) -> Path:
    """The ``dvc exp show`` summary of a stage that does not train (DVCLive's summary place,
    :func:`kdlab.paths.summary`): values nested under a name, the stage's
    (``{"soft_labels": {"gamma": ...}}``) or each model's (``{"kd": {"kl_teacher": ...}}``),
    as the training stages nest theirs under the model's."""
    return write_json(paths.summary(stage), scores)
