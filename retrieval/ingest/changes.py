"""Changes a watcher saw, held until they are worth indexing.

File events come in bursts and name files still being written, so an event only says "look at
this path again". A path is ready once what is there (nothing, a folder, a file of some size
and modification time) has stayed the same for ``settle`` seconds: a file being copied or
downloaded keeps changing and waits; it is indexed once, complete. Waiting costs latency where
nothing is being written, so a file whose last write is already ``settle`` seconds old (a move,
a rename, a copy that kept its time) needs only two looks ``GAP`` apart. Paths that are gone
always wait the full interval: a rename's new name is then indexed first, while the old item is
still in the catalog to lend its vector (no re-embedding), and the old one removed after.

A folder made or moved in is one path (the index run walks it), ready once it and every
pending path inside it are; the paths inside go with it. A sidecar caption (``photo.txt``)
stands for the images beside it. Hidden names and anything the index run would not look at are
dropped here. Pure logic: the clock and ``stat`` are the only contact with the world, so the
tests drive it with their own.
"""

from __future__ import annotations

import bisect
import os
import stat as stat_module
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from ..media import IMAGE_EXTENSIONS
from .confine import CAPTION_EXTENSION, is_image_name, is_video_name
from .scan import normalize_path

ADDED, MODIFIED, DELETED = 1, 2, 3  # watchfiles' Change values
SETTLE = 1.0  # seconds a file's size and time must hold still before it is indexed
GAP = 0.2  # seconds between the two looks that clear a file last written long ago
Signature = tuple[object, ...] | None  # what a look found: None when nothing is there


@dataclass
class _Look:
    seen: Signature
    since: float  # when (monotonic) it was first seen so


def look(path: str) -> Signature:
    """What is at ``path`` now: ("file", size, mtime_ns), ("dir", mtime_ns), ("other",) for
    a broken link or a special file, None when nothing is."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return ("other",) if os.path.lexists(path) else None
    except OSError:
        return ("other",)
    if stat_module.S_ISDIR(st.st_mode):
        return ("dir", st.st_mtime_ns)
    if stat_module.S_ISREG(st.st_mode):
        return ("file", st.st_size, st.st_mtime_ns)
    return ("other",)


class PendingChanges:
    """The paths below ``roots`` that changed and are not indexed yet."""

    def __init__(self, roots: Sequence[str], *, settle: float = SETTLE, hidden: bool = False,
                 captions: bool = True, videos: bool = True, exclude: Sequence[str] = (),
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time,
                 stat: Callable[[str], Signature] = look) -> None:
        self.roots = [normalize_path(r) for r in roots]
        self.settle, self.hidden, self.captions, self.videos = settle, hidden, captions, videos
        self.exclude = [normalize_path(p).rstrip(os.sep) + os.sep for p in exclude]
        self.clock, self.wall, self.stat = clock, wall, stat
        self._paths: dict[str, _Look | None] = {}  # None: not looked at since its event

    def __len__(self) -> int:
        return len(self._paths)

    def add(self, changes: Iterable[tuple[int, str]]) -> int:
        """Take raw events ((kind, path) pairs); returns how many named a path worth a look."""
        n = 0
        for kind, path in changes:
            for target in self.targets(kind, normalize_path(path)):
                self._paths[target] = None  # it changed: its settling starts again
                n += 1
        return n

    def put_back(self, paths: Iterable[str]) -> None:
        """Paths of a batch that could not be applied: ready again at once unless they change."""
        for path in paths:
            if path not in self._paths:  # an event since makes it settle again
                self._paths[path] = _Look(self.stat(path), float("-inf"))

    def targets(self, kind: int, path: str) -> list[str]:
        """The paths an event makes worth a look: the file itself, the images a caption
        belongs to, a folder made or moved in, or a gone path (it may have held indexed
        files); none for roots themselves (see :class:`~.events.FileEvents`), hidden names,
        folders whose times changed, files the index run would not take, or anything under
        ``exclude`` (the collection's own folder: its writes are no content)."""
        root = next((r for r in self.roots if path.startswith(r.rstrip(os.sep) + os.sep)), None)
        if root is None or any((path + os.sep).startswith(p) for p in self.exclude):
            return []
        rel = path[len(root.rstrip(os.sep)) + 1:]
        if not self.hidden and any(part.startswith(".") for part in rel.split(os.sep)):
            return []
        name = os.path.basename(path)
        if is_image_name(name) or (self.videos and is_video_name(name)):
            return [path]
        if self.captions and name.endswith(CAPTION_EXTENSION):
            return _images_beside(path)
        if kind == DELETED or (kind == ADDED and os.path.isdir(path)):
            return [path]
        return []

    def ready(self, limit: int = 1000) -> list[str]:
        """Up to ``limit`` settled paths, taken out: present ones first, then gone ones; a path
        inside a settled folder (or gone path) is left to it."""
        now, wall = self.clock(), self.wall()
        settled: dict[str, Signature] = {}
        waiting: list[str] = []
        for path, seen in list(self._paths.items()):
            sig = self.stat(path)
            if seen is None or seen.seen != sig:
                self._paths[path] = _Look(sig, now)
                waiting.append(path)
            elif self._settled(seen, now, wall):
                settled[path] = sig
            else:
                waiting.append(path)
        waiting.sort()
        out: list[str] = []
        for path in sorted(settled, key=lambda p: (settled[p] is None, p)):
            if _inside_any(path, settled):
                del self._paths[path]  # the folder it is in covers it
            elif len(out) < limit and not _holds_any(waiting, path):
                out.append(path)
                del self._paths[path]
        return out

    def _settled(self, seen: _Look, now: float, wall: float) -> bool:
        held = now - seen.since
        if held >= self.settle:
            return True
        if seen.seen is None or held < GAP:
            return False  # gone paths wait the whole interval (see the module's notes)
        mtime_ns = seen.seen[-1]
        return isinstance(mtime_ns, int) and wall - mtime_ns / 1e9 >= self.settle


def _images_beside(caption: str) -> list[str]:
    """The images a sidecar caption belongs to (``photo.jpg`` and ``photo.PNG`` for
    ``photo.txt``): those that are there."""
    stem = caption[:-len(CAPTION_EXTENSION)]
    names = {stem + ext for e in IMAGE_EXTENSIONS for ext in (e, e.upper())}
    return sorted(n for n in names if os.path.lexists(n))


def _inside_any(path: str, paths: dict[str, Signature]) -> bool:
    """Whether a folder holding ``path`` (at any depth) is among ``paths``."""
    parent = os.path.dirname(path)
    while parent != path:
        if parent in paths:
            return True
        path, parent = parent, os.path.dirname(parent)
    return False


def _holds_any(paths: list[str], folder: str) -> bool:
    """Whether a sorted list holds a path inside ``folder``."""
    prefix = folder.rstrip(os.sep) + os.sep
    i = bisect.bisect_left(paths, prefix)
    return i < len(paths) and paths[i].startswith(prefix)
