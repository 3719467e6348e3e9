"""Where every stage reads and writes (relative to the repository root; dvc.yaml matches)."""

from __future__ import annotations

from pathlib import Path

SPLIT = Path("data/split.json")
MODELS = Path("data/models")
STUDENT = MODELS / "student.pt"
CAE = MODELS / "cae.pt"
# Knowledge a distill stage learns from, one folder per source: `distill@<method>` depends on
# exactly the folder its method reads (``methods: {kd: teacher, reffakd: soft_labels}``).
KNOWLEDGE = {"teacher": Path("data/teacher"), "soft_labels": Path("data/soft_labels")}
TEACHER = KNOWLEDGE["teacher"] / "model.pt"
TEACHER_LOGITS = KNOWLEDGE["teacher"] / "logits.pt"
SOFT_LABELS = KNOWLEDGE["soft_labels"] / "matrix.csv"
CHECK = Path("data/params.ok")
CHECKPOINTS = Path("data/checkpoints")
METRICS = Path("metrics")
PLOTS = Path("plots")
PNG = PLOTS / "png"
TABLES = Path("tables")


def distilled(method: str) -> Path:
    """Weights of the student distilled with ``method``."""
    return MODELS / "distill" / f"{method}.pt"


def metrics(stage: str) -> Path:
    """The plain record of a stage (``distill/kd`` for distill@kd): every number it measured,
    counts, timings and memory included; read by the tables stage, not by ``dvc exp show``."""
    return METRICS / f"{stage}.json"


def live(stage: str) -> Path:
    """DVCLive folder of a stage: ``metrics.json`` (compared by ``dvc exp show``) and
    ``plots/metrics/*.tsv`` (per-epoch step plots)."""
    return METRICS / stage


def summary(stage: str) -> Path:
    """The metrics file ``dvc exp show`` compares for ``stage`` (DVCLive's summary)."""
    return live(stage) / "metrics.json"


# The distill_grid stage (kdlab.stages.grid): one folder per output kind, a file per cell.
GRID_MODELS = MODELS / "grid"
GRID_METRICS = METRICS / "grid"
GRID_PNG = PNG / "grid"
GRID_SUMMARY = METRICS / "grid_summary.json"


def grid_model(cell: str) -> Path:
    """Weights of grid cell ``cell``'s student."""
    return GRID_MODELS / f"{cell}.pt"
