"""ReffAKD's report tables (paper 000: Table 5, 9 and 10: T x alpha grids of KD and
ReffAKD; Table 8: every method at T 4, alpha 0.9 on two data sets), built from DVC experiments by
:mod:`kdlab.reports.experiments`. Its pipeline tables (Tables 4, 6, 7) are the ``tables`` stage's
(:mod:`kdlab.stages.tables`).
"""

from __future__ import annotations

from kdlab.reports.base import GridSpec, PairSpec

_C100 = ("data.name", "cifar100")

# `kdlab report` names of this paper (kdlab.reports.registry gathers them).
REPORTS: dict[str, GridSpec | PairSpec] = {
    "reffakd_table5": GridSpec(
        "reffakd",
        "table5",
        ("temperature", "alpha"),
        (("reffakd", "reffakd"), ("vanilla_kd", "kd")),
        ("reffakd_cifar100",),
    ),
    "reffakd_table9": GridSpec(
        "reffakd",
        "table9",
        ("temperature", "alpha"),
        (("reffakd", "reffakd"), ("vanilla_kd", "kd")),
        ("reffakd_tiny",),
    ),
    "reffakd_table10": GridSpec(
        "reffakd",
        "table10",
        ("temperature", "alpha"),
        (("reffakd", "reffakd"), ("vanilla_kd", "kd")),
        ("default", "paper"),
    ),
    # ReffAKD Table 8: one row per data set (its preset), every method at T 4, alpha 0.9.
    "reffakd_table8": PairSpec(
        "reffakd",
        "table8",
        (
            ("cifar100", (_C100,)),
            # 64x64 as the official Tiny ImageNet notebooks (the CIFAR recipe would run 32x32)
            (
                "tiny_imagenet",
                (
                    ("data.name", "tiny_imagenet"),
                    ("teacher.input_size", 64),
                    ("student.input_size", 64),
                ),
            ),
        ),
        (
            ("resnet50", "teacher", ()),
            ("resnet18", "ce", ()),
            *(
                (m, m, (("temperature", 4.0), ("alpha", 0.9)))
                for m in ("at", "kd", "fitnet", "kdsvd", "pkt", "rkd", "dkd", "reffakd_dkd")
            ),
            ("reffakd", "reffakd", (("temperature", 4.0), ("alpha", 0.9))),
        ),
        ("reffakd_cifar100", "reffakd_tiny"),
        note="Every method at the caption's T 4 and alpha 0.9 (alpha weighs the distillation "
        "term in ReffAKD too); the CIFAR-100 row from the reffakd_cifar100 preset's runs only, "
        "the Tiny ImageNet row from the reffakd_tiny preset's (64x64) only.",
        pair_presets=("reffakd_cifar100", "reffakd_tiny"),
    ),
}
