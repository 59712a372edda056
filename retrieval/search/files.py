"""The file behind an image item, opened only while it is the file that was indexed.

A path in the catalog is a name, and names can be made to point elsewhere after indexing: a
symbolic link swapped for one leading out of the collection's folders, or the file replaced by
a hard link to any other file of the same file system. So the file is opened first, and the
open file itself is checked: a regular file under an indexed folder (on Linux, the path the
kernel reports for the open descriptor), of the size and modification time the catalog
recorded, that still reads as an image. What is served is that open file, never the name again,
and its media type is the one of the format its content decoded as (a PNG named ``page.html``,
or an image-named link to it, is ``image/png``): a name never decides how a browser reads bytes.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..errors import FileChangedError, FileOutsideError, ItemNotFoundError
from ..items import IMAGE
from ..media import ImageDecodeError, open_image

if TYPE_CHECKING:
    from ..storage import Catalog

CHUNK = 256 * 1024
OCTET_STREAM = "application/octet-stream"
# Pillow's format name -> the media type browsers show as an image (and never run). A format
# not here (DIB has no type of its own) is served as a download.
IMAGE_MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png",
                     "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp",
                     "TIFF": "image/tiff", "HEIF": "image/heif"}


def media_type_for(image_format: str | None) -> str:
    """The media type to serve a file decoded as Pillow's ``image_format`` with:
    ``application/octet-stream`` unless it is an image type."""
    return IMAGE_MEDIA_TYPES.get(image_format or "", OCTET_STREAM)


@dataclass
class ItemFile:
    """An open, checked image file: read it, then close it (or use ``with``)."""

    file: BinaryIO
    path: str  # the real path (symbolic links resolved)
    size: int
    mtime_ns: int
    media_type: str  # from the decoded content; see :func:`media_type_for`

    def chunks(self) -> Iterator[bytes]:
        """The file's bytes in pieces; closes the file at the end."""
        with self.file:
            while data := self.file.read(CHUNK):
                yield data

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> ItemFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_item_file(catalog: Catalog, roots: Sequence[str], item_id: int) -> ItemFile:
    """Open an image item's file if it is still the file that was indexed.

    Raises :class:`ItemNotFoundError` (no such image, or its file is gone),
    :class:`FileOutsideError` (it resolves outside the indexed folders) or
    :class:`FileChangedError` (it is no longer the indexed file, or no longer an image)."""
    from .builder import item_id as checked

    item_id = checked(item_id)
    item = catalog.get_items([item_id]).get(item_id)
    if item is None or item.kind != IMAGE or not item.path:
        raise ItemNotFoundError(f"item {item_id} is not an image file in the collection")
    real_roots = [os.path.realpath(r) for r in roots]
    real = os.path.realpath(item.path)
    _check_under(real, real_roots, item_id)
    try:
        # Non-blocking: a named pipe put in the file's place must not hang the caller.
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        f = os.fdopen(fd, "rb")
    except FileNotFoundError:
        raise ItemNotFoundError(f"item {item_id}'s file is gone") from None
    except OSError as exc:
        raise FileChangedError(f"item {item_id}'s file cannot be read "
                               f"({exc.strerror or exc})") from None
    try:
        st = os.fstat(f.fileno())
        opened = _descriptor_path(f.fileno())
        if opened is not None:
            _check_under(opened, real_roots, item_id)  # the name moved between the two steps
        if not stat.S_ISREG(st.st_mode):
            raise FileChangedError(f"item {item_id}'s file is no longer a regular file")
        if (st.st_size, st.st_mtime_ns) != (item.size, item.mtime_ns):
            raise FileChangedError(f"item {item_id}'s file changed since it was indexed "
                                   "(size or modification time); index its folder again")
        try:
            # The header only, through a second descriptor: Pillow closes what it read.
            with open_image(os.fdopen(os.dup(f.fileno()), "rb")) as img:
                media_type = media_type_for(img.format)
        except ImageDecodeError as exc:
            raise FileChangedError(f"item {item_id}'s file is no longer a readable image "
                                   f"({exc.reason})") from None
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return ItemFile(f, real, st.st_size, st.st_mtime_ns, media_type)


def _check_under(real: str, roots: Sequence[str], item_id: int) -> None:
    if not any(real == r or real.startswith(r.rstrip(os.sep) + os.sep) for r in roots):
        raise FileOutsideError(f"item {item_id}'s file is outside the indexed folders")


def _descriptor_path(fd: int) -> str | None:
    """The path the kernel holds for an open descriptor (Linux), else None."""
    with contextlib.suppress(OSError):
        path = os.readlink(f"/proc/self/fd/{fd}")
        if path.startswith(os.sep) and not path.endswith(" (deleted)"):
            return path
    return None
