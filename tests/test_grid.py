"""The grid runner (kdlab.grid, the distill_grid stage) against single distill@<method> runs.

One tiny real pipeline (fixture data, the default preset shrunk by ``tiny_params``) trains a
teacher and the CAE's soft labels once; then five single ``distill`` runs and one grid of the
same five cells run in the same process on the same machine. The cells differ in method
(KD with a live teacher, the student's augmentation rotating images; ReffAKD on soft labels;
AT on live teacher features; DKD at its own temperature; FSP with an initialisation epoch, so
three epochs where the others train two), alpha, temperature and method params. Each cell
must match its single run: per-epoch losses and scores, final weights (and the method's extra
modules), record. A planted leak of one cell's gradient or optimiser state into another must
fail.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml

from fixtures import tiny_params, write_fashion_mnist
from kdlab import paths
from kdlab.checks import parse_checked
from kdlab.config import ConfigError, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]
# Float tolerance of grid vs single run (absolute, on losses, scores and every weight). The
# same ops run in the same order, so on one CPU they agree bit for bit; the tolerance leaves
# room for a BLAS that splits work differently between calls.
ATOL = 1e-6
CELLS = {
    "kd_t4": {
        "method": "kd",
        "alpha": 0.7,
        "temperature": 4.0,
        "params": {"reduction": "batchmean"},  # the default preset's is mean
    },
    "reffakd_t2": {"method": "reffakd", "alpha": 0.5, "temperature": 2.0},
    "at_500": {"method": "at", "alpha": 0.9, "params": {"at_weight": 500.0}},
    # DKD's own T (method_params.dkd.temperature), the record's temperature; warm-up 1 epoch.
    "dkd_t2": {"method": "dkd", "params": {"temperature": 2.0, "warmup_epochs": 1}},
    # One initialisation epoch before the recipe's two (Distiller.train_config).
    "fsp_init": {"method": "fsp", "alpha": 0.8, "params": {"init_epochs": 1}},
}
TIMINGS = ("wall_time_s", "train_time_s", "peak_rss_mib")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Split, teacher, CAE and soft labels of a tiny run, in a temp dir; its params."""
    from kdlab.stages.data import download, split
    from kdlab.stages.softlabels import build_soft_labels
    from kdlab.stages.train import train_cae, train_classifier

    root = tmp_path_factory.mktemp("grid")
    md5 = write_fashion_mnist(root / "fixture", n_train=400, n_test=100)
    with open(REPO / "src/kdlab/presets/default.yaml", encoding="utf-8") as fh:
        params = tiny_params(yaml.safe_load(fh), root / "fixture", md5)
    # Rotation: unbounded views, so KD reads a live teacher (no cached logits).
    params["student"]["train"]["augment"] = {"hflip": True, "rotation": 15.0, "crop_padding": 0}
    params["methods"] = {m: "teacher" for m in ("kd", "at", "dkd", "fsp")}
    params["methods"]["reffakd"] = "soft_labels"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(root)
    try:
        cfg = load_config(root / "params.yaml")
        download(cfg)
        split(cfg)
        train_classifier(cfg, "teacher")
        train_cae(cfg)
        build_soft_labels(cfg)
    finally:
        os.chdir(old)
    return root, params


def _in(root: Path, params: dict, fn):
    path = root / "params_run.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(root)
    try:
        return fn(load_config(path))
    finally:
        os.chdir(old)


def _outputs(root: Path, model: Path, record: Path, live: Path) -> dict:
    """What a run leaves: weights (+ extra modules), record, per-epoch step plots."""
    blob = torch.load(root / model, weights_only=True)
    plots = {}
    for tsv in sorted((root / live / "plots" / "metrics").glob("*.tsv")):
        rows = [line.split("\t") for line in tsv.read_text().splitlines()[1:]]
        plots[tsv.stem] = [float(r[1]) for r in rows]
    return {
        "weights": {**blob["state_dict"], **_flat(blob.get("extra_state") or {})},
        "record": json.loads((root / record).read_text()),
        "plots": plots,
    }


def _flat(extra: dict) -> dict:
    return {f"{m}.{k}": v for m, sd in extra.items() for k, v in sd.items()}


