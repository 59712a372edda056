"""Files found by name inside the indexed folders stay inside them.

A name met while walking a folder is not the user's choice: ``photo.txt`` beside ``photo.jpg``
may be a link to ``/proc/self/environ``, to the shadow password file or to a named pipe, and
``link.png`` may lead to a page named ``real.html``. So a file found by name is used only when,
links resolved, it lies under one of the indexed folders (or is a file indexed by name), and
a sidecar is read only when it is a regular file there. The read opens the file first and then
checks the open file itself (on Linux, the path the kernel holds for the descriptor), so a link
swapped in between the check and the read gains nothing; it opens without blocking, so a named
pipe put in its place cannot hang the run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass

from ..media import IMAGE_EXTENSIONS, file_type
from ..pathnames import shown

CAPTION_EXTENSION = ".txt"


class FoundFileError(Exception):
    """A file found by name cannot be used; ``reason`` is a short phrase for reports."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_image_name(name: str) -> bool:
    """Whether a file or path is named like an image (by its extension)."""
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def is_video_name(name: str) -> bool:
    """Whether a file or path is named like a video (by its extension)."""
    from ..video import VIDEO_EXTENSIONS  # names only: PyAV is imported where videos decode

    return os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS


def not_an_image_name(name: str, videos: bool = False) -> str:
    """The reason a file named explicitly is refused when its name is not an image's (or a
    video's, where videos are indexed)."""
    from ..video import VIDEO_EXTENSIONS

    ext = os.path.splitext(name)[1].lower()
    if not videos:
        return (f"not named as an image ({shown(ext) if ext else 'no extension'}; image "
                f"names end in {', '.join(sorted(IMAGE_EXTENSIONS))})")
    return (f"not named as an image or video ({shown(ext) if ext else 'no extension'}; "
            f"names end in {', '.join(sorted(IMAGE_EXTENSIONS | VIDEO_EXTENSIONS))})")


class Folders:
    """The indexed folders and files, links resolved: where a file found by name may lead."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.dirs: list[str] = []
        self.files: set[str] = set()
        for root in roots:
            real = os.path.realpath(root)
            if os.path.isdir(real):
                self.dirs.append(real.rstrip(os.sep) + os.sep)
            elif is_image_name(real) or is_video_name(real):  # a file indexed by name
                self.files.add(real)

    def holds(self, real: str) -> bool:
        """Whether a real path (links resolved) lies in the indexed folders."""
        return real in self.files or any(real.startswith(d) or real + os.sep == d
                                         for d in self.dirs)

    def plus(self, folder: str) -> Folders:
        """These folders and one more (the folder of a file indexed by name, for its sidecar)."""
        more = Folders(())
        more.dirs, more.files = [*self.dirs, *Folders([folder]).dirs], self.files
        return more


def link_refusal(real: str, folders: Folders, video: bool = False) -> str | None:
    """Why an image (a ``video``) found by name may not be indexed where it leads to (None:
    it may): a link leads to a file named as what its own name says, inside the folders."""
    if video and not is_video_name(real):
        return f"links to a file not named as a video: {shown(os.path.basename(real))}"
    if not video and not is_image_name(real):
        return f"links to a file not named as an image: {shown(os.path.basename(real))}"
    if not folders.holds(real):
        return f"links outside the indexed folders: {shown(real)}"
    return None


@dataclass(frozen=True)
class Sidecar:
    """A sidecar caption file as the scan saw it: its name, stat data, and real path."""

    path: str
    size: int
    mtime_ns: int
    real: str


def find_sidecar(image: str, folders: Folders, real_dir: str | None = None
                 ) -> Sidecar | str | None:
    """The caption file beside ``image`` (``photo.txt`` for ``photo.jpg``): None when there is
    none, the reason it is refused, or the sidecar. ``real_dir`` is the real path of the
    image's folder when the caller knows it (saves resolving every name)."""
    path = os.path.splitext(image)[0] + CAPTION_EXTENSION
    try:
        lst = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(lst.st_mode) or real_dir is None:
        real = os.path.realpath(path)
    else:
        real = os.path.join(real_dir, os.path.basename(path))
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "caption file is a broken symbolic link"
    except OSError as exc:
        return f"caption file cannot be read ({exc.strerror or exc})"
    if not folders.holds(real):
        return f"caption file links outside the indexed folders: {shown(real)}"
    if not stat.S_ISREG(st.st_mode):
        return f"caption file is not a regular file ({file_type(st.st_mode)})"
    return Sidecar(path, st.st_size, st.st_mtime_ns, real)


def read_sidecar(cap: Sidecar, limit: int) -> bytes:
    """Up to ``limit`` bytes of a sidecar, if it is still the regular file the scan approved.

    Raises :class:`FoundFileError` with the reason otherwise."""
    flags = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
             | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        fd = os.open(cap.real, flags)
    except OSError as exc:
        raise FoundFileError("caption file changed during the run" if exc.errno in _MOVED
                             else f"cannot read caption file ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise FoundFileError(f"caption file changed during the run (now "
                                 f"{file_type(st.st_mode)})")
        opened = _descriptor_path(fd)
        if opened is not None and opened != cap.real:
            raise FoundFileError("caption file changed during the run (it now leads to "
                                 f"{shown(opened)})")
        try:
            return f.read(limit)
        except OSError as exc:
            raise FoundFileError(f"cannot read caption file ({exc.strerror or exc})") from None


def read_caption_beside(image: str, limit: int = 1 << 20) -> str:
    """The caption file beside an image, confined to the image's folder ("" when none)."""
    folder = os.path.dirname(os.path.abspath(image))
    cap = find_sidecar(image, Folders([folder]))
    if isinstance(cap, str):
        raise FoundFileError(cap)
    return "" if cap is None else read_sidecar(cap, limit).decode("utf-8-sig", "replace")


_MOVED = {errno.ENOENT, errno.ELOOP, errno.ENOTDIR}


def _descriptor_path(fd: int) -> str | None:
    """The path the kernel holds for an open descriptor (Linux; a deleted file's ends in
    " (deleted)"), else None."""
    with contextlib.suppress(OSError):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(os.sep):
            return path
    return None


__all__ = ["CAPTION_EXTENSION", "Folders", "FoundFileError", "Sidecar", "find_sidecar",
           "is_image_name", "link_refusal", "not_an_image_name", "read_caption_beside",
           "read_sidecar"]
