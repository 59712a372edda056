"""Engines for catalog URLs: a SQLite file, or a database server (PostgreSQL through psycopg 3)
whose pooled connections are checked after they sat idle; URLs as messages show them."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from ..errors import CatalogError, first_line


def normalize_url(url: str) -> str:
    """``postgresql://`` (and ``postgres://``) mean psycopg 3, whatever SQLAlchemy's default."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def shown_url(url: str) -> str:
    """A database URL as messages show it: without the password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def engine_for(url: str, where: str) -> Engine:
    """An engine for ``url``; a URL that names a database this package has no driver for says
    which package to install."""
    try:
        if url.startswith("sqlite"):
            return create_engine(url)
        engine = create_engine(url)
        _ping_when_idle(engine)
        return engine
    except ModuleNotFoundError as exc:
        hint = (" (pip install 'retrieval[postgresql]')" if url.startswith("postgres") else "")
        raise CatalogError(f"catalog {where}: the database driver {exc.name!r} is not "
                           f"installed{hint}") from None
    except ArgumentError as exc:
        raise CatalogError(f"catalog {where}: not a database URL ({exc})") from None
    except Exception as exc:  # NoSuchModuleError: an unknown database name
        raise CatalogError(f"catalog {where}: {first_line(exc)}") from None


IDLE_PING_S = 5.0


def _ping_when_idle(engine: Engine) -> None:
    """A pooled connection idle for a while is checked before it is handed out (a server that
    restarted or dropped it: the pool opens a new one). Busy connections are not: a ping per
    use would add a round trip to every read of a search."""

    def stamp(_dbapi: Any, record: Any, *_: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    def check(dbapi: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", 0.0) < IDLE_PING_S:
            return
        try:
            cur = dbapi.cursor()
            cur.execute("SELECT 1")
            cur.close()
            dbapi.rollback()
        except Exception as exc:  # any failure: the connection is not usable
            raise DisconnectionError(str(exc)) from exc

    event.listen(engine.pool, "connect", stamp)
    event.listen(engine.pool, "checkin", stamp)
    event.listen(engine.pool, "checkout", check)