def _single_runs(root: Path, params: dict) -> dict[str, dict]:
    """Each cell as its own distill@<method> run (its params set as the cell sets them)."""
    from kdlab.stages.distill import distill

    out = {}
    for name, cell in CELLS.items():
        p = json.loads(json.dumps(params))
        p["alpha"] = cell.get("alpha", params["alpha"])
        p["temperature"] = cell.get("temperature", params["temperature"])
        p["method_params"][cell["method"]].update(cell.get("params", {}))
        m = cell["method"]
        _in(root, p, lambda cfg, m=m: distill(cfg, m))
        out[name] = _outputs(
            root, paths.distilled(m), paths.metrics(f"distill/{m}"), paths.live(f"distill/{m}")
        )
    return out


def _grid_run(root: Path, params: dict) -> dict[str, dict]:
    from kdlab.stages.grid import distill_grid

    p = json.loads(json.dumps(params))
    p["grid"] = {"cells": CELLS}
    _in(root, p, distill_grid)
    return {
        name: _outputs(
            root, paths.grid_model(name), paths.metrics(f"grid/{name}"), paths.live(f"grid/{name}")
        )
        for name in CELLS
    }


def _differences(single: dict, grid: dict) -> list[str]:
    """Every value where a grid cell differs from its single run by more than ATOL."""
    diffs = []
    for name in CELLS:
        s, g = single[name], grid[name]
        if s["weights"].keys() != g["weights"].keys():
            diffs.append(f"{name}: weight names differ")
        for k, v in s["weights"].items():
            w = g["weights"].get(k)
            if w is None or not torch.allclose(v.double(), w.double(), rtol=0, atol=ATOL):
                diffs.append(f"{name}: weight {k}")
        if s["plots"].keys() != g["plots"].keys():
            diffs.append(f"{name}: plots {sorted(s['plots'])} vs {sorted(g['plots'])}")
        for k, v in s["plots"].items():
            if g["plots"].get(k) != pytest.approx(v, rel=0, abs=ATOL):
                diffs.append(f"{name}: per-epoch {k} {v} vs {g['plots'].get(k)}")
        if s["record"].keys() != g["record"].keys():
            diffs.append(f"{name}: record keys differ")
        for k, v in s["record"].items():
            want = v if isinstance(v, str) else pytest.approx(v, rel=0, abs=ATOL)
            same = g["record"].get(k) == want
            if k not in TIMINGS and not same:
                diffs.append(f"{name}: record {k} {v} vs {g['record'].get(k)}")
    return diffs


@pytest.fixture(scope="module")
def single(pipeline):
    return _single_runs(*pipeline)


def test_grid_cells_equal_their_single_runs(pipeline, single):
    root, params = pipeline
    grid = _grid_run(root, params)
    assert _differences(single, grid) == []
    # The runs did learn something different per cell (the comparison is not vacuous).
    assert single["kd_t4"]["plots"]["loss_kd"] != single["at_500"]["plots"].get("loss_kd")
    assert {"loss_ce", "loss_kd", "train_loss", "val_acc"} <= single["kd_t4"]["plots"].keys()
    assert grid["dkd_t2"]["record"]["temperature"] == 2.0  # DKD's own, not the cell default
    assert [len(grid[c]["plots"]["val_acc"]) for c in ("kd_t4", "fsp_init")] == [2, 3]
    summary = json.loads((root / paths.GRID_SUMMARY).read_text())
    assert summary["cells"] == len(CELLS)
    for name in CELLS:
        assert summary[f"grid_{name}"]["test_acc"] == grid[name]["record"]["test_acc"]
    assert not list((root / paths.CHECKPOINTS).glob("grid_*.pt"))  # removed when done


def _leak(kind: str):
    """A backward_step that lets the previous cell's gradients (or momentum) into this cell's
    update: the bug the equivalence test must catch."""
    last: list = []

    def backward_step(self, loss, optimizer):
        loss.backward()
        prev = last[0] if last else None
        if prev is not None and prev is not optimizer:
            mine = [p for g in optimizer.param_groups for p in g["params"]]
            theirs = [p for g in prev.param_groups for p in g["params"]]
            for p, q in zip(mine, theirs):
                if p.shape != q.shape:
                    continue
                if kind == "gradient" and q.grad is not None and p.grad is not None:
                    p.grad.add_(q.grad, alpha=0.01)
                buf = prev.state.get(q, {}).get("momentum_buffer")
                if kind == "optimizer_state" and buf is not None:
                    optimizer.state[p]["momentum_buffer"] = buf.clone()
        optimizer.step()
        last[:] = [optimizer]

    return backward_step


