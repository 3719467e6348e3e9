"""``python -m kdlab``: the ``kdlab`` command, run from whichever ``kdlab`` package is first on
the path. (dvc.yaml runs each stage from its own module, ``PYTHONPATH=src python -m
kdlab.stages.<module>``: see kdlab.stages.common.)"""

import sys

from kdlab.cli import main

sys.exit(main())
