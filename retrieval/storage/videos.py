"""Videos in the catalog: a video file is an item (kind ``video``, no vector) and each of its
shots another (kind ``shot``, parented to it, with its keyframe's vector and JPEG).

A video and all its shots are written in one transaction, so a search never sees half a
video, and an interrupted run loses at most the video in flight. A shot repeats its video's
path, file columns and duration: filters, file names in the keyword index, and paths on hits
read the same on a shot as on an image, with no join.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import insert, select, update

from ..items import FILE, SHOT, VIDEO
from .records import FileState, ShotRecord, VideoRecord
from .schema import items, keyframes, utcnow, vectors
from .writes import chunks, delete_items, ids_by, log_changes, refresh_keywords, upsert


def _video_row(r: VideoRecord) -> dict[str, Any]:
    return dict(source=FILE, path=r.path, size=r.size, mtime_ns=r.mtime_ns,
                width=r.width, height=r.height, taken_at=r.taken_at, duration=r.duration)


def write_video(conn: Any, record: VideoRecord, shots: Sequence[ShotRecord]) -> int:
    """Insert or replace the video at ``record.path`` with ``shots`` (its old shots, and what
    was made from them, go); returns the video's id."""
    now = utcnow()
    row = dict(_video_row(record), kind=VIDEO, content_hash=record.content_hash,
               metadata=record.metadata, updated_at=now)
    video_id = ids_by(conn, items.c.path, [record.path], items.c.kind == VIDEO).get(record.path)
    if video_id is None:
        video_id = conn.execute(insert(items).values(dict(row, created_at=now))
                                .returning(items.c.id)).scalar_one()
    else:
        conn.execute(update(items).where(items.c.id == video_id).values(row))
        old = [r[0] for r in conn.execute(select(items.c.id).where(
            items.c.parent_id == video_id, items.c.kind == SHOT))]
        if old:
            delete_items(conn, old)
    base = dict(_video_row(record), kind=SHOT, parent_id=video_id, updated_at=now)
    rows = [dict(base, start_time=s.start, end_time=s.end, metadata=s.metadata,
                 content_hash=keyframe_hash(s.keyframe)) for s in shots]
    ids = upsert(conn, rows, [None] * len(rows), [s.vector for s in shots], now)
    if ids:
        conn.execute(insert(keyframes), [{"item_id": i, "data": s.keyframe}
                                         for i, s in zip(ids, shots, strict=True)])
    log_changes(conn, ((i, SHOT) for i in ids))
    refresh_keywords(conn, [video_id, *ids])
    return int(video_id)


def copy_video(conn: Any, source_id: int, record: VideoRecord) -> int | None:
    """Write the video at ``record.path`` as a copy of stored video ``source_id`` (same
    content: a copy or a rename), its shots' vectors and keyframes reused; None when that
    video is gone."""
    found = conn.execute(select(items).where(items.c.id == source_id,
                                             items.c.kind == VIDEO)).first()
    if found is None:
        return None
    shot_rows = conn.execute(
        select(items.c.start_time, items.c.end_time, items.c.metadata, vectors.c.data,
               keyframes.c.data.label("keyframe"))
        .join(vectors, vectors.c.item_id == items.c.id)
        .join(keyframes, keyframes.c.item_id == items.c.id)
        .where(items.c.parent_id == source_id, items.c.kind == SHOT)
        .order_by(items.c.start_time, items.c.id)).all()
    import numpy as np

    shots = [ShotRecord(r.start_time, r.end_time, np.frombuffer(r.data, dtype="<f4"),
                        r.keyframe, r.metadata) for r in shot_rows]
    record.metadata = record.metadata or found.metadata
    return write_video(conn, record, shots)


def restat_video(conn: Any, video_id: int, size: int, mtime_ns: int) -> None:
    """A video touched but not changed (same bytes): its new stat, on it and its shots."""
    conn.execute(update(items).where((items.c.id == video_id) | (
        (items.c.parent_id == video_id) & (items.c.kind == SHOT))).values(
        size=size, mtime_ns=mtime_ns, updated_at=utcnow()))


def keyframe_hash(data: bytes) -> str:
    from ..media import hash_bytes

    return hash_bytes(data)


class VideoCatalog:
    """The catalog's reads and writes of videos (a part of :class:`~.catalog.Catalog`)."""

    engine: Any
    _reads: Any

    def video_states(self, roots: Sequence[str]) -> dict[str, FileState]:
        """Videos whose path is one of ``roots`` or lies under one of them."""
        return self.file_states(roots, kind=VIDEO)  # type: ignore[attr-defined]

    def videos_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """A stored video (its id) with each of these contents, where there is one."""
        out: dict[str, int] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(set(hashes))):
                out.update({h: i for h, i in conn.execute(
                    select(items.c.content_hash, items.c.id).where(
                        items.c.kind == VIDEO, items.c.content_hash.in_(part)))})
        return out

    def write_video(self, record: VideoRecord, shots: Sequence[ShotRecord]) -> int:
        """Insert or replace a video and all its shots, in one transaction; returns its id."""
        with self.engine.begin() as conn:
            return write_video(conn, record, shots)

    def copy_video(self, source_id: int, record: VideoRecord) -> int | None:
        """Store ``record`` as a copy of video ``source_id`` (no decoding, no model); None
        when that video was deleted meanwhile."""
        with self.engine.begin() as conn:
            return copy_video(conn, source_id, record)

    def restat_video(self, video_id: int, size: int, mtime_ns: int) -> None:
        """Record a video's new size and modification time (same content)."""
        with self.engine.begin() as conn:
            restat_video(conn, video_id, size, mtime_ns)

    def keyframe(self, shot_id: int) -> bytes | None:
        """A shot's keyframe (JPEG bytes), or None."""
        with self._reads.connect() as conn:
            return conn.execute(select(keyframes.c.data).where(
                keyframes.c.item_id == shot_id)).scalar()

    def shot_contents(self) -> list[tuple[int, str, str | None]]:
        """(id, its video's path, its keyframe's hash) of every shot, in id order."""
        with self._reads.connect() as conn:
            return [(r.id, r.path, r.content_hash) for r in conn.execute(
                select(items.c.id, items.c.path, items.c.content_hash)
                .where(items.c.kind == SHOT).order_by(items.c.id))]

    def first_shot(self, video_id: int) -> int | None:
        """The id of a video's earliest shot, or None (no such video, or no shots)."""
        with self._reads.connect() as conn:
            return conn.execute(select(items.c.id).where(
                items.c.parent_id == video_id, items.c.kind == SHOT)
                .order_by(items.c.start_time, items.c.id).limit(1)).scalar()

    def shot_parents(self, ids: Iterable[int]) -> dict[int, int]:
        """Shot id -> its video's id, for those of ``ids`` that are shots."""
        out: dict[int, int] = {}
        with self._reads.connect() as conn:
            for part in chunks(list(ids)):
                out.update({i: p for i, p in conn.execute(
                    select(items.c.id, items.c.parent_id).where(
                        items.c.id.in_(part), items.c.kind == SHOT))})
        return out