@pytest.mark.parametrize("kind", ["gradient", "optimizer_state"])
def test_a_leak_between_cells_fails_the_equivalence(pipeline, single, monkeypatch, kind):
    from kdlab.accel import Accelerator

    root, params = pipeline
    monkeypatch.setattr(Accelerator, "backward_step", _leak(kind))
    grid = _grid_run(root, params)
    diffs = _differences(single, grid)
    assert diffs, f"a planted {kind} leak went unnoticed"
    assert any("weight" in d for d in diffs)


def test_an_empty_grid_writes_an_explicit_no_cells_summary(pipeline):
    from kdlab.stages.grid import distill_grid

    root, params = pipeline
    _in(root, params, distill_grid)
    assert json.loads((root / paths.GRID_SUMMARY).read_text()) == {"cells": 0}
    assert list((root / paths.GRID_METRICS).iterdir()) == []


@pytest.mark.parametrize(
    "cells, message",
    [
        ({"a": {"method": "kd", "alfa": 0.5}}, "grid.cells.a.alfa; allowed here: method, alpha"),
        ({"a": {"method": "kdd"}}, "grid.cells.a.method = 'kdd' is not allowed; allowed: "),
        ({"a": {"method": "kd", "alpha": 1.5}}, "grid.cells.a.alpha = 1.5 is not allowed"),
        ({"a": {"method": "kd", "params": {"reduction": "sum"}}}, "grid.cells.a.params.reduction"),
        ({"a b": {"method": "kd"}}, "grid.cells = 'a b' is not allowed"),
        ({"a": {"alpha": 0.5}}, "grid.cells.a = {'alpha': 0.5} is not allowed"),
        ({"a": {"method": "dkd", "temperature": 2}}, "grid.cells.a.temperature is not used by"),
    ],
)
def test_bad_grid_cells_are_named(default_params, cells, message):
    default_params["grid"] = {"cells": cells}
    with pytest.raises(ConfigError, match=None) as err:
        parse_checked(default_params)
    assert message in str(err.value)


def test_a_cells_method_block_is_checked_when_the_method_is_not_in_methods(default_params):
    """A cell reads its method's method_params block even when no distill stage does."""
    assert "at" not in default_params["methods"]
    default_params["method_params"]["at"]["at_weight"] = -1.0
    default_params["grid"] = {"cells": {"a": {"method": "at"}}}
    with pytest.raises(ConfigError, match=r"method_params\.at\.at_weight = -1\.0"):
        parse_checked(default_params)


def test_a_cell_inherits_alpha_temperature_and_method_params(default_params):
    default_params["grid"] = {"cells": {"kd8": {"method": "kd", "temperature": 8}}}
    (cell,) = parse_config(default_params).grid
    assert (cell.method, cell.alpha, cell.temperature) == ("kd", 0.6, 8.0)
    assert cell.params == default_params["method_params"]["kd"]


class _Interrupted(Exception):
    pass


def test_an_interrupted_grid_resumes_each_cell_to_its_single_run(
    pipeline, single, monkeypatch, capsys
):
    """Killed after two of the cells checkpointed epoch 1: the rerun resumes those two from
    epoch 2 and trains the others from the start; every cell still equals its single run."""
    import kdlab.grid

    root, params = pipeline
    save, saved = kdlab.grid._save_checkpoint, []

    def save_twice_then_die(*args, **kwargs):
        save(*args, **kwargs)
        saved.append(args[0])
        if len(saved) == 2:
            raise _Interrupted

    with monkeypatch.context() as m:
        m.setattr(kdlab.grid, "_save_checkpoint", save_twice_then_die)
        with pytest.raises(_Interrupted):
            _grid_run(root, params)
    assert sorted(p.name for p in (root / paths.CHECKPOINTS).glob("grid_*.pt")) == [
        "grid_kd_t4.pt",
        "grid_reffakd_t2.pt",
    ]
    capsys.readouterr()
    assert _differences(single, _grid_run(root, params)) == []
    out = capsys.readouterr().out
    assert "[grid@kd_t4] resuming" in out and "[grid@reffakd_t2] resuming" in out
    assert "[grid@at_500] resuming" not in out


