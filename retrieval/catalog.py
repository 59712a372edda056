"""The catalog: the SQL source of truth for items, their vectors and the collection's settings.

Tables (SQLAlchemy 2 models, SQLite by default):

* ``items``    one row per image file or text; ids are stable int64 keys, never reused
               (AUTOINCREMENT), shared with the FAISS indexes;
* ``vectors``  the item's embedding as little-endian float32 bytes;
* ``changes``  an append-only change log: every write to a vector appends (seq, item, modality)
               in the same transaction, so an index that reflects ``seq = s`` catches up by
               re-reading the items changed after ``s``;
* ``settings`` key/value collection settings (model, dimension, catalog id) as JSON;
* ``schema_version`` the migrations applied, in order.

Every public write method is one transaction.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    select,
    update,
)
from sqlalchemy import (
    text as sql_text,
)
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from .errors import CatalogError

SCHEMA_VERSION = 2
IMAGE, TEXT = "image", "text"
MODALITIES = (IMAGE, TEXT)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"

    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)


class Setting(Base):
    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[Any] = mapped_column(JSON)


class Item(Base):
    """An image file or a text. A sidecar caption is a text item whose parent is the image."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    source: Mapped[str | None] = mapped_column(String(16))  # file | caption | texts
    path: Mapped[str | None] = mapped_column(Text)
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str | None] = mapped_column(Text)
    external_id: Mapped[str | None] = mapped_column(Text)
    content_hash: Mapped[str | None] = mapped_column(String(64), index=True)
    size: Mapped[int | None] = mapped_column(BigInteger)
    mtime_ns: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    taken_at: Mapped[dt.datetime | None] = mapped_column(DateTime)
    camera_make: Mapped[str | None] = mapped_column(Text)
    camera_model: Mapped[str | None] = mapped_column(Text)
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (
        Index("ux_items_image_path", "path", unique=True,
              sqlite_where=sql_text("kind = 'image'"), postgresql_where=sql_text("kind = 'image'")),
        Index("ux_items_caption_parent", "parent_id", unique=True,
              sqlite_where=sql_text("source = 'caption'"),
              postgresql_where=sql_text("source = 'caption'")),
        Index("ux_items_text_external_id", "external_id", unique=True,
              sqlite_where=sql_text("kind = 'text' AND external_id IS NOT NULL"),
              postgresql_where=sql_text("kind = 'text' AND external_id IS NOT NULL")),
        {"sqlite_autoincrement": True},
    )


class Vector(Base):
    __tablename__ = "vectors"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Change(Base):
    __tablename__ = "changes"

    seq: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    item_id: Mapped[int] = mapped_column(BigInteger)
    modality: Mapped[str] = mapped_column(String(8))

    __table_args__ = ({"sqlite_autoincrement": True},)


class Tag(Base):
    """A label on an item, with a score (zero-shot tagging) and where it came from."""

    __tablename__ = "tags"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(200), primary_key=True, index=True)
    score: Mapped[float | None] = mapped_column()
    source: Mapped[str] = mapped_column(String(16), default="zero-shot")


class TagRun(Base):
    """Which items a zero-shot tagging run (labels + templates + model) already covered."""

    __tablename__ = "tag_runs"

    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    signature: Mapped[str] = mapped_column(String(64))


class AuxVector(Base):
    """Embeddings by a second model (re-ranking), cached by model and item content."""

    __tablename__ = "aux_vectors"

    model: Mapped[str] = mapped_column(String(500), primary_key=True)
    item_id: Mapped[int] = mapped_column(
        ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    content_hash: Mapped[str | None] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)


# Ordered migrations: version -> function applied inside one transaction on open.
def _migration_1(conn: Any) -> None:
    for table in (SchemaVersion, Setting, Item, Vector, Change):
        table.__table__.create(conn, checkfirst=True)


