"""What every stage module shares: its command-line entry, and nothing else.

dvc.yaml runs each stage as ``PYTHONPATH=src python -m kdlab.stages.<module> [args]``, so the
process imports only that stage's code, and the stage's deps (generated from those imports by
``python -m kdlab.depgraph``) list only it. ``kdlab <command>`` (kdlab.cli) calls the same stage
functions and reports errors the same way (:func:`report_errors`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from kdlab.config import Config, load_config
from kdlab.errors import ConfigError

Stage = Callable[[Config, argparse.Namespace], None]


def run(
    prog: str,
    command: str,
    argv: list[str] | None,
    stage: Stage,
    arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    load: Callable[[str], Config] = load_config,
) -> int:
    """A stage module's ``main``: parse ``argv`` (``--params`` and the stage's own
    ``arguments``), load params.yaml with ``load`` and run ``stage(cfg, args)``; returns the
    exit status (errors: :func:`report_errors`). params.yaml's names were checked by the
    ``check`` stage, which every stage depends on (``data/params.ok``); an unknown name still
    fails here, in its registry's lookup."""
    parser = argparse.ArgumentParser(prog=f"python -m {prog}")
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    if arguments is not None:
        arguments(parser)
    args = parser.parse_args(argv)
    if argv is None:  # a real process (a stage), not a call from Python
        die_with_parent()
    name = getattr(args, "command", command)
    return report_errors(name, lambda: stage(load(args.params), args))


def report_errors(command: str, fn: Callable[[], object]) -> int:
    """Run ``fn``: 0 when it returns; a user's mistake (bad params, a missing or refused file,
    a diverged run) is one line ``kdlab <command>: error: ...`` on stderr and exit status 2.
    Anything else is a bug and keeps its traceback."""
    try:
        fn()
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as err:
        print(f"kdlab {command}: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"kdlab {command}: error: {_os_error(err)}", file=sys.stderr)
        return 2
    return 0


def die_with_parent() -> None:
    """Linux: ask the kernel to send SIGTERM to this process when its parent dies, so a killed
    ``dvc`` never leaves its stage training on as an orphan beside the next ``dvc repro``."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import os
    import signal

    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request: follow it now
        os.kill(os.getpid(), signal.SIGTERM)


def _os_error(err: OSError) -> str:
    """One line for a permission error, a full disk, a folder where a file was expected."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}"
