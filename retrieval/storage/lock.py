"""The write lock of a collection: one writer at a time, readers never wait.

An exclusive ``flock`` on the folder's ``lock`` file, released when the descriptor closes (also
when the process dies). Re-entrant within one holder, so a write that calls another write does
not lock itself out. Where ``fcntl`` does not exist, SQLite's own locking is all there is.

A catalog on a database server is shared by processes on several hosts, each with its own
folder: writers then also take the lock its backend keeps in the database (PostgreSQL: an
advisory lock, :class:`~.backends.postgresql.DatabaseLock`), held by a connection of its own,
so a writer that dies releases it with its socket. Writers one at a time also keep the
catalog's change log in commit order, which readers on every host rely on to catch their
indexes up.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CollectionLockedError

if TYPE_CHECKING:
    from .backends.base import SharedLock

LOCK_FILE = "lock"


class WriteLock:
    """The lock of one collection folder, as held by one :class:`~retrieval.Collection`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.shared: SharedLock | None = None  # set when the catalog is on a server
        self._fd: int | None = None
        self._depth = 0
        self._shared_depth = 0
        self._mutex = threading.RLock()  # threads of one process share its hold

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, local: bool = False) -> bool:
        """Take the lock if it is free (never waits); True when held. ``local`` takes only the
        folder's lock (enough to write the folder's own index files)."""
        with self._mutex:
            if not self._acquire():
                return False
            if local or self.shared is None:
                return True
            try:
                got = self._shared_depth > 0 or self.shared.acquire()
            except BaseException:
                self._release()
                raise
            if got:
                self._shared_depth += 1
                return True
            self._release()
            return False

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

    def release(self, local: bool = False) -> None:
        with self._mutex:
            if not local and self.shared is not None:
                self._shared_depth -= 1
                if self._shared_depth == 0:
                    self.shared.release()
            self._release()

    def _release(self) -> None:
        with self._mutex:
            self._depth -= 1
            if self._depth == 0 and self._fd is not None:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = None

    def close(self) -> None:
        if self.shared is not None:
            self.shared.close()

    @contextlib.contextmanager
    def hold(self, local: bool = False) -> Iterator[None]:
        """Hold the lock for a write; :class:`CollectionLockedError` if another has it.
        ``local``: only the folder's (to write its index files, not the catalog)."""
        if not self.acquire(local):
            where = (f"collection {self.folder}" if self.shared is None else
                     f"the collection's catalog {self.shared.where} (on this or another host)")
            raise CollectionLockedError(
                f"another process is writing to {where}; wait for it to finish")
        try:
            yield
        finally:
            self.release(local)

    @contextlib.contextmanager
    def hold_if_free(self) -> Iterator[bool]:
        """Hold the folder's lock if nobody else does (a reader saving a caught-up index)."""
        got = self.acquire(local=True)
        try:
            yield got
        finally:
            if got:
                self.release(local=True)


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
