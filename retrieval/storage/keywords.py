"""The keyword index: words of file names, captions, texts and tags, searched by relevance.

One row per item with three fields: ``name`` (the file name and its folder, or a text's
external id), ``body`` (a text, or an image's caption) and ``tags``. Every catalog write that
changes what an item shows refreshes its row in the same transaction.

* SQLite: the FTS5 virtual table ``items_fts`` (rowid = item id), ranked by BM25 with the name
  weighted double;
* PostgreSQL: the table ``items_kw`` with a generated ``tsvector`` column under a GIN index
  (name weighted A, the rest B, ranked by ``ts_rank_cd``), and a trigram index on names
  (``pg_trgm``) so a fragment of a file name finds it. Words are folded in Python (case,
  accents) and split on anything that is not a letter or digit, as FTS5's tokenizer does.

Chinese, Japanese and Korean text is indexed on both as characters and pairs of neighbouring
characters (:func:`cjk_grams`), so a word is found inside a sentence without a dictionary.
"""

from __future__ import annotations

import functools
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, MetaData, Table, Text, select, text
from sqlalchemy.exc import DBAPIError

from ..pathnames import clean_text
from .schema import IMAGE, items, tags

FTS_TABLE = "items_fts"
PG_TABLE = "items_kw"
MAX_WORDS = 16  # words of a query that count
DF_CAP = 100_000  # document frequencies are counted up to this (rarer words matter)
N_CAP = 1_000_000
_WORD = re.compile(r"[^\W_]+")
# Han (with extensions and compatibility forms), kana, Hangul (syllables and jamo)
_CJK = ("\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
        "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
_CJK_RUN = re.compile(f"[{_CJK}]+")
_CJK_SPLIT = re.compile(f"([{_CJK}]+)")

pg_rows = Table(PG_TABLE, MetaData(), Column("item_id", BigInteger, primary_key=True),
                Column("name", Text), Column("body", Text), Column("tags", Text))


def available(conn: Any) -> bool:
    return bool(conn.dialect.name in ("sqlite", "postgresql"))


def create(conn: Any) -> None:
    """Create the index (where the database has one) and fill it from the catalog."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5("
            "name, body, tags, tokenize = 'unicode61 remove_diacritics 2')")
    elif conn.dialect.name == "postgresql":
        _create_pg(conn)
    else:
        return
    ids = [r[0] for r in conn.execute(select(items.c.id))]
    for start in range(0, len(ids), 900):
        refresh(conn, ids[start:start + 900])


def _create_pg(conn: Any) -> None:
    conn.exec_driver_sql(
        f"CREATE TABLE IF NOT EXISTS {PG_TABLE} ("
        " item_id BIGINT PRIMARY KEY REFERENCES items(id) ON DELETE CASCADE,"
        " name TEXT NOT NULL, body TEXT NOT NULL, tags TEXT NOT NULL,"
        " tsv tsvector GENERATED ALWAYS AS ("
        "  setweight(to_tsvector('simple', name), 'A') ||"
        "  setweight(to_tsvector('simple', body), 'B') ||"
        "  setweight(to_tsvector('simple', tags), 'B')) STORED)")
    conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {PG_TABLE}_tsv ON {PG_TABLE} USING gin (tsv)")
    savepoint = conn.begin_nested()
    try:  # pg_trgm is a trusted extension, but a locked-down server may not offer it
        conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        conn.exec_driver_sql(f"CREATE INDEX IF NOT EXISTS {PG_TABLE}_name_trgm "
                             f"ON {PG_TABLE} USING gin (name gin_trgm_ops)")
        savepoint.commit()
    except DBAPIError:  # fragments of names then match by whole words only
        savepoint.rollback()


def words(text: str) -> list[str]:
    """The words of ``text`` as the index keeps them: lower case, without accents, split on
    anything that is not a letter or a digit; a run of CJK characters becomes its characters
    and their overlapping pairs (see :func:`cjk_grams`)."""
    return [g for w in _query_tokens(text)
            for g in (cjk_grams_of(w) if _CJK_RUN.search(w) else [w])]


def cjk_grams(run: str) -> list[str]:
    """Chinese, Japanese and Korean write words without spaces between them, so a word is
    found inside a sentence by its characters: each character and each pair of neighbours,
    in order (``自行车`` -> 自 自行 行 行车 车). A query word of two or more characters then
    matches by all its pairs, a one-character word by itself."""
    out = []
    for i, c in enumerate(run):
        out.append(c)
        if i + 1 < len(run):
            out.append(run[i:i + 2])
    return out


def cjk_grams_of(token: str) -> list[str]:
    """:func:`cjk_grams` of each CJK run of ``token``; other parts stay whole."""
    out: list[str] = []
    for part in _CJK_SPLIT.split(token):
        if part:
            out.extend(cjk_grams(part) if _CJK_RUN.fullmatch(part) else [part])
    return out


def index_form(text: str) -> str:
    """``text`` as FTS5 indexes it: CJK runs spelled as :func:`cjk_grams`, the rest as is
    (FTS5's own tokenizer folds case and accents)."""
    return _CJK_RUN.sub(lambda m: " " + " ".join(cjk_grams(m.group())) + " ", text)


def query_units(tokens: list[str]) -> list[list[str]]:
    """The units a query matches by: a word is one unit; a CJK word of several characters is
    the unit of all its pairs (all must match)."""
    units: list[list[str]] = []
    for token in tokens:
        for part in _CJK_SPLIT.split(token):
            if not part:
                continue
            if _CJK_RUN.fullmatch(part) and len(part) > 1:
                units.append([part[i:i + 2] for i in range(len(part) - 1)])
            else:
                units.append([part])
    return list({tuple(u): u for u in units}.values())


def query_text(text: str) -> str:
    """A safe FTS5 query for free text: the phrase, or any of its words (quoted tokens, so
    user input never reaches FTS5's query syntax)."""
    found = re.findall(r"\w+", text.lower())
    units = query_units(found)
    if not units:
        return ""
    terms = [f'"{u[0]}"' if len(u) == 1 else "(" + " AND ".join(f'"{g}"' for g in u) + ")"
             for u in units]
    if len(found) > 1 and all(len(u) == 1 for u in units):
        terms.insert(0, '"' + " ".join(found) + '"')
    return " OR ".join(terms)


def _pg_unit(unit: list[str]) -> str:
    return f"'{unit[0]}'" if len(unit) == 1 else "(" + " & ".join(f"'{g}'" for g in unit) + ")"


def pg_query(text: str) -> str:
    """The same query as a PostgreSQL ``tsquery``: the phrase, or any of its words."""
    units = query_units(_query_tokens(text))
    if not units:
        return ""
    terms = [_pg_unit(u) for u in units]
    if len(units) > 1 and all(len(u) == 1 for u in units):
        terms.insert(0, "(" + " <-> ".join(f"'{u[0]}'" for u in units) + ")")
    return " | ".join(terms)


def _query_tokens(text: str) -> list[str]:
    """Lower case, without accents, split on anything that is not a letter or a digit."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    return _WORD.findall("".join(c for c in folded if not unicodedata.combining(c)))


def matched_words(query: str, text: str) -> list[str]:
    """The words of ``text`` that the keyword search for ``query`` matches, as they are written
    in ``text``, each once, in order. Words compare as the index keeps them (case and accents
    folded); a Chinese, Japanese or Korean query word of several characters matches when all
    its pairs are in the text, and is shown where it is written whole (else its pairs)."""
    units = _units(query)
    if not units or not text:
        return []
    folded, origin = _fold_with_origin(text)
    tokens = _tokens_with_spans(folded)
    grams = {t for t, _, _ in tokens}
    spans: list[tuple[int, int]] = []
    for unit in units:
        if len(unit) == 1:
            spans += [(a, b) for t, a, b in tokens if t == unit[0]]
        elif all(g in grams for g in unit):
            word = unit[0] + "".join(g[1] for g in unit[1:])
            whole = [(m.start(), m.end()) for m in re.finditer(re.escape(word), folded)]
            spans += whole or [(a, b) for t, a, b in tokens if t in unit]
    out: list[str] = []
    for a, b in _merged(spans):
        start, end = origin[a], origin[b - 1] + 1
        while end < len(text) and unicodedata.combining(text[end]):
            end += 1  # an accent written as its own character belongs to its letter
        if text[start:end] not in out:
            out.append(text[start:end])
    return out


@functools.lru_cache(maxsize=64)
def _units(query: str) -> list[list[str]]:
    """:func:`query_units` of a query (the same for every hit of a search)."""
    return query_units(_query_tokens(query))


def _fold_with_origin(text: str) -> tuple[str, Sequence[int]]:
    """``text`` folded as :func:`_query_tokens` folds it, and for each folded character the
    position of the character of ``text`` it comes from."""
    if text.isascii():
        return text.lower(), range(len(text))
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKD", ch.casefold()):
            if not unicodedata.combining(c):
                chars.append(c)
                origin.append(i)
    return "".join(chars), origin


def _tokens_with_spans(folded: str) -> list[tuple[str, int, int]]:
    """The index's tokens of folded text (words; CJK characters and pairs) and their spans."""
    if folded.isascii():
        return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(folded)]
    out: list[tuple[str, int, int]] = []
    for m in _WORD.finditer(folded):
        at = m.start()
        for part in _CJK_SPLIT.split(m.group()):
            if part and _CJK_RUN.fullmatch(part):
                out += [(part[i:i + n], at + i, at + i + n) for i in range(len(part))
                        for n in (1, 2) if i + n <= len(part)]
            elif part:
                out.append((part, at, at + len(part)))
            at += len(part)
    return out


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(set(spans)):
        if out and a < out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def name_words(path: str | None) -> str:
    """Searchable words of a path: the file name and its folder's name."""
    if not path:
        return ""
    p = path.replace("\\", "/").rstrip("/").split("/")
    return clean_text(" ".join(p[-2:]))


def _rows(conn: Any, ids: Sequence[int]) -> list[tuple[int, str, str, str]]:
    """(id, name, body, tags) of these items as the index should hold them."""
    found = conn.execute(select(items.c.id, items.c.kind, items.c.path, items.c.text,
                                items.c.external_id).where(items.c.id.in_(ids))).all()
    captions: dict[int, str] = {}  # sidecar first, then generated
    for parent, caption in conn.execute(select(items.c.parent_id, items.c.text).where(
            items.c.source.in_(("caption", "generated")), items.c.parent_id.in_(ids))
            .order_by(items.c.source)):
        captions[parent] = f"{captions[parent]} {caption}" if parent in captions else caption
    labels: dict[int, list[str]] = {}
    for item_id, tag in conn.execute(select(tags.c.item_id, tags.c.tag)
                                     .where(tags.c.item_id.in_(ids))):
        labels.setdefault(item_id, []).append(tag)
    rows = []
    for r in found:
        label_words = " ".join(labels.get(r.id, []))
        if r.kind == IMAGE:
            rows.append((r.id, name_words(r.path), captions.get(r.id) or "", label_words))
        else:
            rows.append((r.id, r.external_id or "", r.text or "", label_words))
    return rows


def refresh(conn: Any, ids: Sequence[int]) -> None:
    """Recompute the keyword rows of these items (deleted items lose theirs)."""
    if not available(conn) or not ids:
        return
    if conn.dialect.name == "postgresql":
        conn.execute(pg_rows.delete().where(pg_rows.c.item_id.in_(ids)))
        rows = [{"item_id": i, "name": " ".join(words(n)), "body": " ".join(words(b)),
                 "tags": " ".join(words(t))} for i, n, b, t in _rows(conn, ids)]
        if rows:
            conn.execute(pg_rows.insert(), rows)
        return
    marks = ",".join("?" * len(ids))
    conn.exec_driver_sql(f"DELETE FROM {FTS_TABLE} WHERE rowid IN ({marks})", tuple(ids))
    rows_ = [(i, index_form(n), index_form(b), index_form(t)) for i, n, b, t in _rows(conn, ids)]
    if rows_:
        conn.exec_driver_sql(
            f"INSERT INTO {FTS_TABLE}(rowid, name, body, tags) VALUES (?, ?, ?, ?)", rows_)


def search(conn: Any, query: str, kind: str, limit: int) -> list[tuple[int, float]]:
    """(id, score) of items of ``kind`` whose name, text, caption or tags match, best first
    (the name weighs double; higher is better), equal scores by id: the same query gives the
    same list, and a shorter limit its head."""
    if conn.dialect.name == "postgresql":
        return _search_pg(conn, query, kind, limit)
    fts = query_text(query)
    if not fts:
        return []
    rows = conn.exec_driver_sql(
        f"SELECT f.rowid, bm25({FTS_TABLE}, 2.0, 1.0, 1.0) AS rank FROM {FTS_TABLE} f "
        "JOIN items i ON i.id = f.rowid WHERE items_fts MATCH ? AND i.kind = ? "
        "ORDER BY rank, f.rowid LIMIT ?", (fts, kind, int(limit))).all()
    return [(int(i), -float(r)) for i, r in rows]


def _search_pg(conn: Any, query: str, kind: str, limit: int) -> list[tuple[int, float]]:
    """BM25-like ranking: each query word (a CJK word: all its pairs) weighs by its rarity (an
    inverse document frequency from counts capped at :data:`DF_CAP`, cheap on the GIN index),
    times its ``ts_rank`` in the item (names weigh double); the whole phrase adds its weight
    once more."""
    tokens = _query_tokens(query)
    units = query_units(tokens)[:MAX_WORDS]
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
    found = words(query)
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
