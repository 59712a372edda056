"""A collection's model: which one it is bound to, and the encoders that embed for it.

A collection is bound to one model (a spec), to the identity of the weights its vectors were
made with (recorded on the first index run), to a precision (fp32, or int8 on ONNX Runtime)
and to a dimension. Mixing models is an error with a clear message, never a silent mix of
incompatible vectors. Searches use the model's ONNX export; index runs export the model first
when it has none (see :mod:`retrieval.encoders.resolve`).
"""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .encoders import Encoder, ModelSpec
from .encoders.spec import DEFAULT_WEIGHTS
from .errors import CollectionNotFoundError, ModelMismatchError, ModelNotFoundError
from .ingest.report import ProgressCallback, messages
from .items import KINDS

if TYPE_CHECKING:
    from .search.embedding import SecondModelScorer
    from .storage import Catalog
    from .storage.lock import WriteLock


class ModelBinding:
    """The model side of one collection: its spec, identity, precision and dimension, and its
    search, indexing and second-model encoders (each loaded on first use).

    Opening never writes. A model (or precision) asked for that the collection does not have
    yet, or a collection not made yet, is *pending*: the first write (:meth:`commit`, once the
    model has loaded) records it; a read refuses it (:meth:`check_readable`)."""

    def __init__(self, catalog: Catalog | None, folder: Path, requested: ModelSpec | None,
                 lock: WriteLock, *, device: str | None, encoder: Encoder | None,
                 one_shot: bool, precision: str | None = None) -> None:
        self.catalog, self.folder, self.device, self.one_shot = catalog, folder, device, one_shot
        self.lock = lock
        self.threads: int | None = None  # the search encoder's threads (None: every core)
        self._loading = threading.Lock()
        self.injected = encoder is not None
        self._encoder = encoder
        self._indexer: Encoder | None = None
        self._loaded_identity: str | None = None
        self._dim: int | None = None
        self._seconds: dict[ModelSpec, Encoder] = {}
        self._texts: Any = None
        self._stored: dict[str, Any] | None = None  # the settings, read once (see settings())
        self.spec, self.unbound = self._resolve(requested)
        self._precision = self._resolve_precision(precision)

    # -- what the collection is bound to ---------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """The collection's settings (model, identity, precision, dimension, catalog id), read
        once per open: read again after this binding writes them, and by a writer about to
        write (:meth:`commit`, :meth:`indexing_encoder`), which must see another process's.
        What they hold never changes under a reader: a collection with vectors cannot be bound
        to another model or precision, and one without is refused to searches until bound."""
        if self.catalog is None:
            return {}
        if self._stored is None:
            self._stored = self.catalog.get_settings()
        return self._stored

    def _bound_now(self) -> ModelSpec | None:
        """The model the collection is bound to, read again: a writer holding the lock sees
        what another process may have recorded since this one read the settings."""
        self._stored = None
        return self._bound()

    def _bound(self) -> ModelSpec | None:
        m = self.settings().get("model")
        return ModelSpec(m["name"], m.get("pretrained")) if m else None

    def _resolve(self, requested: ModelSpec | None) -> tuple[ModelSpec, bool]:
        """(the model, whether the collection is still to be bound to it); reads only."""
        bound = self._bound()
        if requested is not None and not self.injected:
            requested = with_weights(requested, bound)
        if requested is None:
            if bound is None:  # made by a run that failed before it recorded a model
                raise CollectionNotFoundError(
                    f"collection {self.folder} has no model yet; index into it with --model")
            return bound, False
        if bound == requested:
            return requested, False
        if bound is not None and self._has_vectors():
            raise ModelMismatchError(
                f"collection {self.folder} holds vectors of model {bound}, not {requested}; "
                f"omit --model to use {bound}, or use another --collection for {requested}")
        return requested, True

    def _resolve_precision(self, precision: str | None) -> str | None:
        """The precision still to be recorded, if one was asked for that differs."""
        if precision is None:
            return None
        from .encoders.resolve import check_precision

        current = self._stored_precision()
        if check_precision(precision) == current:
            return None
        if self.catalog is not None and self._has_vectors():
            raise ModelMismatchError(
                f"collection {self.folder} holds {current} vectors; it cannot take "
                f"{precision} ones. Index into another --collection for {precision}")
        return precision

    def _has_vectors(self) -> bool:
        counts = self.catalog.counts() if self.catalog is not None else {}
        return any(counts.get(kind) for kind in KINDS)

    @property
    def pending(self) -> bool:
        """Whether the first write has something to record (a new collection, a model or a
        precision it does not have yet)."""
        return self.catalog is None or self.unbound or self._precision is not None

    def check_readable(self) -> None:
        """Reads use the collection as it is: refuse one not made yet, or asked for with a
        model it is not bound to (never bound here: reading never writes)."""
        if self.catalog is None:
            raise CollectionNotFoundError(
                f"no collection at {self.folder}; index a folder into it to create it "
                f"(retrieval --collection {self.folder} index FOLDER)")
        if not self.unbound:
            return
        bound = self._bound()
        if bound is None:
            raise CollectionNotFoundError(
                f"collection {self.folder} has no model yet; index into it with --model")
        raise ModelMismatchError(
            f"collection {self.folder} is bound to model {bound}, not {self.spec}; search it "
            "without --model (it holds nothing yet: an index run with --model binds it to "
            "another model)")

    def attach(self, catalog: Catalog) -> None:
        """The catalog of the collection, made (by this process or another) after it was
        opened here: what the binding still has to record is worked out again."""
        self.catalog, self._stored = catalog, None
        self.spec, self.unbound = self._resolve(self.spec)
        self._precision = self._resolve_precision(self._precision)

    def commit(self) -> None:
        """Record the model, its identity and dimension, and the precision, in one write: the
        first write of a new collection or of a rebinding, once the model has loaded (see
        :meth:`load`). The caller holds the write lock."""
        if not self.pending:
            return
        values: dict[str, Any] = {}
        if self.unbound:
            bound = self._bound_now()
            if bound != self.spec and bound is not None and self._has_vectors():
                raise ModelMismatchError(  # another process indexed into it meanwhile
                    f"collection {self.folder} was bound to model {bound} by another process "
                    "after it was opened here; run the command again")
            encoder = self.load()
            created = self.settings().get("created_at") or dt.datetime.now(
                dt.timezone.utc).replace(microsecond=0).isoformat()
            values.update(model=self.spec.to_dict(), dim=int(encoder.dim),
                          model_identity=self._loaded_identity, created_at=created)
        if self._precision is not None:
            values["precision"] = self._precision
        self._record(**values)
        self.unbound, self._precision, self._dim = False, None, None

    def _record(self, **values: Any) -> None:
        if self.catalog is None:
            raise CollectionNotFoundError(f"no collection at {self.folder}")
        self.catalog.set_settings(**values)
        self._stored = None  # read again when next needed

    def _stored_precision(self) -> str:
        return str(self.settings().get("precision") or "fp32")

    @property
    def precision(self) -> str:
        """fp32, or int8 (the ONNX export's quantised variant, CPU)."""
        return self._precision or self._stored_precision()

    @property
    def identity(self) -> str | None:
        """The hash of the config and weights the collection's vectors were made with."""
        value = None if self.unbound else self.settings().get("model_identity")
        return str(value) if value else None

    @property
    def dim(self) -> int:
        if self._dim is None:
            dim = None if self.unbound else self.settings().get("dim")
            if dim is None:
                return (self._encoder or self.encoder).dim
            self._dim = int(dim)
        return self._dim

    # -- encoders -----------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder for searches: the model's ONNX export when it has one (no torch)."""
        return self.search_encoder()

    def search_encoder(self) -> Encoder:
        """:attr:`encoder`, loaded on first call (a search whose terms need no model, such as
        a cached text or a stored item, never calls it)."""
        self.check_readable()
        with self._loading:
            if self._encoder is None:
                from .encoders.resolve import for_search

                self._encoder = for_search(
                    self.spec, identity=self.identity, precision=self.precision,
                    device=self.device, one_shot=self.one_shot, threads=self.threads,
                    hint=f"Run `retrieval --collection {self.folder} model export` (or index "
                         "again) once to make them fast.",
                    repair=f"retrieval --collection {self.folder} model export --force")
        return self._checked(self._encoder, record=False)

    def load(self, progress: ProgressCallback | None = None) -> Encoder:
        """The encoder for embedding many items, loaded (a model with no export yet is exported
        beside the run: see :meth:`finish_export`); writes nothing to the collection."""
        if self.injected:
            assert self._encoder is not None
            return self._encoder
        if self._indexer is None:
            from .encoders.resolve import for_indexing

            encoder, identity = for_indexing(
                self.spec, identity=self.identity, precision=self.precision,
                device=self.device, on_event=messages(progress, "model"), beside=True)
            self._loaded_identity = identity
            self._indexer = self._encoder = encoder  # searches in this process reuse it
        return self._indexer

    def finish_export(self, progress: ProgressCallback | None = None) -> None:
        """Wait for the model's first export where :meth:`load` started one beside the run;
        then the torch model it embedded with is let go, so that this collection's next
        searches and writes use the export, as every later process does."""
        from .encoders import first_export

        if not first_export.running():
            return
        if first_export.finish(messages(progress, "model")) and not self.injected:
            self._indexer = self._encoder = None

    def indexing_encoder(self, progress: ProgressCallback | None = None) -> Encoder:
        """The encoder of a write that embeds (after :meth:`commit`); records the identity of
        the weights the vectors are made with."""
        if self.pending:
            self.commit()  # a writer holds the lock
        elif self._bound_now() != self.spec:  # re-bound by another process
            raise ModelMismatchError(
                f"collection {self.folder} was bound to model {self._bound()} by another "
                "process after it was opened here; run the command again")
        encoder = self.load(progress)
        if not self.injected and self.identity != self._loaded_identity:
            self._record(model_identity=self._loaded_identity)
        return self._checked(encoder, record=True)

    def _checked(self, encoder: Encoder, record: bool) -> Encoder:
        """The encoder, once its dimension is checked against the collection's (``record``: a
        write records it where the collection has none yet)."""
        if self._dim is None:  # once: searches need not read the settings again
            dim = self.settings().get("dim")
            if dim is None:
                if record:
                    self._record(dim=int(encoder.dim))
            elif int(dim) != encoder.dim:
                raise ModelMismatchError(
                    f"model {self.spec} gives {encoder.dim}-dimensional vectors, "
                    f"collection {self.folder} holds {dim}-dimensional ones")
            self._dim = int(encoder.dim)
        return encoder

    def export(self, *, int8: bool = False, force: bool = False,
               progress: ProgressCallback | None = None) -> Any:
        """Export the model to ONNX now (see :meth:`retrieval.Collection.export_model`)."""
        from .encoders.export import export_model
        from .encoders.openclip import load_encoder
        from .encoders.resolve import check_identity

        encoder = load_encoder(self.spec, "cpu")
        identity = check_identity(encoder, self.identity)
        export = export_model(encoder, int8=int8 or self.precision == "int8", force=force,
                              on_event=messages(progress, "model"))
        if self.identity is None:
            self._record(model_identity=identity)
        return export

    def text_cache(self) -> Any:
        """The persistent cache of query-text vectors for this model and export (None before
        the collection knows its model's identity). Once made, no catalog read per query."""
        if self._texts is not None:
            return self._texts
        identity = self.identity
        if self.injected or identity is None:
            return None
        if self._texts is None:
            from .encoders.resolve import text_cache_key
            from .encoders.text_cache import TextCache

            self._texts = TextCache(text_cache_key(self.spec, identity, self.precision,
                                                   self.device))
        return self._texts

    def second_model(self, spec: ModelSpec) -> SecondModelScorer:
        """A second model for re-ranking, loaded once per collection object."""
        from .search.embedding import SecondModelScorer

        if spec not in self._seconds:
            from .encoders.resolve import for_search

            self._seconds[spec] = for_search(spec, identity=None, device=self.device,
                                             warn=False)
        return SecondModelScorer(self.catalog, self._seconds[spec], str(spec))

    def close(self) -> None:
        if self._texts is not None:
            self._texts.close()


def with_weights(requested: ModelSpec, bound: ModelSpec | None) -> ModelSpec:
    """An architecture named without weights is never what a collection wants: take the
    collection's own weights, the default tag, or say what is missing."""
    if not requested.random_weights:
        return requested
    if bound is not None and bound.name == requested.name:
        return bound
    if DEFAULT_WEIGHTS.get(requested.name):
        return ModelSpec(requested.name, DEFAULT_WEIGHTS[requested.name])
    from .encoders import check_architecture

    check_architecture(requested.name)
    raise ModelNotFoundError(
        f"model {requested.name} needs pretrained weights: pass --pretrained with a tag (see "
        "open_clip.list_pretrained_tags_by_model) or a checkpoint file")
