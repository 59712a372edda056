"""The keyword index: words of file names, captions, texts and tags, searched by BM25.

SQLite's FTS5 virtual table ``items_fts`` holds one row per item (rowid = item id) with three
columns: ``name`` (the file name and its folder, or a text's external id), ``body`` (a text, or
an image's caption) and ``tags``. Every catalog write that changes what an item shows
refreshes its row in the same transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from ..pathnames import clean_text
from .schema import IMAGE, items, tags

FTS_TABLE = "items_fts"


def available(conn: Any) -> bool:
    return bool(conn.dialect.name == "sqlite")


def create(conn: Any) -> None:
    """Create the index (where the database has one) and fill it from the catalog."""
    if not available(conn):
        return
    conn.exec_driver_sql(
        f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
        "name, body, tags, tokenize = 'unicode61 remove_diacritics 2')")
    ids = [r[0] for r in conn.execute(select(items.c.id))]
    for start in range(0, len(ids), 900):
        refresh(conn, ids[start:start + 900])


def query_text(text: str) -> str:
    """A safe FTS5 query for free text: the phrase, or any of its words (quoted tokens, so
    user input never reaches FTS5's query syntax)."""
    words = re.findall(r"\w+", text.lower())
    if not words:
        return ""
    quoted = [f'"{w}"' for w in dict.fromkeys(words)]
    phrase = '"' + " ".join(words) + '"'
    return " OR ".join([phrase, *quoted]) if len(words) > 1 else quoted[0]


def name_words(path: str | None) -> str:
    """Searchable words of a path: the file name and its folder's name."""
    if not path:
        return ""
    p = path.replace("\\", "/").rstrip("/").split("/")
    return clean_text(" ".join(p[-2:]))


def refresh(conn: Any, ids: Sequence[int]) -> None:
    """Recompute the keyword rows of these items (deleted items lose theirs)."""
    if not available(conn) or not ids:
        return
    marks = ",".join("?" * len(ids))
    conn.exec_driver_sql(f"DELETE FROM {FTS_TABLE} WHERE rowid IN ({marks})", tuple(ids))
    found = conn.execute(select(items.c.id, items.c.kind, items.c.path, items.c.text,
                                items.c.external_id).where(items.c.id.in_(ids))).all()
    captions = dict(conn.execute(select(items.c.parent_id, items.c.text).where(
        items.c.source == "caption", items.c.parent_id.in_(ids))).all())
    labels: dict[int, list[str]] = {}
    for item_id, tag in conn.execute(select(tags.c.item_id, tags.c.tag)
                                     .where(tags.c.item_id.in_(ids))):
        labels.setdefault(item_id, []).append(tag)
    rows = []
    for r in found:
        words = " ".join(labels.get(r.id, []))
        if r.kind == IMAGE:
            rows.append((r.id, name_words(r.path), captions.get(r.id) or "", words))
        else:
            rows.append((r.id, r.external_id or "", r.text or "", words))
    if rows:
        conn.exec_driver_sql(
            f"INSERT INTO {FTS_TABLE}(rowid, name, body, tags) VALUES (?, ?, ?, ?)", rows)


def search(conn: Any, text: str, kind: str, limit: int) -> list[tuple[int, float]]:
    """(id, score) of items of ``kind`` whose name, text, caption or tags match, best first
    (BM25 with the name weighted double; higher is better)."""
    fts = query_text(text)
    if not fts:
        return []
    rows = conn.exec_driver_sql(
        f"SELECT f.rowid, bm25({FTS_TABLE}, 2.0, 1.0, 1.0) AS rank FROM {FTS_TABLE} f "
        "JOIN items i ON i.id = f.rowid WHERE items_fts MATCH ? AND i.kind = ? "
        "ORDER BY rank LIMIT ?", (fts, kind, int(limit))).all()
    return [(int(i), -float(r)) for i, r in rows]
