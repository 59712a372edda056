"""SQLite: a catalog file in the collection's folder.

WAL mode (readers never wait for the writer), foreign keys on, a writer waits up to 30 s for
another; the file and its WAL are checked before the catalog opens and checkpointed when it
closes (:mod:`.sqlite_files`). Keywords live in the FTS5 table ``items_fts`` (rowid = item id),
ranked by BM25 with the name weighted double; CJK text is indexed as characters and pairs
(:func:`index_form`), which FTS5's own tokenizer does not do.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import literal

from ...errors import CatalogError, first_line
from .. import keywords
from ..dialects import EpochTime, Glob, JsonValue
from . import sqlite_files
from .base import Backend

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine

FTS_TABLE = "items_fts"


class SQLite(Backend):
    name = "SQLite"
    server = False
    keywords = True

    def locate(self, url: str, create: bool) -> tuple[str | None, str]:
        """A path is a catalog file: checked before anything reads, or writes over, it."""
        if "://" in url:
            return None, url
        file = os.path.abspath(url)
        if not create and not os.path.exists(file):
            raise CatalogError(f"catalog not found: {file}")
        sqlite_files.check_files(file)
        os.makedirs(os.path.dirname(file), exist_ok=True)
        return file, f"sqlite:///{file}"

    def engine(self, parsed: URL) -> Engine:
        engine = create_engine(parsed)
        event.listen(engine, "connect", _pragmas)
        return engine

    def reads(self, engine: Engine) -> Engine:
        return engine  # a read in WAL mode never waits, and costs no round trip

    def lock_migrations(self, conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")  # the write lock, before the version is read

    def damage(self, exc: BaseException, file: str | None) -> CatalogError | None:
        if file is None or not sqlite_files.is_damage(exc):
            return None
        return CatalogError(f"catalog damaged: {file}: {first_line(exc)}; restore it from a "
                            "backup")

    def close(self, engine: Engine, file: str | None) -> None:
        if file is not None:
            sqlite_files.checkpoint(engine, file)

    def create_keywords(self, conn: Any) -> bool:
        conn.exec_driver_sql(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
            "name, body, tags, tokenize = 'unicode61 remove_diacritics 2')")
        return True

    def refresh_keywords(self, conn: Any, ids: Sequence[int]) -> None:
        marks = ",".join("?" * len(ids))
        conn.exec_driver_sql(f"DELETE FROM {FTS_TABLE} WHERE rowid IN ({marks})", tuple(ids))
        rows = [(i, index_form(n), index_form(b), index_form(t))
                for i, n, b, t in keywords.rows(conn, ids)]
        if rows:
            conn.exec_driver_sql(
                f"INSERT INTO {FTS_TABLE}(rowid, name, body, tags) VALUES (?, ?, ?, ?)", rows)

    def search_keywords(self, conn: Any, query: str, kind: str, limit: int
                        ) -> list[tuple[int, float]]:
        fts = query_text(query)
        if not fts:
            return []
        rows = conn.exec_driver_sql(
            f"SELECT f.rowid, bm25({FTS_TABLE}, 2.0, 1.0, 1.0) AS rank FROM {FTS_TABLE} f "
            "JOIN items i ON i.id = f.rowid WHERE items_fts MATCH ? AND i.kind = ? "
            "ORDER BY rank, f.rowid LIMIT ?", (fts, kind, int(limit))).all()
        return [(int(i), -float(r)) for i, r in rows]


def _pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys = ON")
    cur.execute("PRAGMA busy_timeout = 30000")
    cur.execute("PRAGMA journal_mode = WAL")
    cur.execute("PRAGMA synchronous = NORMAL")
    cur.close()


def index_form(text: str) -> str:
    """``text`` as FTS5 indexes it: CJK runs spelled as :func:`~..keywords.cjk_grams`, the
    rest as is (FTS5's own tokenizer folds case and accents)."""
    return keywords.CJK_RUN.sub(lambda m: " " + " ".join(keywords.cjk_grams(m.group())) + " ",
                                text)


def query_text(text: str) -> str:
    """A safe FTS5 query for free text: the phrase, or any of its words (quoted tokens, so
    user input never reaches FTS5's query syntax)."""
    found = re.findall(r"\w+", text.lower())
    units = keywords.query_units(found)
    if not units:
        return ""
    terms = [f'"{u[0]}"' if len(u) == 1 else "(" + " AND ".join(f'"{g}"' for g in u) + ")"
             for u in units]
    if len(found) > 1 and all(len(u) == 1 for u in units):
        terms.insert(0, '"' + " ".join(found) + '"')
    return " OR ".join(terms)


# -- the filter constructs of ..dialects, in SQLite's words -------------------------------------

@compiles(Glob, "sqlite")
def _glob(element: Glob, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    return f"({value} GLOB {compiler.process(literal(element.pattern), **kw)})"


@compiles(EpochTime, "sqlite")
def _epoch(element: EpochTime, compiler: Any, **kw: Any) -> str:
    return f"datetime({compiler.process(element.clauses, **kw)}, 'unixepoch')"


@compiles(JsonValue, "sqlite")
def _json(element: JsonValue, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    path = compiler.process(literal(f'$."{element.key}"'), **kw)
    if element.number:
        return (f"(CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
                f"THEN json_extract({column}, {path}) END)")
    return f"json_extract({column}, {path})"
