"""Storage: the SQL catalog (the source of truth) and the vector indexes derived from it.

* :mod:`.schema`: the tables; :mod:`.migrations`: ordered schema changes applied on open;
* :mod:`.catalog`: :class:`Catalog`, reads and settings; :mod:`.writes`: its transactions;
* :mod:`.keywords`: the keyword (full-text) index kept beside the items;
* :mod:`.records`: the records read and written;
* :mod:`.vector_indexes`: one FAISS index per modality, kept in step with the catalog's
  change log;
* :mod:`.lock`: the write lock of a collection folder.

Importing this package does not import SQLAlchemy; naming :class:`Catalog` does.
"""

from typing import Any

from .records import (
    IMAGE,
    MODALITIES,
    TEXT,
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


__all__ = ["IMAGE", "MODALITIES", "TEXT", "Catalog", "FileState", "Hydrated", "ImageRecord",
           "Item", "TextRecord"]
