"""A SQLite catalog's files on disk: checked before they are opened, and left self-contained.

SQLite in WAL mode keeps recent commits in ``catalog.sqlite-wal`` until a checkpoint copies
them into ``catalog.sqlite``. Two things follow:

* When a catalog closes it checkpoints (``TRUNCATE``: the WAL is emptied), so that after every
  command ``catalog.sqlite`` alone holds the whole catalog, as a backup of that file expects.
  Best effort: a reader in another process holding an old snapshot makes it wait at most a
  moment, and then it leaves the rest to the next one.
* SQLite ignores a WAL whose header is damaged, and every frame after the first damaged one:
  opened as it is, the catalog silently loses those commits (an empty catalog reads as "no
  model yet"), and the next write overwrites them. So before the catalog is opened, its files
  are checked as SQLite reads them (header, salts, cumulative checksums), and damage is
  reported naming the file, before anything writes. A frame torn at the very end (a process
  killed while writing, which loses only the commit in flight) is what SQLite expects after a
  crash and is not damage.
"""

from __future__ import annotations

import logging
import os
import struct
from typing import Any

import numpy as np

from ...errors import CatalogError

log = logging.getLogger("retrieval")

WAL_MAGIC = (0x377F0682, 0x377F0683)  # checksums over little-, big-endian words
WAL_VERSION = 3007000
WAL_HEADER, FRAME_HEADER = 32, 24
DB_MAGIC = b"SQLite format 3\x00"
CHECKPOINT_WAIT_MS = 1000
CHUNK = 256  # frames checked at once
MAX_CHECKED = 64 << 20  # bytes of a WAL checked (a longer one: its first frames)


def check_files(path: str) -> None:
    """Raise a :class:`CatalogError` naming the file when ``path`` or its WAL is damaged."""
    wal = path + "-wal"
    wal_bytes = _read(wal)
    if wal_bytes:
        problem = _wal_problem(wal_bytes)
        if problem and _read(wal) == wal_bytes:  # not a writer's work in progress
            raise CatalogError(
                f"catalog damaged: {wal}: {problem}; it may hold the latest changes of the "
                f"catalog: keep a copy of it, then move it away to open {path} without them")
    problem = _db_problem(path, has_wal=bool(wal_bytes))
    if problem:
        raise CatalogError(f"catalog damaged: {path}: {problem}; restore it from a backup")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(MAX_CHECKED)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc.strerror}") from None


