"""Safe extraction of tar (.tar, .tar.gz, .tgz) and zip archives.

:func:`safe_extract` refuses, before writing anything, every member whose name is absolute or
contains ``..``, every link whose target is absolute or leaves the target folder, and every
device, FIFO or other special member. While writing it checks again, on the real file system
(following links already created), that each path it writes stays inside the target folder.
The error names the offending member. Owners, permissions bits beyond rw/x for the user and
timestamps from the archive are not applied.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class UnsafeArchiveError(RuntimeError):
    """An archive member would be written, or would point, outside the target folder."""


class ArchiveError(RuntimeError):
    """An archive cannot be read (truncated, corrupt or of an unknown type)."""


@dataclass(frozen=True)
class _Member:
    name: str  # as stored in the archive
    kind: str  # "dir", "file", "symlink", "hardlink"
    link: str = ""  # symlink target (relative to the link's folder) or hardlink target (archive)


def archive_kind(path: str | Path) -> str:
    """``"zip"`` or ``"tar"`` from the file name (``.zip``, ``.tar``, ``.tar.gz``, ``.tgz``)."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
        return "tar"
    raise ArchiveError(f"{path}: not a known archive type (.zip, .tar, .tar.gz, .tgz)")


def _clean_name(archive: Path, name: str) -> str:
    """The member's relative POSIX path, or :class:`UnsafeArchiveError` if it may escape."""
    if "\x00" in name:
        raise UnsafeArchiveError(f"{archive}: member {name!r} has a NUL byte in its name")
    norm = name.replace("\\", "/")
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or os.path.isabs(name):
        raise UnsafeArchiveError(f"{archive}: member {name!r} has an absolute path; refused")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive}: member {name!r} contains '..'; refused")
    return "/".join(parts)


def _inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _check_link(archive: Path, m: _Member, rel: str) -> None:
    """Refuse a link whose target, resolved lexically, is absolute or leaves the folder."""
    target = m.link.replace("\\", "/")
    if not target or target.startswith("/") or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchiveError(
            f"{archive}: member {m.name!r} is a {m.kind} to {m.link!r} (absolute); refused"
        )
    base = posixpath.dirname(rel) if m.kind == "symlink" else ""
    resolved = posixpath.normpath(posixpath.join(base, target))
    if resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive}: member {m.name!r} is a {m.kind} to {m.link!r}, outside the target "
            "folder; refused"
        )


def _tar_members(archive: Path, tf: tarfile.TarFile) -> list[tuple[_Member, tarfile.TarInfo]]:
    out = []
    for info in tf.getmembers():
        if info.isdir():
            kind, link = "dir", ""
        elif info.isreg():
            kind, link = "file", ""
        elif info.issym():
            kind, link = "symlink", info.linkname
        elif info.islnk():
            kind, link = "hardlink", info.linkname
        else:
            raise UnsafeArchiveError(
                f"{archive}: member {info.name!r} is a device, FIFO or other special file; refused"
            )
        out.append((_Member(info.name, kind, link), info))
    return out


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[tuple[_Member, zipfile.ZipInfo]]:
    out = []
    for info in zf.infolist():
        mode = info.external_attr >> 16
        if info.is_dir():
            out.append((_Member(info.filename, "dir"), info))
        elif stat.S_ISLNK(mode):
            target = zf.read(info).decode("utf-8", errors="surrogateescape")
            out.append((_Member(info.filename, "symlink", target), info))
        elif stat.S_IFMT(mode) and not stat.S_ISREG(mode):  # writestr() sets bare rw bits
            raise UnsafeArchiveError(
                f"{archive}: member {info.filename!r} is a special file (mode {mode:o}); refused"
            )
        else:
            out.append((_Member(info.filename, "file"), info))
    return out


def _real_dest(root_real: str, target: Path, rel: str, archive: Path, name: str) -> Path:
    """``target/rel``, after checking on disk (links followed) that it stays inside."""
    dest = target / rel if rel else target
    real = os.path.realpath(dest)
    if not _inside(root_real, real):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written to {real}, outside {target}; refused"
        )
    # The parent folder must stay inside as well (dest itself may be a link we replace).
    parent_real = os.path.realpath(dest.parent)
    if not _inside(root_real, parent_real):
        raise UnsafeArchiveError(
            f"{archive}: member {name!r} would be written under {parent_real}, outside "
            f"{target}; refused"
        )
    return dest


def _remove_existing(dest: Path) -> None:
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.is_dir():
        shutil.rmtree(dest)


