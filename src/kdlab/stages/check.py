"""``check`` stage: params.yaml validated whole (types, keys, names, models, sources) before
any other stage runs; each depends on its output, ``data/params.ok``."""

from __future__ import annotations

import argparse
import sys

from kdlab.checks import check_built, load_checked
from kdlab.config import Config
from kdlab.io import write_text
from kdlab.stages.common import run


def check(cfg: Config, params: str, write: str | None = None) -> None:
    """Check what :func:`kdlab.checks.load_checked` left to check (models, sources), print the
    summary and, with ``write``, write the marker file the other stages depend on."""
    check_built(cfg)
    print(
        f"{params}: OK ({cfg.data.name}; teacher {cfg.teacher.model}, student "
        f"{cfg.student.model}; methods {', '.join(cfg.methods)}; grid cells {len(cfg.grid)})"
    )
    if write:
        # Constant content: the `check` stage's output changes nothing downstream when it
        # passes; it exists so that every stage waits for the check.
        write_text(write, "params.yaml passed `kdlab check`\n")


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--write", metavar="FILE", help="on success write FILE (the stage)")


def main(argv: list[str] | None = None) -> int:
    """``python -m kdlab.stages.check [--write data/params.ok]``."""
    return run(
        "kdlab.stages.check",
        "check",
        argv,
        lambda cfg, args: check(cfg, args.params, args.write),
        _arguments,
        load=load_checked,
    )


if __name__ == "__main__":
    sys.exit(main())
