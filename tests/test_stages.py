"""Stage outputs checked against independent computations on one tiny real run.

The stage functions run once per module in a temporary directory (their own copy of the
data, the default preset shrunk by ``tiny_params``), so the suite does not depend on the
workspace's ``params.yaml`` nor on the order of the tests.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml

from fixtures import tiny_params, write_fashion_mnist
from kdlab import paths
from kdlab.config import load_config
from kdlab.data import load
from kdlab.data.pipeline import TensorLoader
from kdlab.softlabels import sample_per_class

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
N_TEST = 205


def _planted_classes(data) -> tuple[int, int]:
    """Classes (best, final) for constant predictors whose scores differ by construction.

    A model that predicts class c for every image scores exactly the share of c in a split,
    on any CPU. The test split holds 21 images of each class 0-4 and 20 of each class 5-9
    (205 images), so a constant predictor's test score (21/205 or 20/205) never equals its
    validation score (k/100), and two predictors of classes from different halves differ on
    the test split. Of such pairs, the one whose validation scores differ the most: the
    "best" class scores higher on validation than the "final" one.
    """
    test = torch.bincount(data.test_labels, minlength=10)
    val = torch.bincount(data.labels[data.split.val], minlength=10)
    assert test.tolist() == [21] * 5 + [20] * 5
    best, final = max(
        ((b, f) for b in range(10) for f in range(10) if test[b] != test[f]),
        key=lambda bf: int(val[bf[0]] - val[bf[1]]),
    )
    assert val[best] > val[final]  # a property of the seeded split (integers, not floats)
    return best, final


def _predict_constant(objective, c: int) -> None:
    """Make the objective's student output the same logits for every input, class c on top."""
    head = objective.student.classifier
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.bias[c] = 10.0


