"""Hao Figure 3 machinery: epoch k of a long constant-lr run is the k-epoch run; the grid."""

import pandas as pd
import torch

from kdlab.config import NO_AUGMENT, TrainConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.methods import get_method
from kdlab.models import build_model
from kdlab.reports.hao import alpha_epochs, plot
from kdlab.train import fit


def _run(epochs, test_epochs=()):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(48) % 4
    images = (torch.rand(48, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    common = dict(input_size=28, mean=(0.2,), std=(0.3,))
    train = TensorLoader(images, labels, torch.arange(32), 8, shuffle=True, seed=0, **common)
    val = TensorLoader(images, labels, torch.arange(32, 40), 16, **common)
    test = TensorLoader(images, labels, torch.arange(40, 48), 16, **common)
    obj = get_method("ce")(build_model("hao_student", 4, 1, input_size=28))
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=8,
        optimizer="adam",
        lr=1e-3,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        milestones=(),
        lr_decay=0.2,
        augment=NO_AUGMENT,
        test_epochs=test_epochs,
    )
    r = fit(obj, train, val, cfg, "t", log=lambda _: None, test_loader=test)
    history = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in r.history]
    return history, obj.evaluate(test)


def test_epoch_k_of_a_long_constant_lr_run_is_the_k_epoch_run():
    short, short_test = _run(2)
    long, _ = _run(4, test_epochs=(2, 3))
    assert len(short) == 2 and len(long) == 4
    # The test scores measured after epochs 2 and 3 are extra keys; nothing else changes.
    plain = [{k: v for k, v in h.items() if not k.startswith("test_")} for h in long]
    assert short == plain[:2]  # every logged number of epochs 1-2, bit for bit
    assert long[3]["train_loss"] != long[1]["train_loss"]  # training went on
    assert [sorted(k for k in h if k.startswith("test_")) for h in long] == [
        [],
        ["test_acc", "test_loss"],
        ["test_acc", "test_loss"],
        [],
    ]
    # Epoch 2's test accuracy of the long run is the final test accuracy of the 2-epoch run.
    assert long[1]["test_acc"] == short_test["val_acc"]
    assert long[1]["test_loss"] == short_test["val_loss"]
    assert long[2]["test_loss"] != long[1]["test_loss"]


def test_alpha_epochs_grid_and_plot(tmp_path):
    def hist(n, base):
        return pd.DataFrame({"epoch": range(1, n + 1), "test_acc": [base + e for e in range(n)]})

    df = alpha_epochs({0.1: hist(1000, 50.0), 1.0: hist(300, 10.0)})
    assert list(df.columns) == ["paper alpha", "our alpha", "100", "300", "500", "1000"]
    # paper alpha = 1 - ours, sorted by the paper's alpha; epoch e is row e (value base + e - 1)
    assert df["paper alpha"].tolist() == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    assert df.iloc[0][["100", "300"]].tolist() == [109.0, 309.0]
    assert df.iloc[0][["500", "1000"]].isna().all()  # the 300-epoch run is missing them
    assert df.iloc[9]["1000"] == 1049.0
    assert df.iloc[1:9][["100", "300", "500", "1000"]].isna().all().all()  # no run: missing
    png = tmp_path / "f.png"
    plot(df, png, "val_acc (%)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


HAO_STAGE = """
import json, os, yaml
p = yaml.safe_load(open("params.yaml"))
a = float(p["alpha"])
os.makedirs("metrics/distill/kd/plots/metrics", exist_ok=True)
with open("metrics/distill/kd/plots/metrics/test_acc.tsv", "w") as fh:
    fh.write("step\\ttest_acc\\n")
    for e in (100, 300):  # test accuracy after epochs 100 and 300 of a 300-epoch run
        fh.write(f"{e - 1}\\t{50 + 10 * a + e / 100}\\n")
json.dump({"step": 299, "kd": {"test_acc": 50 + 10 * a + 3}},
          open("metrics/distill/kd/metrics.json", "w"))
json.dump({"test_acc": 1.0, "wall_time_s": 100 * a}, open("metrics/distill/kd.json", "w"))
json.dump({"test_acc": 77.5}, open("metrics/teacher.json", "w"))
"""


def test_hao_figure_from_a_real_dvc_repo(tmp_path):
    import csv

    from fixtures import one_stage_repo
    from kdlab.reports.hao import report_hao_figure3

    sh = one_stage_repo(  # our alpha 1.0 = the paper's 0.0
        tmp_path,
        HAO_STAGE,
        "preset: hao\nalpha: 1.0\nseed: 0\nmethods: {kd: teacher}\ndevice: cpu\n"
        "data: {name: fashion_mnist, subset: 11000, val_size: 1000, label_noise: 0.05}\n"
        "student: {model: hao_student, train: {epochs: 300}}\n"
        "teacher: {model: hao_teacher, options: {}, train: {epochs: 20}}\n",
        ["alpha", "preset", "methods"],
        outs=["metrics/distill/kd.json", "metrics/distill/kd/plots", "metrics/teacher.json"],
        metrics=["metrics/distill/kd/metrics.json"],
    )
    dvc = sh.dvc
    sh(*dvc, "exp", "run", "-q", "-S", "alpha=0.5")
    out = report_hao_figure3(tmp_path)
    md = out.read_text()
    assert out == tmp_path / "results/hao_figure3.md"
    assert "2 of 10 alphas have a run; not run: paper alpha 0.1, 0.2, 0.3, 0.4, 0.6" in md
    # paper alpha 0.0 (ours 1.0): 50 + 10 + 1 after epoch 100; 0.5: 50 + 5 + 3 after 300
    assert "| 0.00 | 1.00 | 61.00 | 63.00 | — | — |" in md
    assert "| 0.50 | 0.50 | 56.00 | 58.00 | — | — |" in md and "| 0.30 | 0.70 | — | — |" in md
    with open(out.with_suffix(".csv")) as fh:
        rows = {r["paper alpha"]: r for r in csv.DictReader(fh)}
    assert float(rows["0.0"]["100"]) == 61.0 and float(rows["0.5"]["300"]) == 58.0
    assert rows["0.0"]["500"] == "" and rows["0.3"]["100"] == ""
    assert "Measured: 2 stages of kd over 2 runs took 150 s of wall time" in md
    assert "11000 images of which 1000 held out for validation, 5% of the training labels" in md
    assert "reaches 77.50% test accuracy" in md
    assert out.with_suffix(".png").read_bytes()[:4] == b"\x89PNG"
