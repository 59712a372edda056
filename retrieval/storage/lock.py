"""The write lock of a collection folder: one writer at a time, readers never wait.

An exclusive ``flock`` on the folder's ``lock`` file, released when the descriptor closes (also
when the process dies). Re-entrant within one holder, so a write that calls another write does
not lock itself out. Where ``fcntl`` does not exist, SQLite's own locking is all there is.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from ..errors import CollectionLockedError

LOCK_FILE = "lock"


class WriteLock:
    """The lock of one collection folder, as held by one :class:`~retrieval.Collection`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._depth = 0
        self._mutex = threading.RLock()  # threads of one process share its hold

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> bool:
        """Take the lock if it is free (never waits); True when held."""
        with self._mutex:
            return self._acquire()

    def _acquire(self) -> bool:
        if self._depth:
            self._depth += 1
            return True
        try:
            import fcntl
        except ImportError:  # not POSIX
            self._depth = 1
            return True
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd, self._depth = fd, 1
        return True

    def release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = None

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Hold the lock for a write; :class:`CollectionLockedError` if another has it."""
        if not self.acquire():
            raise CollectionLockedError(
                f"another process is writing to collection {self.folder}; wait for it to finish")
        try:
            yield
        finally:
            self.release()

    @contextlib.contextmanager
    def hold_if_free(self) -> Iterator[bool]:
        """Hold the lock if nobody else does (a reader saving a caught-up index)."""
        got = self.acquire()
        try:
            yield got
        finally:
            if got:
                self.release()


class ReadWriteLock:
    """Many readers or one writer, within a process (a FAISS index is safe to search from many
    threads at once, but not while another thread adds to it). Writers go first: a waiting
    writer holds back new readers, so a steady stream of searches cannot starve a catch-up."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._waiting_writers = 0

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._waiting_writers:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._waiting_writers += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._waiting_writers -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()
