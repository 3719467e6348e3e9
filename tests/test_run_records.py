"""The uniform-matrix control, committed run records and the Table 4 campaign script."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest
import torch
import torch.nn.functional as F

from conftest import REPO
from fixtures import method_params
from kdlab.config import parse_config
from kdlab.methods import get_method
from kdlab.reports import run_records
from kdlab.softlabels import uniform_off_diagonal


def _script():
    spec = importlib.util.spec_from_file_location("table4", REPO / "scripts/reffakd_table4.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_uniform_control_keeps_the_diagonal_and_spreads_the_rest_evenly():
    m = torch.softmax(torch.randn(5, 5, generator=torch.Generator().manual_seed(1)), dim=1)
    u = uniform_off_diagonal(m)
    for i in range(5):
        for j in range(5):
            want = m[i, i] if i == j else (1 - m[i, i]) / 4
            assert float(u[i, j]) == pytest.approx(float(want), abs=1e-7)
    torch.testing.assert_close(u.sum(1), torch.ones(5))


def test_reffakd_uniform_is_reffakds_loss_on_the_uniform_matrix():
    """The method's distillation term = T^2 KL(u[y] || softmax(s / T)) with the KL averaged
    the `mean` way (over batch x classes), u the control matrix computed by hand."""
    g = torch.Generator().manual_seed(0)
    m = torch.softmax(torch.randn(4, 4, generator=g), dim=1)
    logits = torch.randn(6, 4, generator=g)
    y = torch.tensor([0, 1, 2, 3, 1, 0])
    d = 1 - m.diagonal()
    u = torch.stack([torch.where(torch.arange(4) == i, m[i, i], d[i] / 3) for i in range(4)])
    student = torch.nn.Identity()
    method = get_method("reffakd_uniform")(
        student, method_params("reffakd_uniform"), alpha=0.6, temperature=3.0, soft_labels=m
    )
    batch = type("B", (), {"x": logits, "y": y})()
    t = u[y]
    want = (t * (t.log() - F.log_softmax(logits / 3.0, dim=1))).sum() / t.numel() * 9.0
    assert float(method.distill_term(logits, batch)) == pytest.approx(float(want), rel=1e-5)
    plain = get_method("reffakd")(student, {"reduction": "mean"}, 0.6, 3.0, soft_labels=m)
    assert float(plain.distill_term(logits, batch)) != pytest.approx(float(want), rel=1e-3)


def _record(arm: str, seed: int, final: float, best: float) -> dict:
    return {
        "arm": arm,
        "method": arm,
        "dataset": "fashion_mnist",
        "seed": seed,
        "epochs": 2,
        "device": "cpu: test",
        "scale": "paper",
        "preset": "paper",
        "test_acc": final,
        "test_acc_at_best_val": best,
        "best_val_epoch": 1,
        "wall_time_s": 60.0 * (seed + 1),
        "val_curve": [90.0, 91.0],
    }


def test_a_record_without_a_key_or_with_a_nan_score_is_refused(tmp_path):
    rec = _record("ce", 0, 91.0, 91.5)
    del rec["device"]
    with pytest.raises(run_records.RecordError, match="missing device"):
        run_records.check_record(rec, "x.json")
    bad = _record("ce", 0, float("nan"), 91.5)
    with pytest.raises(run_records.RecordError, match="test_acc = nan"):
        run_records.check_record(bad, "x.json")
    (tmp_path / "ce_seed0.json").write_text("{not json")
    with pytest.raises(run_records.RecordError, match="ce_seed0.json: not valid JSON"):
        run_records.read_records(tmp_path)


def test_summary_table_means_stds_and_paired_differences(tmp_path):
    recs = [
        _record("ce", 0, 91.0, 91.2),
        _record("ce", 1, 92.0, 91.8),
        _record("ce", 2, 91.5, 91.6),
        _record("reffakd", 0, 91.4, 91.0),
        _record("reffakd", 1, 92.1, 92.3),
    ]
    for r in recs:
        (tmp_path / f"{r['arm']}_seed{r['seed']}.json").write_text(json.dumps(r))
    got = run_records.read_records(tmp_path)
    assert [(r["arm"], r["seed"]) for r in got] == [(r["arm"], r["seed"]) for r in recs]
    table = run_records.summary_table(got, [("ce", "CE"), ("reffakd", "R")], {"ce": 92.14})
    assert "| R − CE | 0, 1 |" in table
    ce = [91.0, 92.0, 91.5]
    assert f"{statistics.mean(ce):.2f} ± {statistics.stdev(ce):.2f}" in table
    assert "| CE | 92.14 |" in table and "| R | — |" in table
    # Paired by seed (0 and 1 only): +0.40 and +0.10.
    assert "| 0, 1 | +0.40, +0.10 |" in table
    diffs = [0.4, 0.1]
    assert f"{statistics.mean(diffs):.2f} ± {statistics.stdev(diffs):.2f}" in table
    png = run_records.curves_png(got, [("ce", "CE"), ("reffakd", "R")], tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_table4_campaign_params_are_the_paper_preset_at_one_cpu_thread():
    mod = _script()
    p = mod.paper_params(2, "reffakd", REPO)  # resolved by the worktree's own code (here HEAD)
    cfg = parse_config(p)
    assert (cfg.seed, cfg.device, cfg.threads) == (2, "cpu", 1)
    assert cfg.methods == ("reffakd", "reffakd_uniform")
    assert p["preset"] == "paper" and cfg.student.train.epochs == 200
    assert cfg.student.train.batch_size == 128 and cfg.cae.normalize


def test_table4_campaign_skips_committed_records(tmp_path, monkeypatch):
    mod = _script()
    monkeypatch.setattr(mod, "RESULTS", tmp_path)
    (tmp_path / "ce_seed0.json").write_text("{}")
    assert mod.plan([0, 1]) == [(0, "reffakd"), (1, "reffakd"), (1, "ce")]
    for arm in ("reffakd", "reffakd_uniform"):
        (tmp_path / f"{arm}_seed0.json").write_text("{}")
    assert mod.plan([0]) == []
