"""The linear probe against scikit-learn's logistic regression, and its honesty."""

import pytest
import torch

from kdlab.config import ProbeConfig
from kdlab.probe import linear_probe

CFG = ProbeConfig(datasets=("x",), epochs=40, batch_size=64, lr=0.1, weight_decay=0.0)


def gaussian_classes(n, seed, shift=2.0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centres = torch.randn(4, 8, generator=torch.Generator().manual_seed(99)) * shift
    return centres[y] + torch.randn(n, 8, generator=g), y


def test_probe_agrees_with_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    x, y = gaussian_classes(800, 1, shift=0.8)
    xt, yt = gaussian_classes(400, 2, shift=0.8)
    ours = linear_probe(x, y, xt, yt, 4, CFG, seed=0)
    ref = LogisticRegression(max_iter=2000).fit(x.numpy(), y.numpy())
    theirs = 100.0 * float((torch.from_numpy(ref.predict(xt.numpy())) == yt).double().mean())
    assert 50 < theirs < 99  # a problem with errors to get right
    assert ours == pytest.approx(theirs, abs=2.5)


def test_probe_learns_from_the_training_split_only():
    # Classes far apart (every point is at least 11 units nearer its own centre than any
    # other, noise 1): a linear probe separates them all on any CPU, so the scores are exact.
    x, y = gaussian_classes(400, 3, shift=6.0)
    assert linear_probe(x, y, x, y, 4, CFG, seed=0) == 100.0
    # Test labels that the features do not predict: chance, whatever the test split holds.
    wrong = (y + 1 + torch.arange(400) % 3) % 4
    assert linear_probe(x, y, x, wrong, 4, CFG, seed=0) == 0.0


def test_probe_is_seeded():
    x, y = gaussian_classes(300, 4, shift=0.5)
    xt, yt = gaussian_classes(300, 5, shift=0.5)
    a = linear_probe(x, y, xt, yt, 4, CFG, seed=7)
    torch.manual_seed(123)  # the global RNG plays no part
    assert linear_probe(x, y, xt, yt, 4, CFG, seed=7) == a
