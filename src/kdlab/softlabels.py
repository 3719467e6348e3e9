"""ReffAKD soft labels: CAE embeddings -> class-similarity matrix -> + gamma -> row softmax.

Construction (ReffAKD's section 3.2, checked against the official notebooks): cosine similarity
of every pair of distinct sampled images; z_ij is the mean over x in class i, y in class j (no
self-pairs on the diagonal); gamma is added to z_ii after averaging; each row is soft-maxed at
T = 1. A sample's soft target is the row of its label. The matrix travels between stages as a
CSV file (:func:`write_matrix`, :func:`read_soft_labels`).
"""

from __future__ import annotations

import csv
import io

import torch
import torch.nn.functional as F

from kdlab import paths
from kdlab.io import write_text


def class_similarity(embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int):
    """Mean cosine similarity between the images of every pair of classes (``c x c``)."""
    e = F.normalize(embeddings.double().flatten(1), dim=1)
    sim = e @ e.t()
    onehot = F.one_hot(labels, num_classes).double()  # n x c
    sums = onehot.t() @ sim @ onehot  # c x c: sum over x in i, y in j
    counts = onehot.sum(0)
    pairs = counts[:, None] * counts[None, :]
    # Remove self-pairs (cos(x, x) = 1) from the diagonal sums and counts.
    self_sums = onehot.t() @ sim.diagonal()
    sums = sums - torch.diag(self_sums)
    pairs = pairs - torch.diag(counts)
    if (pairs <= 0).any():
        raise ValueError("every class needs at least 2 sampled images for the similarity matrix")
    return (sums / pairs).float()


def search_gamma(z: torch.Tensor, step: float, maximum: float) -> float:
    """The paper's grid search: the smallest gamma in {0, step, 2 step, ...} <= maximum for
    which every row's largest entry is its own class (strictly)."""
    c = z.shape[0]
    off = z.masked_fill(torch.eye(c, dtype=torch.bool), -torch.inf).max(dim=1).values
    n = int(round(maximum / step))
    for k in range(n + 1):
        gamma = round(k * step, 10)
        if bool((z.diagonal() + gamma > off).all()):
            return gamma
    needed = float((off - z.diagonal()).max())
    raise ValueError(
        f"soft_labels.gamma_max = {maximum} is too small: the diagonal needs gamma > {needed:.4g}"
    )


def soft_labels_from_similarity(z: torch.Tensor, gamma: float) -> torch.Tensor:
    """Row softmax of ``z + gamma * I``: gamma is added AFTER averaging (official code)."""
    return torch.softmax(z + gamma * torch.eye(z.shape[0], dtype=z.dtype), dim=1)


def soft_label_matrix(
    embeddings: torch.Tensor, labels: torch.Tensor, num_classes: int, gamma: float
) -> torch.Tensor:
    """``c x c`` row-stochastic soft-label matrix: softmax(z + gamma * I) row by row."""
    return soft_labels_from_similarity(class_similarity(embeddings, labels, num_classes), gamma)


def uniform_off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    """The same-strength label-smoothing control of a soft-label matrix: each row keeps its
    diagonal entry and spreads the rest of its mass evenly over the other classes, so the
    class structure of the off-diagonal entries is removed and nothing else changes."""
    c = matrix.shape[0]
    diag = matrix.diagonal()
    off = ((1 - diag) / (c - 1))[:, None].expand(c, c)
    eye = torch.eye(c, dtype=torch.bool, device=matrix.device)
    return torch.where(eye, diag[:, None].expand(c, c), off).to(matrix.dtype)


def check_soft_labels(matrix: torch.Tensor, num_classes: int, source: str) -> torch.Tensor:
    """Validate a soft-label matrix before use: ``C x C``, finite, >= 0, rows summing to 1."""
    if matrix.shape != (num_classes, num_classes):
        raise ValueError(
            f"{source}: soft-label matrix has shape {tuple(matrix.shape)}; allowed: "
            f"{num_classes} x {num_classes} (one row and one column per class)"
        )
    bad = ~torch.isfinite(matrix) | (matrix < 0)
    if bad.any():
        i, j = (int(v) for v in bad.nonzero()[0])
        raise ValueError(
            f"{source}: row {i}, column {j} = {float(matrix[i, j])}; allowed: a finite "
            "probability >= 0"
        )
    sums = matrix.double().sum(1)
    off = (sums - 1).abs() > 1e-4
    if off.any():
        i = int(off.nonzero()[0])
        raise ValueError(f"{source}: row {i} sums to {float(sums[i]):.6f}; allowed: 1")
    return matrix


def sample_per_class(
    labels: torch.Tensor, positions: torch.Tensor, per_class: int, num_classes: int, seed: int
) -> torch.Tensor:
    """Seeded choice of ``per_class`` positions (from ``positions``) for every class."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in range(num_classes):
        pool = positions[labels[positions] == c]
        if len(pool) < per_class:
            raise ValueError(
                f"class {c} has {len(pool)} training images; soft_labels.samples_per_class "
                f"= {per_class} needs at least that many"
            )
        chosen.append(pool[torch.randperm(len(pool), generator=g)[:per_class]].sort().values)
    return torch.cat(chosen)


def write_matrix(matrix: torch.Tensor, names: list[str], path=paths.SOFT_LABELS) -> None:
    """The matrix as CSV: a header of class names, one row per class (its soft label)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["label", *names])
    for i, name in enumerate(names):
        w.writerow([name, *(f"{float(v):.8f}" for v in matrix[i])])
    write_text(path, buf.getvalue())


def read_soft_labels(num_classes: int, path=paths.SOFT_LABELS) -> torch.Tensor:
    """Read and validate the matrix :func:`write_matrix` wrote (the soft_labels stage)."""
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run `dvc repro soft_labels` first")
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.reader(fh))[1:]
    try:
        values = [[float(v) for v in r[1:]] for r in rows]
        matrix = torch.tensor(values, dtype=torch.float32)
    except ValueError as err:  # a non-number, or rows of different lengths
        msg = f"{path}: not a numeric matrix ({err}); rerun `dvc repro -f soft_labels`"
        raise ValueError(msg) from None
    return check_soft_labels(matrix, num_classes, str(path))
