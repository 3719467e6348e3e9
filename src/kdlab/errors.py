"""The project's error types: a user's mistake (bad params, a refused file) is one of these and
`kdlab` prints it as one line with exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A bad value in params.yaml."""


class UnsafeFileError(ValueError):
    """A ``.pt`` file that is corrupt or needs more than plain tensors, numbers and strings."""
