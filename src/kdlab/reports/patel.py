"""Patel & Obeid's Tables 1-3 (paper 004) from finished DVC experiments of the ``patel`` preset.

Table 1 (training without KD): per network, the teacher ``p_<net>`` and its half-width student
``p_<net>_half``: parameters (convolution + linear weights, the paper's count), test accuracy
and training time. Tables 2 and 3 (KD, students as rows, teachers as columns; the paper ran the
same grid on two machines, so both compare with our one machine): the KD student's accuracy,
training time, accuracy gain over the same student trained without KD, and compression rate
(student / teacher weights). Times come from each run's committed plain records
(``train_time_s``), accuracies from ``dvc exp show``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from kdlab.reports.base import ALPHA_CONVENTION, mean_std, reduction_note, with_devices
from kdlab.reports.papers import paper_tables, seconds
from kdlab.reports.records import RESULTS, Built, at_scale, main_scale, write_report
from kdlab.reports.runs import (
    exp_show,
    flatten,
    listed_methods,
    model_stage,
    preset_of,
    run_record,
    runs_from_exp_show,
)

NETS = {"vgg": "p_vgg16", "resnet": "p_resnet18", "densenet": "p_densenet121"}
TABLES = ("patel_table1", "patel_table2", "patel_table3")  # its `kdlab report` names
Records = Callable[[dict[str, Any], str], dict[str, Any] | None]  # (run, stage) -> record


def weights(model: str) -> int:
    """Convolution + linear weights of ``model`` at CIFAR-10's 10 classes (the paper's count)."""
    from kdlab.models import build_model  # torch: only when a table is built
    from kdlab.models.patel import count_weights

    return count_weights(build_model(model, 10, 3))


def _duration(s: float | None) -> str:
    if s is None:
        return "—"
    m, sec = divmod(round(s), 60)
    return f"{m}m {sec}s"


def _runs(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(run, flat params)`` of the patel preset's runs."""
    out = []
    for r in runs:
        if preset_of(r["params"]) == "patel":
            out.append((r, {k: json.loads(v) for k, v in flatten(r["params"]).items()}))
    return out


def _measure(
    runs, records: Records, model: str, want: dict[str, str]
) -> tuple[dict[int, float], dict[int, float]]:
    """Per seed: ``model``'s test accuracy and its stage's training time in the runs whose
    teacher / student models are ``want``."""
    acc: dict[int, float] = {}
    time: dict[int, float] = {}
    for run, flat in runs:
        if any(flat.get(k) != v for k, v in want.items()):
            continue
        if model not in ("ce", "teacher") and model not in listed_methods(run["params"]):
            continue
        value = (run["scores"].get(model) or {}).get("test_acc")
        if not isinstance(value, (int, float)):
            continue
        seed = int(flat.get("seed", 0))
        acc[seed] = value
        record = records(run, model_stage(model))
        if record and "train_time_s" in record:
            time[seed] = float(record["train_time_s"])
    return acc, time


def _num(v: float | None, digits: int = 2) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def build_table1(runs: list[dict[str, Any]], records: Records) -> pd.DataFrame:
    """Table 1's layout: per model, parameters, accuracy and time, ours beside the paper's."""
    pub = {r[0]: r for r in paper_tables("patel")["table1"]["rows"]}
    flats = _runs(runs)
    rows = []
    for net, teacher in NETS.items():
        for role, model, key in (
            ("teacher", teacher, "teacher.model"),
            ("student", f"{teacher}_half", "student.model"),
        ):
            label = f"{net}/{role}"
            acc, time = _measure(
                flats, records, "teacher" if role == "teacher" else "ce", {key: model}
            )
            a, t = mean_std(list(acc.values()))[0], mean_std(list(time.values()))[0]
            _, params, acc_vcl, acc_colab, ptime = pub[label]
            rows.append(
                {
                    "model": label,
                    "ours": model,
                    "params ours": weights(model),
                    "params paper": params,
                    "acc ours": _num(a),
                    "n": len(acc),
                    "acc_vcl paper": acc_vcl,
                    "acc_colab paper": acc_colab,
                    "acc ours - vcl": None if a is None else round(a - acc_vcl, 2),
                    "time ours": _duration(t),
                    "time paper": ptime,
                }
            )
    return pd.DataFrame(rows)


