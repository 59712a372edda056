"""The file behind an image or video item, opened only while it is the file that was indexed.

A path in the catalog is a name, and names can be made to point elsewhere after indexing: a
symbolic link swapped for one leading out of the collection's folders, or the file replaced by
a hard link to any other file of the same file system. So the file is opened first, and the
open file itself is checked: a regular file under an indexed folder (on Linux, the path the
kernel reports for the open descriptor), of the size and modification time the catalog
recorded, that still reads as what it was indexed as (an image Pillow decodes; a video FFmpeg
probes, in the same container). What is served is that open file, never the name again, and
its media type is the one of the format its content decoded as (a PNG named ``page.html``, or
an image-named link to it, is ``image/png``): a name never decides how a browser reads bytes.

A video's pictures are served without decoding it: a shot's thumbnail is made from the
keyframe stored in the catalog at indexing (:func:`keyframe_of`).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ..errors import FileChangedError, FileOutsideError, ItemNotFoundError
from ..items import IMAGE, SHOT, VIDEO
from ..media import ImageDecodeError, open_image

if TYPE_CHECKING:
    from ..storage import Catalog
    from ..storage.records import Item

CHUNK = 256 * 1024
OCTET_STREAM = "application/octet-stream"
# Pillow's format name -> the media type browsers show as an image (and never run). A format
# not here (DIB has no type of its own) is served as a download.
IMAGE_MEDIA_TYPES = {"JPEG": "image/jpeg", "MPO": "image/jpeg", "PNG": "image/png",
                     "GIF": "image/gif", "WEBP": "image/webp", "BMP": "image/bmp",
                     "TIFF": "image/tiff", "HEIF": "image/heif"}
# The container a probe names (:attr:`retrieval.video.VideoInfo.container`) -> the media type
# of a video; any other container (MPEG-TS, FLV, a picture FFmpeg reads) is a download.
VIDEO_MEDIA_TYPES = {"mp4": "video/mp4", "m4v": "video/mp4", "mov": "video/quicktime",
                     "webm": "video/webm", "matroska": "video/x-matroska",
                     "avi": "video/x-msvideo"}
# Video codecs a WebM file may hold: a file whose header says WebM and holds another codec is
# served as the Matroska it is.
WEBM_CODECS = frozenset({"vp8", "vp9", "av1"})


def media_type_for(image_format: str | None) -> str:
    """The media type to serve a file decoded as Pillow's ``image_format`` with:
    ``application/octet-stream`` unless it is an image type."""
    return IMAGE_MEDIA_TYPES.get(image_format or "", OCTET_STREAM)


def video_media_type(container: str, codec: str) -> str:
    """The media type to serve a video probed as ``container`` and ``codec`` with (the
    content's, never the name's): ``application/octet-stream`` unless it is a video type."""
    if container == "webm" and codec not in WEBM_CODECS:
        container = "matroska"
    return VIDEO_MEDIA_TYPES.get(container, OCTET_STREAM)


@dataclass
class ItemFile:
    """An open, checked image or video file: read it, then close it (or use ``with``)."""

    file: BinaryIO
    path: str  # the real path (symbolic links resolved)
    size: int
    mtime_ns: int
    media_type: str  # from the decoded content; see :func:`media_type_for`

    def chunks(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The file's bytes from ``start`` up to ``stop`` (exclusive; None: the end) in
        pieces; closes the file at the end."""
        with self.file:
            self.file.seek(start)
            left = (self.size if stop is None else stop) - start
            while left > 0 and (data := self.file.read(min(CHUNK, left))):
                left -= len(data)
                yield data

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> ItemFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class Keyframe:
    """The picture that stands for a shot: a JPEG made at indexing (long side <= 512)."""

    shot_id: int
    content_hash: str | None  # of the JPEG; with the id, a key for what is made from it
    data: bytes


# Reads what an open, checked file is: its media type, or FileChangedError.
Identify = Callable[[BinaryIO, "Item"], str]


