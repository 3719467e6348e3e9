import pytest
import torch

from kdlab.config import AugmentConfig, TrainConfig
from kdlab.data.pipeline import TensorLoader
from kdlab.errors import DivergenceError
from kdlab.methods import get_method
from kdlab.models import build_model
from kdlab.train import Divergence, check_divergence, fit, lr_factor


def cfg(**kw):
    base = dict(
        epochs=10,
        batch_size=8,
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=0.0,
        schedule="step",
        milestones=(3, 6),
        lr_decay=0.2,
        augment=AugmentConfig(hflip=True, rotation=0.0, crop_padding=0),
    )
    base.update(kw)
    return TrainConfig(**base)


def test_lr_schedules():
    c = cfg()
    assert [lr_factor(c, e * 5, 5) for e in (0, 2, 3, 5, 6, 9)] == pytest.approx(
        [1, 1, 0.2, 0.2, 0.04, 0.04]
    )
    cos = cfg(schedule="cosine")
    assert lr_factor(cos, 0, 5) == 1 and lr_factor(cos, 25, 5) == pytest.approx(0.5)
    one = cfg(schedule="onecycle")
    assert lr_factor(one, 0, 5) == pytest.approx(1 / 25)
    assert lr_factor(one, 12, 5) == pytest.approx(1.0)  # end of the 25% warm-up (12 of 50)
    assert lr_factor(one, 50, 5) == pytest.approx(0.0, abs=1e-9)


def _setup(seed=0):
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(1)
    labels = torch.arange(64) % 4
    images = (torch.rand(64, 1, 28, 28, generator=g) * 60).to(torch.uint8)
    for i, c in enumerate(labels):
        images[i, 0, 4 + 5 * c : 7 + 5 * c, 4:24] = 250
    common = dict(input_size=28, mean=(0.2,), std=(0.3,))
    train = TensorLoader(
        images,
        labels,
        torch.arange(48),
        8,
        augment=AugmentConfig(hflip=True, rotation=0.0, crop_padding=0),
        shuffle=True,
        seed=seed,
        **common,
    )
    val = TensorLoader(images, labels, torch.arange(48, 64), 16, **common)
    model = build_model("lenet5", 4, 1, input_size=28)
    return get_method("ce")(model), train, val


def test_training_learns_and_is_deterministic(tmp_path):
    d1, tr, va = _setup()
    r1 = fit(d1, tr, va, cfg(epochs=4, schedule="onecycle"), "t", log=lambda _: None)
    d2, tr, va = _setup()
    r2 = fit(d2, tr, va, cfg(epochs=4, schedule="onecycle"), "t", log=lambda _: None)
    # It learned: chance is 25%; three of four validation images right on any CPU (the exact
    # score depends on the CPU's rounding along the trajectory, the margin does not).
    assert r1.history[-1]["val_acc"] >= 75.0
    assert r1.history[0]["train_loss"] > r1.history[-1]["train_loss"]
    strip = [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in r1.history]
    assert strip == [{k: v for k, v in h.items() if k != "epoch_time_s"} for h in r2.history]


def test_interrupted_run_resumes_to_identical_result(tmp_path):
    c = cfg(epochs=4, schedule="onecycle")
    d_ref, tr, va = _setup()
    ref = fit(d_ref, tr, va, c, "t", log=lambda _: None)

    class Stop(Exception):
        pass

    d, tr, va = _setup()
    calls = {"n": 0}
    original = d.forward_train

    def crash_in_epoch_3(batch, epoch):
        if epoch == 2:
            raise Stop
        calls["n"] += 1
        return original(batch, epoch)

    d.forward_train = crash_in_epoch_3
    ckpt = tmp_path / "ck.pt"
    with pytest.raises(Stop):
        fit(d, tr, va, c, "t", checkpoint=ckpt, run_id="same", log=lambda _: None)
    assert ckpt.exists()
    d2, tr, va = _setup(seed=99)  # fresh weights: everything must come from the checkpoint
    tr.seed = 0
    logs = []
    out = fit(d2, tr, va, c, "t", checkpoint=ckpt, run_id="same", log=logs.append)
    assert "resuming from checkpoint" in logs[0] and out.resumed_from_epoch == 2
    assert not ckpt.exists()
    for a, b in zip(ref.history, out.history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)
        assert a["val_acc"] == b["val_acc"]
    for (k, v), (_, w) in zip(d_ref.state_dict().items(), d2.state_dict().items()):
        assert torch.allclose(v.float(), w.float(), atol=1e-5), k


