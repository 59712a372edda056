"""The catalog's reads of several statements, each run on one connection by
:class:`~.catalog.Catalog`: items by id, and what a list of hits shows (:func:`hydrate_items`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import select

from ..items import GENERATED, RECOGNISED, SIDECAR, VISUAL
from .records import Hydrated, Item
from .schema import items, tags
from .writes import chunks


def items_by_id(conn: Any, ids: Iterable[int]) -> dict[int, Item]:
    out: dict[int, Item] = {}
    for part in chunks(list(ids)):
        for row in conn.execute(select(items).where(items.c.id.in_(part))):
            out[row.id] = Item(**row._mapping)
    return out


# Hydrated's field of each of an image's texts
CAPTION_SOURCES = {SIDECAR: "captions", GENERATED: "generated", RECOGNISED: "recognised"}
_CAPTION_ITEMS = items.alias("cap")


def hydrate_items(conn: Any, ids: Iterable[int]) -> Hydrated:
    """Items, their tags (best first) and, for images and shots, their sidecar and generated
    captions and recognised text, from one statement per chunk of ids."""
    out = Hydrated({}, {}, {}, {}, {})
    cap = _CAPTION_ITEMS
    for part in chunks(list(ids)):
        q = (select(items, tags.c.tag, tags.c.score, cap.c.source.label("cap_source"),
                    cap.c.text.label("cap_text"))
             .outerjoin(tags, tags.c.item_id == items.c.id)
             .outerjoin(cap, (cap.c.parent_id == items.c.id) & items.c.kind.in_(VISUAL)
                        & cap.c.source.in_(list(CAPTION_SOURCES)))
             .where(items.c.id.in_(part)).order_by(items.c.id, tags.c.score.desc()))
        seen_tags: set[tuple[int, str]] = set()
        for row in conn.execute(q):
            m = row._mapping
            item_id = m[items.c.id]
            if item_id not in out.items:
                out.items[item_id] = Item(**{c.name: m[c] for c in items.c})
            if m[tags.c.tag] is not None and (item_id, m[tags.c.tag]) not in seen_tags:
                seen_tags.add((item_id, m[tags.c.tag]))
                out.tags.setdefault(item_id, []).append((m[tags.c.tag], m[tags.c.score]))
            if m["cap_source"] is not None:
                getattr(out, CAPTION_SOURCES[m["cap_source"]])[item_id] = m["cap_text"]
    return out


