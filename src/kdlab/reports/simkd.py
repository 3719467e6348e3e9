"""SimKD's report tables (its projector / label-gating / loss study, and the same rows as a
direction check on Fashion-MNIST), built from DVC experiments by :mod:`kdlab.reports.experiments`.
"""

from __future__ import annotations

from dataclasses import replace

from kdlab.reports.base import RowsSpec

_SIMKD = "method_params.simkd."

# The SimKD study's "baseline" column (75.43) is plain SimKD ("simKD model as a baseline": one
# projector at the end, every sample, L2), not a CE student.
_SIMKD_PLAIN = (
    (_SIMKD + "projectors", "end"),
    (_SIMKD + "label_gated", 0),
    (_SIMKD + "loss", "l2"),
)
# `kdlab report` names of this paper (kdlab.reports.registry gathers them).
REPORTS: dict[str, RowsSpec] = {
    "simkd_study": RowsSpec(
        "simkd",
        "study",
        tuple(
            (
                f"{name}/{loss}",
                "simkd",
                (
                    (_SIMKD + "projectors", proj),
                    (_SIMKD + "label_gated", gated),
                    (_SIMKD + "loss", loss),
                ),
            )
            for name, proj, gated in (
                ("multiple_projector_bias", "two_thirds", 0),
                ("all_layers_unbiased", "all", 0),
                ("ground_truth_labels", "end", 1),
            )
            for loss in ("l2", "kl")
        ),
        (("test_acc", "test_acc"),),
        ("simkd",),
        best_of="student.train.lr",
        best_column="lr_best",
        baseline="simkd",
        paper_baseline="baseline",
        baseline_params=_SIMKD_PLAIN,
        baseline_label="plain_simkd",
        note="Each variant is compared with plain SimKD (its `baseline` column, 75.43: one "
        "projector at the end, L2, every sample) of the same seed and learning rate.",
    ),
}
REPORTS["simkd_study_fmnist"] = replace(
    REPORTS["simkd_study"],
    # SimKD trains on its feature loss alone: alpha 1 (the preset's 0.5 is SRRL's).
    rows=tuple(
        (label, m, (*want, ("alpha", 1.0))) for label, m, want in REPORTS["simkd_study"].rows
    ),
    presets=("fmnist_direction",),
    baseline_params=(*_SIMKD_PLAIN, ("alpha", 1.0)),
    title=" — direction check on Fashion-MNIST",
    note="Direction check on Fashion-MNIST at reduced scale (preset `fmnist_direction`), not a "
    "reproduction: read the `direction` column (does each row move top-1 against plain SimKD, "
    "the paper's baseline, the paper's way?), not the accuracies. Our differences are paired by "
    "seed (plain SimKD's run of the same seed). One learning rate ran (the preset's); the "
    "paper's is its best of five.",
)
