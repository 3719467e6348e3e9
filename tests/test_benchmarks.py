"""The benchmarks still run against the current API (they are not part of the suite's timing
targets, which live in the benchmarks themselves): each at its smallest size, in process."""

from __future__ import annotations

import json
import runpy
import sys

from conftest import REPO


def run_bench(name: str, args: list[str], monkeypatch, capsys) -> str:
    """Its output; an exit status (a budget verdict, noise at this size) is not asserted."""
    monkeypatch.setattr(sys, "argv", [name, *args])
    try:
        runpy.run_path(str(REPO / "benchmarks" / f"{name}.py"), run_name="__main__")
    except SystemExit as done:
        assert done.code in (0, 1), done.code
    return capsys.readouterr().out


def test_bench_grid_cached_cells_match_their_single_runs(monkeypatch, capsys):
    args = ["--only", "cached", "--cached-cells", "2", "--train", "128", "--repeats", "1"]
    out = run_bench("bench_grid", [*args, "--threads", "1"], monkeypatch, capsys)
    result = json.loads(out.splitlines()[0])
    assert result["cells"] == 2 and result["max_abs_weight_diff"] == 0.0
    assert "single/grid time: cached logits, {KD, ReffAKD}, 2 cells:" in out


def test_bench_methods_builds_every_method_from_the_default_preset(monkeypatch, capsys):
    args = ["--n", "256", "--batches", "1", "--warmup", "0", "--repeats", "1", "--threads", "1"]
    out = run_bench("bench_methods", args, monkeypatch, capsys)
    assert "ReffAKD overhead over CE:" in out
    for row in ("kd (cached logits)", "dkd (cached logits)"):
        assert row in out
