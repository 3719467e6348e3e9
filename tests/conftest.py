"""Shared test setup: quiet, single-threaded, deterministic."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import yaml

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ["KDLAB_PROGRESS"] = "0"
torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).parent))

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def default_params() -> dict:
    """The default preset (default.yaml, whatever the workspace params.yaml holds)."""
    with open(REPO / "src/kdlab/presets/default.yaml", encoding="utf-8") as fh:
        return yaml.safe_load(fh)
