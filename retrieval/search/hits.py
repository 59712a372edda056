"""Search results as callers see them: :class:`Hit`, read from the catalog by id.

A search's hits also say what their score is and why they matched (:func:`explain`):

* ``metadata["score_kind"]``: ``"similarity"`` (the query vector's cosine), ``"fused"``
  (hybrid search's reciprocal-rank fusion), ``"keywords"`` (a keyword search's relevance as a
  share of its first result's, which scores 1; the raw relevance is ``metadata["scores"]
  ["keyword"]``: :func:`~.planning.normalised`) or ``"reranked"`` (after re-ranking stages:
  the last stage that scores sets the score, and the order is the stages', so hits may be
  out of score order);
* ``metadata["match"]``: the text that made the hit match, ``{"source", "text", "words"}``:
  ``source`` is ``"caption"`` (a sidecar caption), ``"generated"`` (a generated caption),
  ``"ocr"`` (text recognised in the image), ``"text"`` (a text added with add-texts) or
  ``"name"`` (an image's file name with its folder); ``words`` are the query words found in
  that text as it writes them (empty when keywords took no part). An image that keywords
  found shows the text with most query words (sidecar caption, generated caption, recognised
  text, then name, on ties), otherwise its sidecar caption, else its generated caption, else
  nothing; a text shows itself.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..items import (
    FILE_NAME,
    GENERATED,
    IMAGE,
    RECOGNISED,
    SHOT,
    SIDECAR,
    TEXT,
    VIDEO,
    shown_source,
)
from ..pathnames import shown
from ..storage.records import Item

if TYPE_CHECKING:
    from ..storage import Catalog


@dataclass
class Hit:
    """One search result: the item's id, its score (None for a plain look-up), ``kind``
    (``image``, ``text`` or ``video``), the image's or video's path (a caption's image path
    for captions), the text (an image's sidecar caption for images), and metadata (an image's
    generated caption is ``metadata["generated_caption"]``, the text recognised in it
    ``metadata["ocr_text"]``). A video's hit is one of its shots (the item ``id``): ``video``
    is the video's id, ``start`` and ``end`` the shot's time span in seconds (a video looked
    up by its own id spans all of it)."""

    id: int
    score: float | None
    kind: str
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    video: int | None = None
    start: float | None = None
    end: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.id, "score": self.score, "kind": self.kind,
               "path": shown(self.path) if self.path else self.path,
               "text": self.text, "metadata": self.metadata}
        if self.kind == VIDEO:
            out.update(video=self.video, start=self.start, end=self.end)
        return out


class Hits(list[Hit]):
    """A search's hits, a list; with ``min_score`` or ``cutoff`` also where the results end:
    ``total``, how many results the cut kept in all (every page together, counted up to
    20,000, the end of the deepest page), and ``threshold``, the lowest score it kept. Both are
    None for a search without a cut. ``notice``: a line for whoever asked, or None (a query in
    a script the collection's model was not trained for: :mod:`retrieval.encoders.guide`)."""

    def __init__(self, hits: Iterable[Hit] = (), total: int | None = None,
                 threshold: float | None = None, notice: str | None = None) -> None:
        super().__init__(hits)
        self.total, self.threshold, self.notice = total, threshold, notice


def iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


def hydrate(catalog: Catalog, pairs: Sequence[tuple[int, float | None]]) -> list[Hit]:
    """Hits for (id, score) pairs, in order, read in one catalog transaction; items deleted
    by a writer since the index was read are left out."""
    found = catalog.hydrate(i for i, _ in pairs)
    generated, recognised = found.generated, found.recognised
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
        if item_id in recognised:
            hit.metadata["ocr_text"] = recognised[item_id]
        hits.append(hit)
    return hits


def _hit(item: Item, score: float | None, parents: dict[int, Item], captions: dict[int, str]
         ) -> Hit:
    if item.kind in (IMAGE, SHOT, VIDEO):
        meta: dict[str, Any] = {
            "width": item.width, "height": item.height, "taken_at": iso(item.taken_at),
            "camera_make": item.camera_make, "camera_model": item.camera_model,
            "size": item.size,
            "mtime": iso(dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.timezone.utc))
            if item.mtime_ns else None,
        }
        if item.kind == IMAGE:
            return Hit(item.id, score, IMAGE, item.path, captions.get(item.id), meta)
        # a video's: its container's fields (codec, frame rate, ...) and a shot's own
        meta.update(item.metadata or {}, duration=item.duration)
        if item.kind == VIDEO:
            return Hit(item.id, score, VIDEO, item.path, None, meta, item.id, 0.0,
                       item.duration)
        return Hit(item.id, score, VIDEO, item.path, captions.get(item.id), meta,
                   item.parent_id, item.start_time, item.end_time)
    meta = dict(item.metadata or {})
    meta.update(source=item.source, external_id=item.external_id)
    path = None
    if item.parent_id is not None:
        meta["caption_of"] = item.parent_id
        parent = parents.get(item.parent_id)
        path = parent.path if parent else None
    return Hit(item.id, score, TEXT, path, item.text, meta)


def explain(hit: Hit, score_kind: str, keywords: str | None) -> None:
    """Add ``score_kind`` and ``match`` (see the module) to a search's hit; ``keywords`` are
    the words the keyword search looked for when it found this hit, else None."""
    from ..storage.keywords import matched_words  # SQLAlchemy: not on the CLI's start-up path

    hit.metadata["score_kind"] = score_kind
    if hit.kind == TEXT:
        texts = [(shown_source(hit.metadata.get("source")), hit.text)]
    else:
        texts = [(SIDECAR, hit.text), (GENERATED, hit.metadata.get("generated_caption")),
                 (RECOGNISED, hit.metadata.get("ocr_text")), (FILE_NAME, _name(hit.path))]
    found = [(source, text, matched_words(keywords, text) if keywords else [])
             for source, text in texts if text]
    best = max(found, key=lambda f: len({w.casefold() for w in f[2]}), default=None)
    if best is not None and not best[2]:  # no words: a caption, never a bare name
        best = next((f for f in found if f[0] != FILE_NAME), None)
    if best is not None:
        hit.metadata["match"] = {"source": best[0], "text": best[1], "words": best[2]}


def _name(path: str | None) -> str | None:
    """An image's name as the keyword index holds it: its folder and file name."""
    if not path:
        return None
    return "/".join(path.replace("\\", "/").rstrip("/").split("/")[-2:])


def lookup(catalog: Catalog, item_id: Any, where: str = "the collection") -> Hit:
    """One item by id (checked like any id from outside), as a hit without a score."""
    from ..errors import ItemNotFoundError
    from .builder import item_id as checked

    hits = hydrate(catalog, [(checked(item_id), None)])
    if not hits:
        raise ItemNotFoundError(f"no item with id {item_id} in {where}")
    return hits[0]