def open_item_file(catalog: Catalog, roots: Sequence[str], item_id: int) -> ItemFile:
    """Open an image item's file if it is still the file that was indexed.

    Raises :class:`ItemNotFoundError` (no such image, or its file is gone),
    :class:`FileOutsideError` (it resolves outside the indexed folders) or
    :class:`FileChangedError` (it is no longer the indexed file, or no longer an image)."""
    item = _item(catalog, item_id)
    if item is None or item.kind != IMAGE or not item.path:
        raise ItemNotFoundError(f"item {item_id} is not an image file in the collection")
    return _open_checked(item, roots, _image_type)


def open_video_file(catalog: Catalog, roots: Sequence[str], item_id: int) -> ItemFile:
    """Open the file of a video item, or of a shot's video, if it is still the file that was
    indexed; raises as :func:`open_item_file` (FileChangedError also when FFmpeg no longer
    reads it as the container it was indexed in)."""
    item = _item(catalog, item_id)
    if item is not None and item.kind == SHOT and item.parent_id is not None:
        item = _item(catalog, item.parent_id)
    if item is None or item.kind != VIDEO or not item.path:
        raise ItemNotFoundError(f"item {item_id} is not a video in the collection")
    return _open_checked(item, roots, _video_type)


def keyframe_of(catalog: Catalog, item_id: int) -> Keyframe | None:
    """The keyframe of a shot, or of a video's first shot; None for an item of another kind.

    Raises :class:`ItemNotFoundError` for no such item, or a video without a stored
    keyframe."""
    item = _item(catalog, item_id)
    if item is None:
        raise ItemNotFoundError(f"no item {item_id} in the collection")
    if item.kind not in (SHOT, VIDEO):
        return None
    if item.kind == VIDEO:  # its earliest shot's
        first = catalog.first_shot(item.id)
        item = None if first is None else catalog.get_items([first]).get(first)
    data = None if item is None else catalog.keyframe(item.id)
    if item is None or data is None:
        raise ItemNotFoundError(f"item {item_id} has no keyframe in the collection")
    return Keyframe(item.id, item.content_hash, data)


def _item(catalog: Catalog, item_id: int) -> Item | None:
    from .builder import item_id as checked

    item_id = checked(item_id)
    return catalog.get_items([item_id]).get(item_id)


def _open_checked(item: Item, roots: Sequence[str], identify: Identify) -> ItemFile:
    """Open ``item``'s file and check the open file: under ``roots``, a regular file of the
    indexed size and time, and what ``identify`` reads it as (its media type)."""
    item_id, path = item.id, str(item.path)
    real_roots = [os.path.realpath(r) for r in roots]
    real = os.path.realpath(path)
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
        media_type = identify(f, item)
        f.seek(0)
    except BaseException:
        f.close()
        raise
    return ItemFile(f, real, st.st_size, st.st_mtime_ns, media_type)


def _image_type(f: BinaryIO, item: Item) -> str:
    try:
        # The header only, through a second descriptor: Pillow closes what it read.
        with open_image(os.fdopen(os.dup(f.fileno()), "rb")) as img:
            return media_type_for(img.format)
    except ImageDecodeError as exc:
        raise FileChangedError(f"item {item.id}'s file is no longer a readable image "
                               f"({exc.reason})") from None


def _video_type(f: BinaryIO, item: Item) -> str:
    from ..video import VideoError, probe

    # FFmpeg opens a name: on Linux the open descriptor's own (the same file, whatever its
    # name leads to by now), else the real path just checked.
    fd_path = f"/proc/self/fd/{f.fileno()}"
    try:
        info = probe(fd_path if os.path.exists(fd_path) else os.path.realpath(str(item.path)))
    except (VideoError, OSError) as exc:
        reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc
        raise FileChangedError(f"item {item.id}'s file is no longer a readable video "
                               f"({reason})") from None
    indexed = (item.metadata or {}).get("container")
    if indexed and indexed != info.container:
        raise FileChangedError(f"item {item.id}'s file is no longer the video that was "
                               f"indexed ({info.container}, was {indexed}); index its folder "
                               "again")
    return video_media_type(info.container, info.codec)


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
