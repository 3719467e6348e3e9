"""Atomic file writes: a crash mid-write never leaves a half-written output behind."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from kdlab.errors import UnsafeFileError

# Temporary files live here (under the working directory, so on the same file system as the
# outputs) and never inside an output folder, which DVC would hash with a stray ``.tmp`` in it.
TMP_DIR = Path(".kdlab-tmp")


def _tmp_dir(path: Path) -> Path:
    """Where ``path``'s temporary file goes: :data:`TMP_DIR` for a target under the working
    directory, else the target's own folder (a file outside the repository)."""
    try:
        path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path.parent
    TMP_DIR.mkdir(exist_ok=True)
    return TMP_DIR


def _atomic(path: str | Path, write: Callable[[str], None]) -> Path:
    """Write a temporary file, flush it to disk, then rename it into place: a kill or a full
    disk leaves the previous file (or none), never a 0-byte or half-written one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{path.name}.", suffix=".tmp", dir=_tmp_dir(path))
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())  # a full disk fails here, before anything is replaced
        try:
            os.replace(tmp, path)
        except OSError as err:  # another file system (a mounted data/): stage beside it
            if err.errno != errno.EXDEV:
                raise
            near = path.with_name(f".{path.name}.tmp")
            shutil.copyfile(tmp, near)
            os.replace(near, path)
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
    """Atomically save a torch object; the same object always gives the same bytes.

    Serialised through memory: saved straight to the temporary file, torch would name the
    zip archive inside after that random file name, so identical weights would hash apart.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    data = buf.getvalue()

    def _w(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(data)

    return _atomic(path, _w)


def torch_load(path: str | Path) -> Any:
    """Load a ``.pt`` file onto the CPU without executing anything it contains.

    ``weights_only=True`` unpickles only tensors, dicts, lists, numbers and strings: a file
    that would need anything else (a crafted pickle that runs code, say) or that is not a
    torch file at all is refused with :class:`UnsafeFileError` naming it.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: run the stage that writes it first")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError (bad zip), EOFError, ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UnsafeFileError(
            f"{path}: refused (not a plain tensor/dict file, or corrupt: {first}); "
            "delete it and rerun the stage that writes it (`dvc repro -f <stage>`)"
        ) from None


def save_figure(path: str | Path, fig: Any) -> Path:
    """Atomically save a matplotlib figure as PNG."""
    return _atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))
