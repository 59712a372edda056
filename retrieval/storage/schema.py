"""The catalog's tables (SQLAlchemy Core; SQLite by default, PostgreSQL through the same models).

* ``items``        one row per image file, text, video file or shot of a video; ids are
                   stable int64 keys, never reused (AUTOINCREMENT), shared with the vector
                   indexes. A sidecar caption is a text item whose ``parent_id`` is its
                   image, as is a generated caption (``source = 'generated'``,
                   :mod:`retrieval.enrich.captions`). A shot is a part of a video
                   (``parent_id``) from ``start_time`` to ``end_time`` (seconds); it repeats
                   its video's path, file and ``duration`` columns, so that filters and
                   names read the same on both;
* ``vectors``      the item's embedding as little-endian float32 bytes;
* ``changes``      an append-only change log: every write to a vector appends (seq, item,
                   modality) in the same transaction, so an index that reflects ``seq = s``
                   catches up by re-reading the items changed after ``s``;
* ``settings``     key/value collection settings (model, dimension, catalog id) as JSON;
* ``tags``         labels on items with a score (zero-shot tagging) and their source;
* ``tag_runs``     which items a tagging run (labels + templates + model) already covered;
* ``aux_vectors``  embeddings by a second model (re-ranking), keyed by model and content;
* ``keyframes``    a shot's keyframe as a JPEG (what its thumbnail, captions and OCR read);
* ``schema_version`` the migrations applied, in order.

Core tables rather than ORM classes: the catalog is read by every one-shot search, and mapped
classes cost a tenth of a second to import and configure.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy import text as sql_text

from ..items import GENERATED as GENERATED_SOURCE
from ..items import IMAGE, KINDS, RECOGNISED, SIDECAR, TEXT, VIDEO
from ..pathnames import from_stored, to_stored
from .backends import PARTIAL_INDEXES

__all__ = ["IMAGE", "KINDS", "TEXT"]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class FilePath(TypeDecorator[str]):
    """A file path: any name the file system allows, undecodable bytes included, stored as
    valid UTF-8 (:mod:`retrieval.pathnames`)."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else to_stored(value)

    def process_result_value(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else from_stored(value)


metadata = MetaData()
ItemId = BigInteger().with_variant(Integer, "sqlite")  # SQLite's rowid alias is INTEGER


def _where(condition: str) -> dict[str, Any]:
    """A partial index's condition, for every backend whose indexes take one."""
    return {f"{dialect}_where": sql_text(condition) for dialect in PARTIAL_INDEXES}


def _item_ref(primary_key: bool = False) -> Column[int]:
    return Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=primary_key)


schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, primary_key=True),
    Column("applied_at", DateTime, nullable=False, default=utcnow),
)

settings = Table(
    "settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
)

items = Table(
    "items", metadata,
    Column("id", ItemId, primary_key=True),
    Column("kind", String(8), nullable=False),
    Column("source", String(16)),  # file | caption | texts | generated
    Column("path", FilePath),
    Column("parent_id", ForeignKey("items.id", ondelete="CASCADE"), index=True),
    Column("text", Text),
    Column("external_id", Text),
    Column("content_hash", String(64), index=True),
    Column("size", BigInteger),
    Column("mtime_ns", BigInteger),
    Column("width", Integer),
    Column("height", Integer),
    Column("taken_at", DateTime),
    Column("camera_make", Text),
    Column("camera_model", Text),
    Column("metadata", JSON),
    Column("duration", Double),  # a video's, in seconds (its shots repeat it)
    Column("start_time", Double),  # a shot's, in seconds from the video's start
    Column("end_time", Double),
    Column("created_at", DateTime, nullable=False, default=utcnow),
    Column("updated_at", DateTime, nullable=False, default=utcnow),
    Index("ux_items_image_path", "path", unique=True, **_where(f"kind = '{IMAGE}'")),
    Index("ux_items_video_path", "path", unique=True, **_where(f"kind = '{VIDEO}'")),
    Index("ux_items_caption_parent", "parent_id", unique=True, **_where(f"source = '{SIDECAR}'")),
    Index("ux_items_generated_parent", "parent_id", unique=True,
          **_where(f"source = '{GENERATED_SOURCE}'")),
    Index("ux_items_ocr_parent", "parent_id", unique=True, **_where(f"source = '{RECOGNISED}'")),
    Index("ux_items_text_external_id", "external_id", unique=True,
          **_where(f"kind = '{TEXT}' AND external_id IS NOT NULL")),
    sqlite_autoincrement=True,
)

vectors = Table(
    "vectors", metadata,
    _item_ref(primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

changes = Table(
    "changes", metadata,
    Column("seq", ItemId, primary_key=True),
    Column("item_id", BigInteger, nullable=False),
    Column("modality", String(8), nullable=False),  # the item's kind (its index); an old name
    sqlite_autoincrement=True,
)

tags = Table(
    "tags", metadata,
    _item_ref(primary_key=True),
    Column("tag", String(200), primary_key=True, index=True),
    Column("score", Double),
    Column("source", String(16), nullable=False, default="zero-shot"),
)

tag_runs = Table(
    "tag_runs", metadata,
    _item_ref(primary_key=True),
    Column("signature", String(64), nullable=False),
)

# Which images a model has made its text of a source from (recognised text), and with which
# key (the model's identity and options, and the image's content): an image whose text was
# looked for and none found has a run and no text item.
derived_runs = Table(
    "derived_runs", metadata,
    _item_ref(primary_key=True),
    Column("source", String(16), primary_key=True),
    Column("key", String(200), nullable=False),
)

keyframes = Table(
    "keyframes", metadata,
    _item_ref(primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

aux_vectors = Table(
    "aux_vectors", metadata,
    Column("model", String(500), primary_key=True),
    _item_ref(primary_key=True),
    Column("content_hash", String(64)),
    Column("data", LargeBinary, nullable=False),
)
