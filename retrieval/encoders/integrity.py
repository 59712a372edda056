"""Checking that an export's files are the files that were exported, at a cost a query can pay.

An export's manifest records the size and SHA-256 of every file it consists of (``files``).
Hashing is the only way to know content is intact, but it is slow next to a cold query
(ViT-B-32's text tower is about 250 MB; SHA-256 runs near 0.4 GB/s on a small CPU). So each
file's ``stat`` is stamped in ``verified.json`` beside the manifest when its content last hashed
to the recorded checksum: size, mtime, ctime and inode. A load stats the files it needs and
hashes only those whose stat differs from their stamp. Any write to a file changes its mtime and
ctime, and resetting the mtime (``touch -d``) changes the ctime, which only a change of the
system clock can set back; a copy or a restore from backup gets a new inode. Such a file is
hashed once more and stamped again.

``full=True`` hashes every file whatever its stamp says (indexing, whose vectors are stored,
and ``retrieval model export``): it also catches content that changed with the stat left alone
(bit rot, or someone with the power to set the clock).

Exports made before checksums existed get theirs on first use: the files as found then are
taken as the export (a damaged file among them still fails to load, and is reported as damage
by :mod:`.runtime`). Where the exports folder cannot be written, the stamps live under the
retrieval home's cache, and an export without checksums is used as it is.

None of this is a defence against someone who can write into the exports folder: they can write
the manifest and the stamps as well as the towers. It is a defence against accidents (a copy cut
short, a full disk, a stray write, a file replaced) turning into wrong search results.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import stat
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..fileio import atomic_write
from .export_store import MANIFEST, Export

log = logging.getLogger("retrieval")

VERIFIED = "verified.json"
_CHUNK = 1 << 20


class ExportDamaged(ModelError):
    """A file of an ONNX export is missing, cut short, altered or unloadable."""

    def __init__(self, export: Export, name: str, problem: str) -> None:
        super().__init__(f"the ONNX export of {export.spec} is damaged: {export.folder / name} "
                         f"{problem}")
        self.folder, self.name = export.folder, name


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's content, read in 1 MiB chunks."""
    h = hashlib.sha256()
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def _stamp(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def record_files(folder: Path, names: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of ``names`` (default: every file of the export folder), for the
    manifest; stamps them as verified."""
    if names is None:
        names = sorted(p.name for p in folder.iterdir() if p.is_file()
                       and p.name not in (MANIFEST, VERIFIED) and not p.name.startswith("."))
    files, stamps = {}, {}
    for name in names:
        st = os.stat(folder / name)
        digest = sha256_file(folder / name)
        files[name] = {"size": st.st_size, "sha256": digest}
        stamps[name] = [*_stamp(st), digest]
    _save_stamps(folder, stamps)
    return files


def _stamps_file(folder: Path) -> Path:
    """``verified.json`` beside the manifest; for an exports folder this user cannot write (one
    baked into an image, say), a file of the same name under the retrieval home's cache."""
    if os.access(folder, os.W_OK):
        return folder / VERIFIED
    from ..config import home

    return home() / "cache" / "verified" / f"{folder.name}.json"


def _load_stamps(folder: Path) -> dict[str, Any]:
    try:
        found = json.loads(_stamps_file(folder).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _save_stamps(folder: Path, stamps: dict[str, Any]) -> None:
    """Best effort: stamps that cannot be written only cost hashing again next time."""
    path = _stamps_file(folder)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps({**_load_stamps(folder), **stamps}))
    except OSError as exc:
        log.debug("cannot record verified files in %s: %s", path, exc)


def _check_file(export: Export, name: str, stamps: dict[str, Any], full: bool) -> list[Any] | None:
    """The new stamp of ``name`` once it hashed to its checksum (None when its stamp stands);
    raises :class:`ExportDamaged`."""
    want = export.files.get(name)
    if want is None:
        raise ExportDamaged(export, name, "has no checksum in the manifest")
    path = export.folder / name
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ExportDamaged(export, name, "is missing") from None
    except OSError as exc:
        raise ExportDamaged(export, name, f"cannot be read ({exc.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ExportDamaged(export, name, "is not a regular file")
    if st.st_size != want["size"]:
        raise ExportDamaged(export, name, f"has {st.st_size} bytes where {want['size']} were "
                                          "written")
    stamp = [*_stamp(st), want["sha256"]]
    if not full and stamps.get(name) == stamp:
        return None
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise ExportDamaged(export, name, f"cannot be read ({exc.strerror})") from None
    if digest != want["sha256"]:
        raise ExportDamaged(export, name, "was altered (its SHA-256 is not the one recorded)")
    return None if stamps.get(name) == stamp else stamp


def check_files(export: Export, names: Iterable[str], *, full: bool = False) -> None:
    """Raise :class:`ExportDamaged` unless every file of ``names`` is intact: stat against its
    stamp, hashed when the stamp does not match (or always with ``full``)."""
    if not export.files:
        _record_legacy(export)
        return
    stamps = _load_stamps(export.folder)
    fresh = {}
    for name in names:
        stamp = _check_file(export, name, stamps, full)
        if stamp is not None:
            fresh[name] = stamp
    if fresh:
        _save_stamps(export.folder, fresh)


def check_export(export: Export, *, full: bool = False) -> None:
    """:func:`check_files` over every file the export's manifest records."""
    check_files(export, sorted(export.files), full=full)


def intact(export: Export, names: Iterable[str] | None = None, *, full: bool = False) -> bool:
    """Whether ``names`` (default: every file) pass :func:`check_files`; the damage found is
    logged as the reason the export is made again, which the caller does."""
    try:
        check_files(export, sorted(export.files) if names is None else names, full=full)
    except ExportDamaged as damage:
        log.warning("%s; exporting it again", damage)
        return False
    return True


def _record_legacy(export: Export) -> None:
    """An export made before checksums: record those of its files as they are now (where the
    manifest cannot be written, it is taken as it is, as before checksums existed)."""
    if not os.access(export.folder / MANIFEST, os.W_OK) or not os.access(export.folder, os.W_OK):
        log.debug("%s has no checksums and cannot be given any", export.folder)
        return
    try:
        files = record_files(export.folder)
    except OSError as exc:
        raise ExportDamaged(export, "", f"cannot be read ({exc})") from None
    export.manifest["files"] = files
    with contextlib.suppress(OSError):
        atomic_write(export.folder / MANIFEST, json.dumps(export.manifest, indent=1))
    log.info("recorded the checksums of %s (exported before checksums existed)", export.folder)


__all__ = ["VERIFIED", "ExportDamaged", "check_export", "check_files", "intact", "record_files",
           "sha256_file"]
