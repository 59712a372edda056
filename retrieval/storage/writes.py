"""The catalog's writes, each run inside one transaction by :class:`~.catalog.Catalog`.

Every write that touches a vector appends to the change log in the same transaction (so the
vector indexes can catch up), and every write that changes what an item shows refreshes its
keyword row.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy import bindparam, delete, insert, select, update

from ..items import DERIVED, FILE, IMAGE, SHOT, SIDECAR, TEXT, VIDEO, VISUAL
from .backends import for_dialect
from .records import ImageRecord, TextRecord, encode_vector
from .schema import (
    aux_vectors,
    changes,
    derived_runs,
    items,
    keyframes,
    tag_runs,
    tags,
    utcnow,
    vectors,
)

CHUNK = 900  # bound parameters per statement (SQLite allows 999 by default)


def chunks(seq: Sequence[Any], n: int = CHUNK) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]


def indexed_as(kind: str) -> str:
    """The vector index that holds items of ``kind`` (one per kind; a video has no vector,
    its shots do)."""
    return {IMAGE: IMAGE, SHOT: SHOT, VIDEO: SHOT}.get(kind, TEXT)


def log_changes(conn: Any, changed: Iterable[tuple[int, str]]) -> None:
    rows = [{"item_id": i, "modality": indexed_as(kind)} for i, kind in changed]
    if rows:
        conn.execute(changes.insert(), rows)


def refresh_keywords(conn: Any, ids: Sequence[int]) -> None:
    """Recompute the keyword rows of these items, where the database has a keyword index."""
    backend = for_dialect(conn.dialect.name)
    if backend.keywords:
        for part in chunks(list(ids)):
            backend.refresh_keywords(conn, part)


def rebuild_keywords(conn: Any) -> None:
    """Create the keyword index (where the database has one) and fill it from the catalog."""
    if for_dialect(conn.dialect.name).create_keywords(conn):
        refresh_keywords(conn, [r[0] for r in conn.execute(select(items.c.id))])


def ids_by(conn: Any, column: Any, keys: Sequence[Any], where: Any) -> dict[Any, int]:
    keys = [k for k in keys if k is not None]
    out: dict[Any, int] = {}
    for part in chunks(keys):
        out.update({k: i for k, i in conn.execute(
            select(column, items.c.id).where(where, column.in_(part)))})
    return out


def upsert(conn: Any, rows: list[dict[str, Any]], existing: list[int | None],
           vecs: Sequence[np.ndarray], now: dt.datetime) -> list[int]:
    """Bulk insert new rows, bulk update known ones, replace their vectors; returns ids."""
    fresh = [dict(r, created_at=now) for r, e in zip(rows, existing, strict=True) if e is None]
    new_ids = iter(conn.execute(insert(items).returning(
        items.c.id, sort_by_parameter_order=True), fresh).scalars().all() if fresh else [])
    known = [dict(r, row_id=e) for r, e in zip(rows, existing, strict=True) if e is not None]
    if known:
        columns: dict[str, Any] = {c: bindparam(c) for c in known[0] if c != "row_id"}
        conn.execute(update(items).where(items.c.id == bindparam("row_id")).values(columns),
                     known)
    ids = [e if e is not None else next(new_ids) for e in existing]
    for part in chunks(ids):
        conn.execute(delete(vectors).where(vectors.c.item_id.in_(part)))
    if ids:
        conn.execute(insert(vectors), [{"item_id": i, "data": encode_vector(v)}
                                       for i, v in zip(ids, vecs, strict=True)])
    return ids


def write_images(conn: Any, records: Sequence[ImageRecord]) -> list[int]:
    """Insert or update image items by path, with their vectors; returns their ids."""
    now = utcnow()
    rows = [dict(kind=IMAGE, source=FILE, path=r.path, size=r.size, mtime_ns=r.mtime_ns,
                 content_hash=r.content_hash, width=r.width, height=r.height,
                 taken_at=r.taken_at, camera_make=r.camera_make, camera_model=r.camera_model,
                 updated_at=now) for r in records]
    existing = ids_by(conn, items.c.path, [r.path for r in records], items.c.kind == IMAGE)
    ids = upsert(conn, rows, [existing.get(r.path) for r in records],
                 [r.vector for r in records], now)
    log_changes(conn, ((i, IMAGE) for i in ids))
    # New content: zero-shot tags of the old content go.
    for part in chunks(ids):
        conn.execute(delete(tags).where(tags.c.item_id.in_(part), tags.c.source == "zero-shot"))
        conn.execute(delete(tag_runs).where(tag_runs.c.item_id.in_(part)))
    refresh_keywords(conn, ids)
    return ids


def write_texts(conn: Any, records: Sequence[TextRecord]) -> list[int]:
    """Insert or update texts. Captions are keyed by parent, others by external id."""
    now = utcnow()
    rows = [dict(kind=TEXT, text=r.text, content_hash=r.content_hash, source=r.source,
                 path=r.path, size=r.size, mtime_ns=r.mtime_ns, metadata=r.metadata,
                 external_id=r.external_id, parent_id=r.parent_id, updated_at=now)
            for r in records]
    by_parent = ids_by(conn, items.c.parent_id,
                       [r.parent_id for r in records if r.source == SIDECAR],
                       items.c.source == SIDECAR)
    by_ext = ids_by(conn, items.c.external_id,
                    [r.external_id for r in records if r.source != SIDECAR],
                    items.c.kind == TEXT)
    existing = [by_parent.get(r.parent_id) if r.source == SIDECAR else
                by_ext.get(r.external_id) for r in records]
    ids = upsert(conn, rows, existing, [r.vector for r in records], now)
    log_changes(conn, ((i, TEXT) for i in ids))
    refresh_keywords(conn, ids + [r.parent_id for r in records if r.parent_id is not None])
    return ids


def write_derived(conn: Any, source: str, records: Sequence[TextRecord],
                  runs: Mapping[int, str] | None = None) -> list[int]:
    """Insert or replace texts a model made from images (``source``: one of ``DERIVED``), one
    per image (keyed by the image); one transaction with their vectors, change log and keyword
    rows (the text's and its image's). With ``runs`` (image id -> the key it was made with,
    for every image looked at, with a text or without), the runs are recorded and an image
    looked at with no text found this time loses the text it had. An image deleted since the
    batch was read is left out."""
    assert source in DERIVED, source
    if runs:
        record_runs(conn, source, runs, {r.parent_id for r in records})
    alive = set(ids_by(conn, items.c.id, [r.parent_id for r in records],
                       items.c.kind.in_(VISUAL)))
    records = [r for r in records if r.parent_id in alive]
    now = utcnow()
    rows = [dict(kind=TEXT, text=r.text, content_hash=r.content_hash, source=source,
                 metadata=r.metadata, parent_id=r.parent_id, updated_at=now) for r in records]
    existing = ids_by(conn, items.c.parent_id, [r.parent_id for r in records],
                      items.c.source == source)
    ids = upsert(conn, rows, [existing.get(r.parent_id) for r in records],
                 [r.vector for r in records], now)
    log_changes(conn, ((i, TEXT) for i in ids))
    refresh_keywords(conn, ids + [r.parent_id for r in records if r.parent_id is not None])
    return ids


def record_runs(conn: Any, source: str, runs: Mapping[int, str], with_text: set[Any]) -> None:
    """Record the runs of images still in the catalog; drop the old text of ``source`` of those
    that came out without one."""
    alive = set(ids_by(conn, items.c.id, list(runs), items.c.kind.in_(VISUAL)))
    for part in chunks(list(alive)):
        conn.execute(delete(derived_runs).where(derived_runs.c.source == source,
                                                derived_runs.c.item_id.in_(part)))
    if alive:
        conn.execute(insert(derived_runs), [{"item_id": i, "source": source, "key": runs[i]}
                                            for i in alive])
    empty = [i for i in alive if i not in with_text]
    gone = list(ids_by(conn, items.c.parent_id, empty, items.c.source == source).values())
    if gone:
        delete_items(conn, gone)  # logs the change and refreshes the images' keyword rows


def delete_items(conn: Any, ids: Sequence[int]) -> int:
    """Delete items and everything attached to them (captions; a video's shots and their
    texts); returns items deleted."""
    doomed: dict[int, str] = {}
    parents: set[int] = set()  # of the items themselves: their keyword rows change
    for part in chunks(list(ids)):
        for r in conn.execute(select(items.c.id, items.c.kind, items.c.parent_id)
                              .where(items.c.id.in_(part))):
            doomed[r.id] = r.kind
            if r.parent_id is not None:
                parents.add(r.parent_id)
    level = list(doomed)
    while level:  # their children, their children's children
        found: list[int] = []
        for part in chunks(level):
            for r in conn.execute(select(items.c.id, items.c.kind)
                                  .where(items.c.parent_id.in_(part))):
                if r.id not in doomed:
                    doomed[r.id] = r.kind
                    found.append(r.id)
        level = found
    for part in chunks(list(doomed)):
        for table in (vectors, tags, tag_runs, aux_vectors, derived_runs, keyframes):
            conn.execute(delete(table).where(table.c.item_id.in_(part)))
        conn.execute(delete(items).where(items.c.parent_id.in_(part)))
        conn.execute(delete(items).where(items.c.id.in_(part)))
    log_changes(conn, doomed.items())
    refresh_keywords(conn, list(doomed) + list(parents - set(doomed)))
    return len(doomed)


def set_tags(conn: Any, labels: dict[int, list[tuple[str, float]]], signature: str) -> None:
    """Replace the zero-shot tags of these items and mark them covered by ``signature``."""
    ids = list(labels)
    for part in chunks(ids):
        conn.execute(delete(tags).where(tags.c.item_id.in_(part), tags.c.source == "zero-shot"))
        conn.execute(delete(tag_runs).where(tag_runs.c.item_id.in_(part)))
    rows = [{"item_id": i, "tag": t, "score": sc, "source": "zero-shot"}
            for i, ts in labels.items() for t, sc in ts]
    if rows:
        conn.execute(insert(tags), rows)
    if ids:
        conn.execute(insert(tag_runs), [{"item_id": i, "signature": signature} for i in ids])
    refresh_keywords(conn, ids)


def put_aux_vectors(conn: Any, model: str, vecs: dict[int, np.ndarray]) -> None:
    ids = list(vecs)
    hashes: dict[int, str | None] = {}
    for part in chunks(ids):
        hashes.update({r.id: r.content_hash for r in conn.execute(
            select(items.c.id, items.c.content_hash).where(items.c.id.in_(part)))})
    for part in chunks(ids):
        conn.execute(delete(aux_vectors).where(aux_vectors.c.model == model,
                                               aux_vectors.c.item_id.in_(part)))
    rows = [{"model": model, "item_id": i, "content_hash": hashes.get(i),
             "data": encode_vector(v)} for i, v in vecs.items() if i in hashes]
    if rows:
        conn.execute(insert(aux_vectors), rows)