def _db_problem(path: str, has_wal: bool) -> str | None:
    """Why the main file is not a whole SQLite database (None: it is, or it is new)."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(100)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CatalogError(f"cannot read catalog file {path}: {exc.strerror}") from None
    if size == 0:
        return None  # created, never written (a run killed at its very start)
    if len(head) < 100 or not head.startswith(DB_MAGIC):
        return "not a SQLite database"
    page = int.from_bytes(head[16:18], "big")
    page = 65536 if page == 1 else page
    if page < 512 or page & (page - 1):
        return "not a SQLite database (bad page size)"
    pages = int.from_bytes(head[28:32], "big")
    counter_valid = head[24:28] == head[92:96]
    # While the WAL holds frames, a checkpoint may be part way through growing the file.
    if not has_wal and counter_valid and pages and size < pages * page:
        return f"truncated ({size} bytes of {pages * page})"
    return None


def _wal_problem(data: bytes) -> str | None:
    """Why SQLite would drop committed frames of this WAL (None: it would not)."""
    if len(data) < WAL_HEADER:
        return f"truncated write-ahead log header ({len(data)} bytes)"
    magic, version, page, _seq, salt1, salt2, c1, c2 = struct.unpack(">8I", data[:32])
    if magic not in WAL_MAGIC or version != WAL_VERSION or page < 512 or page > 65536 or (
            page & (page - 1)):
        return "not a SQLite write-ahead log (bad header)"
    big = magic & 1 == 1
    if _checksum(data[:24], (0, 0), big) != (c1, c2):
        return "bad write-ahead log header checksum"
    size = FRAME_HEADER + page
    n = (len(data) - WAL_HEADER) // size
    if n == 0:
        return None
    frames = np.frombuffer(data, dtype=np.uint8, count=n * size, offset=WAL_HEADER
                           ).reshape(n, size)
    heads = frames[:, :FRAME_HEADER].copy().view(">u4")  # (n, 6)
    current = (heads[:, 2] == salt1) & (heads[:, 3] == salt2)
    m = int(np.flatnonzero(current)[-1]) + 1 if current.any() else 0  # beyond: older logs
    previous = np.vstack([np.array([[c1, c2]], dtype=np.uint64),
                          heads[:m - 1, 4:6].astype(np.uint64)])
    sums = [_frame_checksums(frames[i:min(m, i + CHUNK)], previous[i:i + CHUNK], big)
            for i in range(0, m, CHUNK)]  # a chunk at a time: bounded memory
    ok = current[:m] & np.all(np.vstack(sums or [np.empty((0, 2), np.uint64)])
                              == heads[:m, 4:6], axis=1)
    bad = np.flatnonzero(~ok)
    # Frames of this log after the first bad one would be dropped with it: that is damage. A
    # bad last frame of the log is what a process killed in mid-write leaves.
    if bad.size and current[int(bad[0]) + 1:m].any():
        return (f"frame {int(bad[0]) + 1} of {n} is damaged (the commits after it would be "
                "lost)")
    return None


def _words(data: np.ndarray, big: bool) -> np.ndarray:
    """Bytes (..., 8k) as pairs of 32-bit words (..., k, 2), as uint64."""
    words = np.ascontiguousarray(data).view(">u4" if big else "<u4").astype(np.uint64)
    return words.reshape(*words.shape[:-1], -1, 2)


def _checksum(data: bytes, start: tuple[int, int], big: bool) -> tuple[int, int]:
    s0, s1 = start
    for x0, x1 in _words(np.frombuffer(data, dtype=np.uint8), big).tolist():
        s0 = (s0 + x0 + s1) & 0xFFFFFFFF
        s1 = (s1 + x1 + s0) & 0xFFFFFFFF
    return s0, s1


def _frame_checksums(frames: np.ndarray, previous: np.ndarray, big: bool) -> np.ndarray:
    """SQLite's cumulative checksum of each frame (the first 8 bytes of its header and its
    page), each continuing from ``previous`` (n, 2), at once for all frames.

    One step of the checksum, s0 += x0 + s1; s1 += x1 + s0, is linear: v' = M v + b with
    M = [[1, 1], [1, 2]] and b = (x0, x0 + x1), so after k steps v = M^k v0 + sum M^(k-1-i) b_i.
    Arithmetic wraps modulo 2^64, which keeps it exact modulo 2^32."""
    pairs = _words(np.concatenate([frames[:, :8], frames[:, FRAME_HEADER:]], axis=1), big)
    k = pairs.shape[1]
    powers = np.empty((k + 1, 2, 2), dtype=np.uint64)
    powers[0] = np.eye(2, dtype=np.uint64)
    step = np.array([[1, 1], [1, 2]], dtype=np.uint64)
    for i in range(k):
        powers[i + 1] = (powers[i] @ step) & 0xFFFFFFFF
    b = np.stack([pairs[..., 0], pairs[..., 0] + pairs[..., 1]], axis=-1)  # (n, k, 2)
    weights = powers[k - 1::-1]  # M^(k-1-i) for step i
    with np.errstate(over="ignore"):
        total = np.einsum("kij,nkj->ni", weights, b)
        total += np.einsum("ij,nj->ni", powers[k], previous)
    return total & 0xFFFFFFFF


def never_written(path: str) -> bool:
    """True for a catalog file created and never written (its WAL holds nothing either)."""
    wal = path + "-wal"
    return os.path.getsize(path) == 0 and not (os.path.exists(wal) and os.path.getsize(wal))


def is_damage(exc: BaseException) -> bool:
    """True for SQLite's own word that a database file is damaged."""
    import sqlite3

    text = str(exc)
    return isinstance(exc, sqlite3.DatabaseError) and (
        "malformed" in text or "not a database" in text)


def checkpoint(engine: Any, path: str) -> None:
    """Copy the WAL into the main file and empty it, when it holds anything (best effort)."""
    try:
        if os.path.getsize(path + "-wal") == 0:
            return
    except OSError:
        return
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {CHECKPOINT_WAIT_MS}")
            busy, frames, done = conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
            if busy:
                log.debug("catalog %s: checkpoint copied %s of %s frames (readers busy)",
                          path, done, frames)
    except Exception as exc:  # a read-only folder, a full disk: the next close tries again
        log.debug("catalog %s: no checkpoint (%s)", path, exc)
