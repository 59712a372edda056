"""Query terms to vectors: texts (through the text cache), images, stored items, raw vectors;
and the same for a second model that re-ranks."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders import Encoder
from ..errors import ItemNotFoundError, QueryError
from ..items import IMAGE, SHOT, TEXT
from ..media import DEFAULT_MAX_PIXELS, ImageDecodeError, load_image
from .query import Term, combine

if TYPE_CHECKING:
    from ..storage import Catalog

log = logging.getLogger("retrieval")


def embed_image(encoder: Encoder, source: str | os.PathLike[str] | bytes,
                max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """One image (a path, or the file's bytes) embedded by ``encoder``."""
    where = "uploaded image" if isinstance(source, bytes) else f"query image {source}"
    try:
        pixels, _ = load_image(io.BytesIO(source) if isinstance(source, bytes) else source,
                               encoder.image_spec, max_pixels)
    except ImageDecodeError as exc:
        raise QueryError(f"{where}: {exc.reason}") from None
    return encoder.embed_images(pixels[None])[0]


def embed_stored(catalog: Catalog, ids: Sequence[int], encoder: Encoder
                 ) -> dict[int, np.ndarray]:
    """Stored items (image files, shots' keyframes, texts) embedded by ``encoder``;
    unreadable image files are left out with a warning."""
    found = catalog.get_items(ids)
    out: dict[int, np.ndarray] = {}
    texts = [(i, it.text or "") for i, it in found.items() if it.kind == TEXT]
    if texts:
        vecs = encoder.embed_texts([t for _, t in texts])
        out.update({i: v for (i, _), v in zip(texts, vecs, strict=True)})
    images = []
    for i, it in found.items():
        # an image's file, a shot's keyframe
        source = it.path if it.kind == IMAGE else catalog.keyframe(i) if it.kind == SHOT else None
        if not source:
            continue
        try:
            images.append((i, load_image(io.BytesIO(source) if isinstance(source, bytes)
                                         else source, encoder.image_spec)[0]))
        except ImageDecodeError as exc:
            log.warning("cannot re-embed %s: %s", it.path, exc.reason)
    for start in range(0, len(images), 32):
        part = images[start:start + 32]
        vecs = encoder.embed_images(np.stack([p for _, p in part]))
        out.update({i: v for (i, _), v in zip(part, vecs, strict=True)})
    return out


class QueryEmbedder:
    """The collection's query vectors, of dimension ``dim``. ``encoder`` and ``text_cache``
    are called only when a term needs them: a query for a stored item or a raw vector loads
    neither, a cached text no model."""

    def __init__(self, catalog: Catalog, encoder: Callable[[], Encoder], dim: int,
                 text_cache: Callable[[], Any]) -> None:
        self.catalog, self.encoder, self.dim = catalog, encoder, dim
        self.text_cache = text_cache

    def vector(self, terms: Sequence[Term], check: Callable[[], None] = lambda: None
               ) -> np.ndarray:
        """The terms embedded, weighted and combined into one normalised vector. ``check``
        runs before each call into the encoder (a search's budget raises there)."""
        vectors: list[np.ndarray | None] = [None] * len(terms)
        texts = [(i, str(t.value)) for i, t in enumerate(terms) if t.kind == "text"]
        if texts:
            check()
            for (i, _), v in zip(texts, self.texts([s for _, s in texts]), strict=True):
                vectors[i] = v
        for i, t in enumerate(terms):
            check()
            if t.kind == "image":
                vectors[i] = embed_image(self.encoder(), t.value,
                                         t.max_pixels or DEFAULT_MAX_PIXELS)
            elif t.kind == "like":
                vectors[i] = self.stored(int(t.value))
            elif t.kind == "vector":
                vectors[i] = self.raw(t.value)
        return combine([v for v in vectors if v is not None], [t.weight for t in terms])

    def texts(self, texts: list[str]) -> np.ndarray:
        """Query texts through the persistent text cache: a repeated query creates no model
        session at all."""
        cache = self.text_cache()
        found = cache.get(texts, self.dim) if cache is not None else {}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = dict(zip(missing, self.encoder().embed_texts(missing), strict=True))
            if cache is not None:
                cache.put(fresh)
            found.update(fresh)
        return np.stack([found[t] for t in texts])

    def stored(self, item_id: int) -> np.ndarray:
        ids, vecs = self.catalog.vectors([item_id], self.dim)
        if not len(ids):
            raise ItemNotFoundError(f"no item with id {item_id}")
        return vecs[0]

    def raw(self, value: Any) -> np.ndarray:
        v = np.asarray(value, dtype=np.float32)
        if v.shape != (self.dim,):
            raise QueryError(f"query vector has {v.shape[0]} dimensions, the collection "
                             f"{self.dim}")
        return v


class SecondModelScorer:
    """A second model for the re-ranking stage: embeds the query's terms and the candidates,
    keeping the candidates' vectors in the catalog, keyed by model and content."""

    def __init__(self, catalog: Catalog, encoder: Encoder, key: str) -> None:
        self.catalog, self.encoder, self.key = catalog, encoder, key

    def embed_query(self, terms: Sequence[Term], check: Callable[[], None] = lambda: None
                    ) -> np.ndarray:
        vecs = []
        for t in terms:
            check()
            if t.kind == "vector":
                raise QueryError("a raw query vector cannot be re-scored by another model")
            if t.kind == "text":
                vecs.append(self.encoder.embed_texts([str(t.value)])[0])
            elif t.kind == "image":
                vecs.append(embed_image(self.encoder, t.value,
                                        t.max_pixels or DEFAULT_MAX_PIXELS))
            else:
                found = embed_stored(self.catalog, [int(t.value)], self.encoder)
                if int(t.value) not in found:
                    raise QueryError(f"item {t.value} cannot be embedded by the second model")
                vecs.append(found[int(t.value)])
        return combine(vecs, [t.weight for t in terms])

    def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        cached = self.catalog.aux_vectors(self.key, ids)
        missing = [i for i in ids if i not in cached]
        if missing:
            fresh = embed_stored(self.catalog, missing, self.encoder)
            self.catalog.put_aux_vectors(self.key, fresh)
            cached.update(fresh)
        return cached