def planted_trajectory(mp: pytest.MonkeyPatch, classes: tuple[int, int]) -> None:
    """After each real training epoch, plant the weights the loop then evaluates: the first
    epoch ends as a constant predictor of ``classes[0]`` (the best on validation), the last as
    one of ``classes[1]``. The final and best-on-validation models, and the final model's
    validation and test scores, then differ by construction: a best-val save, swapped
    validation/test loaders or a test score read off the validation split change the numbers
    the tests recompute, whatever the CPU."""
    import kdlab.train

    real = kdlab.train._train_epoch

    def epoch_then_plant(objective, *args, **kwargs):
        row = real(objective, *args, **kwargs)
        # _train_epoch(objective, step_fn, acc, loader, opt, sched, epoch, name, epochs, hint)
        named = dict(zip(("epoch", "name", "epochs"), args[5:8], strict=False)) | kwargs
        epoch, epochs = named["epoch"], named["epochs"]
        assert epochs >= 2
        if epoch == 0:
            _predict_constant(objective, classes[0])
        elif epoch == epochs - 1:
            _predict_constant(objective, classes[1])
        return row

    mp.setattr(kdlab.train, "_train_epoch", epoch_then_plant)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Run split, teacher, student, CAE, soft labels and teacher logits in a temp dir."""
    from kdlab.artifacts import load_data, load_model
    from kdlab.stages.data import download, split
    from kdlab.stages.softlabels import build_soft_labels
    from kdlab.stages.teacher_logits import teacher_logits
    from kdlab.stages.train import train_cae, train_classifier

    root = tmp_path_factory.mktemp("stages")
    # 205 test images: classes 0-4 hold 21 of them, classes 5-9 hold 20 (see _planted_classes).
    md5 = write_fashion_mnist(root / "fixture", n_train=600, n_test=N_TEST)
    with open(REPO / "src/kdlab/presets/default.yaml", encoding="utf-8") as fh:
        params = tiny_params(yaml.safe_load(fh), root / "fixture", md5)
    params["soft_labels"]["gamma"] = 0.5  # a searched 0 could not tell gamma dropped from used
    # An augmented CAE: the soft labels must embed its training views (flip + rotation).
    params["cae"]["train"]["augment"] = {"hflip": True, "rotation": 10.0, "crop_padding": 0}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(root)
    try:
        cfg = load_config(root / "params.yaml")
        download(cfg)
        split(cfg)
        train_classifier(cfg, "teacher")
        # The student's trajectory is planted (see planted_trajectory), not hoped for.
        with pytest.MonkeyPatch.context() as mp:
            planted_trajectory(mp, _planted_classes(load_data(cfg)))
            train_classifier(cfg, "student")
        train_cae(cfg)
        build_soft_labels(cfg)
        teacher_logits(cfg)
        out = {
            "cfg": cfg,
            "root": root,
            "split": json.loads(paths.SPLIT.read_text()),
            "metrics": {
                s: json.loads(paths.metrics(s).read_text())
                for s in ("teacher", "student", "cae", "soft_labels")
            },
            "teacher": load_model(paths.TEACHER, CPU),
            "student": load_model(paths.STUDENT, CPU),
            "cae": load_model(paths.CAE, CPU),
            "soft_csv": paths.SOFT_LABELS.read_text(),
            "logits": torch.load(paths.TEACHER_LOGITS, weights_only=True),
        }
    finally:
        os.chdir(old)
    return out


def _accuracy(model, images, labels, positions, blob, spec) -> float:
    loader = TensorLoader(
        images, labels, positions, 256, blob["input_size"], spec.mean, spec.std, device=CPU
    )
    correct = 0
    with torch.no_grad():
        for b in loader:
            correct += int((model(b.x).argmax(1) == b.y).sum())
    return 100.0 * correct / len(positions)


def _assert_scores_recomputed(record: dict, model, blob: dict, data) -> None:
    """A stage record's test_acc and val_acc equal the saved model's accuracy recomputed on
    the test split and on the validation split."""
    every_test_image = torch.arange(len(data.test_labels))
    test = _accuracy(model, data.test_images, data.test_labels, every_test_image, blob, data.spec)
    val = _accuracy(model, data.images, data.labels, data.split.val, blob, data.spec)
    assert record["test_acc"] == pytest.approx(test, abs=0.01)
    assert record["val_acc"] == pytest.approx(val, abs=0.01)


def _data(run):
    from kdlab.artifacts import load_data

    old = os.getcwd()
    os.chdir(run["root"])
    try:
        return load_data(run["cfg"])
    finally:
        os.chdir(old)


@pytest.mark.parametrize("role", ["teacher", "student"])
def test_test_acc_is_the_saved_model_on_the_test_split(run, role):
    """test_acc recomputed from the saved (final) weights on the test images; val_acc from
    the same weights on the validation split: swapped loaders or a best-val save differ."""
    data = _data(run)
    m = run["metrics"][role]
    _assert_scores_recomputed(m, *run[role], data)
    assert len(data.split.val) == 100 and len(data.test_labels) == N_TEST
    if role == "student":  # the planted trajectory makes these differ; else the test is blind
        best, final = _planted_classes(data)
        share = lambda labels, c: round(100.0 * float((labels == c).sum()) / len(labels), 2)
        assert m["test_acc"] == share(data.test_labels, final)
        assert m["val_acc"] == share(data.labels[data.split.val], final)
        assert m["test_acc_at_best_val"] == share(data.test_labels, best)
        assert m["best_val_epoch"] == 1 < m["epochs"] == 2
        assert m["val_acc"] != m["test_acc"] != m["test_acc_at_best_val"]


def test_split_is_disjoint_and_covers_the_train_set(run):
    data = _data(run)
    train, val = set(data.split.train.tolist()), set(data.split.val.tolist())
    assert not train & val
    assert len(val) == 100 and len(train | val) == 600


def _embeddings(run, data, chosen, augment: bool = True, normalize: bool = True):
    """CAE codes of the chosen images as the official notebooks make them: the training
    loader's view (the CAE's flip + rotation, drawn from the loader's epoch-0 stream of the
    seed, in the order of ``chosen``), normalised, the model in eval mode."""
    from kdlab.schema import AugmentConfig

    cae, blob = run["cae"]
    seed = run["cfg"].seed
    aug = AugmentConfig(hflip=True, rotation=10.0, crop_padding=0) if augment else None
    loader = TensorLoader(
        data.images, data.labels, chosen, 10_000, blob["input_size"], data.spec.mean,
        data.spec.std, augment=aug, normalize=normalize, device=CPU,
    )  # fmt: skip
    g = torch.Generator().manual_seed(seed * 1_000_003)  # the loader's epoch-0 stream
    x, _ = loader.transform(data.images[chosen], g if augment else None)
    with torch.no_grad():
        return cae.eval().encode(x).double().flatten(1)


def test_soft_labels_embed_augmented_normalised_views(run):
    """The matrix is not the one of un-augmented or of raw [0, 1] images (a planted
    regression to either changes it beyond the tolerance of the recomputation)."""
    data, cfg = _data(run), run["cfg"]
    c = data.spec.num_classes
    chosen = sample_per_class(
        data.labels, data.split.train, cfg.soft_labels.samples_per_class, c, cfg.seed
    )
    from kdlab.softlabels import class_similarity

    labels = data.labels[chosen]
    used = class_similarity(_embeddings(run, data, chosen), labels, c)
    for aug, norm in ((False, True), (True, False)):
        other = class_similarity(_embeddings(run, data, chosen, aug, norm), labels, c)
        assert float((other - used).abs().max()) > 1e-3
    m = run["metrics"]["soft_labels"]
    assert (m["embedded_views"], m["embedded_normalized"]) == ("augmented", True)


def test_soft_label_csv_matches_an_independent_computation(run):
    """Cosine similarity of the CAE codes of the sampled images, mean over class pairs
    without self-pairs, gamma added after averaging, row softmax."""
    cfg, data = run["cfg"], _data(run)
    cae, blob = run["cae"]
    c = data.spec.num_classes
    chosen = sample_per_class(
        data.labels, data.split.train, cfg.soft_labels.samples_per_class, c, cfg.seed
    )
    emb = _embeddings(run, data, chosen)
    y = data.labels[chosen].tolist()
    n = len(y)
    z = torch.zeros(c, c, dtype=torch.float64)
    cnt = torch.zeros(c, c, dtype=torch.float64)
    for a in range(n):
        for b in range(n):
            if a != b:
                z[y[a], y[b]] += F.cosine_similarity(emb[a], emb[b], dim=0)
                cnt[y[a], y[b]] += 1
    z = z / cnt
    gamma = run["metrics"]["soft_labels"]["gamma"]
    assert gamma > 0  # a gamma of 0 would not tell "gamma dropped" from "gamma applied"
    expected = torch.softmax(z + gamma * torch.eye(c, dtype=torch.float64), dim=1)
    rows = [r.split(",") for r in run["soft_csv"].strip().splitlines()[1:]]
    got = torch.tensor([[float(v) for v in r[1:]] for r in rows], dtype=torch.float64)
    assert got.shape == (c, c)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_teacher_logits_both_views_recomputed(run):
    data = _data(run)
    teacher, blob = run["teacher"]
    logits = run["logits"]["logits"]
    train = data.split.train
    x = TensorLoader(
        data.images,
        data.labels,
        train,
        1024,
        blob["input_size"],
        data.spec.mean,
        data.spec.std,
        device=CPU,
    )
    with torch.no_grad():
        batches = list(x)
        idx = torch.cat([b.index for b in batches])
        plain = torch.cat([teacher(b.x) for b in batches])
        flipped = torch.cat([teacher(torch.flip(b.x, dims=[3])) for b in batches])
    torch.testing.assert_close(logits[0, idx], plain, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(logits[1, idx], flipped, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(plain, flipped, atol=1e-3)
    assert torch.isnan(logits[0, data.split.val]).all()


@pytest.mark.parametrize(("noise", "expected"), [(0.05, 17), (0.13, 43), (0.5, 166)])
def test_label_noise_manifest_counts_round(run, tmp_path, monkeypatch, noise, expected):
    """333 training images (subset 433 - 100 validation): 0.05 x 333 = 16.65 -> 17 flipped,
    0.13 x 333 = 43.29 -> 43, 0.5 x 333 = 166.5 -> 166 (Python's round, half to even)."""
    from kdlab.stages.data import download, split

    params = yaml.safe_load((run["root"] / "params.yaml").read_text())
    params["data"].update(subset=433, label_noise=noise)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tmp_path / "params.yaml")
    download(cfg)
    split(cfg)
    m = json.loads(paths.SPLIT.read_text())
    assert (m["n_train"], m["n_val"], m["n_noisy"]) == (333, 100, expected)
    assert len(m["noisy"]) == expected
    train = set(m["train_indices"])
    _, original = load(cfg.data.name, cfg.data.root, "train")
    for i, before, after in m["noisy"]:
        assert i in train and before == int(original[i]) and after != before


