"""How close a student is to its teacher, on the test set (SRRL Tables 2 and 3).

- ``kl_teacher``: KL(p_T || p_S) of the softmax outputs at temperature 1, summed over classes
  and averaged over the test images (SRRL Table 2, "KL divergence between teacher and student").
- ``ce_label``: the student's cross-entropy to the ground-truth labels, averaged over images.
- ``l2_distance``: ||h_T - h_S||^2 of the penultimate (pooled) features, averaged over images.
  Only where the two features have the same width (WRN-16-4 and WRN-40-4 both have 256):
  otherwise it is not defined and is left out.
- ``l2_normalised``: the same on L2-normalised features, ||h_T/|h_T| - h_S/|h_S|||^2 =
  2 - 2 cos(h_T, h_S): what SRRL Table 3 reports (``kdlab report srrl_table3``). The paper ships
  no code for it; its values (1.01 to 1.48) lie in this measure's range [0, 4] (cosines 0.26 to
  0.50 between non-negative post-ReLU features), while the unnormalised squared distance of
  two independently trained networks' 256-d features grows with their magnitudes and has no
  such scale (docs/methods.md).
- ``nmi``: normalised mutual information (%) between the test labels and a k-means clustering
  of the features (k = number of classes; scikit-learn's KMeans and
  normalized_mutual_info_score, arithmetic normalisation), SRRL Table 3's "NMI" (Manning et al.).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    """Mean over images of KL(softmax(teacher) || softmax(student)), at temperature 1."""
    log_s = F.log_softmax(student_logits.double(), dim=1)
    log_t = F.log_softmax(teacher_logits.double(), dim=1)
    return float((log_t.exp() * (log_t - log_s)).sum(1).mean())


def ce_to_labels(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean cross-entropy of ``logits`` to the labels."""
    return float(F.cross_entropy(logits.double(), labels))


def feature_l2(student: torch.Tensor, teacher: torch.Tensor) -> float | None:
    """Mean over images of ||h_T - h_S||^2; None where the feature widths differ."""
    if student.shape != teacher.shape:
        return None
    return float((teacher.double() - student.double()).pow(2).sum(1).mean())


def feature_l2_normalised(student: torch.Tensor, teacher: torch.Tensor) -> float | None:
    """Mean over images of ||h_T/|h_T| - h_S/|h_S|||^2; None where the widths differ."""
    if student.shape != teacher.shape:
        return None
    s = F.normalize(student.double(), dim=1)
    t = F.normalize(teacher.double(), dim=1)
    return float((t - s).pow(2).sum(1).mean())


def feature_nmi(features: torch.Tensor, labels: torch.Tensor, num_classes: int, seed: int) -> float:
    """NMI (%) between ``labels`` and a seeded k-means clustering (k = ``num_classes``)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    clusters = KMeans(n_clusters=num_classes, n_init=10, random_state=seed).fit_predict(
        features.double().numpy()
    )
    return 100.0 * float(normalized_mutual_info_score(labels.numpy(), clusters))


def closeness(
    logits: torch.Tensor,
    features: torch.Tensor,
    teacher_logits: torch.Tensor,
    teacher_features: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
) -> dict[str, float]:
    """Every measure of this module for one model, plus its test accuracy (%)."""
    out = {
        "test_acc": 100.0 * float((logits.argmax(1) == labels).double().mean()),
        "kl_teacher": kl_to_teacher(logits, teacher_logits),
        "ce_label": ce_to_labels(logits, labels),
        "nmi": feature_nmi(features, labels, logits.shape[1], seed),
    }
    l2 = feature_l2(features, teacher_features)
    if l2 is not None:
        out["l2_distance"] = l2
        out["l2_normalised"] = feature_l2_normalised(features, teacher_features)
    return {k: round(v, 4) for k, v in out.items()}
