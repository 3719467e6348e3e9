"""kdlab: a reproducible knowledge-distillation laboratory."""

__version__ = "0.1.0"
