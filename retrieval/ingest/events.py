"""The file system's change events for a watcher's folders.

The platform's notifications come through watchfiles (Rust notify: inotify on Linux, FSEvents
on macOS, ReadDirectoryChangesW on Windows); where they cannot be had (an exhausted inotify
watch or instance limit, a file system without them) the same folders are polled instead, and
the reason is reported once. Polling walks the folders every ``poll_interval`` seconds, so it
costs CPU in proportion to the files watched; events cost nothing while nothing changes.

A watched folder can go away (deleted, moved, unmounted) and come back: the notifications of a
deleted folder end with it, and a folder moved elsewhere keeps sending events under its old
name. So every event naming a root itself, and a look every ``IDLE_LOOK`` seconds (every
``MISSING_LOOK`` while one is missing), compares each root with what was watched (device and
inode); a change rebuilds the watch, and a root that came back or was replaced is handed to
the caller to be indexed again in full (:meth:`FileEvents.take_rescans`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence

from ..errors import first_line

DEBOUNCE_MS = 500  # the longest a burst of events is gathered before it is handed over
STEP_MS = 100  # quiet time that ends a burst; also how often a wait checks for a stop
IDLE_LOOK = 60.0  # seconds between looks at the roots while nothing happens
MISSING_LOOK = 2.0  # seconds between looks for a root that is gone
UNDECODABLE_PAUSE = 1.0  # seconds before watching again after a file name that is no UTF-8
Change = tuple[int, str]


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


class FileEvents:
    """Change events below ``roots``: file events, else polling (``polling=True`` asks for
    it); ``on_fallback`` hears, once, why events could not be had."""

    def __init__(self, roots: Sequence[str], *, polling: bool = False,
                 poll_interval: float = 2.0,
                 on_fallback: Callable[[str], None] | None = None) -> None:
        self.roots = list(roots)
        self.polling = polling
        self.reason: str | None = "asked for" if polling else None  # why it polls
        self.poll_interval = poll_interval
        self.on_fallback = on_fallback
        self.missing: list[str] = []
        self._watched: dict[str, tuple[int, int] | None] = {}
        self._notify: object | None = None
        self._rescan: set[str] = set()
        self.open()

    @property
    def mode(self) -> str:
        return "polling" if self.polling else "events"

    def open(self) -> None:
        """(Re)start watching the roots that are there now."""
        self.close()
        self._watched = {r: _identity(r) for r in self.roots}
        self.missing = [r for r, ident in self._watched.items() if ident is None]
        present = [r for r in self.roots if r not in self.missing]
        if not present:
            return
        if not self.polling:
            try:
                self._notify = self._make(present, False)
                return
            except FileNotFoundError:  # a root went away in between: the next look sees it
                self._watched = {r: None for r in self.roots}
                return
            except (OSError, RuntimeError) as exc:  # an inotify limit, no permission, ...
                self._fall_back(exc)
        try:
            self._notify = self._make(present, True)
        except FileNotFoundError:
            self._watched = {r: None for r in self.roots}

    def _make(self, paths: list[str], polling: bool) -> object:
        """A notifier. Events refuse a folder they cannot watch (a watch limit reached, a
        folder without read permission: the events of the folders after it would be lost in
        silence), polling passes over it."""
        try:  # the notifier watchfiles' own watch() drives (tested with watchfiles 1.3)
            from watchfiles._rust_notify import RustNotify
        except ImportError:
            from ..errors import InputError

            raise InputError("watching folders needs watchfiles (pip install watchfiles)"
                             ) from None
        return RustNotify(paths, False, polling, max(1, int(self.poll_interval * 1000)), True,
                          polling)

    def _fall_back(self, exc: BaseException) -> None:
        self.polling = True
        self.reason = _why(exc)
        if self.on_fallback is not None:
            self.on_fallback(self.reason)

    def close(self) -> None:
        notify, self._notify = self._notify, None
        if notify is not None:
            notify.close()  # type: ignore[attr-defined]

    def wait(self, timeout: float | None, stop: threading.Event) -> list[Change] | None:
        """The changes seen within ``timeout`` seconds (None: as long as nothing happens,
        short of the next look at the roots): a list, empty when none came; None once
        ``stop`` is set. A signal's exception (Ctrl-C) is raised."""
        limit = MISSING_LOOK if self.missing else IDLE_LOOK
        timeout = limit if timeout is None else min(timeout, limit)
        if self._notify is None:
            got: object = "stop" if stop.wait(timeout) else "timeout"
        else:
            try:
                got = self._notify.watch(DEBOUNCE_MS, STEP_MS,  # type: ignore[attr-defined]
                                         max(1, int(timeout * 1000)), stop)
            except (OSError, RuntimeError) as exc:  # the watch broke: an inotify limit, ...
                return self._broken(exc, stop)
        if got == "signal":
            raise KeyboardInterrupt
        if got == "stop":
            return None
        changes = [] if got == "timeout" else sorted(got)  # type: ignore[call-overload]
        roots = {path for _, path in changes if path in self._watched}
        self._rescan.update(r for r in roots if not os.path.isdir(r))  # a file watched by name
        if got == "timeout" or roots:
            self.check()
        return changes

    def _broken(self, exc: BaseException, stop: threading.Event) -> list[Change]:
        """Events stopped coming: poll from now on, or for a file name that is no UTF-8 (the
        notifier cannot name it, and fails from then on) watch again after a pause (a burst of
        such names costs one restart a second). What happened in between is found by
        indexing the roots again."""
        if "Unable to decode path" in str(exc):
            self.close()
            stop.wait(UNDECODABLE_PAUSE)
        elif not self.polling:
            self._fall_back(exc)
        self.open()
        self._rescan.update(r for r in self.roots if r not in self.missing)
        return []

    def check(self) -> None:
        """Compare each root with what is watched; rebuild the watch when one went, came back
        or was replaced, and note those now there for a full pass."""
        now = {r: _identity(r) for r in self.roots}
        if now == self._watched:
            return
        self._rescan.update(r for r, ident in now.items()
                            if ident is not None and ident != self._watched.get(r))
        self.open()

    def take_rescans(self) -> list[str]:
        """Roots to index in full (back, replaced, or events lost); each handed over once."""
        out, self._rescan = sorted(self._rescan), set()
        return [r for r in out if r not in self.missing]


def _why(exc: BaseException) -> str:
    """Why events cannot be had, in words that name the fix where there is one."""
    text = first_line(exc)
    if "MaxFilesWatch" in text or "watch limit" in text:
        return ("the limit on watched folders is reached (on Linux: raise "
                "fs.inotify.max_user_watches)")
    if "Too many open files" in text:
        return ("no more file watchers can be opened (on Linux: raise "
                "fs.inotify.max_user_instances)")
    return text