def test_a_diverging_cell_fails_the_grid_and_marks_its_summary(pipeline, monkeypatch):
    """A planted non-finite ReffAKD loss in epoch 1: the stage raises DivergenceError naming the
    cell and its own knobs, marks ``grid_reffakd_t2`` diverged in the grid's summary (the
    other cells show the epoch they reached), writes no model or record, and keeps the other
    cells' epoch-1 checkpoints for a rerun, not the diverged cell's."""
    from kdlab.errors import DivergenceError
    from kdlab.methods.reffakd import ReffAKD

    root, params = pipeline
    real = ReffAKD.forward_train

    def nan_loss(self, batch, epoch):
        logits, losses = real(self, batch, epoch)
        return logits, {**losses, "kd": losses["kd"] * float("nan")}

    monkeypatch.setattr(ReffAKD, "forward_train", nan_loss)
    try:
        with pytest.raises(DivergenceError) as err:
            _grid_run(root, params)
        assert "[grid@reffakd_t2] diverged" in str(err.value)
        assert "grid.cells.reffakd_t2.alpha or grid.cells.reffakd_t2.temperature" in str(err.value)
        summary = json.loads((root / paths.GRID_SUMMARY).read_text())
        assert summary["grid_reffakd_t2"] == {"diverged": 1}
        assert summary["grid_kd_t4"]["epoch"] == 1 and "diverged" not in summary["grid_kd_t4"]
        assert not list((root / paths.GRID_MODELS).iterdir())
        assert not (root / paths.metrics("grid/reffakd_t2")).exists()
        left = sorted(p.name for p in (root / paths.CHECKPOINTS).glob("grid_*.pt"))
        assert left == sorted(f"grid_{c}.pt" for c in CELLS if c != "reffakd_t2")
    finally:  # the module's other grid runs start clean
        for ckpt in (root / paths.CHECKPOINTS).glob("grid_*.pt"):
            ckpt.unlink()


def test_kdlab_check_builds_each_grid_cells_feature_method(default_params):
    """A model-dependent param of a cell (SRRL's stage index past LeNet5's two stage pairs)
    fails `kdlab check`, naming the cell."""
    from kdlab.checks import check_method_models

    default_params["grid"] = {"cells": {"srrl_s5": {"method": "srrl", "params": {"stage": 5}}}}
    with pytest.raises(ConfigError) as err:
        check_method_models(parse_config(default_params))
    assert "stage = 5 is not allowed" in str(err.value) and "grid.cells.srrl_s5" in str(err.value)


def _dropout_cells(seeds):
    """CE students behind a dropout layer (a step that draws random numbers), each built from
    its own seed as its single run would be; with the random state each would train from."""
    from torch import nn

    from kdlab.grid import GridCell, rng_state
    from kdlab.methods import get_method
    from kdlab.models import build_model
    from kdlab.runtime import seed_everything

    cells = []
    for s in seeds:
        seed_everything(s)
        student = nn.Sequential(nn.Dropout(0.5), build_model("lenet5", 4, 1, input_size=28))
        cells.append(GridCell(f"c{s}", get_method("ce")(student), rng_state(torch.device("cpu"))))
    return cells


