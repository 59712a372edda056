"""A collection's folder: opened, or created when a model to bind it to is given.

    catalog.sqlite      the SQL catalog (source of truth), a SQLite file, or
    catalog.url         the URL of a catalog on a database server (PostgreSQL), shared with
                        the folders of the same collection on other hosts
    indexes/            FAISS indexes derived from the catalog, one per kind of item
    lock                taken by writers

A catalog on a server is chosen when the collection is created (``catalog=URL``, else
``$RETRIEVAL_DATABASE_URL``). A folder on another host joins it the same way: given the URL of
a catalog that already holds a collection, it needs no model and builds its indexes from the
catalog.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CatalogError, CollectionError, CollectionNotFoundError
from ..items import KINDS
from .backends import for_url
from .backends.sqlite_files import never_written

if TYPE_CHECKING:
    from ..encoders import ModelSpec
    from .catalog import Catalog
    from .lock import WriteLock
    from .vector_indexes import VectorIndexes

CATALOG_FILE = "catalog.sqlite"
CATALOG_URL_FILE = "catalog.url"
INDEX_DIR = "indexes"
DATABASE_URL_ENV = "RETRIEVAL_DATABASE_URL"


def has_catalog(folder: Path) -> bool:
    """True when ``folder`` holds a collection (its catalog or the URL of one)."""
    return (folder / CATALOG_FILE).exists() or (folder / CATALOG_URL_FILE).exists()


def server_url(folder: Path, url: str | None) -> str | None:
    """The URL of the server catalog ``folder`` uses or is to use, if any."""
    if (folder / CATALOG_FILE).exists():
        if url:
            raise CollectionError(
                f"collection {folder} keeps its catalog in {folder / CATALOG_FILE}; a catalog "
                "URL applies only when a collection is created")
        return None
    stored = folder / CATALOG_URL_FILE
    if stored.exists():
        from .engines import has_password, normalize_url, same_catalog, shown_url

        found = stored.read_text(encoding="utf-8").strip()
        if url and not same_catalog(url, found):
            raise CollectionError(f"collection {folder} uses the catalog {shown_url(found)}, "
                                  f"not {shown_url(url)}")
        # The folder keeps no password: one given again (--catalog, the environment) is used.
        for given in (url, os.environ.get(DATABASE_URL_ENV)):
            with contextlib.suppress(CatalogError):  # a malformed variable names no catalog
                if given and has_password(given) and same_catalog(given, found):
                    return normalize_url(given)
        return found
    url = url or os.environ.get(DATABASE_URL_ENV) or None
    if url is not None and "://" in url and not for_url(url).server:
        from .engines import shown_url

        raise CollectionError(f"catalog URL {shown_url(url)}: a {for_url(url).name} catalog "
                              "lives in the collection's folder; give a database server's URL "
                              "(postgresql://...)")
    return url


def bound_on_server(url: str) -> bool:
    """True when the server catalog at ``url`` already holds a collection (a bound model);
    read without creating or migrating anything in that database."""
    from sqlalchemy import inspect, select
    from sqlalchemy.exc import DBAPIError

    from .engines import engine_for, normalize_url, server_error, shown_url
    from .schema import settings

    url = normalize_url(url)
    where = shown_url(url)
    engine = engine_for(url, where)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table(settings.name):
                return False
            model = conn.execute(select(settings.c.value).where(
                settings.c.key == "model")).scalar()
            return model is not None
    except DBAPIError as exc:
        raise server_error(where, exc.orig or exc, url) from None
    finally:
        engine.dispose()


def collection_exists(folder: Path, url: str | None = None) -> bool:
    """Whether ``folder`` holds a collection, or (a folder that is to join one) the server
    catalog at ``url`` (else ``$RETRIEVAL_DATABASE_URL``) does; writes nothing."""
    if has_catalog(folder):
        return True
    url = server_url(folder, url)
    return url is not None and bound_on_server(url)


def open_catalog(folder: Path, create: bool, lock: WriteLock, url: str | None = None
                 ) -> Catalog:
    """The catalog of the collection in ``folder``; with ``create`` a missing collection is
    made (under the write lock: a second process creating it at the same time is told another
    is writing), else it is an error that says how to make one. ``url`` names a catalog on a
    database server for a new folder."""
    from .catalog import Catalog

    url = server_url(folder, url)
    if url is not None:
        joining = not (folder / CATALOG_URL_FILE).exists()
        if joining and not create and not bound_on_server(url):  # before anything is made
            from .engines import normalize_url, shown_url

            raise CollectionNotFoundError(
                f"no collection in the catalog {shown_url(normalize_url(url))}; index a folder "
                f"into it to create it (retrieval --collection {folder} --catalog URL index "
                "FOLDER)")
        catalog = Catalog(url, create=True)  # its migrations take a lock of their own
        lock.shared = catalog.backend.writer_lock(catalog.url, catalog.where)
        if joining:
            _write_url(folder, catalog.url)
        return catalog  # its id is ensured when its indexes are first opened (Collection)
    if (folder / CATALOG_FILE).exists():
        _check_not_emptied(folder)
        return Catalog(folder / CATALOG_FILE)
    if not create:
        raise CollectionNotFoundError(
            f"no collection at {folder}; index a folder into it to create it "
            f"(retrieval --collection {folder} index FOLDER)")
    if folder.exists() and not folder.is_dir():
        raise CollectionError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    with lock.hold():
        catalog = Catalog(folder / CATALOG_FILE, create=True)
        catalog.ensure_catalog_id()
        return catalog


def _check_not_emptied(folder: Path) -> None:
    """An empty catalog file is a collection whose first run ended before it wrote anything,
    unless the folder holds indexes built from the catalog: then it was emptied."""
    path = folder / CATALOG_FILE
    if never_written(str(path)) and any(
            p.suffix == ".faiss" for p in (folder / INDEX_DIR).glob("*")):
        raise CatalogError(f"catalog damaged: {path}: empty, yet {folder / INDEX_DIR} holds "
                           "indexes built from it; restore it from a backup")


def _write_url(folder: Path, url: str) -> None:
    """Keep the catalog's URL in the folder without its password (libpq finds that in
    $PGPASSWORD or ~/.pgpass, or the URL is given again), readable by its owner only, written
    whole or not at all."""
    from .engines import without_password

    url = without_password(url)
    if folder.exists() and not folder.is_dir():
        raise CollectionError(f"{folder} exists and is not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{CATALOG_URL_FILE}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(url + "\n")
    os.replace(tmp, folder / CATALOG_URL_FILE)


def disk_bytes(folder: Path) -> int:
    """Bytes the collection's files take (catalog, indexes, thumbnails)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe(folder: Path, catalog: Catalog, spec: ModelSpec, indexes: VectorIndexes | None
             ) -> dict[str, Any]:
    """What ``retrieval info`` shows: model, dimension, counts, indexes, disk use."""
    settings = catalog.get_settings()
    described: dict[str, Any] = {}
    if indexes is not None:
        with indexes.lock.hold_if_free():
            described = {m: indexes.describe(m) for m in KINDS}
    return {
        "path": str(folder), "model": spec.to_dict(), "dim": settings.get("dim"),
        "precision": settings.get("precision") or "fp32",
        "model_identity": settings.get("model_identity"), "counts": catalog.counts(),
        "index": described, "disk_bytes": disk_bytes(folder),
        "created_at": settings.get("created_at"),
        "last_indexed": settings.get("last_indexed_at"),
        "schema_version": catalog.schema_version, "catalog": catalog.where,
    }
