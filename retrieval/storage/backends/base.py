"""What a catalog asks of the database it lives in: the interface every backend implements.

The defaults describe a database server that SQLAlchemy reaches and that offers nothing of its
own: its URL is kept in the collection's folder (``catalog.url``), pooled connections are
checked after they sat idle, reads run without a transaction around them, and it has no keyword
index, no lock shared between hosts and no forms of the filter constructs of
:mod:`..dialects` (a filtered search is refused). A backend overrides what its database does
otherwise or better.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from ...errors import CatalogError

if TYPE_CHECKING:
    from sqlalchemy import URL, Engine


class SharedLock(Protocol):
    """A writer's lock held in the database itself (writers on several hosts share a catalog,
    not a folder); released when its holder's connection ends."""

    where: str

    def acquire(self) -> bool: ...

    def release(self) -> None: ...

    def close(self) -> None: ...


class Backend:
    """A catalog database: SQLAlchemy engine, its settings, keyword index and locks."""

    name = "database"  # in messages: "SQLite", "PostgreSQL"
    server = True  # shared by several hosts (kept as a URL); False: a file in the folder
    driver_hint = ""  # what to install when the URL's driver is missing, for messages
    keywords = False  # has a keyword index (create, refresh and search below)

    def normalize_url(self, url: str) -> str:
        """The URL as SQLAlchemy should read it (a driver chosen, say)."""
        return url

    def locate(self, url: str, create: bool) -> tuple[str | None, str]:
        """(the catalog's file, if it is one, checked; the URL to open)."""
        return None, url

    def engine(self, parsed: URL) -> Engine:
        """An engine for the URL; pooled connections idle for a while are checked before use
        (a server that restarted or dropped them)."""
        from sqlalchemy import create_engine

        engine = create_engine(parsed)
        ping_when_idle(engine)
        return engine

    def reads(self, engine: Engine) -> Engine:
        """The engine reads run on: without a transaction around them (BEGIN and ROLLBACK
        would be two more round trips per read; each read is one statement, or tolerates a
        change between its statements)."""
        return engine.execution_options(isolation_level="AUTOCOMMIT")

    def lock_migrations(self, conn: Any) -> None:
        """Make other processes wait while this one migrates (inside its transaction)."""

    def damage(self, exc: BaseException, file: str | None) -> CatalogError | None:
        """The error to report when ``exc`` says the catalog's files are damaged."""
        return None

    def close(self, engine: Engine, file: str | None) -> None:
        """Leave the catalog whole on closing (before the engine's connections close)."""

    def writer_lock(self, url: str, where: str) -> SharedLock | None:
        """The lock writers on several hosts take in the database, if it has one."""
        return None

    def password_hint(self, message: str) -> str:
        """What to add to the server's refusal ``message`` about where a password goes."""
        return ""

    # -- the keyword index ---------------------------------------------------------------------

    def create_keywords(self, conn: Any) -> bool:
        """Create the keyword index if missing; False when the database has none."""
        return False

    def refresh_keywords(self, conn: Any, ids: Sequence[int]) -> None:
        """Recompute the keyword rows of these items (deleted items lose theirs)."""

    def search_keywords(self, conn: Any, query: str, kind: str, limit: int
                        ) -> list[tuple[int, float]]:
        """(id, score) of items of ``kind`` whose name, text, caption or tags match, best
        first, equal scores by id."""
        raise CatalogError("keyword search needs a SQLite or PostgreSQL catalog")


IDLE_PING_S = 5.0


def ping_when_idle(engine: Engine) -> None:
    """A pooled connection idle for a while is checked before it is handed out (a server that
    restarted or dropped it: the pool opens a new one). Busy connections are not: a ping per
    use would add a round trip to every read of a search."""
    from sqlalchemy import event
    from sqlalchemy.exc import DisconnectionError

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
