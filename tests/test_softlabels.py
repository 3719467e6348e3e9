import itertools

import numpy as np
import pytest
import torch

from kdlab.softlabels import class_similarity, sample_per_class, search_gamma, soft_label_matrix


def loop_similarity(e, y, c):
    """z_ij by explicit loops over pairs (no self-pairs on the diagonal)."""
    z = np.zeros((c, c))
    for i, j in itertools.product(range(c), range(c)):
        vals = [
            float(np.dot(e[a], e[b]) / (np.linalg.norm(e[a]) * np.linalg.norm(e[b])))
            for a in range(len(y))
            for b in range(len(y))
            if y[a] == i and y[b] == j and a != b
        ]
        z[i, j] = np.mean(vals)
    return z


def test_matrix_matches_loops_and_gamma_is_added_after_averaging():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(12, 6, generator=g)
    y = torch.tensor([0, 1, 2] * 4)
    z = loop_similarity(e.numpy().astype(np.float64), y.numpy(), 3)
    assert np.allclose(class_similarity(e, y, 3).numpy(), z, atol=1e-6)
    gamma = 0.3
    expected = np.exp(z + gamma * np.eye(3))
    expected /= expected.sum(1, keepdims=True)
    m = soft_label_matrix(e, y, 3, gamma)
    assert np.allclose(m.numpy(), expected, atol=1e-6)
    assert torch.allclose(m.sum(1), torch.ones(3))


def test_gamma_search_is_smallest_on_grid():
    z = torch.tensor([[0.5, 0.6, 0.1], [0.2, 0.4, 0.3], [0.0, 0.1, 0.9]])
    # Row 0 needs gamma > 0.1; on a 0.05 grid the smallest is 0.15.
    assert search_gamma(z, 0.05, 1.0) == pytest.approx(0.15)
    assert search_gamma(torch.eye(3), 0.01, 1.0) == 0.0
    with pytest.raises(ValueError, match="gamma_max = 0.05 is too small"):
        search_gamma(z, 0.01, 0.05)


def test_sample_per_class_seeded_and_balanced():
    labels = torch.arange(200) % 5
    positions = torch.nonzero(labels % 2 == 0).flatten()  # only classes 0, 2 and 4
    with pytest.raises(ValueError, match="class 1 has 0 training images"):
        sample_per_class(labels, positions, 4, 5, seed=0)
    pos = torch.arange(200)
    a = sample_per_class(labels, pos, 4, 5, seed=0)
    assert torch.equal(a, sample_per_class(labels, pos, 4, 5, seed=0))
    assert torch.bincount(labels[a]).tolist() == [4] * 5
