"""The write lock of a collection folder: one writer at a time, readers never wait.

An exclusive ``flock`` on the folder's ``lock`` file, released when the descriptor closes (also
when the process dies). Re-entrant within one holder, so a write that calls another write does
not lock itself out. Where ``fcntl`` does not exist, SQLite's own locking is all there is.
"""

from __future__ import annotations

import contextlib
import os
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

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> bool:
        """Take the lock if it is free (never waits); True when held."""
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