class _Interrupted(Exception):
    """Raised after the first checkpoint: the stage was killed mid-run."""


def _distill(run, changes: dict, capsys) -> tuple[dict, str]:
    """Run distill@kd in the fixture's directory with ``changes`` applied to its params
    (dotted keys); returns the stage's record and what it printed."""
    from kdlab.stages.distill import distill

    params = yaml.safe_load((run["root"] / "params.yaml").read_text())
    for dotted, value in changes.items():
        *parents, leaf = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        node[leaf] = value
    path = run["root"] / "params_changed.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(run["root"])
    try:
        capsys.readouterr()
        distill(load_config(path), "kd")
        return json.loads(paths.metrics("distill/kd").read_text()), capsys.readouterr().out
    finally:
        os.chdir(old)


def _interrupt_after_first_epoch(run, capsys, monkeypatch) -> None:
    """Leave a resume checkpoint of distill@kd written under the fixture's own params."""
    import kdlab.train

    save = kdlab.train._save_checkpoint

    def save_then_die(*args, **kwargs):
        save(*args, **kwargs)
        raise _Interrupted

    with monkeypatch.context() as m:
        m.setattr(kdlab.train, "_save_checkpoint", save_then_die)
        with pytest.raises(_Interrupted):
            _distill(run, {}, capsys)
    assert (run["root"] / paths.CHECKPOINTS / "distill_kd.pt").exists()


