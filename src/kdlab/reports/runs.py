"""The experiment reader: finished runs from ``dvc exp show --json`` (baseline commits and their
experiments, a grid's cells as single runs, stale metrics and diverged models marked), and a
run's committed plain record. Every report reads DVC experiments through this module.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from kdlab import paths


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested params -> ``{"a.b": value}``; values as compact JSON so lists compare."""
    out: dict[str, str] = {}
    for key, value in d.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value, sort_keys=True)
    return out


def preset_of(params: dict[str, Any], missing: str = "default") -> str:
    """The preset a run's (nested) params were written from: ``preset``, else ``profile_name``
    (the key's name in runs and records from before the rename), else ``missing`` (runs older
    still were the default preset's). Every reader of stored params asks this."""
    for key in ("preset", "profile_name"):
        if key in params:
            return params[key]
    return missing


def listed_methods(params: dict[str, Any]) -> set[str]:
    """The methods a run's params list: ``methods`` is a mapping ``{kd: teacher, ...}`` (a list
    in older runs). Read from the nested params: flattening would split the mapping apart."""
    methods = params.get("methods") or []
    return set(methods)


def lookup(params: dict[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of a dotted key (``method_params.simkd.loss``) in nested params."""
    node: Any = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def stale_outputs(repo: Path, rev: str, params: dict[str, Any]) -> set[str]:
    """Outputs of commit ``rev`` that its params did not produce: those of every stage whose
    params in the commit's ``dvc.lock`` differ from the commit's ``params.yaml`` (a commit that
    changed params without rerunning, e.g. a preset switch, still carries the old metrics).
    An experiment's commit passes by construction (DVC wrote its lock from its params)."""
    import yaml

    proc = subprocess.run(
        ["git", "show", f"{rev}:dvc.lock"], cwd=repo, capture_output=True, text=True
    )
    if proc.returncode != 0:
        return set()
    stale: set[str] = set()
    for stage in ((yaml.safe_load(proc.stdout) or {}).get("stages") or {}).values():
        recorded = (stage.get("params") or {}).get("params.yaml") or {}
        if any(lookup(params, key) != (True, value) for key, value in recorded.items()):
            stale.update(out["path"] for out in stage.get("outs") or [])
    return stale


def _under(path: str, outs: set[str]) -> bool:
    return any(path == out or path.startswith(out.rstrip("/") + "/") for out in outs)


def model_scores(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{model: {metric: value}}`` of one metrics summary: each stage's summary nests its
    scores under the model's name (``{"step": 11, "kd": {"test_acc": 91.2, ...}}``, see
    :mod:`kdlab.live`), so the model is read from the file, not from its path."""
    return {k: v for k, v in summary.items() if isinstance(v, dict)}


def mark_diverged(scores: dict[str, dict[str, Any]]) -> None:
    """A model whose summary carries ``diverged`` (its stage failed, :mod:`kdlab.live`) has no
    result: each of its numbers becomes NaN, which every report prints as ``diverged``."""
    for values in scores.values():
        if "diverged" in values:
            for k, v in values.items():
                if k != "diverged" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    values[k] = math.nan


def grid_cell_runs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of a run's ``distill_grid`` as single runs: each cell's scores
    (``grid_<cell>`` in ``metrics/grid_summary.json``) under its method's name, with the params
    its single ``distill@<method>`` run would have (its alpha, temperature, method params), so
    every report reads grid cells and single runs alike."""
    cells = ((run["params"].get("grid") or {}).get("cells")) or {}
    out = []
    for name, cell in cells.items():
        scores = run["scores"].get(f"grid_{name}")
        if not isinstance(cell, dict) or not scores or "method" not in cell:
            continue
        method = cell["method"]
        params = json.loads(json.dumps(run["params"]))  # a deep copy
        params["grid"] = {"cells": {}}
        params["alpha"] = cell.get("alpha", params.get("alpha"))
        params["temperature"] = cell.get("temperature", params.get("temperature"))
        params["methods"] = {method: (run["params"].get("methods") or {}).get(method, "grid")}
        mp = params.setdefault("method_params", {})
        mp[method] = {**(mp.get(method) or {}), **(cell.get("params") or {})}
        out.append(
            {
                **run,
                "name": f"{run['name']}:{name}",
                "params": params,
                "scores": {method: scores},
                "stages": {method: f"grid/{name}"},  # its record: metrics/grid/<cell>.json
            }
        )
    return out


REPO_KEY = "kdlab_repo"  # where exp_show notes the repository an entry was read from


def runs_from_exp_show(
    data: list[dict[str, Any]], repo: Path | None = None
) -> list[dict[str, Any]]:
    """Finished runs (baseline commits and their experiments) from ``dvc exp show --json``,
    each as ``{"name", "rev", "params", "scores": {model: {metric: value}}}``.

    A run of the ``distill_grid`` stage also gives one run per cell (:func:`grid_cell_runs`).
    The workspace entry is left out (it repeats whichever run was applied last), as are runs
    still queued or running, failed runs and runs whose params could not be read. With
    ``repo`` (by default the one :func:`exp_show` noted), a commit's metrics files that its
    params did not produce (:func:`stale_outputs`) are left out too.
    """
    runs = []

    def add(entry: dict[str, Any], name: str) -> None:
        body = entry.get("data") or {}
        if entry.get("rev") == "workspace" or entry.get("error") or not body:
            return
        params = (body.get("params") or {}).get("params.yaml", {}).get("data")
        if not isinstance(params, dict):
            return
        scores: dict[str, dict[str, Any]] = {}
        where = repo if repo is not None else base_repo
        stale = stale_outputs(Path(where), entry["rev"], params) if where else set()
        for path, m in (body.get("metrics") or {}).items():
            if _under(path, stale):
                continue
            if isinstance(m, dict) and isinstance(m.get("data"), dict):
                # A model's scores may come from several files (its training stage's summary
                # and the analyse stage's): merge them.
                for model, values in model_scores(m["data"]).items():
                    scores.setdefault(model, {}).update(values)
        mark_diverged(scores)
        run = {
            "name": name,
            "rev": entry["rev"],
            "params": params,
            "scores": scores,
            "timestamp": body.get("timestamp"),  # when the run was committed
        }
        runs.append(run)
        runs.extend(grid_cell_runs(run))

    base_repo: str | None = None
    for base in data:
        base_repo = base.get(REPO_KEY)
        add(base, base.get("name") or base.get("rev", "?"))
        for exp in base.get("experiments") or []:
            state = (exp.get("executor") or {}).get("state")
            if state in ("queued", "running", "failed"):
                continue
            for rev in exp.get("revs") or []:
                add(rev, exp.get("name") or rev.get("name") or rev.get("rev", "?"))
    return runs


def exp_show(repo: Path, all_commits: bool = False) -> list[dict[str, Any]]:
    """``dvc exp show --json`` of ``repo`` (HEAD and its experiments, or every commit's); each
    baseline entry is tagged with ``REPO_KEY`` so that :func:`runs_from_exp_show` can read its
    commits' ``dvc.lock``."""
    cmd = [sys.executable, "-m", "dvc", "exp", "show", "--json"]
    if all_commits:
        cmd.append("--all-commits")
    proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"`dvc exp show` failed in {repo}: {proc.stderr.strip()}")
    data = json.loads(proc.stdout)
    for base in data:
        base[REPO_KEY] = str(repo)
    return data


def model_stage(model: str, run: dict[str, Any] | None = None) -> str:
    """The stage that trains ``model``: ``student`` for ce, ``distill/<m>`` for a method, or
    the run's own (``grid/<cell>`` for a grid cell, :func:`kdlab.reports.runs.grid_cell_runs`)."""
    if run and model in (run.get("stages") or {}):
        return run["stages"][model]
    return {"ce": "student", "teacher": "teacher"}.get(model, f"distill/{model}")


def run_record(repo: Path, rev: str, stage: str) -> dict[str, Any] | None:
    """A stage's plain record (``metrics/<stage>.json``) as committed in run ``rev``; None when
    that run has none."""
    proc = subprocess.run(
        ["git", "show", f"{rev}:{paths.metrics(stage).as_posix()}"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return json.loads(proc.stdout) if proc.returncode == 0 else None
