"""Keyword search in Chinese, Japanese, Korean and English: precision@5 per language on a
captioned corpus with known answers (``tests/cjk_corpus.py``), for the ways to index CJK text:

* ``unicode61`` - SQLite FTS5's default tokenizer, as before: a run of CJK characters is one
  token, so a word inside a sentence never matches;
* ``trigram``   - FTS5's trigram tokenizer: substrings of three or more characters (most
  Chinese words have one or two);
* ``bigrams``   - what the catalog does: characters and pairs of neighbours (keyword-only, and
  hybrid with the model's vectors), on SQLite and, with ``--catalog``, on PostgreSQL.

    python benchmarks/keywords_cjk.py [--model demo] [--catalog auto|URL]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cjk_corpus import LANGS, Caption, corpus, queries
from postgres import benchmark_catalog

K = 5


def precision(search: Callable[[str], list[str]], captions: list[Caption]
              ) -> dict[str, float]:
    """Mean precision@5 per query language; a hit is a caption that names the thing."""
    things = {c.text: c.things for c in captions}
    per: dict[str, list[float]] = {lang: [] for lang in LANGS}
    for text, lang, thing in queries():
        found = search(text)[:K]
        per[lang].append(sum(thing in things[t] for t in found) / K)
    return {lang: sum(v) / len(v) for lang, v in per.items()}


def fts5(captions: list[Caption], tokenizer: str) -> Callable[[str], list[str]]:
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE VIRTUAL TABLE f USING fts5(body, tokenize = '{tokenizer}')")
    db.executemany("INSERT INTO f(rowid, body) VALUES (?, ?)",
                   [(i, c.text) for i, c in enumerate(captions)])

    def search(text: str) -> list[str]:
        quoted = '"' + text.replace('"', '""') + '"'
        try:
            rows = db.execute("SELECT body FROM f WHERE f MATCH ? ORDER BY bm25(f) LIMIT ?",
                              (quoted, K)).fetchall()
        except sqlite3.OperationalError:
            return []
        return [r[0] for r in rows]
    return search


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="demo")
    ap.add_argument("--catalog", default=None,
                    help="also on PostgreSQL: a URL, or 'auto' for a throwaway local server")
    args = ap.parse_args()

    from retrieval import Collection

    captions = corpus()
    rows: list[tuple[str, dict[str, float]]] = [
        ("unicode61 (FTS5 default, before)", precision(fts5(captions, "unicode61"), captions)),
        ("trigram (FTS5)", precision(fts5(captions, "trigram"), captions)),
    ]
    with benchmark_catalog(args.catalog) as pg, tempfile.TemporaryDirectory() as tmp:
        catalogs: dict[str, str | None] = {"SQLite": None}
        if pg:
            catalogs["PostgreSQL"] = pg
        for name, url in catalogs.items():
            col = Collection(Path(tmp) / name, model=args.model, catalog=url)
            col.add_texts([{"text": c.text, "id": str(i)} for i, c in enumerate(captions)])

            def keyword(text: str, col: Collection = col) -> list[str]:
                return [col.get(i).text or ""
                        for i, _ in col._catalog.keyword_search(text, "text", K)]

            def hybrid(text: str, col: Collection = col) -> list[str]:
                return [h.text or "" for h in col.search(text, target="text", k=K,
                                                          hybrid=True)]

            def vector(text: str, col: Collection = col) -> list[str]:
                return [h.text or "" for h in col.search(text, target="text", k=K)]

            rows.append((f"bigrams, keyword only ({name})", precision(keyword, captions)))
            rows.append((f"bigrams, hybrid ({name}, {args.model})",
                         precision(hybrid, captions)))
            rows.append((f"vectors only ({name}, {args.model})", precision(vector, captions)))
            col.close()
    print(f"{len(captions)} captions ({len(captions) // len(LANGS)} per language), "
          f"{len(queries())} one-word queries; precision@{K} per query language\n")
    print(f"| index | {' | '.join(LANGS)} |")
    print(f"|---|{'---|' * len(LANGS)}")
    for name, p in rows:
        print(f"| {name} | " + " | ".join(f"{p[lang]:.2f}" for lang in LANGS) + " |")


if __name__ == "__main__":
    main()
