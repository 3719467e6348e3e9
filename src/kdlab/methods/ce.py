"""``ce``: the student trained on hard labels only (the baseline row of every table)."""

from kdlab.methods import register
from kdlab.methods.base import Distiller


@register
class CrossEntropy(Distiller):
    name = "ce"
    description = "cross-entropy on hard labels only (baseline; alpha and T are ignored)"
