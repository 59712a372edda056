"""Watch mode: folders that stay indexed.

A :class:`Watcher` runs the normal incremental pass over its folders, then keeps them in step
as they change: file events (:mod:`.events`) become settled batches (:mod:`.changes`), and each
batch is one :meth:`~retrieval.Collection.index` run with ``under_roots=True``, so every option
and content type of a normal run applies (images, videos, sidecar captions, OCR, either
catalog), each batch commits in the run's usual transactions, and a rename or a move reuses
the stored vectors (the new name is indexed while the old item still lends them; gone paths
wait longer, see :mod:`.changes`). The folders' list in the collection stays the one a user
named: changes below them are not recorded as roots.

A batch that fails as a whole (a full disk, a database server that went away, another process
writing) is kept and tried again after 1, 2, 4 ... up to 60 seconds; each failure is one
:class:`WatchEvent`, and nothing is lost while it lasts. A model that cannot be loaded, or a
collection bound to another model, ends the watch instead: waiting does not mend those.

A watched folder that goes away keeps its items (a missing folder never sweeps a collection,
as with ``retrieval index``: an unmounted disk comes back); once it is back it is indexed in
full again, which also removes what went with it.

:meth:`Watcher.run` returns when :meth:`Watcher.stop` is called from any thread (an index run
in flight stops at its next progress report, losing at most its batch in flight, like Ctrl-C);
a Ctrl-C in the main thread raises ``KeyboardInterrupt`` as in any run. Nothing is printed:
progress goes to ``progress``, everything else to ``on_event``; :meth:`Watcher.state` is a
snapshot for status pages (the service's ``/info``).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import (
    CollectionNotFoundError,
    ModelError,
    ModelMismatchError,
    RetrievalError,
    first_line,
    is_disk_full,
)
from .changes import SETTLE, PendingChanges
from .report import IndexProgress, IndexSummary, ProgressCallback
from .scan import check_roots

if TYPE_CHECKING:
    from ..collection import Collection
    from .events import FileEvents

FATAL = (ModelError, ModelMismatchError, CollectionNotFoundError)
TICK = 0.2  # seconds between looks at pending changes while they settle
SMALL_BATCH = 32  # fewer files than this are decoded in the process: no workers to start


@dataclass(frozen=True)
class WatchOptions:
    """How a watcher batches and retries (see the module's notes)."""

    settle: float = SETTLE  # seconds a file's size and time must hold still
    batch: int = 1000  # most changed paths one index run takes
    polling: bool = False  # poll the folders instead of listening for file events
    poll_interval: float = 2.0  # seconds between two polls
    retry_first: float = 1.0  # seconds before the first retry of a failed batch
    retry_max: float = 60.0  # the longest wait between retries


@dataclass(frozen=True)
class WatchEvent:
    """What a watcher reports. ``kind``: ``watching`` (message: events or polling),
    ``polling`` (file events cannot be had; message: why), ``indexed`` (a batch applied:
    ``summary``, ``changes`` paths), ``failed`` (a batch kept for a retry in ``retry_in``
    seconds; message: why), ``recovered``, ``missing`` and ``back`` (a watched folder went
    away or came back; message: the folder), ``stopped`` (an error ended the watch of
    :meth:`Watcher.start`; message: the error)."""

    kind: str
    message: str = ""
    summary: IndexSummary | None = None
    changes: int = 0
    retry_in: float | None = None


class WatchStopped(BaseException):
    """Ends an index run in flight when its watcher is stopped (raised from the run's
    progress callback; not an ``Exception``, so the run treats it as an interrupt)."""


class Watcher:
    """Keeps ``roots`` (folders or files, indexed into ``collection``) in step with the disk.

    ``index`` holds :meth:`~retrieval.Collection.index`'s options for every run (``hidden``,
    ``captions``, ``videos``, ``ocr``, ``workers``, ``batch_size``, ``max_pixels``, ``ray``).
    """

    def __init__(self, collection: Collection, roots: Sequence[str | os.PathLike[str]], *,
                 options: WatchOptions | None = None, index: Mapping[str, Any] | None = None,
                 on_event: Callable[[WatchEvent], None] | None = None,
                 progress: ProgressCallback | None = None) -> None:
        self.collection = collection
        self.roots = check_roots(roots)
        self.options = options or WatchOptions()
        self.index_args = dict(index or {})
        self.pending = PendingChanges(self.roots, settle=self.options.settle,
                                      hidden=bool(self.index_args.get("hidden", False)),
                                      captions=bool(self.index_args.get("captions", True)),
                                      videos=bool(self.index_args.get("videos", True)),
                                      exclude=[str(collection.path)])
        self.on_event, self.progress = on_event, progress
        self.stop_event = threading.Event()
        self._rescans: set[str] = set(self.roots)  # the first pass
        self._failures = 0
        self._retry_at: float | None = None
        self._missing: list[str] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._state: dict[str, Any] = {
            "folders": list(self.roots), "state": "starting", "mode": None,
            "polling_reason": None, "pending": 0, "last_change": None, "last_indexed": None,
            "batches": 0, "added": 0, "updated": 0, "removed": 0, "failed": 0, "error": None,
            "retry_in": None, "missing": []}

    def stop(self) -> None:
        """Ask :meth:`run` to return (from any thread or a signal handler)."""
        self.stop_event.set()

    def start(self) -> None:
        """:meth:`run` on a thread of its own (a daemon); an error that ends it is reported as
        a ``stopped`` event and stays in :meth:`state`."""
        def run() -> None:
            try:
                self.run()
            except RetrievalError as exc:
                self._emit(WatchEvent("stopped", first_line(exc)))

        self._thread = threading.Thread(target=run, name="retrieval-watcher", daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread of :meth:`start` to end; False if it still runs."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def state(self) -> dict[str, Any]:
        """A snapshot: folders, state (starting, indexing, watching, retrying, stopped), mode
        (events or polling, and why it polls), changes pending, the last change seen and the
        last batch indexed (UTC times), counts so far, the last error and when it is retried,
        folders missing."""
        with self._lock:
            return dict(self._state, folders=list(self._state["folders"]),
                        missing=list(self._state["missing"]))

    def run(self) -> None:
        """The first pass, then watch until :meth:`stop`."""
        from .events import FileEvents

        events = FileEvents(self.roots, polling=self.options.polling,
                            poll_interval=self.options.poll_interval,
                            on_fallback=lambda why: self._emit(WatchEvent("polling", why)))
        announced = False
        try:  # events are gathered from here on: nothing done during the first pass is missed
            self._set(mode=events.mode, polling_reason=events.reason)
            while not self.stop_event.is_set():
                self._work()
                if not announced and not self._rescans and not self._failures:
                    self._emit(WatchEvent("watching", events.mode))  # the first pass is done
                    announced = True
                changes = events.wait(self._timeout(), self.stop_event)
                if changes is None:
                    break
                self._take(changes, events)
        except WatchStopped:
            pass
        except FATAL as exc:
            self._set(error=first_line(exc))
            raise
        finally:
            events.close()
            self._set(state="stopped")

    # -- gathering ------------------------------------------------------------------------------

    def _take(self, changes: list[tuple[int, str]], events: FileEvents) -> None:
        if self.pending.add(changes):
            self._set(last_change=_now())
        self._rescans.update(events.take_rescans())
        self._set(mode=events.mode, polling_reason=events.reason, pending=self._pending())
        if events.missing != self._missing:
            for root in sorted(set(events.missing) - set(self._missing)):
                self._emit(WatchEvent("missing", root))
            for root in sorted(set(self._missing) - set(events.missing)):
                self._emit(WatchEvent("back", root))
            self._missing = list(events.missing)
            self._set(missing=list(self._missing))

    def _timeout(self) -> float | None:
        if self._retry_at is not None:
            return max(0.0, self._retry_at - time.monotonic())
        return TICK if len(self.pending) or self._rescans else None

    def _pending(self) -> int:
        return len(self.pending) + len(self._rescans)

    # -- applying -------------------------------------------------------------------------------

    def _work(self) -> None:
        """Full passes first (roots new, back or replaced), then the settled changes."""
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            return
        self._retry_at = None  # the time has come (the failures still count for the backoff)
        if self._rescans:
            roots = [r for r in sorted(self._rescans) if os.path.exists(r)]
            self._rescans.clear()
            if roots and not self._apply(roots, under_roots=False):
                self._rescans.update(roots)
                return
        while not self.stop_event.is_set():
            batch = [p for p in self.pending.ready(self.options.batch) if self._root_there(p)]
            if not batch:
                break
            if not self._apply(batch, under_roots=True):
                self.pending.put_back(batch)
                return
        self._set(state="watching", pending=self._pending())

    def _root_there(self, path: str) -> bool:
        """Whether the watched folder holding ``path`` is there: changes under one that is
        gone are left to its full pass when it is back (it is never swept meanwhile)."""
        root = next((r for r in self.roots if path.startswith(r.rstrip(os.sep) + os.sep)), None)
        return root is not None and os.path.isdir(root)

    def _apply(self, paths: list[str], *, under_roots: bool) -> bool:
        """One index run over ``paths``; False (reported, retry scheduled) when it failed."""
        args = dict(self.index_args)
        if under_roots:
            args.pop("index_memory", None)  # recorded by the first pass
            if len(paths) < SMALL_BATCH and not any(map(os.path.isdir, paths)):
                args["workers"] = 0
        self._set(state="indexing", pending=self._pending() + len(paths))
        try:
            summary = self.collection.index(paths, under_roots=under_roots,
                                            progress=self._progress, **args)
        except FATAL:
            raise
        except Exception as exc:  # the whole batch failed: kept, and tried again later
            self._failed(exc, len(paths))
            return False
        recovered, self._failures, self._retry_at = self._failures > 0, 0, None
        with self._lock:
            s = self._state
            s.update(last_indexed=_now(), batches=s["batches"] + 1, error=None, retry_in=None,
                     added=s["added"] + summary.added, updated=s["updated"] + summary.updated,
                     removed=s["removed"] + summary.removed, failed=s["failed"] + summary.failed)
        if recovered:
            self._emit(WatchEvent("recovered"))
        self._emit(WatchEvent("indexed", summary=summary, changes=len(paths)))
        return True

    def _failed(self, exc: Exception, n: int) -> None:
        self._failures += 1
        delay = min(self.options.retry_max,
                    self.options.retry_first * 2 ** min(self._failures - 1, 30))
        self._retry_at = time.monotonic() + delay
        reason = _reason(exc)
        self._set(state="retrying", error=reason, retry_in=delay)
        self._emit(WatchEvent("failed", reason, changes=n, retry_in=delay))

    def _progress(self, p: IndexProgress) -> None:
        if self.stop_event.is_set():
            raise WatchStopped
        if self.progress is not None:
            self.progress(p)

    def _emit(self, event: WatchEvent) -> None:
        if self.on_event is not None:
            self.on_event(event)

    def _set(self, **values: Any) -> None:
        with self._lock:
            self._state.update(values)


def _reason(exc: BaseException) -> str:
    """A failed batch's one line."""
    if is_disk_full(exc) and not isinstance(exc, RetrievalError):
        where = getattr(exc, "filename", None)
        return "no space left on the device" + (f" of {where}" if where else "")
    return first_line(exc)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


__all__ = ["WatchEvent", "WatchOptions", "WatchStopped", "Watcher"]
