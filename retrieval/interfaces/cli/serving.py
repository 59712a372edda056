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
@model_options
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, token: str | None, max_upload: int,
          search_threads: int | None, model: str | None, pretrained: str | None,
          device: str) -> None:
    """Serve the collection over HTTP: a JSON API (OpenAPI at /docs) and a web page at /."""
    import uvicorn

    from ..server import create_app

    col = open_collection(ctx, model, pretrained, device)
    app = create_app(col, token=token, max_upload_bytes=max_upload * 1024 * 1024,
                     search_threads=search_threads)
    encoder = col.encoder  # load the model before the first request, and fail early
    if hasattr(encoder, "load"):
        encoder.load("text", "image")
    if host not in ("127.0.0.1", "localhost", "::1") and not token:
        click.echo("warning: serving on a public address without --token", err=True)
    click.echo(f"serving {col.path} on http://{host}:{port}/ (API docs at /docs)", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
