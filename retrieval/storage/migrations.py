"""Ordered schema migrations, each applied once, inside the transaction that opens a catalog.

A catalog records the versions applied in ``schema_version``; opening it applies the missing
ones in order, and refuses a catalog written by a newer version of this package.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import func, inspect, select, text

from ..errors import CatalogError
from .schema import (
    aux_vectors,
    changes,
    derived_runs,
    items,
    keyframes,
    schema_version,
    settings,
    tag_runs,
    tags,
    utcnow,
    vectors,
)
from .writes import rebuild_keywords


def _1_core(conn: Any) -> None:
    for table in (schema_version, settings, items, vectors, changes):
        table.create(conn, checkfirst=True)


def _2_tags_aux_keywords(conn: Any) -> None:
    """Tags, tagging runs, second-model vectors, and the keyword index."""
    for table in (tags, tag_runs, aux_vectors):
        table.create(conn, checkfirst=True)
    rebuild_keywords(conn)


def _3_path_escape(conn: Any) -> None:
    """Paths are stored escaped (:mod:`retrieval.pathnames`): a literal U+FFFF doubles."""
    conn.execute(text("UPDATE items SET path = replace(path, :mark, :twice) "
                      "WHERE path LIKE '%' || :mark || '%'"),
                 {"mark": "\uffff", "twice": "\uffff\uffff"})


def _4_generated_captions(conn: Any) -> None:
    """Generated captions (``source = 'generated'``): at most one per image."""
    for index in items.indexes:
        if index.name == "ux_items_generated_parent":
            index.create(conn, checkfirst=True)


def _5_cjk_keywords(conn: Any) -> None:
    """The keyword index spells CJK text as characters and pairs: rebuilt from the catalog."""
    rebuild_keywords(conn)


def _6_recognised_text(conn: Any) -> None:
    """Text recognised in images (``source = 'ocr'``): at most one per image, and the runs
    that looked for it (``derived_runs``)."""
    derived_runs.create(conn, checkfirst=True)
    for index in items.indexes:
        if index.name == "ux_items_ocr_parent":
            index.create(conn, checkfirst=True)


def _7_videos(conn: Any) -> None:
    """Videos and their shots: a video's duration, a shot's times, unique video paths, and
    the shots' keyframes."""
    have = {c["name"] for c in inspect(conn).get_columns("items")}
    for column in (items.c.duration, items.c.start_time, items.c.end_time):
        if column.name not in have:
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE items ADD COLUMN {column.name} {kind}"))
    keyframes.create(conn, checkfirst=True)
    for index in items.indexes:
        if index.name == "ux_items_video_path":
            index.create(conn, checkfirst=True)


MIGRATIONS: dict[int, Callable[[Any], None]] = {1: _1_core, 2: _2_tags_aux_keywords,
                                                3: _3_path_escape, 4: _4_generated_captions,
                                                5: _5_cjk_keywords, 6: _6_recognised_text,
                                                7: _7_videos}
SCHEMA_VERSION = max(MIGRATIONS)


def current_version(conn: Any) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    return int(conn.execute(select(func.max(schema_version.c.version))).scalar() or 0)


def pending(conn: Any) -> list[int]:
    """Migrations not recorded as applied, in order (a catalog made while a lower-numbered
    migration did not exist yet still gets it)."""
    if not inspect(conn).has_table("schema_version"):
        return sorted(MIGRATIONS)
    done = set(conn.execute(select(schema_version.c.version)).scalars())
    return sorted(v for v in MIGRATIONS if v not in done)


def migrate(conn: Any, where: str) -> None:
    """Bring the schema of the catalog behind ``conn`` to :data:`SCHEMA_VERSION`."""
    current = current_version(conn)
    if current > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog {where} has schema version {current}, newer than this version of "
            f"retrieval understands ({SCHEMA_VERSION}); upgrade retrieval")
    for version in pending(conn):
        MIGRATIONS[version](conn)
        conn.execute(schema_version.insert().values(version=version, applied_at=utcnow()))
