"""The ``Collection`` facade: the one object the CLI, the HTTP app and Python callers use.

A collection is a folder::

    catalog.sqlite      the SQL catalog (source of truth)
    indexes/            FAISS indexes derived from it, one per modality
    lock                taken by writers (index, add-texts, remove)

It is bound to the model its vectors were made with. Searching never blocks on a writer: the
catalog is read in WAL mode and index files are replaced atomically.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import default_collection_path
from .encoders import DEFAULT_MODEL, Encoder, ModelSpec
from .errors import (
    CollectionError,
    CollectionLockedError,
    CollectionNotFoundError,
    IndexingError,
    InputError,
    ItemNotFoundError,
    ModelMismatchError,
    ModelNotFoundError,
    QueryError,
)
from .query import Hybrid, Query, Term, combine

if TYPE_CHECKING:
    from .filters import Filter
    from .ingest import IndexSummary, ProgressCallback, TextInput
    from .rerank import Stage
    from .storage import Catalog, Item
    from .storage.vector_indexes import VectorIndexes

log = logging.getLogger("retrieval")

CATALOG_FILE = "catalog.sqlite"
DEFAULT_TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "an image of a {}.")
INDEX_DIR = "indexes"
LOCK_FILE = "lock"


@dataclass
class Hit:
    """One search result."""

    id: int
    score: float | None
    kind: str
    path: str | None = None
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "score": self.score, "kind": self.kind, "path": self.path,
                "text": self.text, "metadata": self.metadata}


def _iso(value: dt.datetime | None) -> str | None:
    return value.isoformat() if value else None


class Collection:
    """A searchable collection of images and texts.

    ``Collection(path)`` opens an existing collection; ``Collection(path, model=...)`` also
    creates it when it does not exist. ``encoder`` passes a ready encoder instead of a model
    name (tests, embedding applications that already hold a model). ``precision="int8"`` makes
    a new collection embed with the int8 variant of the model's ONNX export (faster CPU
    indexing, vectors within about 0.999 cosine of full precision). ``one_shot=True`` suits a
    process that runs one search and exits (a command line): the model starts faster and
    embeds a little slower.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | ModelSpec | None = None,
        pretrained: str | None = None,
        device: str | None = "auto",
        encoder: Encoder | None = None,
        precision: str | None = None,
        one_shot: bool = False,
    ) -> None:
        from .storage import Catalog

        self.path = Path(path if path is not None else default_collection_path()).expanduser()
        self.path = self.path.absolute()
        self.device = device
        self._encoder = encoder
        self._injected = encoder is not None
        self.one_shot = one_shot
        self._dim: int | None = None  # once recorded in the catalog, a collection's dim is fixed
        self._encoder_checked = False
        self._indexes: VectorIndexes | None = None
        self._lock_fd: int | None = None
        self._aux_encoders: dict[ModelSpec, Encoder] = {}
        self._indexer: Encoder | None = None
        self._texts: Any = None  # the query-text cache, once known
        self._lock_depth = 0
        catalog_file = self.path / CATALOG_FILE
        requested = encoder.spec if encoder is not None else (
            ModelSpec.parse(model, pretrained) if isinstance(model, str) else model)
        if not catalog_file.exists():
            if requested is None:
                raise CollectionNotFoundError(
                    f"no collection at {self.path}; index a folder into it to create it "
                    f"(retrieval --collection {self.path} index FOLDER)")
            if encoder is None:
                requested = _with_weights(requested, None)  # refuse before creating anything
            if self.path.exists() and not self.path.is_dir():
                raise CollectionError(f"{self.path} exists and is not a folder")
            self.path.mkdir(parents=True, exist_ok=True)
        self.catalog: Catalog = Catalog(catalog_file, create=True)
        self._catalog_id = self.catalog.ensure_catalog_id()
        self.spec = self._bind(requested, explicit=encoder is not None)
        if precision is not None:
            self._bind_precision(precision)

    # -- model binding ---------------------------------------------------------------------------

    def _bound_spec(self) -> ModelSpec | None:
        m = self.catalog.get_settings().get("model")
        return ModelSpec(m["name"], m.get("pretrained")) if m else None

    def _bind(self, requested: ModelSpec | None, explicit: bool) -> ModelSpec:
        bound = self._bound_spec()
        if requested is not None and not explicit:
            requested = _with_weights(requested, bound)
        if requested is None:
            if bound is None:  # created by a run that failed before it recorded a model
                raise CollectionNotFoundError(
                    f"collection {self.path} has no model yet; index into it with --model")
            return bound
        if bound is not None and bound != requested:
            counts = self.catalog.counts()
            if counts["image"] or counts["text"]:
                raise ModelMismatchError(
                    f"collection {self.path} holds vectors of model {bound}; it cannot take "
                    f"{requested}. Use another --collection for that model, or omit --model")
        if bound != requested:
            self.catalog.set_settings(
                model={"name": requested.name, "pretrained": requested.pretrained}, dim=None,
                model_identity=None,
                created_at=self.catalog.get_settings().get("created_at") or _iso(_now()))
        return requested

    def _bind_precision(self, precision: str) -> None:
        from .encoders.resolve import check_precision

        current = self.precision
        if check_precision(precision) == current:
            return
        counts = self.catalog.counts()
        if counts["image"] or counts["text"]:
            raise ModelMismatchError(
                f"collection {self.path} holds {current} vectors; it cannot take {precision} "
                f"ones. Index into another --collection for {precision}")
        self.catalog.set_settings(precision=precision)

    @property
    def precision(self) -> str:
        """The precision the collection embeds with: fp32, or int8 (ONNX, CPU)."""
        return str(self.catalog.get_settings().get("precision") or "fp32")

    @property
    def model_identity(self) -> str | None:
        """The hash of the config and weights the collection's vectors were made with."""
        return self.catalog.get_settings().get("model_identity")

    @property
    def encoder(self) -> Encoder:
        """The encoder for searches, loaded on first use: the model's ONNX export when it has
        one (no torch), else the torch model."""
        if self._encoder is None:
            from .encoders.resolve import for_search

            settings = self.catalog.get_settings()
            self._encoder = for_search(
                self.spec, identity=settings.get("model_identity"),
                precision=settings.get("precision") or "fp32", device=self.device,
                hint=f"Run `retrieval --collection {self.path} model export` (or index again) "
                     "once to make them fast.", one_shot=self.one_shot)
        return self._checked_dim(self._encoder)

    def _indexing_encoder(self, progress: ProgressCallback | None = None) -> Encoder:
        """The encoder for embedding many items (exports the model first if it has no export
        yet) and the model identity recorded for the collection's vectors."""
        if self._injected:
            return self.encoder
        if self._indexer is None:
            from .encoders.resolve import for_indexing

            settings = self.catalog.get_settings()
            encoder, identity = for_indexing(
                self.spec, identity=settings.get("model_identity"),
                precision=settings.get("precision") or "fp32", device=self.device,
                on_event=_model_events(progress))
            if settings.get("model_identity") != identity:
                self.catalog.set_settings(model_identity=identity)
            self._indexer = self._encoder = encoder  # searches in this process reuse it
        return self._checked_dim(self._indexer)

    def _checked_dim(self, encoder: Encoder) -> Encoder:
        if not self._encoder_checked:  # once: searches need not read the settings again
            dim = self.catalog.get_settings().get("dim")
            if dim is None:
                self.catalog.set_settings(dim=int(encoder.dim))
            elif int(dim) != encoder.dim:
                raise ModelMismatchError(
                    f"model {self.spec} gives {encoder.dim}-dimensional vectors, "
                    f"collection {self.path} holds {dim}-dimensional ones")
            self._dim = int(encoder.dim)
            self._encoder_checked = True
        return encoder

    def export_model(self, *, int8: bool = False, force: bool = False,
                     progress: ProgressCallback | None = None) -> Any:
        """Export the collection's model to ONNX now (searches then never load torch); with
        ``int8`` also its int8 variant. Returns the export (``.ok``, ``.reason``, ``.folder``)."""
        from .encoders.export import export_model
        from .encoders.openclip import load_encoder
        from .encoders.resolve import _checked

        with self._writing():
            encoder = load_encoder(self.spec, "cpu")
            identity = _checked(encoder, self.model_identity)
            export = export_model(encoder, int8=int8 or self.precision == "int8", force=force,
                                  on_event=_model_events(progress))
            if self.model_identity is None:
                self.catalog.set_settings(model_identity=identity)
        return export

    @property
    def dim(self) -> int:
        if self._dim is None:
            dim = self.catalog.get_settings().get("dim")
            if dim is None:
                return self.encoder.dim
            self._dim = int(dim)
        return self._dim

    # -- locking ---------------------------------------------------------------------------------

    def _acquire(self, blocking: bool) -> bool:
        if self._lock_depth:
            self._lock_depth += 1
            return True
        try:
            import fcntl
        except ImportError:  # not POSIX: rely on SQLite's own locking
            self._lock_depth = 1
            return True
        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except OSError:
            os.close(fd)
            return False
        self._lock_fd, self._lock_depth = fd, 1
        return True

    def _release(self) -> None:
        self._lock_depth -= 1
        if self._lock_depth == 0 and self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        if not self._acquire(blocking=False):
            raise CollectionLockedError(
                f"another process is writing to collection {self.path}; wait for it to finish")
        try:
            yield
        finally:
            self._release()

    @contextlib.contextmanager
    def _maybe_writing(self) -> Iterator[bool]:
        """Take the write lock if it is free (to save a caught-up index), never wait."""
        got = self._acquire(blocking=False)
        try:
            yield got
        finally:
            if got:
                self._release()

    def _index_set(self) -> VectorIndexes:
        if self._indexes is None:
            from indexers import DEFAULT_MEMORY_BUDGET

            from .storage.vector_indexes import VectorIndexes

            budget = self.catalog.get_settings().get("index_memory") or DEFAULT_MEMORY_BUDGET
            self._indexes = VectorIndexes(
                self.catalog, self.path / INDEX_DIR, self.dim, self._catalog_id,
                can_save=lambda: self._lock_depth > 0, memory_budget=int(budget))
        return self._indexes

    # -- writing ---------------------------------------------------------------------------------

    def index(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        hidden: bool = False,
        strict: bool = False,
        max_pixels: int | None = None,
        batch_size: int = 32,
        workers: int | None = None,
        captions: bool = True,
        index_memory: int | str | None = None,
        progress: ProgressCallback | None = None,
    ) -> IndexSummary:
        """Index image files and folders (recursively); returns what changed.

        ``index_memory`` (bytes, or a size such as "2G") bounds the memory of the vector
        indexes; it is kept for later runs. With ``strict=True`` a run that skipped any file
        raises :class:`IndexingError` (after committing everything that could be indexed); the
        summary is on the exception.
        """
        from .ingest import IndexOptions, index_images
        from .ingest.scan import check_roots
        from .media import DEFAULT_MAX_PIXELS

        options = IndexOptions(
            hidden=hidden, max_pixels=max_pixels or DEFAULT_MAX_PIXELS, batch_size=batch_size,
            workers=workers, captions=captions)
        roots = check_roots(paths)
        with self._writing():
            if index_memory is not None:
                self._set_index_memory(index_memory)
            known = set(self.roots())
            if not known.issuperset(roots):
                self.catalog.set_settings(roots=sorted(known | set(roots)))
            self._indexing_encoder(progress)  # a model without an export gets one now
            try:
                summary = index_images(self.catalog, lambda: self._indexing_encoder(progress),
                                       roots, options, progress)
            finally:
                self.catalog.set_settings(last_indexed_at=_iso(_now()))
            self._sync(progress)
        if strict and summary.failed:
            raise IndexingError(
                f"{summary.failed} file(s) skipped (strict mode); first: "
                f"{summary.errors[0].path}: {summary.errors[0].reason}", summary)
        return summary

    def add_texts(
        self,
        texts: str | os.PathLike[str] | Sequence[str | dict[str, Any] | TextInput],
        *,
        progress: ProgressCallback | None = None,
    ) -> IndexSummary:
        """Add texts: a file (one per line, or JSONL with ``text``, ``id``, metadata) or a list
        of strings / dicts. Texts with an ``id`` replace the stored text of that id."""
        from .ingest import FileError, TextInput, add_texts, read_text_file

        errors: list[FileError] = []
        if isinstance(texts, (str, os.PathLike)):
            inputs, errors = read_text_file(texts)
        else:
            inputs = [TextInput.of(t) for t in texts]
        with self._writing():
            self._indexing_encoder(progress)
            summary = add_texts(self.catalog, lambda: self._indexing_encoder(progress), inputs,
                                progress=progress)
            self._sync()
        summary.failed += len(errors)
        summary.errors.extend(errors)
        return summary

    def roots(self) -> list[str]:
        """The files and folders this collection was asked to index (files outside them are
        never served over HTTP)."""
        return list(self.catalog.get_settings().get("roots") or [])

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove the items at these paths or under these folders; returns images removed."""
        from .ingest.scan import normalize_path

        roots = [normalize_path(p) for p in paths]
        with self._writing():
            states = self.catalog.file_states(roots)
            self.catalog.delete_items(s.id for s in states.values())
            self._sync()
        return len(states)

    def _set_index_memory(self, size: int | str) -> None:
        from indexers import parse_bytes

        try:
            budget = parse_bytes(size)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if budget <= 0:
            raise InputError(f"index memory must be positive, got {size!r}")
        self.catalog.set_settings(index_memory=budget)
        if self._indexes is not None:
            self._indexes.memory_budget = budget

    def sync(self, progress: ProgressCallback | None = None) -> None:
        """Bring the vector indexes in step with the catalog now, as an index run does at its
        end: catch up with changes, switch tiers, re-tune, save (for catalogs written by other
        means, such as another host sharing the catalog)."""
        with self._writing():
            self._sync(progress)

    def _sync(self, progress: ProgressCallback | None = None) -> None:
        """Bring the indexes in step after a write; tier changes are reported as progress."""
        if self.catalog.get_settings().get("dim") is None:
            return
        from .ingest import IndexProgress

        def event(message: str) -> None:
            log.info(message)
            if progress:
                progress(IndexProgress("index", 0, detail=message))

        if progress:
            progress(IndexProgress("index", 0))
        self._index_set().sync(event)

    # -- reading ---------------------------------------------------------------------------------

    def search(
        self,
        text: str | None = None,
        *,
        image: str | os.PathLike[str] | None = None,
        like: int | None = None,
        vector: Sequence[float] | np.ndarray | None = None,
        terms: Sequence[Term] = (),
        k: int = 10,
        offset: int = 0,
        target: str = "images",
        filters: Sequence[Filter | str] = (),
        hybrid: bool | Hybrid = False,
        rerank: str | Sequence[Stage] | None = None,
    ) -> list[Hit]:
        """Search by any mix of text, image file, stored item and raw vector.

        ``terms`` adds weighted terms (negative weights push results away); the others are
        shorthands for terms of weight 1. ``target`` is ``images`` or ``texts``. ``filters``
        are :class:`~retrieval.filters.Filter` objects or ``"FIELD OP VALUE"`` strings;
        ``hybrid`` fuses keyword matches (file names, captions, texts, tags) with the vector
        ranking; ``rerank`` is a pipeline such as ``"exact,mmr:0.7,dedup:0.95"``.
        """
        from .filters import parse_where
        from .rerank import parse_pipeline

        all_terms = list(terms)
        if text is not None:
            all_terms.append(Term("text", text))
        if image is not None:
            all_terms.append(Term("image", image))
        if like is not None:
            all_terms.append(Term("item", like))
        if vector is not None:
            all_terms.append(Term("vector", vector))
        query = Query(
            all_terms, target=target, k=k, offset=offset,
            filters=[f if not isinstance(f, str) else parse_where(f) for f in filters],
            hybrid=(hybrid if isinstance(hybrid, Hybrid) else Hybrid()) if hybrid else None,
            rerank=parse_pipeline(rerank))
        return self.run(query)

    def run(self, query: Query) -> list[Hit]:
        """Run a :class:`Query`: embed, filter, search, fuse, re-rank, page, hydrate."""
        from .filters import compile_filters
        from .query import filtered_search, fuse
        from .rerank import Candidate, RerankContext

        query.validate()
        q = self.query_vector(query.terms)
        with self._maybe_writing():
            index = self._index_set().get(query.modality)
        need = query.offset + query.k
        pool = max(need * 4, need + 40) if (query.rerank or query.hybrid) else need
        allow = None
        if query.filters:
            conditions = compile_filters(query.filters, self.catalog, query.modality)
            allow = self.catalog.ids_where(query.modality, conditions)
        pairs, _plan = filtered_search(index, q, pool, allow)
        cands = [Candidate(i, s, scores={"vector": s}) for i, s in pairs]
        if query.hybrid is not None:
            words = query.keyword_text()
            keyword = self.catalog.keyword_search(words, query.modality, pool) if words else []
            if allow is not None:
                allowed = set(allow.tolist())
                keyword = [(i, s) for i, s in keyword if i in allowed]
            cands = [Candidate(i, f, scores=parts)
                     for i, f, parts in fuse(pairs, keyword, query.hybrid)[:pool]]
        if query.rerank:
            ctx = RerankContext(self, query, q, need)
            for stage in query.rerank:
                cands = stage.apply(ctx, cands)
        page = cands[query.offset: need]
        hits = self._hydrate([(c.id, c.score) for c in page])
        extra = {c.id: c for c in page}
        for h in hits:
            c = extra[h.id]
            if c.duplicates:
                h.metadata["duplicates"] = c.duplicates
            if query.hybrid is not None or query.rerank:
                h.metadata["scores"] = c.scores
        return hits

    def query_vector(self, terms: Sequence[Term]) -> np.ndarray:
        """Embed and combine query terms into one normalised vector."""
        vectors: list[np.ndarray | None] = [None] * len(terms)
        texts = [(i, str(t.value)) for i, t in enumerate(terms) if t.kind == "text"]
        if texts:
            embedded = self._embed_query_texts([s for _, s in texts])
            for (i, _), v in zip(texts, embedded, strict=True):
                vectors[i] = v
        for i, t in enumerate(terms):
            if t.kind == "image":
                vectors[i] = self.embed_image_file(t.value)
            elif t.kind == "item":
                vectors[i] = self._item_vector(t.value)
            elif t.kind == "vector":
                try:
                    v = np.asarray(t.value, dtype=np.float32)
                except (TypeError, ValueError):
                    raise QueryError("a query vector must be a list of numbers") from None
                if v.ndim != 1 or v.shape[0] != self.dim:
                    raise QueryError(f"query vector has {v.shape[0]} dimensions, the collection "
                                     f"{self.dim}")
                vectors[i] = v
            elif t.kind != "text":
                raise QueryError(f"unknown term kind {t.kind!r}")
        return combine([v for v in vectors if v is not None], [t.weight for t in terms])

    def _embed_query_texts(self, texts: list[str]) -> np.ndarray:
        """Query texts through the persistent text cache: a repeated query creates no model
        session at all."""
        cache = self._text_cache()
        found = cache.get(texts, self.dim) if cache is not None else {}
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            fresh = dict(zip(missing, self.encoder.embed_texts(missing), strict=True))
            if cache is not None:
                cache.put(fresh)
            found.update(fresh)
        return np.stack([found[t] for t in texts])

    def _text_cache(self) -> Any:
        if self._injected:
            return None
        if self._texts is None:
            from .encoders.text_cache import TextCache

            identity = self.model_identity
            if identity is None:
                return None
            self._texts = TextCache(f"{identity}:{self.precision}")
        return self._texts

    def embed_image_file(self, path: str | os.PathLike[str], encoder: Encoder | None = None
                         ) -> np.ndarray:
        """Embed an image file with the collection's (or the given) encoder."""
        from .media import ImageDecodeError, load_image

        encoder = encoder or self.encoder
        try:
            pixels, _ = load_image(path, encoder.image_spec)
        except ImageDecodeError as exc:
            raise QueryError(f"query image {path}: {exc.reason}") from None
        return encoder.embed_images(pixels[None])[0]

    def embed_items(self, ids: Sequence[int], encoder: Encoder) -> dict[int, np.ndarray]:
        """Embed stored items (image files, texts) with another encoder; unreadable image
        files are left out."""
        from .media import ImageDecodeError, load_image

        items = self.catalog.get_items(ids)
        out: dict[int, np.ndarray] = {}
        texts = [(i, it.text or "") for i, it in items.items() if it.kind != "image"]
        if texts:
            vecs = encoder.embed_texts([t for _, t in texts])
            out.update({i: v for (i, _), v in zip(texts, vecs, strict=True)})
        images = []
        for i, it in items.items():
            if it.kind == "image" and it.path:
                try:
                    images.append((i, load_image(it.path, encoder.image_spec)[0]))
                except ImageDecodeError as exc:
                    log.warning("cannot re-embed %s: %s", it.path, exc.reason)
        for start in range(0, len(images), 32):
            part = images[start:start + 32]
            vecs = encoder.embed_images(np.stack([p for _, p in part]))
            out.update({i: v for (i, _), v in zip(part, vecs, strict=True)})
        return out

    def aux_encoder(self, spec: ModelSpec) -> Encoder:
        """A second encoder (for re-ranking), loaded once per collection object."""
        if spec not in self._aux_encoders:
            from .encoders.resolve import for_search

            self._aux_encoders[spec] = for_search(spec, identity=None, device=self.device,
                                                  warn=False)
        return self._aux_encoders[spec]

    def _item_vector(self, value: Any) -> np.ndarray:
        item_id = _item_id(value)
        ids, vecs = self.catalog.vectors([item_id], self.dim)
        if not len(ids):
            raise ItemNotFoundError(f"no item with id {item_id} in collection {self.path}")
        return vecs[0]

    def _hydrate(self, pairs: list[tuple[int, float | None]]) -> list[Hit]:
        found = self.catalog.hydrate(i for i, _ in pairs)
        hits = []
        for item_id, score in pairs:
            item = found.items.get(item_id)
            if item is None:  # deleted by a writer since the index was read
                continue
            hit = _hit(item, score, found.parents, found.captions)
            if item_id in found.tags:
                hit.metadata["tags"] = {t: s for t, s in found.tags[item_id]}
            hits.append(hit)
        return hits

    def get(self, item_id: int) -> Hit:
        """One item by id, as a hit without a score."""
        hits = self._hydrate([(_item_id(item_id), None)])
        if not hits:
            raise ItemNotFoundError(f"no item with id {item_id} in collection {self.path}")
        return hits[0]

    # -- image to text, tags, duplicates --------------------------------------------------------

    def caption(self, image: str | os.PathLike[str] | int, k: int = 5) -> list[Hit]:
        """The stored texts and captions that best describe an image (captioning by
        retrieval): an image file, or a stored image's id."""
        if isinstance(image, int):
            return self.search(like=image, target="texts", k=k)
        return self.search(image=image, target="texts", k=k)

    def tag(
        self,
        labels: Sequence[str],
        *,
        templates: Sequence[str] = DEFAULT_TEMPLATES,
        top: int = 3,
        min_score: float = 0.1,
        progress: ProgressCallback | None = None,
    ) -> dict[str, int]:
        """Zero-shot tagging: score every image against the labels (each label embedded with
        the prompt templates, averaged) and store up to ``top`` labels whose probability is
        at least ``min_score``. Incremental: images already tagged with these labels,
        templates and settings are skipped; re-embedded images are tagged again."""
        import hashlib
        import json

        from .ingest import IndexProgress

        labels = list(dict.fromkeys(lb.strip() for lb in labels if lb.strip()))
        if not labels:
            raise InputError("no labels to tag with")
        if not templates or any("{}" not in t for t in templates):
            raise InputError("each prompt template needs a {} where the label goes")
        signature = hashlib.sha256(json.dumps(
            [str(self.spec), labels, list(templates), top, min_score]).encode()).hexdigest()
        with self._writing():
            todo = self.catalog.untagged(signature)
            done = 0
            if len(todo):
                encoder = self.encoder
                prompts = [t.format(lb) for lb in labels for t in templates]
                emb = encoder.embed_texts(prompts).reshape(len(labels), len(templates), -1)
                classes = emb.mean(1)
                classes /= np.linalg.norm(classes, axis=1, keepdims=True)
                scale = float(getattr(encoder, "logit_scale", 100.0))
                if progress:
                    progress(IndexProgress("tag", 0, len(todo)))
                for start in range(0, len(todo), 2048):
                    ids = todo[start:start + 2048].tolist()
                    found, vecs = self.catalog.vectors(ids, self.dim)
                    logits = scale * vecs @ classes.T
                    probs = np.exp(logits - logits.max(1, keepdims=True))
                    probs /= probs.sum(1, keepdims=True)
                    tags = {}
                    for i, p in zip(found.tolist(), probs, strict=True):
                        best = np.argsort(-p)[:top]
                        tags[i] = [(labels[j], float(p[j])) for j in best if p[j] >= min_score]
                    self.catalog.set_tags(tags, signature)
                    done += len(tags)
                    if progress:
                        progress(IndexProgress("tag", done, len(todo)))
        total = self.catalog.counts()["image"]
        return {"tagged": done, "unchanged": total - done, "labels": len(labels)}

    def duplicates(self, threshold: float = 0.95, neighbours: int = 10) -> list[dict[str, Any]]:
        """Clusters of near-duplicate images (cosine >= threshold), largest first."""
        if not -1 <= threshold <= 1:
            raise QueryError(f"threshold is a cosine in [-1, 1], got {threshold}")
        with self._maybe_writing():
            index = self._index_set().get("image")
        ids = self.catalog.vector_ids("image")
        parent = {int(i): int(i) for i in ids}

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for start in range(0, len(ids), 1024):
            batch = ids[start:start + 1024]
            _, vecs = self.catalog.vectors(batch.tolist(), self.dim)
            scores, found = index.search(vecs, min(neighbours + 1, max(1, index.ntotal)))
            for a, row_s, row_i in zip(batch.tolist(), scores, found, strict=True):
                for s, b in zip(row_s, row_i, strict=True):
                    if b >= 0 and b != a and s >= threshold:
                        ra, rb = root(a), root(int(b))
                        if ra != rb:
                            parent[max(ra, rb)] = min(ra, rb)
        groups: dict[int, list[int]] = {}
        for i in parent:
            groups.setdefault(root(i), []).append(i)
        clusters = [sorted(g) for g in groups.values() if len(g) > 1]
        items = self.catalog.get_items(i for g in clusters for i in g)
        out = [{"ids": g, "paths": [items[i].path for i in g if i in items]} for g in clusters]
        return sorted(out, key=lambda c: (-len(c["ids"]), c["ids"][0]))

    def info(self) -> dict[str, Any]:
        """Model, dimension, counts, indexes and disk use; never loads the model."""
        settings = self.catalog.get_settings()
        dim = settings.get("dim")
        indexes: dict[str, Any] = {}
        if dim is not None:
            with self._maybe_writing():
                indexes = {m: self._index_set().describe(m) for m in ("image", "text")}
        disk = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return {
            "path": str(self.path),
            "model": {"name": self.spec.name, "pretrained": self.spec.pretrained},
            "dim": dim,
            "counts": self.catalog.counts(),
            "index": indexes,
            "disk_bytes": disk,
            "created_at": settings.get("created_at"),
            "last_indexed": settings.get("last_indexed_at"),
            "schema_version": self.catalog.schema_version,
        }

    # -- lifecycle -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._texts is not None:
            self._texts.close()
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, model={str(self.spec)!r})"