def test_checkpoint_of_other_run_is_ignored(tmp_path):
    d, tr, va = _setup()
    ckpt = tmp_path / "ck.pt"
    torch.save({"run_id": "other"}, ckpt)
    logs = []
    out = fit(d, tr, va, cfg(epochs=1), "t", checkpoint=ckpt, run_id="mine", log=logs.append)
    assert "ignoring checkpoint" in logs[0] and out.resumed_from_epoch == 0


def test_nan_loss_stops_with_message():
    d, tr, va = _setup()
    with pytest.raises(DivergenceError, match=r"\[t\] diverged: loss became nan at epoch 1; "):
        fit(d, tr, va, cfg(epochs=1, lr=1e30, schedule="constant"), "t", log=lambda _: None)


def _at_chance(d):
    """The objective predicts class 0 for every image: 25% on the 4-class validation split."""
    d.forward_test = lambda x: torch.zeros(len(x), 4)
    return d


def test_accuracy_at_chance_after_the_warm_up_is_divergence(tmp_path):
    """Issue 23: the rule fires after warm-up + 3 epochs at <= chance + margin, naming the
    stage, the epoch and the knob; the resume checkpoint goes (resuming would diverge again)."""
    d, tr, va = _setup()
    ckpt = tmp_path / "ck.pt"
    rows = []
    rule = Divergence(chance=25.0, warmup=1, hint="student.train.lr")
    with pytest.raises(DivergenceError) as err:
        fit(_at_chance(d), tr, va, cfg(epochs=8), "distill@dkd", checkpoint=ckpt, run_id="r",
            log=lambda _: None, on_epoch=rows.append, divergence=rule)  # fmt: skip
    assert err.value.epoch == 5 and len(rows) == 5
    assert str(err.value) == (
        "[distill@dkd] diverged: validation accuracy 25.00% at epoch 5 stayed at chance level "
        "(<= 30.00% for 3 epochs after a warm-up of 1); likely knob: student.train.lr. "
        "No output was written"
    )
    assert not ckpt.exists()
    d, tr, va = _setup()  # no rule (a regression objective): never at chance
    assert len(fit(_at_chance(d), tr, va, cfg(epochs=4), "t", log=lambda _: None).history) == 4


@pytest.mark.parametrize(
    ("accs", "fires"),
    [
        ([10.0] * 4, False),  # before epoch 5 (the tiny fixtures' 2-4 epoch runs)
        ([10.0] * 5, True),
        ([9.0, 9.0, 11.0, 11.5, 11.0], True),  # within the margin (12% at 10 classes), flat
        ([9.0, 9.0, 10.0, 11.0, 11.9], False),  # a slow start that improves
        ([9.0, 9.0, 10.0, 10.0, 12.5], False),  # above the margin
        ([50.0, 60.0, 10.0, 10.0, 10.0], True),  # collapsed after learning (the DKD)
    ],
)
def test_the_chance_rule_has_a_margin_and_spares_slow_starts(accs, fires):
    history = [{"val_acc": a} for a in accs]
    rule = Divergence(chance=10.0)
    if fires:
        with pytest.raises(DivergenceError, match=f"at epoch {len(accs)} stayed at chance"):
            check_divergence(history, rule, "s")
    else:
        check_divergence(history, rule, "s")
    check_divergence(history, Divergence(chance=10.0, warmup=len(accs)), "s")  # still warming
