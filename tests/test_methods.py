import pytest
import torch
import torch.nn.functional as F

from fixtures import method_params
from kdlab.data.pipeline import Batch
from kdlab.losses import kd_loss, soft_target_kd_loss
from kdlab.methods import get_method, method_names
from kdlab.methods.base import TeacherLogits
from kdlab.models import build_model


def batch():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 1, 28, 28, generator=g)
    return Batch(
        x=x,
        y=torch.tensor([0, 1, 2, 3, 4, 5]),
        index=torch.arange(6),
        flipped=torch.tensor([0, 1, 0, 1, 0, 1], dtype=torch.bool),
    )


def student():
    torch.manual_seed(0)
    return build_model("lenet5", 10, 1, input_size=28)


def test_registry():
    assert {"ce", "kd", "reffakd", "dkd", "reffakd_dkd"} <= set(method_names())
    with pytest.raises(ValueError, match="unknown method 'x'; allowed: ce,"):
        get_method("x")


def test_kd_uses_cached_view_and_weights_terms():
    b = batch()
    cached = torch.randn(2, 6, 10)
    d = get_method("kd")(
        student(),
        method_params("kd", reduction="batchmean"),
        alpha=0.7,
        temperature=4.0,
        teacher=TeacherLogits(cached=cached),
    )
    logits, losses = d.forward_train(b, 0)
    t = cached[b.flipped.long(), b.index]
    assert torch.allclose(losses["kd"], 0.7 * kd_loss(logits, t, 4.0))
    assert torch.allclose(losses["ce"], 0.3 * F.cross_entropy(logits, b.y))


def test_reffakd_is_teacher_free_and_uses_label_rows():
    b = batch()
    soft = torch.softmax(torch.randn(10, 10), 1)
    cls = get_method("reffakd")
    assert not cls.needs_teacher and cls.needs_soft_labels
    d = cls(
        student(),
        method_params("reffakd", reduction="batchmean"),
        alpha=0.6,
        temperature=20.0,
        soft_labels=soft,
        teacher=TeacherLogits(cached=torch.zeros(2, 6, 10)),
    )
    assert d.teacher is None  # never kept, never run
    logits, losses = d.forward_train(b, 0)
    assert torch.allclose(losses["kd"], 0.6 * soft_target_kd_loss(logits, soft[b.y], 20.0))


def test_dkd_warmup_ramps_linearly():
    b = batch()
    d = get_method("dkd")(
        student(),
        method_params("dkd", warmup_epochs=4),
        alpha=1.0,
        temperature=4.0,
        teacher=TeacherLogits(cached=torch.randn(2, 6, 10)),
    )
    terms = [d.forward_train(b, e)[1]["dkd"].item() for e in (0, 1, 3, 7)]
    assert terms[1] == pytest.approx(2 * terms[0], rel=1e-5)
    assert terms[2] == pytest.approx(terms[3], rel=1e-5) == pytest.approx(4 * terms[0], rel=1e-5)


def test_missing_knowledge_source_fails_at_start():
    with pytest.raises(ValueError, match="method 'kd' needs a teacher"):
        get_method("kd")(student(), method_params("kd"), alpha=0.5, temperature=4.0)
    with pytest.raises(ValueError, match="method 'reffakd' needs the soft-label matrix"):
        get_method("reffakd")(student(), method_params("reffakd"), alpha=0.5, temperature=4.0)


def test_live_teacher_resizes_input():
    teacher = build_model("lenet5", 10, 1, input_size=32).eval()
    tl = TeacherLogits(model=teacher, input_size=32)
    b = batch()
    out = tl(b)
    ref = teacher(F.interpolate(b.x, size=(32, 32), mode="bilinear", align_corners=False))
    assert torch.allclose(out, ref)


