"""Item files over HTTP: an image's original, a video's file, and thumbnails of both.

Files are opened and checked by :mod:`retrieval.search.files` (under an indexed folder, the file
that was indexed, read as what it was indexed as) and streamed from that open file. Their media
type is the one of their decoded content; a format browsers do not show is an attachment. Every
file goes out with a sandboxing policy (:data:`~.http_guards.FILE_CSP`) and ``nosniff``.

Byte ranges (RFC 9110), for a video element's seeking, and for images alike: one range per
request (``bytes=first-last``, ``first-``, ``-suffix``) is answered with a 206 and its
``Content-Range``; a range that starts past the end (or an empty suffix) with a 416 and
``Content-Range: bytes */SIZE``. Several ranges in one request, a unit other than bytes, a
malformed header, or an ``If-Range`` that is not the file's current ``ETag`` get the whole file
(a 200), as the RFC lets a server ignore a Range. Videos are never decoded to serve them:
a shot's thumbnail is made from the keyframe the catalog stored at indexing.
"""

from __future__ import annotations

import hashlib
import io
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, BinaryIO

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi import Path as FPath
from fastapi.responses import FileResponse, Response, StreamingResponse

from ..fileio import atomic_path
from ..search.builder import MAX_ITEM_ID
from ..search.files import OCTET_STREAM, ItemFile
from .http_guards import FILE_CSP

if TYPE_CHECKING:
    from ..collection import Collection

# Grid cards take 128-512 by the screen's density; the page's viewer 512 or 1024.
THUMB_SIZES = (128, 256, 512, 1024)
# bytes=FIRST-LAST, FIRST- or -SUFFIX; numbers of at most 18 digits (more is no file's size)
_RANGE = re.compile(r"bytes=(\d{0,18})-(\d{0,18})", re.ASCII | re.IGNORECASE)

ItemId = Annotated[int, FPath(ge=0, le=MAX_ITEM_ID, description="an item id")]


class RangeNotSatisfiable(Exception):
    """A Range that starts at or past the end of the file."""


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range, (first, last) inclusive, that a Range header asks of a file of
    ``size`` bytes; None where the whole file is sent (no header, several ranges, another
    unit, a malformed or invalid one). Raises :class:`RangeNotSatisfiable`."""
    found = _RANGE.fullmatch((header or "").replace(" ", ""))
    if found is None or found[1] == found[2] == "":
        return None
    if found[1] == "":  # the last N bytes
        suffix = int(found[2])
        if suffix == 0 or size == 0:
            raise RangeNotSatisfiable
        return max(0, size - suffix), size - 1
    first = int(found[1])
    last = size - 1 if found[2] == "" else int(found[2])
    if found[2] and last < first:
        return None  # an invalid range is ignored
    if first >= size:
        raise RangeNotSatisfiable
    return first, min(last, size - 1)


def file_response(found: ItemFile, item_id: int, request: Request) -> Response:
    """A checked file as the response to ``request``: whole, or the byte range it asks for."""
    etag = f'"{found.size:x}-{found.mtime_ns:x}"'
    headers = {"Accept-Ranges": "bytes", "ETag": etag, "Content-Security-Policy": FILE_CSP}
    if found.media_type == OCTET_STREAM:  # decoded, but not as a type browsers show
        headers["Content-Disposition"] = f'attachment; filename="item-{item_id}"'
    if request.headers.get("if-range", etag) != etag:
        span = None  # the client's copy is of another version: all of this one
    else:
        try:
            span = byte_range(request.headers.get("range"), found.size)
        except RangeNotSatisfiable:
            found.close()
            raise HTTPException(416, f"the range asked for is outside the file's {found.size} "
                                "bytes", headers={"Content-Range": f"bytes */{found.size}"}
                                ) from None
    if span is None:
        headers["Content-Length"] = str(found.size)
        return StreamingResponse(found.chunks(), media_type=found.media_type, headers=headers)
    first, last = span
    headers.update({"Content-Length": str(last - first + 1),
                    "Content-Range": f"bytes {first}-{last}/{found.size}"})
    return StreamingResponse(found.chunks(first, last + 1), status_code=206,
                             media_type=found.media_type, headers=headers)


class Thumbnails:
    """JPEG thumbnails of images (from their file) and of videos and shots (from the stored
    keyframe), in sizes of :data:`THUMB_SIZES`, made once and cached in the collection."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.folder = collection.path / "thumbnails"

    def get(self, item_id: int, size: int) -> Path:
        """The cached thumbnail's file, made now if needed (its name changes with what it is
        made from, so a file indexed again gets a new one)."""
        size = min((s for s in THUMB_SIZES if s >= size), default=THUMB_SIZES[-1])
        frame = self.collection.keyframe(item_id)
        if frame is not None:
            key = f"keyframe:{frame.shot_id}:{frame.content_hash}:{size}"
            return self._cached(item_id, key, io.BytesIO(frame.data), size)
        with self.collection.image_file(item_id) as found:
            key = f"{found.path}:{found.size}:{found.mtime_ns}:{size}"
            return self._cached(item_id, key, found.file, size)

    def _cached(self, item_id: int, key: str, src: BinaryIO, size: int) -> Path:
        digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        cached = self.folder / f"{item_id}-{digest}.jpg"
        if not cached.exists():
            _make_thumbnail(src, cached, size)
        return cached


