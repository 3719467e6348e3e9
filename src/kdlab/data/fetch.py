"""Get a data set's published files into ``root/<name>/`` and verify every checksum."""

from __future__ import annotations

import gzip
import hashlib
import shutil
from pathlib import Path

from kdlab.data import DatasetSpec, RawFile, get_dataset


class ChecksumError(RuntimeError):
    """A file's md5 matches neither the published archive nor its published contents."""


class MissingDataError(RuntimeError):
    """A file could not be found or downloaded."""


def md5_of(path: Path, gunzip: bool = False) -> str:
    """md5 of a file, or of its gunzipped bytes."""
    h = hashlib.md5()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(path: Path, expected: RawFile, override_md5: str | None = None) -> str:
    """Check ``path`` against the published md5 (or its gunzipped contents'); return which."""
    if not path.exists():
        raise MissingDataError(f"{path} is missing")
    actual = md5_of(path)
    if override_md5 is not None:
        if actual == override_md5:
            return "md5 (params override)"
        raise ChecksumError(f"{path}: md5 {actual} != {override_md5} (set in params.yaml)")
    if actual == expected.md5:
        return "md5"
    if expected.content_md5 and path.suffix == ".gz":
        try:
            content = md5_of(path, gunzip=True)
        except (OSError, EOFError) as err:
            raise ChecksumError(f"{path}: not a valid gzip file ({err})") from err
        if content == expected.content_md5:
            return "content md5"
    raise ChecksumError(
        f"{path}: md5 {actual} matches neither the published {expected.md5}"
        + (f" nor the contents' {expected.content_md5}" if expected.content_md5 else "")
        + "; the file is corrupt or not the published one: delete it and rerun"
    )


def _download(spec: DatasetSpec, f: RawFile, target: Path) -> None:
    from torchvision.datasets.utils import download_url

    errors = []
    for mirror in spec.mirrors:
        try:
            download_url(mirror + f.name, str(target.parent), filename=f.name, md5=f.md5)
            return
        except Exception as err:  # network errors come in many types; try the next mirror
            errors.append(f"{mirror}: {err}")
    raise MissingDataError(
        f"could not download {f.name} for {spec.name} ({'; '.join(errors)}). "
        f"To get it: {spec.how_to_get}; or put the file in {target.parent}/ yourself"
    )


def fetch(
    name: str,
    root: str | Path,
    source_dir: str | Path | None = None,
    md5_overrides: dict[str, str] | None = None,
    allow_download: bool = True,
    log=print,
) -> dict[str, str]:
    """Place every file of data set ``name`` in ``root/name/`` and verify it.

    Files are taken, in order, from ``source_dir`` (if given), the folder itself (already
    fetched), a system package's folder (e.g. Debian's dataset-fashion-mnist) and finally the
    official mirrors. Returns ``{file: how it was verified}``.
    """
    spec = get_dataset(name)
    overrides = md5_overrides or {}
    target_dir = Path(root) / name
    target_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, str] = {}
    for f in spec.files:
        target = target_dir / f.name
        # An explicit source folder is the only source; otherwise a system package's folder.
        candidates = [Path(source_dir)] if source_dir else [Path(d) for d in spec.local_dirs]
        source = next((d / f.name for d in candidates if (d / f.name).exists()), None)
        if source_dir and source is None:
            raise MissingDataError(
                f"data.source_dir = {source_dir!r} has no {f.name}; "
                f"it must hold: {', '.join(x.name for x in spec.files)}"
            )
        if source is not None and source.resolve() != target.resolve():
            tmp = target.with_suffix(target.suffix + ".part")
            shutil.copyfile(source, tmp)
            tmp.replace(target)
            origin = str(source)
        elif target.exists():
            origin = "already present"
        elif allow_download:
            log(f"downloading {f.name} for {spec.name} ...")
            _download(spec, f, target)
            origin = "download"
        else:
            raise MissingDataError(
                f"{target} is missing. To get it: {spec.how_to_get}; "
                f"or put {f.name} in {target_dir}/"
            )
        how = verify(target, f, overrides.get(f.name))
        report[f.name] = f"{origin}; verified by {how}"
        log(f"  {f.name}: {report[f.name]}")
    return report
