"""The serve command: the HTTP service and web page over one collection."""

from __future__ import annotations

import click

from .group import cli, model_options, open_collection


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
@model_options
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, token: str | None, max_upload: int,
          search_threads: int | None, allowed_hosts: str | None, model: str | None,
          pretrained: str | None, device: str) -> None:
    """Serve the collection over HTTP: a JSON API (OpenAPI at /docs) and a web page at /."""
    import uvicorn

    from ..http_guards import default_allowed_hosts, parse_hosts
    from ..server import create_app

    hosts = default_allowed_hosts(host) if allowed_hosts is None else parse_hosts(allowed_hosts)
    if hosts == []:
        raise click.BadParameter("name at least one host, or '*' for any",
                                 param_hint="--allowed-hosts")
    col = open_collection(ctx, model, pretrained, device)
    app = create_app(col, token=token, max_upload_bytes=max_upload * 1024 * 1024,
                     search_threads=search_threads, allowed_hosts=hosts)
    encoder = col.encoder  # load the model before the first request, and fail early
    if hasattr(encoder, "load"):
        encoder.load("text", "image")
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo("warning: serving on a public address without --token", err=True)
    click.echo(f"serving {col.path} on http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
