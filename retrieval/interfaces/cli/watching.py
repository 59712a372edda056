"""Watch mode on the command line (``index --watch``, ``serve --watch``): what a
:class:`~retrieval.ingest.watch.Watcher` reports, one line each, and stopping on a signal.

SIGTERM (systemd, a container's stop) ends the watch after the batch in flight is cut short
as Ctrl-C cuts a run, and the command exits 0; Ctrl-C exits 130 as every command does.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import click

from ...pathnames import shown
from .output import Progress, echo_json, print_summary

if TYPE_CHECKING:
    from ...collection import Collection
    from ...ingest.watch import Watcher, WatchEvent, WatchOptions


def watch_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The options that tune watching (only with --watch)."""
    f = click.option("--settle", type=click.FloatRange(min=0), default=1.0, show_default=True,
                     help="With --watch: seconds a file's size and time must hold still before "
                          "it is indexed (raise it for slow writers).")(f)
    f = click.option("--poll", is_flag=True,
                     help="With --watch: poll the folders every 2 s instead of listening for "
                          "file events (network file systems; chosen by itself where events "
                          "cannot be had).")(f)
    return f


def options_of(poll: bool, settle: float) -> WatchOptions:
    from ...ingest.watch import WatchOptions

    return WatchOptions(settle=settle, polling=poll)


class EventLines:
    """Prints a watcher's events on stderr (a batch's summary on stdout: the first pass's as
    ``retrieval index`` prints it, later ones behind the time), or each as a JSON line."""

    def __init__(self, as_json: bool = False, bar: Progress | None = None) -> None:
        self.as_json, self.bar = as_json, bar
        self.batches = 0

    def __call__(self, event: WatchEvent) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.as_json:
            now = dt.datetime.now().astimezone().replace(microsecond=0)
            out: dict[str, Any] = {"event": event.kind, "time": now.isoformat()}
            if event.message:
                out["message"] = shown(event.message)
            if event.summary is not None:
                out.update(event.summary.to_dict())
            if event.changes:
                out["changes"] = event.changes
            if event.retry_in is not None:
                out["retry_in"] = event.retry_in
            echo_json(out)
            return
        if event.kind == "indexed" and event.summary is not None:
            if self.batches:
                click.echo(f"{_clock()} ", nl=False)
            self.batches += 1
            print_summary(event.summary, False)
            return
        click.echo(shown(self.line(event)), err=True)

    @staticmethod
    def line(event: WatchEvent) -> str:
        if event.kind == "watching":
            how = "polling" if event.message == "polling" else "file events"
            return f"watching for changes ({how}); Ctrl-C or SIGTERM stops"
        if event.kind == "polling":
            return f"warning: file events are not available ({event.message}); polling instead"
        if event.kind == "failed":
            return (f"{_clock()} indexing failed: {event.message}; {event.changes} change(s) "
                    f"kept, retrying in {event.retry_in:.0f} s")
        if event.kind == "recovered":
            return f"{_clock()} indexing works again"
        if event.kind == "missing":
            return (f"{_clock()} {event.message} is gone; its items are kept until it is back")
        if event.kind == "back":
            return f"{_clock()} {event.message} is back; indexing it again"
        if event.kind == "stopped":
            return f"{_clock()} watching stopped: {event.message}"
        return f"{_clock()} {event.kind} {event.message}".rstrip()


def _clock() -> str:
    return dt.datetime.now().strftime("%H:%M:%S")


@contextlib.contextmanager
def stopped_by_sigterm(watcher: Watcher) -> Iterator[None]:
    """SIGTERM stops ``watcher`` (the main thread's handler; the previous one is restored)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda *_: watcher.stop())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def watch_here(col: Collection, roots: Any, index: dict[str, Any], options: WatchOptions,
               as_json: bool, bar: Progress) -> None:
    """``index --watch``: watch in this thread until SIGTERM (returns) or Ctrl-C (raises)."""
    from ...ingest.watch import Watcher

    watcher = Watcher(col, roots, options=options, index=index,
                      on_event=EventLines(as_json, bar), progress=bar)
    with stopped_by_sigterm(watcher):
        watcher.run()
    bar.close()
    click.echo("stopped watching", err=True)