@pytest.mark.parametrize("name", ["kd", "reffakd", "dkd", "reffakd_dkd"])
def test_reduction_param_is_required_and_validated(name):
    from kdlab.config import ConfigError

    cls = get_method(name)
    block = method_params(name)
    del block["reduction"]
    with pytest.raises(ConfigError, match=rf"method_params\.{name}\.reduction is missing"):
        cls.resolve_params(block)  # no default in code: presets/default.yaml has it
    cls.validate_params(method_params(name, reduction="mean"), f"method_params.{name}.")
    with pytest.raises(ConfigError) as err:
        cls.validate_params(method_params(name, reduction="sum"), f"method_params.{name}.")
    assert str(err.value) == (
        f"params.yaml: method_params.{name}.reduction = 'sum' is not allowed; "
        "allowed: batchmean | mean"
    )


def test_mean_reduction_divides_the_term_by_the_classes():
    # nn.KLDivLoss()'s default (the ReffAKD notebooks) is batchmean / classes, for both the
    # teacher (kd) and the soft-label (reffakd) sources.
    b = batch()
    soft = torch.softmax(torch.randn(10, 10), 1)
    cached = TeacherLogits(cached=torch.randn(2, 6, 10))
    for name, kw in (("kd", {"teacher": cached}), ("reffakd", {"soft_labels": soft})):
        cls = get_method(name)
        terms = []
        for reduction in ("batchmean", "mean"):
            params = method_params(name, reduction=reduction)
            d = cls(student(), params, alpha=0.5, temperature=4.0, **kw)
            terms.append(d.forward_train(b, 0)[1]["kd"].detach())
        assert float(terms[1]) == pytest.approx(float(terms[0]) / 10, rel=1e-6)


def test_default_preset_uses_the_fmnist_notebooks_reduction(default_params):
    mp = default_params["method_params"]
    assert mp["kd"]["reduction"] == mp["reffakd"]["reduction"] == "mean"
    assert mp["dkd"]["reduction"] == mp["reffakd_dkd"]["reduction"] == "batchmean"


def test_paper_presets_use_each_notebooks_reduction():
    from kdlab.checks import load_preset

    for preset, kd, reffakd in (
        ("paper", "mean", "mean"),
        ("reffakd_tiny", "mean", "mean"),
        ("reffakd_cifar100", "mean", "batchmean"),
    ):
        mp = load_preset(preset).method_params
        assert (mp["kd"]["reduction"], mp["reffakd"]["reduction"]) == (kd, reffakd), preset


def test_knowledge_source_follows_the_declared_needs():
    assert get_method("kd").knowledge() == "teacher"
    assert get_method("fitnet").knowledge() == "teacher"
    assert get_method("reffakd").knowledge() == get_method("reffakd_dkd").knowledge()
    assert get_method("reffakd").knowledge() == "soft_labels"
    assert get_method("ce").knowledge() == "labels"


def test_top5_accuracy_is_counted_against_an_independent_computation():
    """val_top5 = share of samples whose label is among the 5 largest logits (numpy argsort),
    reported only with more than 10 classes; val_acc from the argmax."""
    import numpy as np

    from kdlab.data.pipeline import Batch
    from kdlab.methods.base import TOP5_MIN_CLASSES

    class Logits(torch.nn.Module):  # the "student" returns its input: the logits
        def forward(self, x):
            return x

    g = torch.Generator().manual_seed(3)
    for classes in (TOP5_MIN_CLASSES, 100):
        logits = torch.randn(50, classes, generator=g)
        labels = torch.randint(0, classes, (50,), generator=g)
        batches = [
            Batch(x=logits[i : i + 16], y=labels[i : i + 16], index=None, flipped=None)
            for i in range(0, 50, 16)
        ]
        out = get_method("ce")(Logits()).evaluate(batches)
        order = np.argsort(-logits.numpy(), axis=1)
        top1 = 100.0 * np.mean(order[:, 0] == labels.numpy())
        top5 = 100.0 * np.mean([y in row[:5] for row, y in zip(order, labels.numpy())])
        assert out["val_acc"] == pytest.approx(top1)
        if classes > TOP5_MIN_CLASSES:
            assert out["val_top5"] == pytest.approx(top5) and top1 < top5 < 100
        else:
            assert "val_top5" not in out