@pytest.mark.parametrize(
    "changes",
    [
        {"alpha": 0.9},
        {"temperature": 4.0},
        {"method_params.kd.reduction": "batchmean"},
        {"student.train.lr": 0.05},
        {"data.val_size": 120},
    ],
    ids=["alpha", "temperature", "method_params", "student_train", "data"],
)
def test_a_checkpoint_of_other_params_is_never_resumed(run, capsys, monkeypatch, changes):
    """A checkpoint left by an interrupted run is resumed by the same params only: under any
    other alpha, T, method param, training setting or data setting the stage starts over and
    gives exactly the result of a clean run."""
    ckpt = run["root"] / paths.CHECKPOINTS / "distill_kd.pt"
    _interrupt_after_first_epoch(run, capsys, monkeypatch)
    other, out = _distill(run, changes, capsys)
    assert f"ignoring checkpoint {paths.CHECKPOINTS / 'distill_kd.pt'}: written by a run " in out
    assert "resuming" not in out and not ckpt.exists()
    clean, _ = _distill(run, changes, capsys)
    timings = ("wall_time_s", "peak_rss_mib", "train_time_s")
    assert {k: v for k, v in other.items() if k not in timings} == {
        k: v for k, v in clean.items() if k not in timings
    }
    # The same params do resume it (so the refusals above are about identity, not format).
    _interrupt_after_first_epoch(run, capsys, monkeypatch)
    same, out = _distill(run, {}, capsys)
    assert "resuming from checkpoint" in out and "ignoring" not in out


