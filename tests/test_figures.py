"""Hao Figure 3 machinery: epoch k of a long constant-lr run is the k-epoch run; the grid."""

import pandas as pd
import torch

from kdlab.config import AugmentConfig, TrainConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.figures import alpha_epochs, plot
from kdlab.methods import get_method
from kdlab.models import build_model
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
        augment=AugmentConfig(),
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
    assert df["paper alpha"].tolist() == [0.0, 0.9]
    assert df.iloc[0][["100", "300"]].tolist() == [109.0, 309.0]
    assert df.iloc[0][["500", "1000"]].isna().all()  # the 300-epoch run is missing them
    assert df.iloc[1]["1000"] == 1049.0
    png = tmp_path / "f.png"
    plot(df, png, "val_acc (%)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