def safe_extract(archive: str | Path, target: str | Path) -> list[str]:
    """Extract ``archive`` (tar or zip) into ``target``; return the member paths written.

    Raises :class:`UnsafeArchiveError` naming the member if any member is absolute, contains
    ``..``, is a special file, or is a symbolic or hard link pointing outside ``target``. All
    names and link targets are checked before anything is written; the real paths are checked
    again while writing. Raises :class:`ArchiveError` if the archive is corrupt or truncated.
    """
    archive = Path(archive)
    target = Path(target)
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                return _extract(archive, target, _zip_members(archive, zf), zf=zf)
        with tarfile.open(archive, "r:*") as tf:
            return _extract(archive, target, _tar_members(archive, tf), tf=tf)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as err:
        if isinstance(err, (FileNotFoundError, PermissionError)):
            raise
        raise ArchiveError(f"{archive}: cannot be read as {kind} ({err})") from err


def _extract(
    archive: Path,
    target: Path,
    members: list,
    tf: tarfile.TarFile | None = None,
    zf: zipfile.ZipFile | None = None,
) -> list[str]:
    # Pass 1: names and link targets, before anything is written.
    checked = []
    for m, info in members:
        rel = _clean_name(archive, m.name)
        if m.kind in ("symlink", "hardlink"):
            _check_link(archive, m, rel)
        if not rel and m.kind != "dir":
            raise UnsafeArchiveError(f"{archive}: member {m.name!r} has an empty name; refused")
        checked.append((m, info, rel))

    # Pass 2: write, checking each real destination (links already created are followed).
    target.mkdir(parents=True, exist_ok=True)
    root_real = os.path.realpath(target)
    if tf is not None:
        written = _extract_tar_data_filter(archive, target, tf, checked)
    else:
        written = _extract_zip(archive, target, zf, checked, root_real)

    # Pass 3: a link created early may have been redirected by a later one; check them all.
    for m, _, rel in checked:
        if m.kind == "symlink":
            real = os.path.realpath(target / rel)
            if not _inside(root_real, real):
                (target / rel).unlink()
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a symlink that resolves to {real}, outside "
                    f"{target}; refused"
                )
    return written


def _extract_tar_data_filter(
    archive: Path, target: Path, tf: tarfile.TarFile, checked: list
) -> list[str]:
    """Write tar members with the standard library's ``filter="data"`` (PEP 706).

    The filter re-checks, on the real file system, what pass 1 checked by name (absolute paths,
    ``..``, links leaving ``target``, special files) and drops owners, group/other write bits
    and set-id bits; our pass 1 stays in front of it so that nothing is written at all for a
    bad archive and the error names the member.
    """
    for m, _, rel in checked:  # never write through an existing link left by an earlier run
        dest = target / rel
        if m.kind != "dir" and (dest.is_symlink() or dest.is_file()):
            _remove_existing(dest)
    try:
        tf.extractall(target, members=[info for _, info, _ in checked], filter="data")
    except tarfile.FilterError as err:
        name = err.tarinfo.name if getattr(err, "tarinfo", None) is not None else "?"
        raise UnsafeArchiveError(f"{archive}: member {name!r}: {err}; refused") from None
    return [rel for m, _, rel in checked if m.kind != "dir"]


def _extract_zip(
    archive: Path, target: Path, zf: zipfile.ZipFile, checked: list, root_real: str
) -> list[str]:
    """Write zip members (zipfile has no extraction filter), checking each real destination."""
    tf = None
    written = []
    for m, info, rel in checked:
        dest = _real_dest(root_real, target, rel, archive, m.name)
        if m.kind == "dir":
            if dest.is_symlink():
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a folder over an existing link; refused"
                )
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        _real_dest(root_real, target, rel, archive, m.name)  # parents may be links: recheck
        _remove_existing(dest)  # never write through an existing link
        if m.kind == "symlink":
            link_real = os.path.realpath(dest.parent / m.link)
            if not _inside(root_real, link_real):
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a symlink to {m.link!r}, which resolves to "
                    f"{link_real}, outside {target}; refused"
                )
            os.symlink(m.link, dest)
        elif m.kind == "hardlink":
            source = target / posixpath.normpath(m.link.replace("\\", "/"))
            source_real = os.path.realpath(source)
            if not _inside(root_real, source_real) or not os.path.isfile(source_real):
                raise UnsafeArchiveError(
                    f"{archive}: member {m.name!r} is a hard link to {m.link!r}, which is not a "
                    f"file extracted inside {target}; refused"
                )
            shutil.copyfile(source_real, dest)
        else:
            src = tf.extractfile(info) if tf is not None else zf.open(info)
            if src is None:
                raise ArchiveError(f"{archive}: member {m.name!r} cannot be read")
            with src, open(dest, "xb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        written.append(rel)
    return written
