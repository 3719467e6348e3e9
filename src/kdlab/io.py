"""Atomic file writes: a crash mid-write never leaves a half-written output behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write to a temporary file in the target folder, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Atomically write a text file."""

    def _w(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)

    return _atomic(path, _w)


def write_json(path: str | Path, obj: Any) -> Path:
    """Atomically write pretty, key-sorted JSON (stable diffs in git)."""
    return write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def torch_save(path: str | Path, obj: Any) -> Path:
    """Atomically save a torch object."""
    return _atomic(path, lambda tmp: torch.save(obj, tmp))


def torch_load(path: str | Path) -> Any:
    """Load a torch object saved by :func:`torch_save` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def save_figure(path: str | Path, fig: Any) -> Path:
    """Atomically save a matplotlib figure as PNG."""
    return _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
