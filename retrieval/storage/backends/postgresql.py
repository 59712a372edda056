"""PostgreSQL (through psycopg 3): a catalog on a server, shared by the collection's folders
on several hosts.

Writers take a session-level advisory lock (:class:`DatabaseLock`), migrations a transaction-
level one. Keywords live in the table ``items_kw`` with a generated ``tsvector`` column under
a GIN index (name weighted A, the rest B), and a trigram index on names (``pg_trgm``) so a
fragment of a file name finds it. Words are folded in Python (case, accents) and split on
anything that is not a letter or digit, as FTS5's tokenizer does; CJK text as characters and
pairs (:func:`~..keywords.cjk_grams`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, Table, Text, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import literal

from .. import keywords
from ..dialects import EpochTime, Glob, JsonValue, glob_to_regex
from .base import Backend

PG_TABLE = "items_kw"
MAX_WORDS = 16  # words of a query that count
DF_CAP = 100_000  # document frequencies are counted up to this (rarer words matter)
N_CAP = 1_000_000
MIGRATION_LOCK = 0x5245_5452_4D49_4752  # "RETRMIGR": one migrating process per database
PASSWORD_HINT = ("; give the password in $PGPASSWORD or ~/.pgpass ($PGPASSFILE), or give the "
                 "whole URL again in $RETRIEVAL_DATABASE_URL or --catalog (the collection's "
                 "catalog.url keeps no password)")

pg_rows = Table(PG_TABLE, MetaData(), Column("item_id", BigInteger, primary_key=True),
                Column("name", Text), Column("body", Text), Column("tags", Text))


class PostgreSQL(Backend):
    name = "PostgreSQL"
    driver_hint = " (pip install 'retrieval[postgresql]')"
    keywords = True

    def normalize_url(self, url: str) -> str:
        """``postgresql://`` (and ``postgres://``) mean psycopg 3, whatever SQLAlchemy's
        default."""
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix):]
        return url

    def lock_migrations(self, conn: Any) -> None:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK})

    def writer_lock(self, url: str, where: str) -> DatabaseLock:
        return DatabaseLock(url, where)

    def password_hint(self, message: str) -> str:
        missing = "no password supplied" in message or "password authentication failed" in message
        return PASSWORD_HINT if missing else ""

    def create_keywords(self, conn: Any) -> bool:
        conn.exec_driver_sql(
            f"CREATE TABLE IF NOT EXISTS {PG_TABLE} ("
            " item_id BIGINT PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,"
            " name TEXT NOT NULL, body TEXT NOT NULL, tags TEXT NOT NULL,"
            " tsv tsvector GENERATED ALWAYS AS ("
            "  setweight(to_tsvector('simple', name), 'A') ||"
            "  setweight(to_tsvector('simple', body), 'B') ||"
            "  setweight(to_tsvector('simple', tags), 'B')) STORED)")
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {PG_TABLE}_tsv ON {PG_TABLE} "
                             "USING gin (tsv)")
        savepoint = conn.begin_nested()
        try:  # pg_trgm is a trusted extension, but a locked-down server may not offer it
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
            conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {PG_TABLE}_name_trgm "
                                 f"ON {PG_TABLE} USING gin (name gin_trgm_ops)")
            savepoint.commit()
        except DBAPIError:  # fragments of names then match by whole words only
            savepoint.rollback()
        return True

    def refresh_keywords(self, conn: Any, ids: Sequence[int]) -> None:
        conn.execute(pg_rows.delete().where(pg_rows.c.item_id.in_(ids)))
        rows = [{"item_id": i, "name": " ".join(keywords.words(n)),
                 "body": " ".join(keywords.words(b)), "tags": " ".join(keywords.words(t))}
                for i, n, b, t in keywords.rows(conn, ids)]
        if rows:
            conn.execute(pg_rows.insert(), rows)

    def search_keywords(self, conn: Any, query: str, kind: str, limit: int
                        ) -> list[tuple[int, float]]:
        return _search(conn, query, kind, limit)


def _pg_unit(unit: list[str]) -> str:
    return f"'{unit[0]}'" if len(unit) == 1 else "(" + " & ".join(f"'{g}'" for g in unit) + ")"


def pg_query(query: str) -> str:
    """The keyword query as a PostgreSQL ``tsquery``: the phrase, or any of its words."""
    units = keywords.query_units(keywords.query_tokens(query))
    if not units:
        return ""
    terms = [_pg_unit(u) for u in units]
    if len(units) > 1 and all(len(u) == 1 for u in units):
        terms.insert(0, "(" + " <-> ".join(f"'{u[0]}'" for u in units) + ")")
    return " | ".join(terms)


def _search(conn: Any, query: str, kind: str, limit: int) -> list[tuple[int, float]]:
    """BM25-like ranking: each query word (a CJK word: all its pairs) weighs by its rarity (an
    inverse document frequency from counts capped at :data:`DF_CAP`, cheap on the GIN index),
    times its ``ts_rank`` in the item (names weigh double); the whole phrase adds its weight
    once more."""
    units = keywords.query_units(keywords.query_tokens(query))[:MAX_WORDS]
    if not units:
        return []
    binds: dict[str, Any] = {f"w{i}": _pg_unit(u) for i, u in enumerate(units)}
    counts = ", ".join(
        f"(SELECT count(*) FROM (SELECT 1 FROM {PG_TABLE} WHERE tsv @@ to_tsquery('simple', "
        f":w{i}) LIMIT {DF_CAP}) d{i})" for i in range(len(units)))
    row = conn.execute(text(
        f"SELECT (SELECT count(*) FROM (SELECT 1 FROM {PG_TABLE} LIMIT {N_CAP}) n), "
        f"(SELECT reltuples FROM pg_class WHERE oid = '{PG_TABLE}'::regclass), {counts}"),
        binds).one()
    n = max(float(row[0]), float(row[1] or 0))
    idf = [math.log(1 + (n - df + 0.5) / (df + 0.5)) for df in row[2:]]
    weights = "'{0.1, 0.2, 0.5, 1.0}'"
    terms = [f"{idf[i]:.6f} * ts_rank({weights}, k.tsv, to_tsquery('simple', :w{i}))"
             for i in range(len(units))]
    if len(units) > 1 and all(len(u) == 1 for u in units):
        binds["phrase"] = " <-> ".join(f"'{u[0]}'" for u in units)
        terms.append(f"{sum(idf):.6f} * ts_rank({weights}, k.tsv, "
                     "to_tsquery('simple', :phrase))")
    found = keywords.words(query)
    binds.update(q=pg_query(query), kind=kind, limit=int(limit), frag=" ".join(found))
    where = "k.tsv @@ to_tsquery('simple', :q)"
    if len(binds["frag"]) >= 3 and conn.exec_driver_sql(
            "SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm'").first():
        # A name that holds the query as a fragment (a trigram-indexed ILIKE) counts too,
        # below a word match. Words hold only letters and digits: nothing to escape.
        inside = "k.name ILIKE '%' || :frag || '%'"
        where = f"({where} OR {inside})"
        terms.append(f"CASE WHEN {inside} THEN 0.01 * similarity(k.name, :frag) ELSE 0 END")
    rows = conn.execute(text(
        f"SELECT k.item_id, {' + '.join(terms)} AS score FROM {PG_TABLE} k "
        f"JOIN items i ON i.id = k.item_id WHERE {where} AND i.kind = :kind "
        "ORDER BY score DESC, k.item_id LIMIT :limit"), binds).all()
    return [(int(i), float(r)) for i, r in rows]


class DatabaseLock:
    """A session-level advisory lock on its own connection (never pooled, so closing it really
    ends the session and whatever it held)."""

    KEY = 0x5245_5452_5752_4954  # "RETRWRIT"

    def __init__(self, url: str, where: str) -> None:
        self.url = url
        self.where = where
        self._conn: Any = None
        self._engine: Any = None

    def acquire(self) -> bool:
        from sqlalchemy import create_engine
        from sqlalchemy.exc import OperationalError
        from sqlalchemy.pool import NullPool

        if self._engine is None:
            self._engine = create_engine(self.url, poolclass=NullPool)
        try:
            conn = self._engine.connect()
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": self.KEY}).scalar())
            conn.commit()
        except OperationalError as exc:
            from ..engines import server_error

            raise server_error(self.where, exc.orig or exc, self.url) from None
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
            conn.commit()
        except DBAPIError:  # a dead connection held nothing any more
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.release()
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None


# -- the filter constructs of ..dialects, in PostgreSQL's words ---------------------------------

@compiles(Glob, "postgresql")
def _glob(element: Glob, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    regex = glob_to_regex(element.pattern)
    return f"({value} ~ {compiler.process(literal(regex), **kw)})"


@compiles(EpochTime, "postgresql")
def _epoch(element: EpochTime, compiler: Any, **kw: Any) -> str:
    return (f"(to_timestamp({compiler.process(element.clauses, **kw)}) "
            "AT TIME ZONE 'UTC')")


@compiles(JsonValue, "postgresql")
def _json(element: JsonValue, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    key = compiler.process(literal(element.key), **kw)
    if element.number:
        return (f"(CASE WHEN json_typeof({column} -> {key}) = 'number' "
                f"THEN ({column} ->> {key})::float8 END)")
    return f"({column} ->> {key})"
