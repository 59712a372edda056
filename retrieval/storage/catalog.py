"""The catalog: the SQL source of truth for items, their vectors and the collection's settings.

One :class:`Catalog` per database (a SQLite file by default, any SQLAlchemy URL otherwise).
Every public write method is one transaction (see :mod:`.writes`); reads never block on a
writer (SQLite in WAL mode).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Engine, delete, event, func, select
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError

from ..errors import CatalogError, disk_full, first_line, is_disk_full
from ..items import ADDED, GENERATED, SHOT, SIDECAR, VISUAL
from . import reads, writes
from .backends import for_url
from .engines import engine_for, normalize_url, scrub, server_error, shown_url
from .filter_sql import compile_condition
from .migrations import SCHEMA_VERSION, current_version, migrate, pending
from .records import (
    Condition,
    FileState,
    Hydrated,
    ImageRecord,
    Item,
    TextRecord,
    decode_vectors,
    hash_prefixes,
)
from .schema import (
    IMAGE,
    TEXT,
    aux_vectors,
    changes,
    derived_runs,
    items,
    schema_version,
    settings,
    tag_runs,
    vectors,
)
from .videos import VideoCatalog
from .writes import chunks

if TYPE_CHECKING:
    from .backends.base import Backend


class Catalog(VideoCatalog):
    """Typed access to one catalog database."""

    def __init__(self, url_or_path: str | os.PathLike[str], *, create: bool = False) -> None:
        url = os.fspath(url_or_path)
        self._closed = False
        self.backend: Backend = for_url(url)  # a path is a SQLite file
        self.file, url = self.backend.locate(url, create)
        self.url = url = normalize_url(url)
        self.where = self.file or shown_url(url)  # for messages: never the password
        self.engine: Engine = engine_for(url, self.where)
        event.listen(self.engine, "handle_error", self._on_error)
        # Writes always run in one transaction (``engine.begin()``); reads as the backend says.
        self._reads = self.backend.reads(self.engine)
        try:
            self._migrate(self.where)
        except (DatabaseError, OperationalError) as exc:
            self.engine.dispose()
            raise CatalogError(f"cannot open catalog {self.where}: "
                               f"{scrub(first_line(exc.orig or exc), url)}") from None
        except CatalogError:
            self.engine.dispose()
            raise

    @property
    def shared(self) -> bool:
        """True for a database server several processes and hosts may write to."""
        return self.backend.server

    def _on_error(self, context: Any) -> None:
        """A full disk, from any statement or commit, as one line naming the folder; a
        database server that is down or went away, as one line naming it."""
        if is_disk_full(context.original_exception):
            where = os.path.dirname(self.file) if self.file else "the catalog's database"
            raise disk_full("the catalog", where)
        damaged = self.backend.damage(context.original_exception, self.file)
        if damaged is not None:
            raise damaged
        if self.shared and (context.is_disconnect or isinstance(
                context.sqlalchemy_exception, OperationalError)):
            raise server_error(self.where, context.original_exception, self.url)

    def _migrate(self, where: str) -> None:
        """Apply missing migrations, one process at a time: two processes opening a new
        catalog at once must not both create its tables."""
        with self.engine.connect() as conn:
            if current_version(conn) <= SCHEMA_VERSION and not pending(conn):
                return
        with self.engine.connect() as conn:
            self.backend.lock_migrations(conn)  # the other waits, then finds nothing to do
            migrate(conn, where)
            conn.commit()

    def close(self) -> None:
        """Close its connections; a SQLite catalog is checkpointed first, so that its file
        alone is then a whole copy of it."""
        if not self._closed:
            self.backend.close(self.engine, self.file)
        self._closed = True
        self.engine.dispose()

    def _read(self, query: Any) -> Any:
        with self._reads.connect() as conn:
            return conn.execute(query).all()

    def _scalar(self, query: Any) -> Any:
        with self._reads.connect() as conn:
            return conn.execute(query).scalar()

    def _write(self, fn: Any, *args: Any) -> Any:
        with self.engine.begin() as conn:
            return fn(conn, *args)

    @property
    def schema_version(self) -> int:
        return int(self._scalar(select(func.max(schema_version.c.version))) or 0)

    # -- settings ---------------------------------------------------------------------------

    def get_settings(self) -> dict[str, Any]:
        return {row.key: row.value for row in self._read(select(settings))}

    def set_settings(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            _set(conn, values)

    def ensure_catalog_id(self) -> str:
        found = self.get_settings().get("catalog_id")
        if found is None:
            try:
                with self.engine.begin() as conn:
                    conn.execute(settings.insert().values(key="catalog_id",
                                                          value=uuid.uuid4().hex))
            except IntegrityError:
                pass  # another process gave it one first
            found = self.get_settings()["catalog_id"]
        return str(found)

    # -- change log ---------------------------------------------------------------------------

    def max_seq(self) -> int:
        return int(self._scalar(select(func.max(changes.c.seq))) or 0)

    def changed_since(self, seq: int, kind: str) -> tuple[int, list[int]]:
        """(latest seq, distinct item ids of ``kind`` changed after ``seq``)."""
        with self._reads.connect() as conn:
            latest = int(conn.execute(select(func.max(changes.c.seq))).scalar() or 0)
            ids = conn.execute(select(changes.c.item_id).where(
                changes.c.seq > seq, changes.c.seq <= latest, changes.c.modality == kind
            ).distinct()).scalars().all()
        return latest, list(ids)

    def pruned_through(self) -> int:
        return int(self.get_settings().get("changes_pruned_through", 0))

    def prune_changes(self, through: int) -> None:
        """Forget log rows up to ``through`` (the newest row, which holds max seq, stays)."""
        with self.engine.begin() as conn:
            latest = int(conn.execute(select(func.max(changes.c.seq))).scalar() or 0)
            through = min(through, latest - 1)
            if through > 0:
                conn.execute(delete(changes).where(changes.c.seq <= through))
                _set(conn, {"changes_pruned_through": through})

    # -- reads ---------------------------------------------------------------------------------

    def file_states(self, roots: Sequence[str], kind: str = IMAGE) -> dict[str, FileState]:
        """Images (or videos) whose path is one of ``roots`` or lies under one of them."""
        out: dict[str, FileState] = {}
        with self._reads.connect() as conn:
            for root in roots:
                prefix = root.rstrip(os.sep) + os.sep
                # Range on the path index: every string that starts with prefix sorts between
                # prefix and prefix with its last character bumped by one.
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                q = select(items.c.id, items.c.path, items.c.size, items.c.mtime_ns,
                           items.c.content_hash).where(
                    items.c.kind == kind,
                    (items.c.path == root) | ((items.c.path >= prefix) & (items.c.path < upper)))
                for row in conn.execute(q):
                    out[row.path] = FileState(row.id, row.size, row.mtime_ns, row.content_hash)
        return out

    def caption_states(self, image_ids: Iterable[int]) -> dict[int, tuple[FileState, str | None]]:
        """Captions of the given images: parent id -> (state, caption file path)."""
        out: dict[int, tuple[FileState, str | None]] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(image_ids)):
                q = select(items.c.id, items.c.parent_id, items.c.path, items.c.size,
                           items.c.mtime_ns, items.c.content_hash).where(
                    items.c.source == SIDECAR, items.c.parent_id.in_(part))
                for r in conn.execute(q):
                    out[r.parent_id] = (FileState(r.id, r.size, r.mtime_ns, r.content_hash),
                                        r.path)
        return out

    def vectors_for_hashes(self, hashes: Iterable[str], kind: str) -> dict[str, np.ndarray]:
        """Stored vectors of items with these contents (one per hash), to reuse."""
        out: dict[str, np.ndarray] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(set(hashes))):
                q = (select(items.c.content_hash, vectors.c.data)
                     .join(vectors, vectors.c.item_id == items.c.id)
                     .where(items.c.kind == kind, items.c.content_hash.in_(part)))
                for h, blob in conn.execute(q):
                    out.setdefault(h, np.frombuffer(blob, dtype="<f4").astype(np.float32))
        return out

    def content_prefixes(self, kind: str = IMAGE) -> np.ndarray:
        """The contents items of ``kind`` hold, as :func:`~.records.hash_prefixes`: what decode
        workers test a file's hash against, on any backend (a rename, a copy: the stored
        vector is reused)."""
        rows = self._read(select(func.substr(items.c.content_hash, 1, 16))
                          .where(items.c.kind == kind))
        return hash_prefixes(r[0] for r in rows)

    def get_items(self, ids: Iterable[int]) -> dict[int, Item]:
        with self._reads.connect() as conn:
            return reads.items_by_id(conn, ids)

    def hydrate(self, ids: Iterable[int]) -> Hydrated:
        """Everything a list of hits shows, read in one transaction: the items with their tags
        and their images' captions (one statement: a database server is a round trip away),
        then the parents of captions (images) when there are any."""
        with self._reads.connect() as conn:
            found = reads.hydrate_items(conn, ids)
            parents = reads.items_by_id(conn, {it.parent_id for it in found.items.values()
                                    if it.parent_id is not None} - set(found.items))
            parents.update({i: found.items[i] for it in found.items.values()
                            if (i := it.parent_id) is not None and i in found.items})
            found.parents = parents
            return found

    def vectors(self, ids: Sequence[int], dim: int) -> tuple[np.ndarray, np.ndarray]:
        """(ids that have a vector, their vectors) for the given ids, in the given order."""
        found: dict[int, bytes] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(ids)):
                q = select(vectors.c.item_id, vectors.c.data).where(vectors.c.item_id.in_(part))
                found.update({r.item_id: r.data for r in conn.execute(q)})
        present = [i for i in ids if i in found]
        return np.asarray(present, dtype=np.int64), decode_vectors([found[i] for i in present], dim)

    def iter_vectors(self, kind: str, dim: int, batch: int = 20_000
                     ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """All (ids, vectors) of items of one kind, in id order, a batch at a time."""
        last = -1
        while True:
            rows = self._read(
                select(vectors.c.item_id, vectors.c.data)
                .join(items, items.c.id == vectors.c.item_id)
                .where(items.c.kind == kind, vectors.c.item_id > last)
                .order_by(vectors.c.item_id).limit(batch))
            if not rows:
                return
            last = rows[-1].item_id
            yield (np.asarray([r.item_id for r in rows], dtype=np.int64),
                   decode_vectors([r.data for r in rows], dim))

    def counts(self) -> dict[str, int]:
        rows = self._read(select(items.c.kind, func.count()).group_by(items.c.kind))
        out = {IMAGE: 0, TEXT: 0}  # and videos and shots, where there are any
        out.update({kind: int(n) for kind, n in rows})
        return out

    def vector_ids(self, kind: str) -> np.ndarray:
        """Ids of all items of ``kind`` that have a vector, ascending."""
        rows = self._read(select(vectors.c.item_id).join(items, items.c.id == vectors.c.item_id)
                          .where(items.c.kind == kind).order_by(vectors.c.item_id))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def counts_with_vectors(self) -> dict[str, int]:
        """Number of vectors per kind of item (what the indexes must hold)."""
        rows = self._read(select(items.c.kind, func.count())
                          .join(vectors, vectors.c.item_id == items.c.id).group_by(items.c.kind))
        out = {IMAGE: 0, TEXT: 0, SHOT: 0}
        out.update({writes.indexed_as(kind): int(n) for kind, n in rows})
        return out

    def text_ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """Standalone texts without an external id, keyed by content hash."""
        out: dict[str, int] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(hashes)):
                q = select(items.c.content_hash, items.c.id).where(
                    items.c.kind == TEXT, items.c.source == ADDED,
                    items.c.external_id.is_(None), items.c.content_hash.in_(part))
                out.update({r.content_hash: r.id for r in conn.execute(q)})
        return out

    def text_states_by_external_id(self, ext_ids: Iterable[str]) -> dict[str, FileState]:
        out: dict[str, FileState] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(ext_ids)):
                q = select(items.c.external_id, items.c.id, items.c.content_hash).where(
                    items.c.kind == TEXT, items.c.external_id.in_(part))
                out.update({r.external_id: FileState(r.id, None, None, r.content_hash)
                            for r in conn.execute(q)})
        return out

    def ids_where(self, kind: str, conditions: Sequence[Condition]) -> np.ndarray:
        """Ids of items of ``kind`` that have a vector and satisfy all ``conditions``."""
        where = [compile_condition(c) for c in conditions]
        rows = self._read(select(items.c.id).join(vectors, vectors.c.item_id == items.c.id)
                          .where(items.c.kind == kind, *where).order_by(items.c.id))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def metadata_keys(self, kind: str | None = None) -> set[str]:
        """Keys users gave items as free metadata (fields of JSONL texts), of items of ``kind``
        or of all; generated captions' bookkeeping (captioner, image hash) is not theirs."""
        query = select(items.c.metadata).where(items.c.metadata.is_not(None),
                                               items.c.source.is_distinct_from(GENERATED))
        rows = self._read((query if kind is None else query.where(items.c.kind == kind))
                          .limit(10_000))
        return {k for (m,) in rows if isinstance(m, dict) for k in m}

    def keyword_search(self, query: str, kind: str, limit: int) -> list[tuple[int, float]]:
        """(id, score) of items of ``kind`` whose name, text, caption or tags match ``query``,
        best first."""
        with self._reads.connect() as conn:
            return self.backend.search_keywords(conn, query, kind, limit)

    def image_contents(self) -> list[tuple[int, str, str | None]]:
        """(id, path, content hash) of every image, in id order."""
        rows = self._read(select(items.c.id, items.c.path, items.c.content_hash)
                          .where(items.c.kind == IMAGE).order_by(items.c.id))
        return [(r.id, r.path, r.content_hash) for r in rows]

    def derived_runs(self, source: str) -> dict[int, str]:
        """Image id -> the key its text of ``source`` was last looked for with."""
        rows = self._read(select(derived_runs.c.item_id, derived_runs.c.key)
                          .where(derived_runs.c.source == source))
        return {r.item_id: r.key for r in rows}

    def derived_metadata(self, source: str, image_ids: Iterable[int]
                         ) -> dict[int, dict[str, Any]]:
        """Image id -> the metadata of its text of ``source`` (a generated caption, recognised
        text: what it was made from)."""
        out: dict[int, dict[str, Any]] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(image_ids)):
                for r in conn.execute(select(items.c.parent_id, items.c.metadata).where(
                        items.c.source == source, items.c.parent_id.in_(part))):
                    out[r.parent_id] = r.metadata or {}
        return out

    def untagged(self, signature: str) -> np.ndarray:
        """Images and shots of videos with a vector that the tagging run ``signature`` has
        not covered yet."""
        done = select(tag_runs.c.item_id).where(tag_runs.c.signature == signature)
        rows = self._read(select(items.c.id).join(vectors, vectors.c.item_id == items.c.id)
                          .where(items.c.kind.in_(VISUAL), items.c.id.not_in(done))
                          .order_by(items.c.id))
        return np.asarray([r[0] for r in rows], dtype=np.int64)

    def aux_vectors(self, model: str, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Cached second-model vectors of items whose content did not change since."""
        out: dict[int, np.ndarray] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(ids)):
                q = (select(aux_vectors.c.item_id, aux_vectors.c.data)
                     .join(items, items.c.id == aux_vectors.c.item_id)
                     .where(aux_vectors.c.model == model, aux_vectors.c.item_id.in_(part),
                            aux_vectors.c.content_hash == items.c.content_hash))
                out.update({r.item_id: np.frombuffer(r.data, dtype="<f4").astype(np.float32)
                            for r in conn.execute(q)})
        return out

    # -- writes (one transaction each) -------------------------------------------------------

    def write_images(self, records: Sequence[ImageRecord]) -> list[int]:
        """Insert or update image items by path, with their vectors; returns their ids."""
        return list(self._write(writes.write_images, records))

    def write_texts(self, records: Sequence[TextRecord]) -> list[int]:
        """Insert or update texts (captions by parent, others by external id)."""
        return list(self._write(writes.write_texts, records))

    def write_derived(self, source: str, records: Sequence[TextRecord],
                      runs: Mapping[int, str] | None = None) -> list[int]:
        """Insert or replace texts a model made from images (generated captions, recognised
        text), one per image and source (images deleted since are left out); with ``runs``,
        record which images were looked at with which key (see ``writes.write_derived``).
        Returns the texts' ids."""
        return list(self._write(writes.write_derived, source, records, runs))

    def delete_items(self, ids: Iterable[int]) -> int:
        """Delete items and everything attached to them; returns items deleted."""
        ids = list(ids)
        return int(self._write(writes.delete_items, ids)) if ids else 0

    def set_tags(self, labels: dict[int, list[tuple[str, float]]], signature: str) -> None:
        """Replace the zero-shot tags of these items and mark them covered by ``signature``."""
        self._write(writes.set_tags, labels, signature)

    def put_aux_vectors(self, model: str, vecs: dict[int, np.ndarray]) -> None:
        self._write(writes.put_aux_vectors, model, vecs)


def _set(conn: Any, values: dict[str, Any]) -> None:
    for key, value in values.items():
        conn.execute(delete(settings).where(settings.c.key == key))
        conn.execute(settings.insert().values(key=key, value=value))
