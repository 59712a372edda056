"""Catalog backends: what differs between the databases a catalog can live in, one module each
(a subclass of :class:`.base.Backend`), chosen by the catalog URL's scheme.

* :mod:`.sqlite`: a file in the collection's folder (a catalog given as a path), FTS5 keywords,
  its files checked before they are opened (:mod:`.sqlite_files`);
* :mod:`.postgresql`: a server shared by hosts (``postgresql://``, ``postgres://``, through
  psycopg 3), ``tsvector`` keywords, advisory locks.

A new backend is one module here plus its line in :data:`REGISTERED` (and its dialect in
:data:`PARTIAL_INDEXES` when its unique indexes take a ``WHERE``). A URL of a scheme not
registered gets the plain :class:`.base.Backend`: SQL that every database speaks, and no
keyword search.
"""

from __future__ import annotations

import functools
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Backend

# URL scheme (before any "+driver"), or SQLAlchemy dialect name -> "module:class" in this package
REGISTERED: dict[str, str] = {
    "sqlite": "sqlite:SQLite",
    "postgresql": "postgresql:PostgreSQL",
    "postgres": "postgresql:PostgreSQL",
}
# Dialects whose partial unique indexes the schema declares (``<dialect>_where``)
PARTIAL_INDEXES = ("sqlite", "postgresql")


def scheme(url: str) -> str:
    """The scheme of a catalog URL; a path (no scheme) names a SQLite file."""
    if "://" not in url:
        return "sqlite"
    return url.split("://", 1)[0].split("+", 1)[0].lower()


def for_url(url: str) -> Backend:
    """The backend of a catalog URL or path."""
    return _load(REGISTERED.get(scheme(url), ""))


def for_dialect(name: str) -> Backend:
    """The backend of a connection (``conn.dialect.name``)."""
    return _load(REGISTERED.get(name, ""))


@functools.cache
def _load(ref: str) -> Backend:
    if not ref:
        from .base import Backend

        return Backend()
    module, cls = ref.split(":")
    backend: Backend = getattr(importlib.import_module(f"{__name__}.{module}"), cls)()
    return backend
