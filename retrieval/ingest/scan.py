"""Walk folders and list image files with the stat data used to detect changes.

The walk follows symbolic links but remembers every directory it entered by (device, inode), so
a link loop is entered once and cannot hang it. A link found in a folder (to an image, to a
folder, or a sidecar caption) is followed only where it stays inside the indexed folders, and
an image-named link only to a file named as an image (:mod:`.confine`): anything else is
reported with its reason. Hidden files and folders (a leading dot) are skipped unless asked
for; a root given explicitly is always walked, and a file given explicitly must be named as an
image.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from ..media import file_type
from ..pathnames import shown
from .confine import (
    CAPTION_EXTENSION,
    Folders,
    Sidecar,
    find_sidecar,
    is_image_name,
    is_video_name,
    link_refusal,
    not_an_image_name,
)


@dataclass(frozen=True)
class FileStat:
    """A file as the scan saw it."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class ScanResult:
    """Image files found, video files, sidecar caption files keyed by image path, and paths
    that failed."""

    images: dict[str, FileStat] = field(default_factory=dict)
    videos: dict[str, FileStat] = field(default_factory=dict)
    captions: dict[str, Sidecar] = field(default_factory=dict)
    errors: list[tuple[str, str]] = field(default_factory=list)


def normalize_path(path: str | os.PathLike[str]) -> str:
    """Absolute, normalised path without resolving symbolic links (a link is its own item)."""
    return os.path.abspath(os.path.expanduser(os.fspath(path)))


def scan(
    roots: Iterable[str | os.PathLike[str]],
    *,
    hidden: bool = False,
    sidecars: bool = True,
    videos: bool = False,
    within: Iterable[str] = (),
    on_progress: Callable[[int], None] | None = None,
    found: bool = False,
) -> ScanResult:
    """Find image files under ``roots`` (folders or single files), and their sidecar captions
    unless ``sidecars`` is False; video files too with ``videos``.

    A link found there may lead into ``roots`` or ``within`` (the collection's other folders),
    nowhere else. ``on_progress`` is called with the number of images found so far, every few
    hundred files. Roots must exist; the caller checks that so that a mistyped path never
    sweeps a collection.

    ``found``: the roots are paths met below the folders of ``within`` (a watcher's changes),
    not paths a user named: each is taken as the walk of its folder would take it (a hidden
    name is left out, a link must stay inside ``within``), and one that is gone is no error.
    """
    paths = [normalize_path(r) for r in roots]
    within = list(within)
    walk = _Walk(Folders(within if found else [*paths, *within]), hidden, sidecars, on_progress,
                 videos)
    for root in paths:
        if found:
            walk.met(root, within)
        elif os.path.isdir(root):
            walk.folder(root)
        elif not walk.wanted(root):
            walk.result.errors.append((root, not_an_image_name(root, videos)))
        else:  # its own sidecar may lie beside it, in the folder the user pointed into
            real_dir = os.path.realpath(os.path.dirname(root))
            walk.file(root, os.path.realpath(root), real_dir, walk.folders.plus(real_dir))
    if on_progress:
        on_progress(len(walk.result.images))
    return walk.result


