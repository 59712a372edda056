"""A collection's folder: opened, or created when a model to bind it to is given.

    catalog.sqlite      the SQL catalog (source of truth)
    indexes/            FAISS indexes derived from it, one per modality
    lock                taken by writers
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import CollectionError, CollectionNotFoundError
from .records import MODALITIES

if TYPE_CHECKING:
    from ..encoders import ModelSpec
    from .catalog import Catalog
    from .lock import WriteLock
    from .vector_indexes import VectorIndexes

CATALOG_FILE = "catalog.sqlite"
INDEX_DIR = "indexes"


def open_catalog(folder: Path, create: bool, lock: WriteLock) -> Catalog:
    """The catalog of the collection in ``folder``; with ``create`` a missing collection is
    made (under the write lock: a second process creating it at the same time is told another
    is writing), else it is an error that says how to make one."""
    from .catalog import Catalog

    if (folder / CATALOG_FILE).exists():
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
            described = {m: indexes.describe(m) for m in MODALITIES}
    return {
        "path": str(folder), "model": spec.to_dict(), "dim": settings.get("dim"),
        "precision": settings.get("precision") or "fp32",
        "model_identity": settings.get("model_identity"), "counts": catalog.counts(),
        "index": described, "disk_bytes": disk_bytes(folder),
        "created_at": settings.get("created_at"),
        "last_indexed": settings.get("last_indexed_at"),
        "schema_version": catalog.schema_version,
    }
