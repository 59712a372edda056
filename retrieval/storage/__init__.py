"""Storage: the SQL catalog (the source of truth) and the vector indexes derived from it. The
only package that speaks SQL (``tests/test_structure.py`` checks that no other imports
SQLAlchemy or ``sqlite3``).

* :mod:`.schema`: the tables; :mod:`.migrations`: ordered schema changes applied on open;
* :mod:`.catalog`: :class:`Catalog`, reads and settings; :mod:`.reads`, :mod:`.writes`: its
  statements and transactions;
* :mod:`.backends`: what differs between databases (SQLite, PostgreSQL), one module each,
  chosen by the catalog URL's scheme; :mod:`.engines`: engines and URLs as messages show them;
* :mod:`.keywords`: the keyword (full-text) index kept beside the items, as words;
* :mod:`.filter_sql`: filters (:class:`~.records.Condition`) as SQL, with the constructs of
  :mod:`.dialects`;
* :mod:`.records`: the records read and written;
* :mod:`.folder`: a collection's folder; :mod:`.lock`: its write lock;
* :mod:`.vector_indexes`: one FAISS index per kind of item, kept in step with the catalog's
  change log.

Importing this package does not import SQLAlchemy; naming :class:`Catalog` does.
"""

from typing import Any

from ..items import IMAGE, KINDS, TEXT
from .records import (
    FileState,
    Hydrated,
    ImageRecord,
    Item,
    TextRecord,
)


def __getattr__(name: str) -> Any:
    if name == "Catalog":
        from .catalog import Catalog

        return Catalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["IMAGE", "KINDS", "TEXT", "Catalog", "FileState", "Hydrated", "ImageRecord",
           "Item", "TextRecord"]
