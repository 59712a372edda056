"""Search results as callers see them: :class:`Hit`, read from the catalog by id."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..pathnames import shown
from ..storage.records import Item

if TYPE_CHECKING:
    from ..storage import Catalog


@dataclass
class Hit:
    """One search result: the item's id, its score (None for a plain look-up), ``kind``
    (``image`` or ``text``), the image's path (a caption's image path for captions), the text
    (an image's sidecar caption for images), and metadata (an image's generated caption is
    ``metadata["generated_caption"]``)."""

    id: int
    score: float | None
    kind: str
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "kind": self.kind,
                "path": shown(self.path) if self.path else self.path,
                "text": self.text, "metadata": self.metadata}


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def hydrate(catalog: Catalog, pairs: Sequence[tuple[int, float | None]]) -> list[Hit]:
    """Hits for (id, score) pairs, in order, read in one catalog transaction; items deleted
    by a writer since the index was read are left out."""
    found = catalog.hydrate(i for i, _ in pairs)
    generated = found.generated
    hits = []
    for item_id, score in pairs:
        item = found.items.get(item_id)
        if item is None:
            continue
        hit = _hit(item, score, found.parents, found.captions)
        if item_id in found.tags:
            hit.metadata["tags"] = {t: s for t, s in found.tags[item_id]}
        if item_id in generated:
            hit.metadata["generated_caption"] = generated[item_id]
        hits.append(hit)
    return hits


def _hit(item: Item, score: float | None, parents: dict[int, Item], captions: dict[int, str]
         ) -> Hit:
    if item.kind == "image":
        meta = {
            "width": item.width, "height": item.height, "taken_at": iso(item.taken_at),
            "camera_make": item.camera_make, "camera_model": item.camera_model,
            "size": item.size,
            "mtime": iso(dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.timezone.utc))
            if item.mtime_ns else None,
        }
        return Hit(item.id, score, "image", item.path, captions.get(item.id), meta)
    meta = dict(item.metadata or {})
    meta.update(source=item.source, external_id=item.external_id)
    path = None
    if item.parent_id is not None:
        meta["caption_of"] = item.parent_id
        parent = parents.get(item.parent_id)
        path = parent.path if parent else None
    return Hit(item.id, score, "text", path, item.text, meta)


def lookup(catalog: Catalog, item_id: Any, where: str = "the collection") -> Hit:
    """One item by id (checked like any id from outside), as a hit without a score."""
    from ..errors import ItemNotFoundError
    from .builder import item_id as checked

    hits = hydrate(catalog, [(checked(item_id), None)])
    if not hits:
        raise ItemNotFoundError(f"no item with id {item_id} in {where}")
    return hits[0]