def _item_id(value: Any) -> int:
    """An item id from user input: an integer in SQLite's 64-bit range."""
    if isinstance(value, bool):
        raise QueryError(f"item id must be an integer, got {value!r}")
    try:
        item_id = int(value)
    except (TypeError, ValueError):
        raise QueryError(f"item id must be an integer, got {value!r}") from None
    if not 0 <= item_id < 2**63:
        raise ItemNotFoundError(f"no item with id {item_id}")
    return item_id


def _with_weights(requested: ModelSpec, bound: ModelSpec | None) -> ModelSpec:
    """An architecture named without weights is never what a collection wants: take the
    collection's own weights, the default tag, or say what is missing."""
    if not requested.random_weights:
        return requested
    if bound is not None and bound.name == requested.name:
        return bound
    if requested.name == DEFAULT_MODEL.name:
        return DEFAULT_MODEL
    from .encoders import check_architecture

    check_architecture(requested.name)
    raise ModelNotFoundError(
        f"model {requested.name} needs pretrained weights: pass --pretrained with a tag (see "
        "open_clip.list_pretrained_tags_by_model) or a checkpoint file")


def _model_events(progress: ProgressCallback | None) -> Any:
    """Model export messages as progress reports (the CLI prints them) and log lines."""
    def event(message: str) -> None:
        log.info(message)
        if progress:
            from .ingest import IndexProgress

            progress(IndexProgress("model", 0, detail=message))

    return event


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def _hit(item: Item, score: float | None, parents: dict[int, Item], captions: dict[int, str]
         ) -> Hit:
    if item.kind == "image":
        meta = {
            "width": item.width, "height": item.height, "taken_at": _iso(item.taken_at),
            "camera_make": item.camera_make, "camera_model": item.camera_model,
            "size": item.size,
            "mtime": _iso(dt.datetime.fromtimestamp(item.mtime_ns / 1e9, dt.timezone.utc))
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


__all__ = ["Collection", "Hit"]
