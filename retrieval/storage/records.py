"""What the catalog reads and writes: plain records, and vectors as little-endian float32 bytes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..items import ADDED


@dataclass(frozen=True)
class Item:
    """An image file or a text, as stored. A sidecar caption is a text whose parent is the
    image; ``metadata`` holds the free fields of JSONL texts."""

    id: int
    kind: str
    source: str | None = None
    path: str | None = None
    parent_id: int | None = None
    text: str | None = None
    external_id: str | None = None
    content_hash: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    width: int | None = None
    height: int | None = None
    taken_at: dt.datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    metadata: dict[str, Any] | None = None
    duration: float | None = None
    start_time: float | None = None
    end_time: float | None = None
    created_at: dt.datetime | None = None
    updated_at: dt.datetime | None = None


@dataclass
class ImageRecord:
    """An image file ready to be written: stat, hash, metadata and vector."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    vector: np.ndarray
    width: int | None = None
    height: int | None = None
    taken_at: dt.datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None


@dataclass
class VideoRecord:
    """A video file ready to be written: stat, hash and what its container says
    (``metadata``: frame rate, codec, container, rotation, audio)."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    duration: float | None = None
    width: int | None = None
    height: int | None = None
    taken_at: dt.datetime | None = None
    metadata: dict[str, Any] | None = None


@dataclass
class ShotRecord:
    """A shot of a video (or a part of a long one): its times, its keyframe (a JPEG) and
    that keyframe's vector; ``metadata`` says which shot and part, and the keyframe's time."""

    start: float
    end: float
    vector: np.ndarray
    keyframe: bytes
    metadata: dict[str, Any] | None = None


@dataclass
class TextRecord:
    """A text to be written. ``parent_id`` makes it an image's caption."""

    text: str
    vector: np.ndarray
    content_hash: str
    source: str = ADDED
    external_id: str | None = None
    parent_id: int | None = None
    path: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    metadata: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class FileState:
    """What the catalog knows of a file, for change detection."""

    id: int
    size: int | None
    mtime_ns: int | None
    content_hash: str | None


@dataclass
class Hydrated:
    """What :meth:`Catalog.hydrate` read: items, parents, captions (sidecar), generated
    captions and recognised text by image, tags by item."""

    items: dict[int, Item]
    parents: dict[int, Item]
    captions: dict[int, str]
    tags: dict[int, list[tuple[str, float | None]]]
    generated: dict[int, str] = field(default_factory=dict)
    recognised: dict[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Condition:
    """One filter, checked and read, as the catalog compiles it into SQL
    (:mod:`.filter_sql`). ``field`` is a filter field (``path``, ``date``, ``width``, ...,
    ``caption``) or ``meta.KEY``; ``op`` one of ``= != < <= > >= ~`` or ``under`` (a path's
    folder); ``value`` is of the field's type (a datetime, a number, a lower-case camera or
    glob, a bool for ``caption =``); ``kind`` is the kind of item searched."""

    field: str
    op: str
    value: Any
    kind: str
    until: dt.datetime | None = None  # a date's = and !=: the end of the period it names
    number: float | None = None  # a metadata value that also reads as a number


def encode_vector(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype="<f4").tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(
        np.float32, copy=False)


def hash_prefixes(hashes: Iterable[str | None]) -> np.ndarray:
    """Sorted 64-bit prefixes of SHA-256 hex digests: a compact set of contents (8 bytes each)
    that a decode worker searches (:func:`prefix_test`). A false match only sends a file back
    without pixels; the driver then decodes it itself."""
    heads = [h[:16] for h in hashes if h and len(h) >= 16]
    if not heads:
        return np.zeros(0, dtype=np.uint64)
    return np.unique(np.frombuffer(bytes.fromhex("".join(heads)), dtype=">u8").astype(np.uint64))


def prefix_test(prefixes: np.ndarray) -> Callable[[str], bool]:
    """Whether a content hash is in the set :func:`hash_prefixes` made."""

    def known(h: str) -> bool:
        p = np.uint64(int(h[:16], 16))
        i = int(np.searchsorted(prefixes, p))
        return i < len(prefixes) and prefixes[i] == p

    return known