class _Walk:
    """One scan: what it found, and the folders its links may lead into."""

    def __init__(self, folders: Folders, hidden: bool, sidecars: bool,
                 on_progress: Callable[[int], None] | None, videos: bool = False) -> None:
        self.folders, self.hidden, self.sidecars = folders, hidden, sidecars
        self.videos = videos
        self.on_progress = on_progress
        self.result = ScanResult()
        self.seen_dirs: set[tuple[int, int]] = set()
        self.refused: set[str] = set()  # sidecars reported (photo.jpg and photo.png share one)

    def fail(self, path: str, reason: str) -> None:
        self.result.errors.append((path, reason))

    def wanted(self, name: str) -> bool:
        """Whether a file of this name is indexed: an image's, or a video's when asked."""
        return is_image_name(name) or (self.videos and is_video_name(name))

    def file(self, path: str, real: str | None, real_dir: str, folders: Folders) -> None:
        """An image-named file; ``real`` is where it leads (links resolved), None when it is no
        link (a file in a folder already found inside)."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self.fail(path, "broken symbolic link" if os.path.islink(path) else "file not found")
            return
        except OSError as exc:
            self.fail(path, f"cannot stat ({exc.strerror or exc})")
            return
        if not stat.S_ISREG(st.st_mode):
            self.fail(path, f"not a regular file ({file_type(st.st_mode)})")
            return
        refused = None if real is None else link_refusal(real, folders, is_video_name(path))
        if refused is not None:
            self.fail(path, refused)
            return
        if is_video_name(path):
            self.result.videos[path] = FileStat(path, st.st_size, st.st_mtime_ns)
            return
        self.result.images[path] = FileStat(path, st.st_size, st.st_mtime_ns)
        if self.sidecars:
            cap = find_sidecar(path, folders, real_dir)
            if isinstance(cap, Sidecar):
                self.result.captions[path] = cap
            elif cap is not None and (name := os.path.splitext(path)[0]
                                      + CAPTION_EXTENSION) not in self.refused:
                self.refused.add(name)
                self.fail(name, cap)

    def met(self, path: str, roots: list[str]) -> None:
        """A path below ``roots`` (a change a watcher saw), as the walk from its root meets it:
        nothing when it is gone or hidden, else a folder to walk or a file, only where it
        lies inside the indexed folders once links are resolved."""
        top = next((r for r in roots if _below(path, normalize_path(r))), None)
        if top is None:
            self.fail(path, "not inside the indexed folders")
            return
        rel = os.path.relpath(path, normalize_path(top))
        if not self.hidden and rel != "." and any(p.startswith(".") for p in rel.split(os.sep)):
            return
        if not os.path.lexists(path):
            return  # gone: what the catalog holds at or under it is removed by the caller
        real = os.path.realpath(path)
        if not self.folders.holds(real):
            self.fail(path, "links outside the indexed folders: " + shown(real))
        elif os.path.isdir(path):
            self.folder(path)
        elif self.wanted(path):
            self.file(path, real if os.path.islink(path) else None,
                      os.path.realpath(os.path.dirname(path)), self.folders)

    def folder(self, top: str) -> None:
        stack = [(top, os.path.realpath(top))]
        while stack:
            directory, real_dir = stack.pop()
            entries = self._entries(directory)
            subdirs = []
            for entry in entries or ():
                if not self.hidden and entry.name.startswith("."):
                    continue
                real = os.path.realpath(entry.path) if _is_link(entry) else None
                if _is_dir(entry):
                    if real is not None and not self.folders.holds(real):
                        self.fail(entry.path, "folder links outside the indexed folders: "
                                  + shown(real))
                        continue
                    if self.wanted(entry.name):
                        # A folder named like an image: report it, and still look inside.
                        self.fail(entry.path, "is a directory, not an image or video file")
                    subdirs.append((entry.path, real or os.path.join(real_dir, entry.name)))
                elif self.wanted(entry.name):
                    self.file(entry.path, real, real_dir, self.folders)
                    if self.on_progress and len(self.result.images) % 500 == 0:
                        self.on_progress(len(self.result.images))
            stack.extend(reversed(subdirs))

    def _entries(self, directory: str) -> list[os.DirEntry[str]] | None:
        """A folder's entries by name, or None (reported) when it was seen or cannot be read."""
        try:
            st = os.stat(directory)
        except OSError as exc:
            self.fail(directory, f"cannot open folder ({exc.strerror or exc})")
            return None
        key = (st.st_dev, st.st_ino)
        if key in self.seen_dirs:
            return None  # a symlink loop or a folder reached twice
        self.seen_dirs.add(key)
        try:
            with os.scandir(directory) as it:
                return sorted(it, key=lambda e: e.name)
        except OSError as exc:
            self.fail(directory, f"cannot list folder ({exc.strerror or exc})")
            return None


def _below(path: str, root: str) -> bool:
    """Whether ``path`` is ``root`` or lies under it (names only, links not resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def _is_dir(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_dir(follow_symlinks=True)
    except OSError:
        return False


def _is_link(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


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


__all__ = ["CAPTION_EXTENSION", "FileStat", "ScanResult", "Sidecar", "check_roots",
           "is_image_name", "normalize_path", "scan"]