def _migration_2(conn: Any) -> None:
    """Tags, tagging runs, second-model vectors, and the full-text index (SQLite FTS5)."""
    for table in (Tag, TagRun, AuxVector):
        table.__table__.create(conn, checkfirst=True)
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            "CREATE VIRTUAL TABLE IF NOT EXISTS items_fts USING fts5("
            "name, body, tags, tokenize = 'unicode61 remove_diacritics 2')")
        ids = [r[0] for r in conn.execute(select(Item.id))]
        for chunk in _chunks(ids, 900):
            _refresh_fts(conn, chunk)


MIGRATIONS: dict[int, Callable[[Any], None]] = {1: _migration_1, 2: _migration_2}


def _fts_query(text: str) -> str:
    """A safe FTS5 query for free text: the phrase, or any of its words (quoted tokens, so
    user input never reaches FTS5's query syntax)."""
    import re

    words = re.findall(r"\w+", text.lower())
    if not words:
        return ""
    quoted = [f'"{w}"' for w in dict.fromkeys(words)]
    phrase = '"' + " ".join(words) + '"'
    return " OR ".join([phrase, *quoted]) if len(words) > 1 else quoted[0]


def _fts_name(path: str | None) -> str:
    """Searchable words of a path: the file name and its folder's name."""
    if not path:
        return ""
    p = path.replace("\\", "/").rstrip("/").split("/")
    return " ".join(p[-2:])


def _refresh_fts(conn: Any, ids: Sequence[int]) -> None:
    """Recompute the full-text rows of these items (deleted items lose theirs)."""
    if conn.dialect.name != "sqlite" or not ids:
        return
    marks = ",".join("?" * len(ids))
    conn.exec_driver_sql(f"DELETE FROM items_fts WHERE rowid IN ({marks})", tuple(ids))
    items = conn.execute(select(Item.id, Item.kind, Item.path, Item.text, Item.external_id)
                         .where(Item.id.in_(ids))).all()
    captions = dict(conn.execute(select(Item.parent_id, Item.text).where(
        Item.source == "caption", Item.parent_id.in_(ids))).all())
    tags: dict[int, list[str]] = {}
    for item_id, tag in conn.execute(select(Tag.item_id, Tag.tag).where(Tag.item_id.in_(ids))):
        tags.setdefault(item_id, []).append(tag)
    rows = []
    for r in items:
        if r.kind == IMAGE:
            rows.append((r.id, _fts_name(r.path), captions.get(r.id) or "",
                         " ".join(tags.get(r.id, []))))
        else:
            rows.append((r.id, r.external_id or "", r.text or "", " ".join(tags.get(r.id, []))))
    if rows:
        conn.exec_driver_sql(
            "INSERT INTO items_fts(rowid, name, body, tags) VALUES (?, ?, ?, ?)", rows)


def encode_vector(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype="<f4").tobytes()


def decode_vectors(blobs: Sequence[bytes], dim: int) -> np.ndarray:
    if not blobs:
        return np.zeros((0, dim), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), dim).astype(
        np.float32, copy=False
    )


@dataclass
class ImageRecord:
    """An image file ready to be written: stat, hash, metadata, vector and optional caption."""

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
class TextRecord:
    """A text to be written. ``parent_id`` makes it an image's caption."""

    text: str
    vector: np.ndarray
    content_hash: str
    source: str = "texts"
    external_id: str | None = None
    parent_id: int | None = None
    path: str | None = None
    size: int | None = None
    mtime_ns: int | None = None
    meta: dict[str, Any] | None = field(default=None)


@dataclass(frozen=True)
class FileState:
    """What the catalog knows of a file, for change detection."""

    id: int
    size: int | None
    mtime_ns: int | None
    content_hash: str | None


def _modality(kind: str) -> str:
    return IMAGE if kind == IMAGE else TEXT


