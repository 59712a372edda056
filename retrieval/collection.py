"""The ``Collection`` facade: the one object the CLI, the HTTP app and Python callers use.

It delegates to :mod:`retrieval.storage`, the model binding, :mod:`retrieval.ingest`,
:mod:`retrieval.search` and :mod:`retrieval.enrich`; searches never block on a writer."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .binding import ModelBinding
from .config import default_collection_path
from .encoders import Encoder, ModelSpec
from .items import IMAGE
from .search import Hit, Hybrid, Query, Term, build_query
from .storage.folder import INDEX_DIR, collection_exists, open_catalog
from .storage.lock import WriteLock

if TYPE_CHECKING:
    from .enrich.captions import CaptionSummary
    from .enrich.recognition import OCRSummary
    from .ingest import IndexSummary, ProgressCallback, TextInput
    from .search.budget import CancelFlag
    from .search.files import ItemFile, Keyframe
    from .search.filters import Filter
    from .search.hits import Hits
    from .search.rerank import Stage
    from .search.searcher import Searcher
    from .storage import Catalog
    from .storage.vector_indexes import VectorIndexes

log = logging.getLogger("retrieval")


class Collection:
    """A searchable collection of images and texts.

    ``Collection(path)`` opens an existing collection; ``Collection(path, model=...)`` also
    makes a new one, bound to that model, on its first write (``index``, ``add_texts``) once
    the model has loaded: a run that fails before leaves nothing behind. Opening and reading
    never write: reading a collection that does not exist yet, or naming a model it is not
    bound to, is an error. ``encoder`` passes a ready encoder instead of a model name.
    ``precision="int8"`` makes a new collection embed with the int8 variant of the model's ONNX
    export (faster CPU indexing, cosine about 0.999 to fp32). ``one_shot=True`` suits a process
    that runs one search and exits. ``catalog="postgresql://..."`` keeps a new collection's
    catalog on a database server (hosts share it). Searches may come from many threads at
    once."""

    def __init__(self, path: str | os.PathLike[str] | None = None, *,
                 model: str | ModelSpec | None = None, pretrained: str | None = None,
                 device: str | None = "auto", encoder: Encoder | None = None,
                 precision: str | None = None, one_shot: bool = False,
                 catalog: str | None = None) -> None:
        from .binding import with_weights

        self.path = Path(path or default_collection_path()).expanduser().absolute()
        requested = encoder.spec if encoder is not None else (
            ModelSpec.parse(model, pretrained) if isinstance(model, str) else model)
        self._lock = WriteLock(self.path)
        self._url = catalog
        self._opened: Catalog | None = None  # see _catalog
        if requested is None or collection_exists(self.path, catalog):
            self._open(create=False)  # says how to make one when there is none
        elif encoder is None:
            requested = with_weights(requested, None)  # refused before anything is made
        self._binding = ModelBinding(self._opened, self.path, requested, self._lock, device=device,
                                  encoder=encoder, one_shot=one_shot, precision=precision)
        self._indexes: VectorIndexes | None = None
        self._searcher: Searcher | None = None
        self._lazy = threading.RLock()  # searches may come from many threads

    @property
    def _catalog(self) -> Catalog:
        """The collection's catalog (an error before the collection exists)."""
        if self._opened is None and collection_exists(self.path, self._url):
            self._binding.attach(self._open(create=False))  # made by another process since
        if self._opened is None:
            self._binding.check_readable()  # raises: no collection here yet
        assert self._opened is not None
        return self._opened

    def _open(self, create: bool) -> Catalog:
        self._opened = open_catalog(self.path, create, self._lock, self._url)
        return self._opened

    def _reading(self) -> Catalog:
        """The catalog of a read: the collection as it is (see ``check_readable``)."""
        catalog = self._catalog
        self._binding.check_readable()
        return catalog

    @contextlib.contextmanager
    def _writing(self, progress: ProgressCallback | None = None) -> Iterator[Catalog]:
        """Hold the write lock. The first write of a new collection (or of a model or precision
        it does not have yet) loads the model first, then makes the collection and records
        them: a model that cannot be had leaves nothing behind."""
        if self._binding.pending:
            self._binding.load(progress)
            if self._opened is None:
                self._binding.attach(self._open(create=True))
        with self._lock.hold():
            self._binding.commit()
            yield self._catalog
        self._binding.finish_export(progress)  # a first export made beside the run, if any

    spec = property(lambda self: self._binding.spec, doc="The model the collection is bound to.")
    precision = property(lambda self: self._binding.precision, doc="fp32 or int8.")
    model_identity = property(lambda self: self._binding.identity,
                              doc="The hash of the weights the vectors were made with.")
    dim = property(lambda self: self._binding.dim, doc="The vectors' dimension.")
    encoder = property(lambda self: self._binding.encoder, doc="The encoder searches use.")

    # -- writing ------------------------------------------------------------------------------

    def index(self, paths: Iterable[str | os.PathLike[str]], *, hidden: bool = False,
              strict: bool = False, max_pixels: int | None = None, batch_size: int = 32,
              workers: int | None = None, captions: bool = True,
              index_memory: int | str | None = None, ray: str | None = None,
              ocr: bool | None = None, videos: bool = True, under_roots: bool = False,
              progress: ProgressCallback | None = None) -> IndexSummary:
        """Index image and video files and folders (recursively); returns what changed.

        ``index_memory`` (bytes, or "2G") bounds the vector indexes' memory, kept for later
        runs; ``ray`` ("auto" or a cluster address) decodes and embeds on Ray. ``ocr=True``
        reads the text in images (new and changed files where they are decoded, then every
        image without a current reading, see :meth:`ocr`); True or False is remembered for
        later runs, None takes the remembered choice. ``videos=False`` leaves videos out (they
        are cut into shots, each searchable: ``search(..., target="video")``).
        ``strict=True`` raises :class:`IndexingError` (summary on it) after the commits if a
        file was skipped. ``under_roots=True`` takes the paths as changes below the folders
        the collection indexed (a watcher's, :mod:`retrieval.ingest.watch`): one that is gone
        removes what was at or under it, none becomes a folder of the collection, and each is
        taken as a walk of its folder takes it (hidden names, links).
        """
        from .ingest import IndexOptions
        from .ingest.runs import index_run
        from .ingest.scan import check_roots, normalize_path
        from .media import DEFAULT_MAX_PIXELS

        roots = [normalize_path(p) for p in paths] if under_roots else check_roots(paths)
        reads_text = self._ocr_choice(ocr)
        options = IndexOptions(hidden, max_pixels or DEFAULT_MAX_PIXELS, batch_size, workers,
                               captions, ray, reads_text, videos, under_roots)
        if ray:
            from .ingest.distributed import check_ray

            check_ray(ray)  # before the model loads: a run asked for Ray needs Ray
        with self._writing(progress) as catalog:
            if ocr is not None and bool(catalog.get_settings().get("ocr")) != ocr:
                catalog.set_settings(ocr=ocr)
            if index_memory is not None:
                self._vector_indexes().set_memory_budget(index_memory)
            summary = index_run(catalog, lambda: self._binding.indexing_encoder(progress),
                                roots, options, progress)
            self._sync(progress)
        if strict:
            summary.check_strict()
        return summary

    def _ocr_choice(self, ocr: bool | None) -> bool:
        """Whether an index run reads text: as asked, else as the collection remembers; a
        run that will is refused before anything is done when the ``ocr`` extra is missing."""
        from .enrich.recognition import ocr_choice

        return ocr_choice(self._opened, ocr)

    def add_texts(self, texts: str | os.PathLike[str] | Sequence[str | Mapping[str, Any]
                                                                  | TextInput], *,
                  progress: ProgressCallback | None = None) -> IndexSummary:
        """Add texts: a file (one per line, or JSONL with ``text``, ``id``, metadata) or a list
        of strings / dicts. Texts with an ``id`` replace the stored text of that id."""
        from .ingest.runs import add_texts_run, text_inputs

        inputs, errors = text_inputs(texts)
        with self._writing(progress) as catalog:
            summary = add_texts_run(catalog, lambda: self._binding.indexing_encoder(progress),
                                    inputs, errors, progress)
            self._sync()
        return summary

    def roots(self) -> list[str]:
        """The files and folders this collection indexed (no file outside them is served)."""
        return list(self._reading().get_settings().get("roots") or [])

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove the items at these paths or under these folders; returns files (images,
        videos) removed.
        A path with nothing of the collection at or under it is an
        :class:`~retrieval.errors.InputError`, and then nothing is removed."""
        from .ingest.runs import remove_run

        catalog = self._catalog
        with self._lock.hold():
            removed = remove_run(catalog, paths)
            self._sync()
        return removed

    def sync(self, progress: ProgressCallback | None = None) -> None:
        """Bring the vector indexes in step with the catalog now (for catalogs written by
        other means, such as another host sharing them)."""
        self._reading()
        with self._lock.hold(local=True):
            self._sync(progress)

    def _sync(self, progress: ProgressCallback | None = None) -> None:
        from .ingest.report import IndexProgress, messages

        if self._catalog.get_settings().get("dim") is not None:
            if progress:
                progress(IndexProgress("index", 0))
            self._vector_indexes().sync(messages(progress, "index"))

    def _vector_indexes(self) -> VectorIndexes:
        with self._lazy:
            if self._indexes is None:
                from .storage.vector_indexes import VectorIndexes

                catalog = self._reading()
                catalog_id = self._binding.settings().get("catalog_id")  # ties indexes to it
                self._indexes = VectorIndexes(catalog, self.path / INDEX_DIR, self.dim,
                                              catalog_id or catalog.ensure_catalog_id(),
                                              self._lock)
            return self._indexes

    # -- reading ------------------------------------------------------------------------------

    def search(self, text: str | None = None, *,
               image: str | os.PathLike[str] | bytes | None = None, like: int | None = None,
               vector: Sequence[float] | None = None,
               terms: Sequence[Term | Mapping[str, Any]] = (), target: str = "image",
               segments: bool = False, k: int = 10, offset: int = 0, path: str | None = None,
               after: str | None = None, before: str | None = None, tags: Sequence[str] = (),
               filters: Sequence[Filter | str] = (), keywords: bool = False,
               hybrid: bool | Hybrid = False, keyword_weight: float | None = None,
               rerank: str | Sequence[Stage] | None = None, min_score: float | None = None,
               cutoff: str | None = None, deadline: float | None = None,
               cancel: CancelFlag | None = None) -> Hits:
        """Search by any mix of text, image, stored item (``like``) and raw vector.

        ``terms`` adds weighted terms (negative weights push results away). ``target`` is
        ``image``, ``text`` or ``video`` (shots of videos: each video's best, or every
        matching shot with ``segments``). ``filters`` are ``"FIELD OP VALUE"`` strings (or
        :class:`~retrieval.search.filters.Filter`); ``path``, ``after``, ``before`` and
        ``tags`` add the usual ones. ``keywords`` ranks by keywords alone (file names,
        captions, recognised text, texts, tags; text terms only, no model). ``hybrid`` fuses
        keyword matches with the vector ranking (``keyword_weight``: the keyword ranking's
        weight); ``rerank`` is a pipeline such as ``"exact,mmr:0.7,dedup:0.95"``.
        ``min_score`` (a cosine) and ``cutoff="auto"`` end the results before paging; the hits
        then carry ``total`` and ``threshold`` (:mod:`retrieval.search.cutoff`). ``deadline``
        and ``cancel`` bound the search's time (see :meth:`run`). The query's fields are
        declared in :mod:`retrieval.search.fields`; see
        :func:`~retrieval.search.builder.build_query`."""
        query = build_query(text, image=image, like=like, vector=vector, terms=terms,
                            target=target, segments=segments, k=k, offset=offset, path=path,
                            after=after, before=before, tags=tags, filters=filters,
                            keywords=keywords, hybrid=hybrid, keyword_weight=keyword_weight,
                            rerank=rerank, min_score=min_score, cutoff=cutoff)
        return self.run(query, deadline=deadline, cancel=cancel)

    def run(self, query: Query, *, deadline: float | None = None,
            cancel: CancelFlag | None = None) -> Hits:
        """Run a :class:`Query`: embed, filter, search, fuse, re-rank, page, hydrate.

        ``deadline`` is a :func:`time.monotonic` instant: past it the search stops with
        :class:`~retrieval.errors.SearchTimeout`. ``cancel`` (a :class:`threading.Event`)
        stops it with :class:`~retrieval.errors.SearchCancelled` once set, from any thread.
        Both are checked between the search's phases and inside re-ranking loops."""
        from .encoders.guide import language_notice
        from .search.budget import Budget

        with self._lazy:
            if self._searcher is None:
                from .search.embedding import QueryEmbedder
                from .search.searcher import Searcher

                catalog, model = self._reading(), self._binding
                embedder = QueryEmbedder(catalog, model.search_encoder, model.dim,
                                         model.text_cache)
                self._searcher = Searcher(catalog, self._vector_indexes(), embedder,
                                          model.second_model)
        hits = self._searcher.run(query, Budget(deadline, cancel))
        hits.notice = language_notice(self.spec, [str(t.value) for t in query.terms
                                                  if t.kind == "text"])
        return hits

    def get(self, item_id: int) -> Hit:
        """One item by id, as a hit without a score."""
        from .search.hits import lookup

        return lookup(self._reading(), item_id, where=f"collection {self.path}")

    def image_file(self, item_id: int) -> ItemFile:
        """An image item's file, opened while it is the file that was indexed; close it."""
        from .search.files import open_item_file

        return open_item_file(self._reading(), self.roots(), item_id)

    def video_file(self, item_id: int) -> ItemFile:
        """The file of a video item, or of a shot's video, opened while it is the file that
        was indexed; close it."""
        from .search.files import open_video_file

        return open_video_file(self._reading(), self.roots(), item_id)

    def keyframe(self, item_id: int) -> Keyframe | None:
        """A shot's keyframe (a video's: its first shot's), stored at indexing; None for an
        item that is no video or shot."""
        from .search.files import keyframe_of

        return keyframe_of(self._reading(), item_id)

    def caption(self, image: str | os.PathLike[str] | bytes | int, k: int = 5) -> list[Hit]:
        """The ``k`` stored texts and captions that best describe an image (its file, bytes or
        id), each text once: the ids of others with the same text are in the hit's
        ``metadata["duplicates"]`` (see :mod:`retrieval.search.distinct`)."""
        from .search.distinct import best_distinct

        source = {"like": image} if isinstance(image, int) else {"image": image}
        return best_distinct(lambda n: self.search(target="text", k=n, **source), k)

    def generate_captions(self, captioner: str | ModelSpec | None = None, *,
                          progress: ProgressCallback | None = None, **options: Any
                          ) -> CaptionSummary:
        """Generate a caption for every image lacking a current one (a CoCa model: by default
        the collection's own if it is one), then bring the indexes up to date; options
        (``pretrained``, ``options``, ``batch_size``, ``force``, ``device``) as
        :func:`~retrieval.enrich.captions.generate_captions`."""
        from .enrich.captions import generate_captions

        catalog = self._reading()
        with self._lock.hold():
            summary = generate_captions(catalog, self.spec,
                                        lambda: self._binding.indexing_encoder(progress),
                                        captioner, progress=progress, **options)
        self.sync(progress)
        return summary

    describe = generate_captions  # its name before, kept for scripts that call it

    def ocr(self, *, force: bool = False, batch_size: int = 16, threads: int | None = None,
            progress: ProgressCallback | None = None) -> OCRSummary:
        """Read the text in every image lacking a current reading (one whose file or the OCR
        model changed since; every image with ``force``), a batch per transaction, then bring
        the indexes up to date; ``threads``: ONNX Runtime's (None: one per core). See
        :mod:`retrieval.enrich.recognition`."""
        from .enrich.recognition import ocr_run

        catalog = self._reading()
        with self._lock.hold():
            summary = ocr_run(catalog, lambda: self._binding.indexing_encoder(progress),
                              force=force, batch_size=batch_size, threads=threads,
                              progress=progress)
        self.sync(progress)
        return summary

    def set_search_threads(self, threads: int | None) -> None:
        """The threads one search's encoding may use (None: every core); a server that runs
        searches side by side sets 1. Applies to the search encoder when it loads."""
        self._binding.threads = threads

    def tag(self, labels: Sequence[str], *, templates: Sequence[str] | None = None, top: int = 3,
            min_score: float = 0.1, progress: ProgressCallback | None = None) -> dict[str, int]:
        """Zero-shot tags for every image not tagged this way yet (see
        :mod:`retrieval.enrich.tagging`); returns ``tagged``, ``unchanged`` and ``labels``."""
        from .enrich.tagging import tag_images

        catalog = self._reading()
        with self._lock.hold():
            return tag_images(catalog, self._binding.encoder, self.dim, labels,
                              model=str(self.spec), templates=templates, top=top,
                              min_score=min_score, progress=progress)

    def duplicates(self, threshold: float = 0.95, neighbours: int = 10) -> list[dict[str, Any]]:
        """Clusters of near-duplicate images (cosine >= threshold), largest first."""
        from .search.duplicates import duplicate_clusters

        with self._vector_indexes().searching(IMAGE) as index:
            return duplicate_clusters(self._catalog, index, self.dim, threshold, neighbours)

    def info(self) -> dict[str, Any]:
        """Model, dimension, counts, indexes and disk use; never loads the model."""
        from .storage.folder import describe

        catalog = self._reading()
        indexes = self._vector_indexes() if catalog.get_settings().get("dim") else None
        return describe(self.path, catalog, self.spec, indexes)

    def export_model(self, *, int8: bool = False, force: bool = False,
                     progress: ProgressCallback | None = None) -> Any:
        """Export the collection's model to ONNX now (searches then never load torch); with
        ``int8`` also its int8 variant. Returns the export (``.ok``, ``.reason``, ``.folder``)."""
        self._reading()
        with self._lock.hold():
            return self._binding.export(int8=int8, force=force, progress=progress)

    def close(self) -> None:
        self._binding.close()
        self._lock.close()
        if self._opened is not None:
            self._opened.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r}, model={str(self.spec)!r})"


__all__ = ["Collection", "Hit"]
