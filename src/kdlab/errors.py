"""The project's error types: a user's mistake (bad params, a refused file) is one of these and
`kdlab` prints it as one line with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad value in params.yaml."""


class UnsafeFileError(ValueError):
    """A ``.pt`` file that is corrupt or needs more than plain tensors, numbers and strings."""


class DivergenceError(RuntimeError):
    """A training stage diverged: its loss became non-finite or its validation accuracy stayed
    at chance level after its warm-up (:func:`kdlab.train.check_divergence`)."""

    def __init__(self, message: str, epoch: int) -> None:
        super().__init__(message)
        self.epoch = epoch