def _dropout_loaders():
    from kdlab.config import AugmentConfig
    from kdlab.data.pipeline import TensorLoader

    g = torch.Generator().manual_seed(1)
    labels = torch.arange(64) % 4
    images = (torch.rand(64, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    common = dict(input_size=28, mean=(0.2,), std=(0.3,))
    aug = AugmentConfig(hflip=True, rotation=10.0, crop_padding=0)
    train = TensorLoader(images, labels, torch.arange(48), 8, augment=aug, shuffle=True, **common)
    return train, TensorLoader(images, labels, torch.arange(48, 64), 16, **common)


@pytest.mark.parametrize("own_streams", [True, False])
def test_per_step_randomness_follows_each_cells_own_stream(monkeypatch, own_streams):
    """Dropout draws from the global torch state: each cell steps under the state its single
    run would have, so the grid matches; sharing one stream between cells (the control) does
    not."""
    import kdlab.grid
    from kdlab.schema import NO_AUGMENT, TrainConfig
    from kdlab.train import fit

    cfg = TrainConfig(2, 8, "sgd", 0.05, 0.9, 0.0, "constant", (), 0.1, NO_AUGMENT)
    single = []
    for cell in _dropout_cells([10, 11]):
        torch.set_rng_state(cell.rng["cpu"])
        fit(cell.objective, *_dropout_loaders(), cfg, "single", log=lambda _: None)
        single.append(cell.objective.state_dict())
    cells = _dropout_cells([10, 11])
    if not own_streams:
        monkeypatch.setattr(kdlab.grid, "set_rng_state", lambda state, device: None)
    kdlab.grid.fit_grid(cells, *_dropout_loaders(), cfg, log=lambda _: None)
    same = all(
        torch.equal(a[k], c.objective.state_dict()[k]) for a, c in zip(single, cells) for k in a
    )
    assert same == own_streams


def _cfg(epochs: int, lr: float = 0.05):
    from kdlab.schema import NO_AUGMENT, TrainConfig

    return TrainConfig(epochs, 8, "sgd", lr, 0.9, 0.0, "constant", (), 0.1, NO_AUGMENT)


def test_cells_with_their_own_epochs_equal_their_single_runs():
    """A method with an initialisation phase trains more epochs (Distiller.train_config): a
    cell with its own TrainConfig trains its epochs on the loader's epochs 0..n-1, as its
    single run does, while the other cells stop at theirs."""
    import kdlab.grid
    from kdlab.train import fit

    configs = [_cfg(2), _cfg(3)]
    single = []
    for cell, cfg in zip(_dropout_cells([10, 11]), configs, strict=True):
        torch.set_rng_state(cell.rng["cpu"])
        result = fit(cell.objective, *_dropout_loaders(), cfg, "single", log=lambda _: None)
        single.append((cell.objective.state_dict(), len(result.history)))
    cells = _dropout_cells([10, 11])
    cells[1].train = configs[1]
    results = kdlab.grid.fit_grid(cells, *_dropout_loaders(), configs[0], log=lambda _: None)
    assert [len(r.history) for r in results] == [n for _, n in single] == [2, 3]
    for (state, _), cell in zip(single, cells, strict=True):
        assert all(torch.equal(v, cell.objective.state_dict()[k]) for k, v in state.items())


def test_a_cell_at_chance_level_stops_the_grid_after_the_others_checkpoint(tmp_path):
    """The chance-level rule, per cell: a cell whose validation accuracy cannot move (lr 0)
    diverges at epoch 5 (the rule's first epoch); its checkpoint goes, ``on_diverged`` hears
    the epoch, the healthy cell still checkpoints epoch 5, and the grid raises the cell's
    DivergenceError naming its hint."""
    import kdlab.grid
    from kdlab.errors import DivergenceError
    from kdlab.io import torch_load
    from kdlab.train import Divergence

    cells = _dropout_cells([10, 11])
    heard, rows = [], []
    for c in cells:
        c.checkpoint, c.run_id = tmp_path / f"{c.name}.pt", c.name
    cells[0].train = _cfg(6, lr=0.0)
    cells[0].divergence = Divergence(chance=100.0, hint="grid.cells.c10.alpha")
    cells[0].on_diverged = heard.append
    cells[1].on_epoch = rows.append
    with pytest.raises(DivergenceError, match=r"\[c10\] diverged.*grid\.cells\.c10\.alpha") as err:
        kdlab.grid.fit_grid(cells, *_dropout_loaders(), _cfg(6), log=lambda _: None)
    assert err.value.epoch == heard[0] == 5 and len(heard) == 1
    assert not cells[0].checkpoint.exists()
    assert torch_load(cells[1].checkpoint)["epoch"] == 4 and len(rows) == 5  # epoch 5 kept
