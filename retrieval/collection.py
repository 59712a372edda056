"""The ``Collection`` facade: the one object the CLI, the HTTP app and Python callers use.

A collection is a folder::

    catalog.sqlite      the SQL catalog (source of truth)
    indexes/            FAISS indexes derived from it, one per modality
    lock                taken by writers (index, add-texts, remove, tag, sync)

It delegates: its model to :class:`~retrieval.binding.ModelBinding`, ingest to
:mod:`retrieval.ingest`, searches to :class:`~retrieval.search.searcher.Searcher`, tags to
:mod:`retrieval.enrich.tagging`, duplicate clusters to :mod:`retrieval.search.duplicates`, the
vector indexes to :class:`~retrieval.storage.vector_indexes.VectorIndexes`. Searching never
blocks on a writer: the catalog is read in WAL mode and index files are replaced atomically.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .binding import ModelBinding
from .config import default_collection_path
from .encoders import Encoder, ModelSpec
from .errors import CollectionError, CollectionNotFoundError, IndexingError, ItemNotFoundError
from .search import Hit, Hybrid, Query, Term, build_query
from .storage.lock import WriteLock

if TYPE_CHECKING:
    from indexers import VectorIndex

    from .ingest import IndexSummary, ProgressCallback, TextInput
    from .search.filters import Filter
    from .search.rerank import Stage
    from .search.searcher import Searcher
    from .storage.vector_indexes import VectorIndexes

log = logging.getLogger("retrieval")

CATALOG_FILE = "catalog.sqlite"
INDEX_DIR = "indexes"


class Collection:
    """A searchable collection of images and texts.

    ``Collection(path)`` opens an existing collection; ``Collection(path, model=...)`` also
    creates it when it does not exist. ``encoder`` passes a ready encoder instead of a model
    name (tests, applications that already hold a model). ``precision="int8"`` makes a new
    collection embed with the int8 variant of the model's ONNX export (faster CPU indexing,
    vectors within about 0.999 cosine of full precision). ``one_shot=True`` suits a process
    that runs one search and exits (a command line): the model starts faster and embeds a
    little slower.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 model: str | ModelSpec | None = None, pretrained: str | None = None,
                 device: str | None = "auto", encoder: Encoder | None = None,
                 precision: str | None = None, one_shot: bool = False) -> None:
        from .storage import Catalog

        self.path = Path(path or default_collection_path()).expanduser().absolute()
        requested = encoder.spec if encoder is not None else (
            ModelSpec.parse(model, pretrained) if isinstance(model, str) else model)
        if not (self.path / CATALOG_FILE).exists():
            if requested is None:
                raise CollectionNotFoundError(
                    f"no collection at {self.path}; index a folder into it to create it "
                    f"(retrieval --collection {self.path} index FOLDER)")
            if encoder is None:  # refuse a model without weights before creating anything
                from .binding import with_weights

                requested = with_weights(requested, None)
            if self.path.exists() and not self.path.is_dir():
                raise CollectionError(f"{self.path} exists and is not a folder")
            self.path.mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(self.path / CATALOG_FILE, create=True)
        self._catalog_id = self.catalog.ensure_catalog_id()
        self.model = ModelBinding(self.catalog, self.path, requested, device=device,
                                  encoder=encoder, one_shot=one_shot)
        if precision is not None:
            self.model.bind_precision(precision)
        self.lock = WriteLock(self.path)
        self._indexes: VectorIndexes | None = None
        self._searcher: Searcher | None = None

    spec = property(lambda self: self.model.spec, doc="The model the collection is bound to.")
    precision = property(lambda self: self.model.precision, doc="fp32 or int8.")
    model_identity = property(lambda self: self.model.identity,
                              doc="The hash of the weights the vectors were made with.")
    dim = property(lambda self: self.model.dim, doc="The vectors' dimension.")
    encoder = property(lambda self: self.model.encoder, doc="The encoder searches use.")

    # -- writing ------------------------------------------------------------------------------

    def index(self, paths: Iterable[str | os.PathLike[str]], *, hidden: bool = False,
              strict: bool = False, max_pixels: int | None = None, batch_size: int = 32,
              workers: int | None = None, captions: bool = True,
              index_memory: int | str | None = None,
              progress: ProgressCallback | None = None) -> IndexSummary:
        """Index image files and folders (recursively); returns what changed.

        ``index_memory`` (bytes, or a size such as "2G") bounds the memory of the vector
        indexes and is kept for later runs. With ``strict=True`` a run that skipped any file
        raises :class:`IndexingError` after committing what it could (the summary is on it).
        """
        from .ingest import IndexOptions, index_images
        from .ingest.scan import check_roots
        from .media import DEFAULT_MAX_PIXELS

        options = IndexOptions(hidden, max_pixels or DEFAULT_MAX_PIXELS, batch_size, workers,
                               captions)
        roots = check_roots(paths)
        with self.lock.hold():
            if index_memory is not None:
                self._vector_indexes().set_memory_budget(index_memory)
            known = set(self.roots())
            if not known.issuperset(roots):
                self.catalog.set_settings(roots=sorted(known | set(roots)))
            self.model.indexing_encoder(progress)  # a model without an export gets one now
            try:
                summary = index_images(self.catalog, lambda: self.model.indexing_encoder(),
                                       roots, options, progress)
            finally:
                self.catalog.set_settings(last_indexed_at=_now())
            self._sync(progress)
        if strict and summary.failed:
            first = summary.errors[0]
            raise IndexingError(f"{summary.failed} file(s) skipped (strict mode); first: "
                                f"{first.path}: {first.reason}", summary)
        return summary

    def add_texts(self, texts: str | os.PathLike[str] | Sequence[str | Mapping[str, Any]
                                                                  | TextInput], *,
                  progress: ProgressCallback | None = None) -> IndexSummary:
        """Add texts: a file (one per line, or JSONL with ``text``, ``id``, metadata) or a list
        of strings / dicts. Texts with an ``id`` replace the stored text of that id."""
        from .ingest import TextInput, add_texts, read_text_file

        errors = []
        if isinstance(texts, (str, os.PathLike)):
            inputs, errors = read_text_file(texts)
        else:
            inputs = [TextInput.of(t) for t in texts]
        with self.lock.hold():
            self.model.indexing_encoder(progress)
            summary = add_texts(self.catalog, lambda: self.model.indexing_encoder(), inputs,
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

        with self.lock.hold():
            states = self.catalog.file_states([normalize_path(p) for p in paths])
            self.catalog.delete_items(s.id for s in states.values())
            self._sync()
        return len(states)

    def sync(self, progress: ProgressCallback | None = None) -> None:
        """Bring the vector indexes in step with the catalog now, as an index run does at its
        end (for catalogs written by other means, such as another host sharing them)."""
        with self.lock.hold():
            self._sync(progress)

    def _sync(self, progress: ProgressCallback | None = None) -> None:
        from .ingest.report import IndexProgress, messages

        if self.catalog.get_settings().get("dim") is None:
            return
        if progress:
            progress(IndexProgress("index", 0))
        self._vector_indexes().sync(messages(progress, "index"))

    def _vector_indexes(self) -> VectorIndexes:
        if self._indexes is None:
            from .storage.vector_indexes import VectorIndexes

            self._indexes = VectorIndexes(self.catalog, self.path / INDEX_DIR, self.dim,
                                          self._catalog_id, can_save=lambda: self.lock.held)
        return self._indexes

    def _index(self, modality: str) -> VectorIndex:
        with self.lock.hold_if_free():  # a caught-up index is saved when nobody else writes
            return self._vector_indexes().get(modality)

    # -- reading ------------------------------------------------------------------------------

    def search(self, text: str | None = None, *,
               image: str | os.PathLike[str] | bytes | None = None, like: int | None = None,
               vector: Sequence[float] | None = None, terms: Sequence[Term] = (), k: int = 10,
               offset: int = 0, target: str = "image", filters: Sequence[Filter | str] = (),
               hybrid: bool | Hybrid = False, rerank: str | Sequence[Stage] | None = None,
               **more: Any) -> list[Hit]:
        """Search by any mix of text, image, stored item (``like``) and raw vector.

        ``terms`` adds weighted terms (negative weights push results away). ``target`` is
        ``image`` or ``text``. ``filters`` are ``"FIELD OP VALUE"`` strings (or
        :class:`~retrieval.search.filters.Filter`); ``path``, ``after``, ``before`` and
        ``tags`` keywords add the usual ones. ``hybrid`` fuses keyword matches (file names,
        captions, texts, tags) with the vector ranking; ``rerank`` is a pipeline such as
        ``"exact,mmr:0.7,dedup:0.95"``. See :func:`~retrieval.search.builder.build_query`."""
        return self.run(build_query(text, image=image, like=like, vector=vector, terms=terms,
                                    k=k, offset=offset, target=target, filters=filters,
                                    hybrid=hybrid, rerank=rerank, **more))

    def run(self, query: Query) -> list[Hit]:
        """Run a :class:`Query`: embed, filter, search, fuse, re-rank, page, hydrate."""
        if self._searcher is None:
            from .search.embedding import QueryEmbedder
            from .search.searcher import Searcher

            embedder = QueryEmbedder(self.catalog, lambda: self.model.encoder,
                                     lambda: self.model.dim, self.model.text_cache)
            self._searcher = Searcher(self.catalog, self._index, embedder,
                                      self.model.second_model)
        return self._searcher.run(query)

    def get(self, item_id: int) -> Hit:
        """One item by id, as a hit without a score."""
        from .search.builder import item_id as checked_id
        from .search.hits import hydrate

        hits = hydrate(self.catalog, [(checked_id(item_id), None)])
        if not hits:
            raise ItemNotFoundError(f"no item with id {item_id} in collection {self.path}")
        return hits[0]

    def caption(self, image: str | os.PathLike[str] | bytes | int, k: int = 5) -> list[Hit]:
        """The stored texts and captions that best describe an image (captioning by
        retrieval): an image file or its bytes, or a stored image's id."""
        if isinstance(image, int):
            return self.search(like=image, target="text", k=k)
        return self.search(image=image, target="text", k=k)

    def tag(self, labels: Sequence[str], *, templates: Sequence[str] | None = None, top: int = 3,
            min_score: float = 0.1, progress: ProgressCallback | None = None) -> dict[str, int]:
        """Zero-shot tags for every image not tagged this way yet (see
        :mod:`retrieval.enrich.tagging`); returns ``tagged``, ``unchanged`` and ``labels``."""
        from .enrich.tagging import DEFAULT_TEMPLATES, check_labels, tag_images

        templates = templates or DEFAULT_TEMPLATES
        with self.lock.hold():
            done = tag_images(self.catalog, self.model.encoder, self.dim, labels,
                              model=str(self.spec), templates=templates, top=top,
                              min_score=min_score, progress=progress)
        return {"tagged": done, "unchanged": self.catalog.counts()["image"] - done,
                "labels": len(check_labels(labels, templates))}

    def duplicates(self, threshold: float = 0.95, neighbours: int = 10) -> list[dict[str, Any]]:
        """Clusters of near-duplicate images (cosine >= threshold), largest first."""
        from .search.duplicates import duplicate_clusters

        return duplicate_clusters(self.catalog, self._index("image"), self.dim, threshold,
                                  neighbours)

    def info(self) -> dict[str, Any]:
        """Model, dimension, counts, indexes and disk use; never loads the model."""
        settings = self.catalog.get_settings()
        dim = settings.get("dim")
        indexes: dict[str, Any] = {}
        if dim is not None:
            with self.lock.hold_if_free():
                indexes = {m: self._vector_indexes().describe(m) for m in ("image", "text")}
        return {
            "path": str(self.path), "model": self.spec.to_dict(), "dim": dim,
            "precision": self.precision, "model_identity": settings.get("model_identity"),
            "counts": self.catalog.counts(), "index": indexes,
            "disk_bytes": sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file()),
            "created_at": settings.get("created_at"),
            "last_indexed": settings.get("last_indexed_at"),
            "schema_version": self.catalog.schema_version,
        }

    def export_model(self, *, int8: bool = False, force: bool = False,
                     progress: ProgressCallback | None = None) -> Any:
        """Export the collection's model to ONNX now (searches then never load torch); with
        ``int8`` also its int8 variant. Returns the export (``.ok``, ``.reason``, ``.folder``)."""
        with self.lock.hold():
            return self.model.export(int8=int8, force=force, progress=progress)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        self.model.close()
        self.catalog.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, model={str(self.spec)!r})"


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat()


__all__ = ["Collection", "Hit"]