def test_distilled_test_acc_is_the_saved_model_on_the_test_split(run, capsys, monkeypatch):
    from kdlab.artifacts import load_model

    # A planted trajectory: the best validation epoch is not the last and its model scores
    # differently, so a best-val save (instead of the final model) changes the numbers too.
    data = _data(run)
    planted_trajectory(monkeypatch, _planted_classes(data))
    record, _ = _distill(run, {}, capsys)
    assert record["val_acc"] != record["test_acc"] and record["best_val_epoch"] < record["epochs"]
    assert record["test_acc_at_best_val"] != record["test_acc"]
    model, blob = load_model(run["root"] / paths.distilled("kd"), CPU)
    _assert_scores_recomputed(record, model, blob, data)


def _normalised_test_images(data, size: int) -> torch.Tensor:
    """The test images as the official notebooks feed the CAE: resized, (x - mean) / std."""
    x = F.interpolate(data.test_images.float() / 255, size=(size, size), mode="bilinear")
    mean = torch.tensor(data.spec.mean).view(1, -1, 1, 1)
    std = torch.tensor(data.spec.std).view(1, -1, 1, 1)
    return (x - mean) / std


def test_cae_test_mse_is_the_saved_autoencoder_on_normalised_test_images(run):
    """Every official autoencoder notebook normalises its input and computes the MSE against
    that normalised input: the record's test MSE of the kept weights is recomputed that way."""
    data = _data(run)
    cae, blob = run["cae"]
    assert blob["normalize"] is True and blob["kept_epoch"] == run["metrics"]["cae"]["kept_epoch"]
    x = _normalised_test_images(data, blob["input_size"])
    assert float(x.min()) < 0  # normalised, not [0, 1]
    with torch.no_grad():
        mse = float(((cae(x) - x) ** 2).mean())
    assert run["metrics"]["cae"]["kept_test_mse"] == pytest.approx(mse, rel=1e-4, abs=1e-6)


def test_cae_saves_its_best_validation_epoch(run, tmp_path, monkeypatch):
    """``cae.keep: best_val`` saves the best-validation weights fit() kept, not the last.
    The run is constructed: fit is replaced by one whose final weights are all zero and whose
    best state is a known perturbation, so the two cannot coincide on any CPU."""
    import kdlab.stages.train as stage
    from kdlab.artifacts import load_model
    from kdlab.train import FitResult

    def fake_fit(log, objective, *args, **kwargs):
        best = {k: torch.full_like(v, 0.25) for k, v in objective.state_dict().items()}
        for v in objective.state_dict().values():
            v.zero_()
        row = {"epoch": 1, "val_mse": 0.5}
        return FitResult([row, {**row, "epoch": 2}], row, best, 1, 0.4, 1.0)

    monkeypatch.setattr(stage, "fit_logged", fake_fit)
    monkeypatch.chdir(run["root"])
    cae_before = paths.CAE.read_bytes()
    for keep, value in (("best_val", 0.25), ("final", 0.0)):
        cfg = replace(run["cfg"], cae=replace(run["cfg"].cae, keep=keep))
        try:
            stage.train_cae(cfg)
            model, blob = load_model(paths.CAE, CPU)
            record = json.loads(paths.metrics("cae").read_text())
        finally:
            paths.CAE.write_bytes(cae_before)  # the module's other tests read the real one
        assert all(bool((v == value).all()) for v in model.state_dict().values()), keep
        assert blob["kept_epoch"] == record["kept_epoch"] == (1 if keep == "best_val" else 2)


def test_a_resumed_stage_records_the_time_of_the_run_it_resumed(run, capsys, monkeypatch):
    """A stage interrupted and resumed reports what it cost in all: its record's wall_time_s
    and train_time_s include the interrupted process's training time (read from the
    checkpoint; set to 1,000 s here so the sum is unmistakable), not only the last process's."""
    import torch

    ckpt = run["root"] / paths.CHECKPOINTS / "distill_kd.pt"
    _interrupt_after_first_epoch(run, capsys, monkeypatch)
    state = torch.load(ckpt, weights_only=True)
    state["elapsed"] = 1000.0
    torch.save(state, ckpt)
    record, out = _distill(run, {}, capsys)
    assert "resuming from checkpoint" in out
    assert 1000.0 < record["train_time_s"] < 1000.0 + 300
    assert record["train_time_s"] <= record["wall_time_s"] < 1000.0 + 300


