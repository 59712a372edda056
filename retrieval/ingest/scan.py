"""Walk folders and list image files with the stat data used to detect changes.

The walk follows symbolic links but remembers every directory it entered by (device, inode), so
a link loop is entered once and cannot hang it. Hidden files and folders (a leading dot) are
skipped unless asked for; a root given explicitly is always walked.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..media import IMAGE_EXTENSIONS, file_type

CAPTION_EXTENSION = ".txt"


@dataclass(frozen=True)
class FileStat:
    """A file as the scan saw it."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    """Image files found, sidecar caption files keyed by image path, and paths that failed."""

    images: dict[str, FileStat] = field(default_factory=dict)
    captions: dict[str, FileStat] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)


def normalize_path(path: str | os.PathLike[str]) -> str:
    """Absolute, normalised path without resolving symbolic links (a link is its own item)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def scan(
    roots: Iterable[str | os.PathLike[str]],
    *,
    hidden: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> ScanResult:
    """Find image files under ``roots`` (folders or single files).

    ``on_progress`` is called with the number of images found so far, every few hundred files.
    Roots must exist; the caller checks that so that a mistyped path never sweeps a collection.
    """
    result = ScanResult()
    seen_dirs: set[tuple[int, int]] = set()
    for root in roots:
        root = normalize_path(root)
        if os.path.isdir(root):
            _walk(root, result, seen_dirs, hidden, on_progress)
        else:
            _add_file(root, result)
    return result


def _add_file(path: str, result: ScanResult) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path) else "file not found"
        result.errors.append((path, reason))
        return
    except OSError as exc:
        result.errors.append((path, f"cannot stat ({exc.strerror or exc})"))
        return
    if not stat.S_ISREG(st.st_mode):
        result.errors.append((path, f"not a regular file ({file_type(st.st_mode)})"))
        return
    result.images[path] = FileStat(path, st.st_size, st.st_mtime_ns)
    caption = os.path.splitext(path)[0] + CAPTION_EXTENSION
    try:
        cst = os.stat(caption)
    except OSError:
        return
    if os.path.isfile(caption):
        result.captions[path] = FileStat(caption, cst.st_size, cst.st_mtime_ns)


def _walk(
    top: str,
    result: ScanResult,
    seen_dirs: set[tuple[int, int]],
    hidden: bool,
    on_progress: Callable[[int], None] | None,
) -> None:
    stack = [top]
    while stack:
        directory = stack.pop()
        try:
            st = os.stat(directory)
        except OSError as exc:
            result.errors.append((directory, f"cannot open folder ({exc.strerror or exc})"))
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:
            continue  # a symlink loop or a folder reached twice
        seen_dirs.add(key)
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            result.errors.append((directory, f"cannot list folder ({exc.strerror or exc})"))
            continue
        subdirs = []
        for entry in entries:
            if not hidden and entry.name.startswith("."):
                continue
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                is_dir = False
            if is_dir:
                if is_image_name(entry.name):
                    # A folder named like an image: report it, and still look inside.
                    result.errors.append((entry.path, "is a directory, not an image file"))
                subdirs.append(entry.path)
            elif is_image_name(entry.name):
                _add_file(entry.path, result)
                if on_progress and len(result.images) % 500 == 0:
                    on_progress(len(result.images))
        stack.extend(reversed(subdirs))
    if on_progress:
        on_progress(len(result.images))


def check_roots(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Normalise index roots; a root that does not exist is an error, never an empty folder."""
    from ..errors import InputError

    roots = []
    for p in paths:
        norm = normalize_path(p)
        if not os.path.exists(norm):
            kind = "broken symbolic link" if os.path.islink(norm) else "no such file or folder"
            raise InputError(f"{p}: {kind}")
        roots.append(norm)
    if not roots:
        raise InputError("no paths given to index")
    return roots


__all__ = ["FileStat", "ScanResult", "check_roots", "is_image_name", "normalize_path", "scan"]