class Catalog:
    """Typed access to one catalog database."""

    def __init__(self, url_or_path: str | os.PathLike[str], *, create: bool = False) -> None:
        url = os.fspath(url_or_path)
        self.file: str | None = None
        if "://" not in url:
            self.file = os.path.abspath(url)
            if not create and not os.path.exists(self.file):
                raise CatalogError(f"catalog not found: {self.file}")
            os.makedirs(os.path.dirname(self.file), exist_ok=True)
            url = f"sqlite:///{self.file}"
        self.engine: Engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._migrate()
        except (DatabaseError, OperationalError) as exc:
            self.engine.dispose()
            raise CatalogError(
                f"cannot open catalog {self.file or url}: {exc.orig or exc}"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    # -- schema ---------------------------------------------------------------------------

    def _migrate(self) -> None:
        with self.engine.begin() as conn:
            if inspect(conn).has_table("schema_version"):
                current = conn.execute(select(func.max(SchemaVersion.version))).scalar() or 0
            else:
                current = 0
            if current > SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.file} has schema version {current}, newer than this version "
                    f"of retrieval understands ({SCHEMA_VERSION}); upgrade retrieval"
                )
            for version in sorted(v for v in MIGRATIONS if v > current):
                MIGRATIONS[version](conn)
                conn.execute(SchemaVersion.__table__.insert().values(
                    version=version, applied_at=utcnow()))

    @property
    def schema_version(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.max(SchemaVersion.version))) or 0)

    # -- settings ---------------------------------------------------------------------------

    def get_settings(self) -> dict[str, Any]:
        with Session(self.engine) as s:
            return {row.key: row.value for row in s.scalars(select(Setting))}

    def set_settings(self, **values: Any) -> None:
        with Session(self.engine) as s, s.begin():
            for key, value in values.items():
                s.merge(Setting(key=key, value=value))

    def ensure_catalog_id(self) -> str:
        settings = self.get_settings()
        if "catalog_id" not in settings:
            self.set_settings(catalog_id=uuid.uuid4().hex)
            settings = self.get_settings()
        return str(settings["catalog_id"])

    # -- change log ---------------------------------------------------------------------------

    def max_seq(self) -> int:
        with Session(self.engine) as s:
            return int(s.scalar(select(func.max(Change.seq))) or 0)

    def changed_since(self, seq: int, modality: str) -> tuple[int, list[int]]:
        """(latest seq, distinct item ids of ``modality`` changed after ``seq``)."""
        with Session(self.engine) as s:
            latest = int(s.scalar(select(func.max(Change.seq))) or 0)
            ids = s.scalars(
                select(Change.item_id).where(
                    Change.seq > seq, Change.seq <= latest, Change.modality == modality
                ).distinct()
            ).all()
        return latest, list(ids)

    def pruned_through(self) -> int:
        return int(self.get_settings().get("changes_pruned_through", 0))

    def prune_changes(self, through: int) -> None:
        """Forget log rows up to ``through`` (exclusive of the newest row, which holds max seq)."""
        with Session(self.engine) as s, s.begin():
            latest = int(s.scalar(select(func.max(Change.seq))) or 0)
            through = min(through, latest - 1)
            if through <= 0:
                return
            s.execute(delete(Change).where(Change.seq <= through))
            s.merge(Setting(key="changes_pruned_through", value=through))

    def _log(self, s: Session, items: Iterable[tuple[int, str]]) -> None:
        rows = [{"item_id": i, "modality": _modality(kind)} for i, kind in items]
        if rows:
            s.execute(Change.__table__.insert(), rows)

    # -- reads ---------------------------------------------------------------------------------

    def file_states(self, roots: Sequence[str]) -> dict[str, FileState]:
        """Images whose path is one of ``roots`` or lies under one of them."""
        out: dict[str, FileState] = {}
        with Session(self.engine) as s:
            for root in roots:
                prefix = root.rstrip(os.sep) + os.sep
                # Range on the path index: every string that starts with prefix sorts between
                # prefix and prefix with its last character bumped by one.
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                q = select(Item.id, Item.path, Item.size, Item.mtime_ns, Item.content_hash).where(
                    Item.kind == IMAGE,
                    (Item.path == root) | ((Item.path >= prefix) & (Item.path < upper)),
                )
                for row in s.execute(q):
                    out[row.path] = FileState(row.id, row.size, row.mtime_ns, row.content_hash)
        return out

    def caption_states(self, image_ids: Iterable[int]) -> dict[int, tuple[FileState, str | None]]:
        """Captions of the given images: parent id -> (state, caption file path)."""
        ids = list(image_ids)
        out: dict[int, tuple[FileState, str | None]] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(ids, 900):
                q = select(Item.id, Item.parent_id, Item.path, Item.size, Item.mtime_ns,
                           Item.content_hash).where(
                    Item.source == "caption", Item.parent_id.in_(chunk))
                for r in s.execute(q):
                    out[r.parent_id] = (FileState(r.id, r.size, r.mtime_ns, r.content_hash), r.path)
        return out

    def vectors_for_hashes(self, hashes: Iterable[str], kind: str) -> dict[str, np.ndarray]:
        """Stored vectors of items with these contents (one per hash), to reuse."""
        out: dict[str, np.ndarray] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(list(set(hashes)), 900):
                q = (select(Item.content_hash, Vector.data)
                     .join(Vector, Vector.item_id == Item.id)
                     .where(Item.kind == kind, Item.content_hash.in_(chunk)))
                for h, blob in s.execute(q):
                    out.setdefault(h, np.frombuffer(blob, dtype="<f4").astype(np.float32))
        return out

    def get_items(self, ids: Iterable[int]) -> dict[int, Item]:
        with Session(self.engine, expire_on_commit=False) as s:
            return _items(s, ids)

    def hydrate(self, ids: Iterable[int]) -> Hydrated:
        """Everything a list of hits shows, read in one session: the items, their parents
        (images of captions), the captions of images, and tags."""
        with Session(self.engine, expire_on_commit=False) as s:
            items = _items(s, ids)
            parents = _items(s, (it.parent_id for it in items.values()
                                 if it.parent_id is not None))
            captions = _captions(s, (i for i, it in items.items() if it.kind == IMAGE))
            return Hydrated(items, parents, captions, _tags(s, items))

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have a vector, their vectors) for the given ids, in the given order."""
        found: dict[int, bytes] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(list(ids), 900):
                q = select(Vector.item_id, Vector.data).where(Vector.item_id.in_(chunk))
                found.update({r.item_id: r.data for r in s.execute(q)})
        present = [i for i in ids if i in found]
        return np.asarray(present, dtype=np.int64), decode_vectors([found[i] for i in present], dim)

    def iter_vectors(
        self, modality: str, dim: int, batch: int = 20_000
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) of one modality, in id order, a batch at a time."""
        kinds = (IMAGE,) if modality == IMAGE else (TEXT,)
        last = -1
        with Session(self.engine) as s:
            while True:
                rows = s.execute(
                    select(Vector.item_id, Vector.data)
                    .join(Item, Item.id == Vector.item_id)
                    .where(Item.kind.in_(kinds), Vector.item_id > last)
                    .order_by(Vector.item_id).limit(batch)
                ).all()
                if not rows:
                    return
                last = rows[-1].item_id
                yield (np.asarray([r.item_id for r in rows], dtype=np.int64),
                       decode_vectors([r.data for r in rows], dim))

    def counts(self) -> dict[str, int]:
        with Session(self.engine) as s:
            rows = s.execute(select(Item.kind, func.count()).group_by(Item.kind)).all()
        out = {IMAGE: 0, TEXT: 0}
        out.update({kind: int(n) for kind, n in rows})
        return out

    def vector_ids(self, modality: str) -> np.ndarray:
        """Ids of all items of ``modality`` that have a vector, ascending."""
        kind = IMAGE if modality == IMAGE else TEXT
        with Session(self.engine) as s:
            ids = s.scalars(select(Vector.item_id).join(Item, Item.id == Vector.item_id)
                            .where(Item.kind == kind).order_by(Vector.item_id)).all()
        return np.asarray(ids, dtype=np.int64)

    def counts_with_vectors(self) -> dict[str, int]:
        """Number of vectors per modality (what the indexes must hold)."""
        with Session(self.engine) as s:
            rows = s.execute(
                select(Item.kind, func.count())
                .join(Vector, Vector.item_id == Item.id)
                .group_by(Item.kind)
            ).all()
        out = {IMAGE: 0, TEXT: 0}
        out.update({_modality(kind): int(n) for kind, n in rows})
        return out

    def text_ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """Standalone texts without an external id, keyed by content hash."""
        out: dict[str, int] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(list(hashes), 900):
                q = select(Item.content_hash, Item.id).where(
                    Item.kind == TEXT, Item.source == "texts", Item.external_id.is_(None),
                    Item.content_hash.in_(chunk))
                out.update({r.content_hash: r.id for r in s.execute(q)})
        return out

    def text_states_by_external_id(self, ext_ids: Iterable[str]) -> dict[str, FileState]:
        out: dict[str, FileState] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(list(ext_ids), 900):
                q = select(Item.external_id, Item.id, Item.content_hash).where(
                    Item.kind == TEXT, Item.external_id.in_(chunk))
                out.update({r.external_id: FileState(r.id, None, None, r.content_hash)
                            for r in s.execute(q)})
        return out

    def ids_where(self, kind: str, conditions: Sequence[Any]) -> np.ndarray:
        """Ids of items of ``kind`` that have a vector and satisfy all SQL ``conditions``."""
        with Session(self.engine) as s:
            q = (select(Item.id).join(Vector, Vector.item_id == Item.id)
                 .where(Item.kind == kind, *conditions).order_by(Item.id))
            return np.asarray(s.scalars(q).all(), dtype=np.int64)

    def metadata_keys(self) -> set[str]:
        """Keys used in the free metadata of items (from JSONL texts)."""
        with Session(self.engine) as s:
            metas = s.scalars(select(Item.meta).where(Item.meta.is_not(None)).limit(10_000))
            return {k for m in metas if isinstance(m, dict) for k in m}

    def keyword_search(self, query: str, kind: str, limit: int) -> list[tuple[int, float]]:
        """(id, score) of items of ``kind`` whose name, text, caption or tags match ``query``,
        best first (SQLite FTS5 BM25; higher is better)."""
        if self.engine.dialect.name != "sqlite":
            raise CatalogError("keyword search needs the SQLite catalog (FTS5)")
        fts = _fts_query(query)
        if not fts:
            return []
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(
                "SELECT f.rowid, bm25(items_fts, 2.0, 1.0, 1.0) AS rank FROM items_fts f "
                "JOIN items i ON i.id = f.rowid WHERE items_fts MATCH ? AND i.kind = ? "
                "ORDER BY rank LIMIT ?", (fts, kind, int(limit))).all()
        return [(int(i), -float(r)) for i, r in rows]

    def tags_of(self, ids: Iterable[int]) -> dict[int, list[tuple[str, float | None]]]:
        with Session(self.engine) as s:
            return _tags(s, ids)

    def untagged(self, signature: str) -> np.ndarray:
        """Images with a vector that the tagging run ``signature`` has not covered yet."""
        with Session(self.engine) as s:
            done = select(TagRun.item_id).where(TagRun.signature == signature)
            q = (select(Item.id).join(Vector, Vector.item_id == Item.id)
                 .where(Item.kind == IMAGE, Item.id.not_in(done)).order_by(Item.id))
            return np.asarray(s.scalars(q).all(), dtype=np.int64)

    def set_tags(self, tags: dict[int, list[tuple[str, float]]], signature: str) -> None:
        """Replace the zero-shot tags of these items and mark them covered by ``signature``."""
        ids = list(tags)
        with Session(self.engine) as s, s.begin():
            for chunk in _chunks(ids, 900):
                s.execute(delete(Tag).where(Tag.item_id.in_(chunk), Tag.source == "zero-shot"))
                s.execute(delete(TagRun).where(TagRun.item_id.in_(chunk)))
            rows = [{"item_id": i, "tag": t, "score": sc, "source": "zero-shot"}
                    for i, ts in tags.items() for t, sc in ts]
            if rows:
                s.execute(insert(Tag), rows)
            if ids:
                s.execute(insert(TagRun), [{"item_id": i, "signature": signature} for i in ids])
            for chunk in _chunks(ids, 900):
                _refresh_fts(s.connection(), chunk)

    def aux_vectors(self, model: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Cached second-model vectors of items whose content did not change since."""
        out: dict[int, np.ndarray] = {}
        with Session(self.engine) as s:
            for chunk in _chunks(list(ids), 900):
                q = (select(AuxVector.item_id, AuxVector.data)
                     .join(Item, Item.id == AuxVector.item_id)
                     .where(AuxVector.model == model, AuxVector.item_id.in_(chunk),
                            AuxVector.content_hash == Item.content_hash))
                out.update({r.item_id: np.frombuffer(r.data, dtype="<f4").astype(np.float32)
                            for r in s.execute(q)})
        return out

    def put_aux_vectors(self, model: str, vectors: dict[int, np.ndarray]) -> None:
        ids = list(vectors)
        with Session(self.engine) as s, s.begin():
            hashes = {r.id: r.content_hash for r in s.execute(
                select(Item.id, Item.content_hash).where(Item.id.in_(ids)))}
            for chunk in _chunks(ids, 900):
                s.execute(delete(AuxVector).where(AuxVector.model == model,
                                                  AuxVector.item_id.in_(chunk)))
            s.execute(insert(AuxVector), [
                {"model": model, "item_id": i, "content_hash": hashes.get(i),
                 "data": encode_vector(v)} for i, v in vectors.items() if i in hashes])

    # -- writes ----------------------------------------------------------------------------------

    def write_images(self, records: Sequence[ImageRecord]) -> list[int]:
        """Insert or update image items by path, with their vectors; returns their ids."""
        now = utcnow()
        rows = [dict(kind=IMAGE, source="file", path=r.path, size=r.size, mtime_ns=r.mtime_ns,
                     content_hash=r.content_hash, width=r.width, height=r.height,
                     taken_at=r.taken_at, camera_make=r.camera_make,
                     camera_model=r.camera_model, updated_at=now) for r in records]
        with Session(self.engine) as s, s.begin():
            existing = self._ids_by(s, Item.path, [r.path for r in records], Item.kind == IMAGE)
            ids = self._upsert(s, rows, [existing.get(r.path) for r in records],
                               [r.vector for r in records], now)
            self._log(s, ((i, IMAGE) for i in ids))
            # New content: zero-shot tags and second-model vectors of the old content go.
            for chunk in _chunks(ids, 900):
                s.execute(delete(Tag).where(Tag.item_id.in_(chunk), Tag.source == "zero-shot"))
                s.execute(delete(TagRun).where(TagRun.item_id.in_(chunk)))
            for chunk in _chunks(ids, 900):
                _refresh_fts(s.connection(), chunk)
        return ids

    def write_texts(self, records: Sequence[TextRecord]) -> list[int]:
        """Insert or update texts. Captions are keyed by parent, others by external id."""
        now = utcnow()
        rows = [dict(kind=TEXT, text=r.text, content_hash=r.content_hash, source=r.source,
                     path=r.path, size=r.size, mtime_ns=r.mtime_ns, meta=r.meta,
                     external_id=r.external_id, parent_id=r.parent_id, updated_at=now)
                for r in records]
        with Session(self.engine) as s, s.begin():
            by_parent = self._ids_by(
                s, Item.parent_id, [r.parent_id for r in records if r.source == "caption"],
                Item.source == "caption")
            by_ext = self._ids_by(
                s, Item.external_id, [r.external_id for r in records if r.source != "caption"],
                Item.kind == TEXT)
            existing = [by_parent.get(r.parent_id) if r.source == "caption" else
                        by_ext.get(r.external_id) for r in records]
            ids = self._upsert(s, rows, existing, [r.vector for r in records], now)
            self._log(s, ((i, TEXT) for i in ids))
            parents = [r.parent_id for r in records if r.parent_id is not None]
            for chunk in _chunks(ids + parents, 900):
                _refresh_fts(s.connection(), chunk)
        return ids

    @staticmethod
    def _ids_by(s: Session, column: Any, keys: Sequence[Any], where: Any) -> dict[Any, int]:
        keys = [k for k in keys if k is not None]
        out: dict[Any, int] = {}
        for chunk in _chunks(keys, 900):
            out.update({k: i for k, i in s.execute(
                select(column, Item.id).where(where, column.in_(chunk)))})
        return out

    @staticmethod
    def _upsert(s: Session, rows: list[dict[str, Any]], existing: list[int | None],
                vectors: Sequence[np.ndarray], now: dt.datetime) -> list[int]:
        """Bulk insert new rows, bulk update known ones, replace their vectors."""
        fresh = [dict(r, created_at=now) for r, e in zip(rows, existing, strict=True) if e is None]
        new_ids = iter(s.scalars(insert(Item).returning(Item.id, sort_by_parameter_order=True),
                                 fresh).all() if fresh else [])
        updates = [dict(r, id=e) for r, e in zip(rows, existing, strict=True) if e is not None]
        if updates:
            s.execute(update(Item), updates)
        ids = [e if e is not None else next(new_ids) for e in existing]
        for chunk in _chunks(ids, 900):
            s.execute(delete(Vector).where(Vector.item_id.in_(chunk)))
        if ids:
            s.execute(insert(Vector), [{"item_id": i, "data": encode_vector(v)}
                                       for i, v in zip(ids, vectors, strict=True)])
        return ids

    def delete_items(self, ids: Iterable[int]) -> int:
        """Delete items and everything attached to them (captions); returns items deleted."""
        ids = list(ids)
        if not ids:
            return 0
        with Session(self.engine) as s, s.begin():
            doomed: dict[int, str] = {}
            parents: set[int] = set()
            for chunk in _chunks(ids, 900):
                q = select(Item.id, Item.kind, Item.parent_id).where(
                    Item.id.in_(chunk) | Item.parent_id.in_(chunk))
                for r in s.execute(q):
                    doomed[r.id] = r.kind
                    if r.parent_id is not None:
                        parents.add(r.parent_id)
            for chunk in _chunks(list(doomed), 900):
                for table in (Vector, Tag, TagRun, AuxVector):
                    s.execute(delete(table).where(table.item_id.in_(chunk)))
                s.execute(delete(Item).where(Item.parent_id.in_(chunk)))
                s.execute(delete(Item).where(Item.id.in_(chunk)))
            self._log(s, doomed.items())
            for chunk in _chunks(list(doomed) + list(parents - set(doomed)), 900):
                _refresh_fts(s.connection(), chunk)
        return len(doomed)


def _chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


@dataclass
class Hydrated:
    """What :meth:`Catalog.hydrate` read: items, parents, captions by image, tags by item."""

    items: dict[int, Item]
    parents: dict[int, Item]
    captions: dict[int, str]
    tags: dict[int, list[tuple[str, float | None]]]


def _items(s: Session, ids: Iterable[int]) -> dict[int, Item]:
    out: dict[int, Item] = {}
    for chunk in _chunks(list(ids), 900):
        for item in s.scalars(select(Item).where(Item.id.in_(chunk))):
            s.expunge(item)
            out[item.id] = item
    return out


def _captions(s: Session, image_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for chunk in _chunks(list(image_ids), 900):
        q = select(Item.parent_id, Item.text).where(
            Item.source == "caption", Item.parent_id.in_(chunk))
        out.update({r.parent_id: r.text for r in s.execute(q)})
    return out


def _tags(s: Session, ids: Iterable[int]) -> dict[int, list[tuple[str, float | None]]]:
    out: dict[int, list[tuple[str, float | None]]] = {}
    for chunk in _chunks(list(ids), 900):
        q = select(Tag.item_id, Tag.tag, Tag.score).where(Tag.item_id.in_(chunk))
        for r in s.execute(q.order_by(Tag.score.desc())):
            out.setdefault(r.item_id, []).append((r.tag, r.score))
    return out