def test_a_planted_divergent_distill_fails_its_stage_and_writes_no_result(run, capsys):
    """Issue 23: a huge lr (planted divergence: NaN loss) makes distill@kd exit 2 with one line
    naming the stage, the epoch and the knob; no model or record is written, the summary is
    marked ``diverged`` and the reports print that mark instead of a number."""
    import json as _json

    from kdlab.cli import main
    from kdlab.reports.base import _cell
    from kdlab.reports.runs import mark_diverged

    params = yaml.safe_load((run["root"] / "params.yaml").read_text())
    params["student"]["train"].update(lr=10.0, schedule="constant", momentum=0.99)
    params["method_params"]["kd"]["reduction"] = "batchmean"
    params["temperature"] = 1000.0
    path = run["root"] / "params_diverge.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    old = os.getcwd()
    os.chdir(run["root"])
    try:
        for out in (paths.distilled("kd"), paths.metrics("distill/kd")):
            out.unlink(missing_ok=True)  # what DVC does before it runs the stage
        capsys.readouterr()
        assert main(["--params", str(path), "distill", "kd"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("kdlab distill: error: [distill@kd] diverged: ")
        assert "at epoch " in err and "likely knob: student.train.lr, alpha or temperature" in err
        assert not paths.distilled("kd").exists() and not paths.metrics("distill/kd").exists()
        summary = _json.loads(paths.summary("distill/kd").read_text())
        assert summary["kd"]["diverged"] >= 1
        scores = {"kd": dict(summary["kd"], test_acc=10.0)}
        mark_diverged(scores)
        assert _cell(scores["kd"]["test_acc"], None) == "diverged"
    finally:
        os.chdir(old)


def test_producers_refuse_non_finite_outputs(run):
    """Issue 23, item 11: a NaN teacher (teacher_logits) and a gamma past float32 (soft_labels)
    used to be written with exit 0 and cached by DVC; now each stage fails, writing nothing."""
    import dataclasses

    from kdlab.stages.softlabels import build_soft_labels
    from kdlab.stages.teacher_logits import teacher_logits

    old = os.getcwd()
    os.chdir(run["root"])
    teacher = paths.TEACHER.read_bytes()
    logits, matrix = paths.TEACHER_LOGITS.read_bytes(), paths.SOFT_LABELS.read_bytes()
    try:
        blob = torch.load(paths.TEACHER, weights_only=True)
        blob["state_dict"] = {
            k: v.fill_(float("nan")) if v.is_floating_point() else v
            for k, v in blob["state_dict"].items()
        }
        torch.save(blob, paths.TEACHER)
        with pytest.raises(ValueError, match=r"model.pt: non-finite logits for training image"):
            teacher_logits(run["cfg"])
        assert paths.TEACHER_LOGITS.read_bytes() == logits
        sl = dataclasses.replace(run["cfg"].soft_labels, gamma=1e300)
        with pytest.raises(ValueError, match=r"soft_labels \(gamma 1e\+300, .*: row 0, column"):
            build_soft_labels(dataclasses.replace(run["cfg"], soft_labels=sl))
        assert paths.SOFT_LABELS.read_bytes() == matrix
    finally:
        paths.TEACHER.write_bytes(teacher)
        os.chdir(old)


def test_every_stage_record_names_the_device_that_ran(run):
    """Reports name the device from the records: each stage's plain record carries the device
    it resolved, with the CPU's model name (read here from /proc/cpuinfo) and its threads."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [
        ln.split(":", 1)[1].strip()
        for ln in (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
        if ln.startswith("model name")
    ]
    threads = run["cfg"].threads  # tiny_params: 1
    for stage, record in run["metrics"].items():
        device = record["device"]
        assert device.startswith("cpu: ") and device.endswith(f", {threads} torch thread(s)")
        if names:
            assert device == f"cpu: {names[0]}, {threads} torch thread(s)", stage
