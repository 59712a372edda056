"""Query images kept for a while (``/uploads``), so that a search by an uploaded image can be
reloaded, bookmarked and gone back to.

The page keeps the image it searches by (``POST /uploads``) and writes the answer's id, the
SHA-256 of the image's bytes, in its address; reloaded, it fetches the image back
(``GET /uploads/{id}``) and searches by it again. Images are kept in memory only: bounded in
bytes and in number (the least recently used go first), each for a day after its last use, and
none across a restart (the page then says that the image is no longer kept). An id is 64 hex
digits, checked before it is looked up, and names nothing on disk. Only images are kept: the
bytes must open as an image within the service's limits, and they are served back with the type
their content decodes as, in a sandbox, like item files.
"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi import Path as FPath
from fastapi.responses import Response
from pydantic import BaseModel, Field

from ..search.files import OCTET_STREAM, media_type_for
from .http_guards import FILE_CSP, size_text

KEEP_BYTES = 64 * 1024 * 1024  # all kept images together
KEEP_IMAGES = 256
KEEP_SECONDS = 24 * 3600.0  # after an image's last use
UploadId = Annotated[str, FPath(pattern=r"^[0-9a-f]{64}$", description="an upload's id: the "
                                "SHA-256 of its bytes, 64 lower-case hex digits")]


@dataclass(frozen=True)
class Kept:
    """A kept image: its bytes and the media type its content decodes as."""

    data: bytes
    media_type: str


class UploadStore:
    """Images in memory by the SHA-256 of their bytes: at most ``max_bytes`` and ``max_images``
    together (least recently used dropped first), each dropped ``keep_seconds`` after its last
    use. Safe to use from several threads."""

    def __init__(self, max_bytes: int = KEEP_BYTES, max_images: int = KEEP_IMAGES,
                 keep_seconds: float = KEEP_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes, self.max_images, self.keep_seconds = max_bytes, max_images, keep_seconds
        self.clock = clock
        self._kept: OrderedDict[str, tuple[Kept, float]] = OrderedDict()  # oldest use first
        self._bytes = 0
        self._lock = threading.Lock()

    def put(self, data: bytes, media_type: str) -> str:
        """Keep ``data`` (again: its time starts over); its id. Refuses nothing: an image over
        ``max_bytes`` is simply not kept, and a later :meth:`get` finds nothing."""
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._drop(key)
            if len(data) <= self.max_bytes:
                self._kept[key] = (Kept(data, media_type), self.clock() + self.keep_seconds)
                self._bytes += len(data)
            self._expire()
        return key

    def get(self, key: str) -> Kept | None:
        """The image kept under ``key``, now used again; None when it is not (or no longer)
        kept."""
        with self._lock:
            self._expire()
            found = self._kept.pop(key, None)
            if found is None:
                return None
            self._kept[key] = (found[0], self.clock() + self.keep_seconds)
            return found[0]

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def _drop(self, key: str) -> None:
        found = self._kept.pop(key, None)
        if found is not None:
            self._bytes -= len(found[0].data)

    def _expire(self) -> None:
        now = self.clock()
        while self._kept:
            key, (_, until) = next(iter(self._kept.items()))
            if until > now and self._bytes <= self.max_bytes and \
                    len(self._kept) <= self.max_images:
                break
            self._drop(key)


class UploadOut(BaseModel):
    id: str = Field(description="The image's id (the SHA-256 of its bytes): "
                                "GET /uploads/{id} answers its bytes while it is kept.")
    media_type: str = Field(description="The type its content decodes as.")
    expires_in: float = Field(description="Seconds it is kept after its last use (unless "
                                          "newer images need the room first).")


def upload_routes(app: FastAPI, store: UploadStore, max_bytes: int, max_pixels: int) -> None:
    """``POST /uploads`` and ``GET /uploads/{id}`` on ``app``, keeping images in ``store``;
    an image over ``max_bytes`` or ``max_pixels`` is refused as a search refuses it."""

    @app.post("/uploads", status_code=201, response_model=UploadOut, tags=["search"])
    def keep(image: Annotated[UploadFile, File(description="an image file")]) -> UploadOut:
        """Keep a query image for a while (in memory, bounded, a day after its last use), so a
        search by it can be run again from its id (the web page's address holds it)."""
        data = image.file.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise HTTPException(413, "uploaded image is larger than the limit of "
                                f"{size_text(max_bytes)}")
        media_type = _image_type(data, max_pixels)
        return UploadOut(id=store.put(data, media_type), media_type=media_type,
                         expires_in=store.keep_seconds)

    @app.get("/uploads/{upload_id}", tags=["search"],
             responses={200: {"content": {"image/*": {}}}})
    def kept(upload_id: UploadId) -> Response:
        """A kept query image's bytes, while it is kept (404 after: upload it again)."""
        found = store.get(upload_id)
        if found is None:
            raise HTTPException(404, "this image is no longer kept on the server (images are "
                                "kept for a day, and not across a restart): upload it again")
        headers = {"Cache-Control": "private, max-age=3600", "Content-Security-Policy": FILE_CSP}
        if found.media_type == OCTET_STREAM:
            headers["Content-Disposition"] = 'attachment; filename="upload"'
        return Response(found.data, media_type=found.media_type, headers=headers)


def _image_type(data: bytes, max_pixels: int) -> str:
    """The media type of an uploaded image, from its content (422 when it is not one)."""
    from ..media import ImageDecodeError, open_image

    try:
        with open_image(io.BytesIO(data), max_pixels) as img:
            return media_type_for(img.format)
    except ImageDecodeError as exc:
        raise HTTPException(422, f"the upload is not an image that can be searched by: "
                            f"{exc.reason}") from None


__all__ = ["UploadStore", "upload_routes"]
