"""A small persistent cache of query-text embeddings, keyed by model, export and text.

The key names the model identity, the precision and the export whose text tower embedded the
text (its checksums and when it was made, see :func:`.resolve.text_cache_key`): an export made
again, after damage say, starts with no vectors, so vectors a damaged export computed are never
served again. Vectors computed by torch when an export is damaged are right for the identity
and are kept under the export's key.

People repeat searches. A repeated query text is answered from this SQLite file without
creating an inference session at all. It lives in ``cache/text-embeddings.sqlite`` under the
retrieval home folder, holds at most ``MAX_ENTRIES`` vectors (the least recently used go first),
and is strictly best effort: a cache that cannot be read or written (a read-only or full disk,
a locked file) is skipped, never an error.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

log = logging.getLogger("retrieval")

MAX_ENTRIES = 20_000
MAX_TEXT = 2_000  # longer texts are not worth a row


def cache_path() -> Path:
    from ..config import home

    return home() / "cache" / "text-embeddings.sqlite"


class TextCache:
    """Vectors of texts embedded by one model (``key``: its identity, precision and export)."""

    def __init__(self, key: str, path: Path | None = None, max_entries: int = MAX_ENTRIES) -> None:
        self.key = key
        self.path = path or cache_path()
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()  # one connection, used by one thread at a time

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        if self._conn is not None or self._broken:
            return self._conn
        if not create and not self.path.exists():
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=0.5, check_same_thread=False)
            # A cache needs consistency, not durability: no flush to disk on every search.
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("CREATE TABLE IF NOT EXISTS texts (key TEXT NOT NULL, text TEXT NOT NULL,"
                         " vector BLOB NOT NULL, used REAL NOT NULL, PRIMARY KEY (key, text))")
            conn.execute("CREATE INDEX IF NOT EXISTS texts_used ON texts (used)")
        except (sqlite3.Error, OSError) as exc:
            log.debug("text cache %s unavailable: %s", self.path, exc)
            self._broken = True
            return None
        self._conn = conn
        return conn

    def get(self, texts: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        """The cached vectors among ``texts`` (of dimension ``dim``)."""
        with self._lock:
            return self._get(texts, dim)

    def _get(self, texts: Sequence[str], dim: int) -> dict[str, np.ndarray]:
        conn = self._connect(create=False)
        wanted = [t for t in dict.fromkeys(texts) if len(t) <= MAX_TEXT]
        if conn is None or not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        try:
            rows = conn.execute(
                f"SELECT text, vector FROM texts WHERE key = ? AND text IN ({marks})",
                (self.key, *wanted)).fetchall()
        except sqlite3.Error as exc:
            log.debug("text cache read failed: %s", exc)
            return {}
        out = {}
        for text, blob in rows:
            vec = np.frombuffer(blob, dtype="<f4")
            if vec.shape == (dim,):
                out[text] = vec.astype(np.float32)
        if out:
            try:
                with conn:
                    conn.executemany("UPDATE texts SET used = ? WHERE key = ? AND text = ?",
                                     [(time.time(), self.key, t) for t in out])
            except sqlite3.Error as exc:
                log.debug("text cache update failed: %s", exc)
        return out

    def put(self, vectors: dict[str, np.ndarray]) -> None:
        """Remember these vectors; trims the cache to its size bound."""
        with self._lock:
            self._put(vectors)

    def _put(self, vectors: dict[str, np.ndarray]) -> None:
        rows = [(self.key, t, np.asarray(v, dtype="<f4").tobytes(), time.time())
                for t, v in vectors.items() if len(t) <= MAX_TEXT]
        conn = self._connect(create=True)
        if conn is None or not rows:
            return
        try:
            with conn:
                conn.executemany("INSERT OR REPLACE INTO texts VALUES (?, ?, ?, ?)", rows)
                (n,) = conn.execute("SELECT count(*) FROM texts").fetchone()
                if n > self.max_entries:
                    conn.execute("DELETE FROM texts WHERE rowid IN (SELECT rowid FROM texts "
                                 "ORDER BY used LIMIT ?)", (n - self.max_entries,))
        except sqlite3.Error as exc:
            log.debug("text cache write failed: %s", exc)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