def file_routes(app: FastAPI, collection: Collection) -> None:
    """The routes of items' files on ``app``: image, video and thumbnail."""
    thumbnails = Thumbnails(collection)

    @app.get("/items/{item_id}/image", tags=["items"],
             responses={200: {"content": {"image/*": {}}},
                        206: {"description": "the byte range asked for"}})
    def original(item_id: ItemId, request: Request) -> Response:
        """The original image file: only while it lies under an indexed folder and is the
        file that was indexed (409 when it changed since; index again)."""
        return file_response(collection.image_file(item_id), item_id, request)

    @app.get("/items/{item_id}/video", tags=["items"],
             responses={200: {"content": {"video/*": {}}},
                        206: {"description": "the byte range asked for (one range)"},
                        416: {"description": "the range starts past the file's end"}})
    def video(item_id: ItemId, request: Request) -> Response:
        """The video file of a video item or of a shot, with byte ranges (seek by asking for
        ``Range: bytes=FIRST-LAST``): only while it lies under an indexed folder and is the
        file that was indexed (409 when it changed since; index again). Its media type is the
        one of the container FFmpeg reads it as (video/mp4, video/quicktime, video/webm,
        video/x-matroska, video/x-msvideo), never the one its name suggests."""
        return file_response(collection.video_file(item_id), item_id, request)

    @app.get("/items/{item_id}/thumbnail", tags=["items"],
             responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(item_id: ItemId, size: Annotated[int, Query(ge=16, le=1024)] = 256
                  ) -> Response:
        """A JPEG thumbnail (EXIF orientation applied), made once and cached; a video's or
        a shot's is made from its keyframe."""
        return FileResponse(thumbnails.get(item_id, size), media_type="image/jpeg",
                            headers={"Cache-Control": "private, max-age=3600",
                                     "Content-Security-Policy": FILE_CSP})


def _make_thumbnail(src: BinaryIO, dest: Path, size: int) -> None:
    from PIL import Image, ImageOps

    from ..media import DEFAULT_MAX_PIXELS, ImageDecodeError, open_image

    try:
        img = open_image(src, DEFAULT_MAX_PIXELS)
        img.draft("RGB", (size, size))
        img = ImageOps.exif_transpose(img)
        img = img.convert("RGB")
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    except (ImageDecodeError, OSError) as exc:
        raise HTTPException(422, f"cannot make a thumbnail: {getattr(exc, 'reason', exc)}") \
            from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary file per request: concurrent first requests for the same thumbnail
    # each write their own and the last rename wins, with identical content.
    with atomic_path(dest) as tmp:
        img.save(tmp, "JPEG", quality=85)
