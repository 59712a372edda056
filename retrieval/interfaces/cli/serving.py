"""The serve command: the HTTP service and web page over one collection."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from .group import cli, model_options, open_collection
from .watching import EventLines, options_of, watch_options

GRACE_SECONDS = 3


def _server_class() -> type:
    import uvicorn

    class StoppingServer(uvicorn.Server):
        """uvicorn's server that also cancels the searches in flight when told to exit."""

        def __init__(self, config: Any, stop_searches: Callable[[], None]) -> None:
            super().__init__(config)
            self.stop_searches = stop_searches
            self.loop: asyncio.AbstractEventLoop | None = None

        async def serve(self, sockets: Any = None) -> None:
            self.loop = asyncio.get_running_loop()
            await super().serve(sockets)

        def handle_exit(self, sig: int, frame: Any) -> None:
            if self.loop is not None:  # from the signal handler, onto the event loop's thread
                self.loop.call_soon_threadsafe(self.stop_searches)
            super().handle_exit(sig, frame)

    return StoppingServer


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; use 0.0.0.0 only behind a token and a firewall.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--token", envvar="RETRIEVAL_TOKEN", show_envvar=True, default=None,
              help="Require 'Authorization: Bearer TOKEN' on every endpoint.")
@click.option("--max-upload", type=click.IntRange(min=1), default=20, show_default=True,
              help="Largest accepted upload, in MB.")
@click.option("--search-threads", type=click.IntRange(min=1), default=None,
              help="Searches run at once.  [default: one per CPU core]")
@click.option("--allowed-hosts", metavar="NAMES", default=None,
              help="Host header names answered (comma-separated, any port; '*' for any); "
                   "others get a 400.  [default: 127.0.0.1,localhost,[::1] when bound to a "
                   "loopback address, against DNS rebinding; any Host otherwise]")
@click.option("--search-timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True,
              help="Seconds a search may take (waiting for a free engine thread included); "
                   "past it the search stops and answers 503.")
@click.option("--watch", "watch", multiple=True, metavar="FOLDER",
              type=click.Path(path_type=Path, exists=True),
              help="Keep FOLDER indexed while serving (repeatable): a pass at start, then "
                   "changes as they happen; /info shows the watcher's state.")
@watch_options
@model_options
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, token: str | None, max_upload: int,
          search_threads: int | None, allowed_hosts: str | None, search_timeout: float,
          watch: tuple[Path, ...], poll: bool, settle: float, model: str | None,
          pretrained: str | None, device: str) -> None:
    """Serve the collection over HTTP: a JSON API (OpenAPI at /docs) and a web page at /."""
    import uvicorn

    from ...ingest.watch import Watcher
    from ..http_guards import default_allowed_hosts, parse_hosts
    from ..server import create_app

    hosts = default_allowed_hosts(host) if allowed_hosts is None else parse_hosts(allowed_hosts)
    if hosts == []:
        raise click.BadParameter("name at least one host, or '*' for any",
                                 param_hint="--allowed-hosts")
    with _listening(host, port) as sock:  # before the model loads and anything is announced
        col = open_collection(ctx, model, pretrained, device)
        watcher = Watcher(col, watch, options=options_of(poll, settle),
                          on_event=EventLines()) if watch else None
        app = create_app(col, token=token, max_upload_bytes=max_upload * 1024 * 1024,
                         search_threads=search_threads, allowed_hosts=hosts,
                         search_timeout=search_timeout, watcher=watcher)
        col.encoder.warm("text", "image")  # load the model before the first request; fail early
        if host not in ("127.0.0.1", "localhost", "::1") and not token:
            click.echo("warning: serving on a public address without --token", err=True)
        port = sock.getsockname()[1]  # the one chosen for --port 0
        shown_host = f"[{host}]" if ":" in host else host
        click.echo(f"serving {col.path} on http://{shown_host}:{port}/ (API docs at /docs)",
                   err=True)
        # On SIGTERM or Ctrl-C the searches in flight are cancelled at once (each stops at its
        # next check and answers 503); other requests get a few seconds, then the process ends.
        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                timeout_graceful_shutdown=GRACE_SECONDS)
        _server_class()(config, app.state.stop_searches).run(sockets=[sock])


@contextlib.contextmanager
def _listening(host: str, port: int) -> Iterator[socket.socket]:
    """A socket bound to ``host``:``port`` as uvicorn binds one (IPv6 for an address with a
    colon, SO_REUSEADDR), handed to uvicorn later; a port that cannot be had is one line that
    names the fix. Holding it from the start leaves no gap for another process to take it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise click.ClickException(_bind_error(host, port, exc)) from None
        yield sock
    finally:
        sock.close()


def _bind_error(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use; choose another with --port"
    if exc.errno == errno.EACCES:
        return (f"port {port} on {host} needs privileges this user lacks; choose one above 1023 "
                "with --port")
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return f"{host} is not an address of this machine; choose another with --host"
    reason = exc.strerror or str(exc)
    return f"cannot listen on {host} port {port} ({reason}); choose another --host or --port"
