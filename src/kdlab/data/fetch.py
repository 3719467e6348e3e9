"""Get a data set's published files into ``root/<name>/`` and verify every checksum."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import zipfile
import zlib
from pathlib import Path

from kdlab.data import DatasetSpec, RawFile, get_dataset


class ChecksumError(RuntimeError):
    """A file's md5 matches neither the published archive nor its published contents."""


class MissingDataError(RuntimeError):
    """A file could not be found or downloaded."""


def check_readable(path: Path, name: str | None = None) -> None:
    """Decompress ``path`` fully (gzip) or read its index (zip, tar); ChecksumError if corrupt.

    ``name`` (default ``path.name``) decides the format, so a ``.part`` copy is checked as the
    file it will become.
    """
    name = name or path.name
    try:
        if name.endswith((".tar.gz", ".tgz", ".tar")):
            with tarfile.open(path) as tf:
                for _ in tf:  # walks every header: a truncated archive fails here
                    pass
        elif name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                while fh.read(1 << 20):
                    pass
        elif name.endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
                if bad is not None:
                    raise zipfile.BadZipFile(f"member {bad} fails its CRC")
    except (OSError, EOFError, zlib.error, tarfile.TarError, zipfile.BadZipFile) as err:
        raise ChecksumError(f"{path}: corrupt {name} ({type(err).__name__}: {err})") from None


def _stage_copy(
    source: Path, target: Path, f: RawFile, override: str | None, remedy: str
) -> tuple[Path, str]:
    """Copy ``source`` beside ``target`` as ``.part`` and verify the copy; nothing replaced yet.

    A corrupt or truncated source raises naming the source (not the copy) and the remedy,
    and leaves no ``.part`` behind.
    """
    tmp = target.with_name(target.name + ".part")
    try:
        shutil.copyfile(source, tmp)
        how = verify(tmp, f, override, name=f.name)
        check_readable(tmp, f.name)
    except (ChecksumError, MissingDataError) as err:
        tmp.unlink(missing_ok=True)
        detail = str(err).split(": ", 1)[-1]
        raise ChecksumError(
            f"{source}: {detail.split('; the file is corrupt')[0]}; {target} was left as it was. "
            f"{remedy}"
        ) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp, how


def md5_of(path: Path, gunzip: bool = False) -> str:
    """md5 of a file, or of its gunzipped bytes."""
    h = hashlib.md5()
    opener = gzip.open if gunzip else open
    with opener(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify(
    path: Path, expected: RawFile, override_md5: str | None = None, name: str | None = None
) -> str:
    """Check ``path`` against the published md5 (or its gunzipped contents'); return which.

    ``name`` (default ``path.name``) is the published file name, for a ``.part`` copy.
    """
    if not path.exists():
        raise MissingDataError(f"{path} is missing")
    actual = md5_of(path)
    if override_md5 is not None:
        if actual == override_md5:
            return "md5 (params override)"
        raise ChecksumError(f"{path}: md5 {actual} != {override_md5} (set in params.yaml)")
    if actual == expected.md5:
        return "md5"
    if expected.content_md5 and (name or path.name).endswith(".gz"):
        try:
            content = md5_of(path, gunzip=True)
        except (OSError, EOFError, zlib.error) as err:
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


def _marker(target_dir: Path, f: RawFile) -> Path:
    return target_dir / f".{f.name}.extracted"


def _verify_members(
    spec: DatasetSpec, f: RawFile, target_dir: Path, overrides: dict[str, str]
) -> str:
    """Check a by-hand extracted folder against the published md5s of its files."""
    if not f.members:
        return "not verified (no published md5s of the extracted files; keep the archive)"
    for m in f.members:
        path = target_dir / m.name
        if not path.exists():
            raise MissingDataError(
                f"{path} is missing: the folder {target_dir / f.extract}/ is incomplete. "
                f"Put {f.name} (md5 {f.md5}) in {target_dir}/ instead, or the complete folder"
            )
        verify(path, m, overrides.get(m.name))
    return f"md5 of its {len(f.members)} published files"


def _extract(f: RawFile, archive: Path, target_dir: Path, log) -> None:
    """Safely unpack ``archive`` into ``target_dir`` (via a scratch folder, so never half)."""
    from kdlab.data.archive import safe_extract

    scratch = target_dir / f".{f.name}.extracting"
    if scratch.exists():
        shutil.rmtree(scratch)
    try:
        log(f"  extracting {f.name} ...")
        safe_extract(archive, scratch)
        if not (scratch / f.extract).is_dir():
            held = ", ".join(sorted(p.name for p in scratch.iterdir())) or "nothing"
            raise MissingDataError(
                f"{archive} holds {held}, not the folder {f.extract}/: not the published archive"
            )
        for entry in scratch.iterdir():
            dest = target_dir / entry.name
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif dest.exists() or dest.is_symlink():
                dest.unlink()
            entry.replace(dest)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch)


def _copy(source: Path, target: Path) -> None:
    tmp = target.with_name(target.name + ".part")
    if source.is_dir():
        if tmp.exists():
            shutil.rmtree(tmp)
        shutil.copytree(source, tmp, symlinks=True)
        if target.exists():
            shutil.rmtree(target)
    else:
        shutil.copyfile(source, tmp)
    tmp.replace(target)


def _remedy(spec: DatasetSpec, f: RawFile) -> str:
    where = f"{spec.mirrors[0]}{f.name}" if spec.mirrors else "the publisher"
    return (
        f"Replace it with the published {f.name} (md5 {f.md5}, from {where}) and rerun; "
        f"to get it: {spec.how_to_get}"
    )