def _kd_cell(flats, records: Records, student: str, teacher: str) -> dict[str, float | None]:
    want = {"student.model": student, "teacher.model": teacher}
    acc, time = _measure(flats, records, "kd", want)
    ce, _ = _measure(flats, records, "ce", want)
    gains = [acc[s] - ce[s] for s in acc if s in ce]
    return {
        "acc": mean_std(list(acc.values()))[0],
        "time": mean_std(list(time.values()))[0],
        "acc_gain": mean_std(gains)[0],
        "compression": weights(student) / weights(teacher),
        "n": len(acc),
    }


def build_kd_table(runs: list[dict[str, Any]], records: Records, table: str) -> pd.DataFrame:
    """Table 2 or 3's layout: rows student/metric, per teacher column ours, paper, difference."""
    published = paper_tables("patel")[table]
    pub = {r[0]: r for r in published["rows"]}
    flats = _runs(runs)
    rows = []
    for s_net, s_teacher in NETS.items():
        cells = {t: _kd_cell(flats, records, f"{s_teacher}_half", m) for t, m in NETS.items()}
        for metric in ("acc", "time", "acc_gain", "compression"):
            label = f"{s_net}/{metric}"
            row: dict[str, Any] = {"student/metric": label}
            for col, t_net in enumerate(NETS, start=1):
                ours, paper = cells[t_net][metric], pub[label][col]
                if metric == "time":
                    row[f"{t_net} ours"] = _duration(ours)
                    row[f"{t_net} paper"] = paper
                    paper_v = seconds(paper)
                else:
                    row[f"{t_net} ours"] = _num(ours, 2)
                    row[f"{t_net} paper"] = f"{paper:.2f}"
                    paper_v = paper
                row[f"{t_net} ours - paper"] = None if ours is None else round(ours - paper_v, 2)
                if metric == "acc":
                    row[f"{t_net} n"] = cells[t_net]["n"]
            rows.append(row)
    return pd.DataFrame(rows)


def report_patel(name: str, repo: Path, replace: bool = False) -> Path:
    """``results/<name>.md`` (+ .csv, records) for Patel Table 1, 2 or 3 from ``repo``'s
    experiments merged with the committed records (:func:`kdlab.reports.records.write_report`)."""
    return write_report(name, build_patel(name, repo), repo / RESULTS / name, replace)[0]


def build_patel(name: str, repo: Path, scale: str | None = None) -> Built:
    """Patel Table 1, 2 or 3 from ``repo``'s experiments at one scale (``scale``, else the
    committed records' main scale; every cell's runs: the preset's)."""
    if name not in TABLES:
        raise ValueError(f"unknown Patel table {name!r}; known: {', '.join(TABLES)}")
    scale = scale or main_scale(repo, name)
    runs, others = at_scale(runs_from_exp_show(exp_show(repo)), scale)

    def records(run: dict[str, Any], stage: str) -> dict[str, Any] | None:
        return run_record(repo, run["rev"], stage)

    table = name.removeprefix("patel_")
    df = build_table1(runs, records) if table == "table1" else build_kd_table(runs, records, table)
    mine = [r for r, _ in _runs(runs)]
    notes = [
        f"From {len(mine)} finished DVC runs of the patel preset."
        + ("" if mine else " No run of the patel preset has finished."),
        ALPHA_CONVENTION["patel"] + ".",
        "Times: each stage's own training time (its record's train_time_s) on our machine; the "
        "paper's are wall times on its machines (Table 2: NCSU VCL, Table 3: Google Colab).",
        "params: convolution + linear weights (the paper's count) of our models at 10 classes; "
        "compression = student / teacher weights; acc_gain = KD student - the same student "
        "trained without KD (same run).",
        "Guessed: the VGG16 step milestones (the paper gives none; the patel preset header).",
    ]
    title = paper_tables("patel")[table]["title"] + " (ours from DVC experiments)"
    reduction = reduction_note(mine, ["kd"])
    if reduction:
        notes.insert(1, reduction)  # where the run's scale was said
    with_devices(mine, ["kd"], repo)
    return Built(df, title, notes, runs=mine, scale=scale, other_scales=others)


# `kdlab report` names of this paper (kdlab.reports.registry gathers them): name -> builder
REPORTS = {
    name: lambda repo, all_commits, scale, n=name: build_patel(n, repo, scale) for name in TABLES
}
