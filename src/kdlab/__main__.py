"""``python -m kdlab``: the ``kdlab`` command, run from whichever ``kdlab`` package is first on
the path. dvc.yaml runs every stage as ``PYTHONPATH=src python -m kdlab ...`` so that a stage
always executes the source of its own working tree (a queued experiment's copy, not the
installed checkout's), the same files DVC hashed as the stage's dependencies."""

import sys

from kdlab.cli import main

sys.exit(main())