def _missing(spec: DatasetSpec, f: RawFile, target: Path) -> MissingDataError:
    where = f"{spec.mirrors[0]}{f.name}" if spec.mirrors else "the publisher"
    tree = f", or the folder {f.extract}/ unpacked from it," if f.extract else ""
    return MissingDataError(
        f"{target} is missing. To get it: {spec.how_to_get}; "
        f"or put {f.name} in {target.parent}/ (md5 {f.md5}, from {where}){tree} yourself"
    )


def _fetch_archive(
    spec: DatasetSpec,
    f: RawFile,
    target_dir: Path,
    candidates: list[Path],
    source_dir: str | Path | None,
    overrides: dict[str, str],
    allow_download: bool,
    log,
) -> str:
    """Place, verify and extract one archive; return how it was obtained and verified."""
    target = target_dir / f.name
    tree = target_dir / f.extract
    source = next((d / f.name for d in candidates if (d / f.name).is_file()), None)
    source_tree = next((d / f.extract for d in candidates if (d / f.extract).is_dir()), None)
    if source_dir and source is None and source_tree is None:
        raise MissingDataError(
            f"data.source_dir = {source_dir!r} has neither {f.name} nor the folder "
            f"{f.extract}/ unpacked from it; put {f.name} (md5 {f.md5}) there"
        )
    if source is not None and source.resolve() != target.resolve():
        tmp, _ = _stage_copy(source, target, f, overrides.get(f.name), _remedy(spec, f))
        tmp.replace(target)
        origin = str(source)
    elif target.exists():
        origin = "already present"
    elif source_tree is not None and source_tree.resolve() != tree.resolve():
        _marker(target_dir, f).unlink(missing_ok=True)  # the folder no longer is the archive's
        _copy(source_tree, tree)
        how = _verify_members(spec, f, target_dir, overrides)
        return f"folder {f.extract}/ copied from {source_tree}; verified by {how}"
    elif tree.is_dir() and _marker(target_dir, f).exists():
        done = _marker(target_dir, f).read_text().strip()
        return f"folder {f.extract}/ extracted earlier from {f.name} with md5 {done}"
    elif tree.is_dir():
        how = _verify_members(spec, f, target_dir, overrides)
        return f"folder {f.extract}/ already present without {f.name}; verified by {how}"
    elif allow_download:
        log(f"downloading {f.name} for {spec.name} ...")
        _download(spec, f, target)
        origin = "download"
    else:
        raise _missing(spec, f, target)
    override = overrides.get(f.name)
    how = verify(target, f, override)
    check_readable(target)
    checksum = override or (f.md5 if how == "md5" else f.content_md5)
    marker = _marker(target_dir, f)
    if tree.is_dir() and marker.exists() and marker.read_text().strip() == checksum:
        return f"{origin}; verified by {how}; already extracted"
    marker.unlink(missing_ok=True)
    _extract(f, target, target_dir, log)
    marker.write_text(checksum + "\n")
    return f"{origin}; verified by {how}; extracted to {f.extract}/"


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

    An archive (a :class:`RawFile` with ``extract``) is md5-checked and then extracted safely
    (see :mod:`kdlab.data.archive`) next to itself; a marker file records which archive was
    extracted so a rerun does not extract again. A folder already unpacked by hand (in
    ``source_dir`` or ``root/name/``) is accepted instead of the archive and checked against
    the published md5s of its files where known.
    """
    spec = get_dataset(name)
    overrides = md5_overrides or {}
    target_dir = Path(root) / name
    target_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, str] = {}
    staged: list[tuple[Path, Path]] = []  # (verified .part copy, target): replaced at the end
    try:
        _fetch_files(spec, target_dir, source_dir, overrides, allow_download, log, report, staged)
        for tmp, target in staged:  # every copy verified: only now replace anything
            tmp.replace(target)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return report


def _fetch_files(
    spec: DatasetSpec,
    target_dir: Path,
    source_dir: str | Path | None,
    overrides: dict[str, str],
    allow_download: bool,
    log,
    report: dict[str, str],
    staged: list[tuple[Path, Path]],
) -> None:
    """The per-file loop of :func:`fetch`; plain files copied from a source are staged."""
    for f in spec.files:
        target = target_dir / f.name
        # An explicit source folder is the only source; otherwise a system package's folder.
        candidates = [Path(source_dir)] if source_dir else [Path(d) for d in spec.local_dirs]
        if f.extract:
            report[f.name] = _fetch_archive(
                spec, f, target_dir, candidates, source_dir, overrides, allow_download, log
            )
            log(f"  {f.name}: {report[f.name]}")
            continue
        source = next((d / f.name for d in candidates if (d / f.name).exists()), None)
        if source_dir and source is None:
            raise MissingDataError(
                f"data.source_dir = {source_dir!r} has no {f.name}; "
                f"it must hold: {', '.join(x.name for x in spec.files)}"
            )
        if source is not None and source.resolve() != target.resolve():
            tmp, how = _stage_copy(source, target, f, overrides.get(f.name), _remedy(spec, f))
            staged.append((tmp, target))
            report[f.name] = f"{source}; verified by {how}"
            log(f"  {f.name}: {report[f.name]}")
            continue
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
        check_readable(target)
        report[f.name] = f"{origin}; verified by {how}"
        log(f"  {f.name}: {report[f.name]}")
