"""The ``retrieval`` command group: options every command shares, opening the collection, and
turning library errors into one line and an exit code.

Commands parse options, call the library, and print. Library errors (one hierarchy) become a
one-line ``Error: ...`` on stderr and exit code 1; Ctrl-C exits with 130 after the library has
committed what it finished.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ...config import ENV_COLLECTION
from ...encoders.spec import DEFAULT_MODEL
from ...errors import IndexingError, RetrievalError, is_disk_full
from ...pathnames import shown
from .output import echo_json

if TYPE_CHECKING:
    from ...collection import Collection


class _Group(click.Group):
    """Turns library errors and interrupts into one line and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except IndexingError as exc:
            if exc.summary is not None and ctx.meta.get("json"):
                echo_json(exc.summary.to_dict())  # type: ignore[attr-defined]
            raise click.ClickException(shown(str(exc))) from None
        except RetrievalError as exc:
            raise click.ClickException(shown(str(exc))) from None
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            where = f" of {exc.filename}" if exc.filename else ""
            raise click.ClickException(shown(f"no space left on the device{where}; free some "
                                             "space and run the same command again")) from None
        except KeyboardInterrupt:
            click.echo("\nInterrupted: finished batches are saved; run the same command again "
                       "to continue.", err=True)
            sys.exit(130)


class _StderrHandler(logging.Handler):
    """Log lines on whatever stderr is now (a test runner may have replaced it)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(shown(self.format(record)) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def _setup_logging(verbose: int) -> None:
    log = logging.getLogger("retrieval")
    if not any(isinstance(h, _StderrHandler) for h in log.handlers):
        log.addHandler(_StderrHandler())  # once per process, however often the CLI runs
    log.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else logging.WARNING)
    log.propagate = False


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--collection", "collection_path", type=click.Path(path_type=Path),
              envvar=ENV_COLLECTION, show_envvar=True,
              help="Collection folder. Default: the 'default' collection under $RETRIEVAL_HOME "
                   "or the user data folder.")
@click.option("--catalog", "catalog_url", metavar="URL",
              help="Keep a new collection's catalog on a database server "
                   "(postgresql://user@host/db) instead of SQLite in its folder; a folder on "
                   "another host joins the same collection with the same URL. Default for new "
                   "collections: $RETRIEVAL_DATABASE_URL.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(package_name="retrieval")
@click.pass_context
def cli(ctx: click.Context, collection_path: Path | None, catalog_url: str | None,
        verbose: int) -> None:
    """Index image folders and search them by text or image with open_clip and FAISS."""
    _setup_logging(verbose)
    ctx.obj = {"collection": collection_path, "catalog": catalog_url}


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.option("--device", default="auto", show_default=True,
                     help="cpu, cuda, cuda:N, or auto (CUDA when available).")(f)
    f = click.option("--pretrained", default=None,
                     help="Pretrained tag (e.g. laion2b_s34b_b79k) or a checkpoint file, for "
                          "an open_clip architecture; refused beside models that carry their "
                          "own weights (hf-hub:, local-dir:, demo).")(f)
    f = click.option("--model", default=None,
                     help="open_clip model: an architecture (ViT-B-32), hf-hub:org/repo or "
                          "local-dir:/path. Default: the collection's model; "
                          f"{DEFAULT_MODEL.name} with {DEFAULT_MODEL.pretrained} for a new "
                          "collection (retrieval model list --available: the model guide).")(f)
    return f


def progress_option(f: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--progress/--no-progress", default=None,
                        help="Show progress bars on stderr. Default: when stderr is a terminal."
                        )(f)


def json_option(what: str) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help=what)


def open_collection(ctx: click.Context, model: str | None = None,
                    pretrained: str | None = None, device: str = "auto", create: bool = False,
                    precision: str | None = None, one_shot: bool = False) -> Collection:
    """The collection the command works on; a missing one is created only by commands that
    add to it."""
    from ...collection import Collection
    from ...config import default_collection_path
    from ...errors import CollectionNotFoundError
    from ...storage.folder import collection_exists, server_url

    path = ctx.obj["collection"] or default_collection_path()
    url = server_url(path, ctx.obj.get("catalog"))
    exists = collection_exists(path, url)
    if not exists and not create:
        raise CollectionNotFoundError(
            f"no collection at {path}; create it with `retrieval --collection {path} index "
            "FOLDER` or choose one with --collection / $RETRIEVAL_COLLECTION")
    collection = Collection(path, model=DEFAULT_MODEL if model is None and not exists else
                            model, pretrained=pretrained, device=device, precision=precision,
                            one_shot=one_shot, catalog=url)
    ctx.call_on_close(collection.close)  # a SQLite catalog is whole in its file after a command
    return collection
