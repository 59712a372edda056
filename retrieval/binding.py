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

from .encoders import DEFAULT_MODEL, Encoder, ModelSpec
from .errors import CollectionNotFoundError, ModelMismatchError, ModelNotFoundError
from .ingest.report import ProgressCallback, messages

if TYPE_CHECKING:
    from .search.embedding import SecondModelScorer
    from .storage import Catalog
    from .storage.lock import WriteLock


class ModelBinding:
    """The model side of one collection: its spec, identity, precision and dimension, and its
    search, indexing and second-model encoders (each loaded on first use)."""

    def __init__(self, catalog: Catalog, folder: Path, requested: ModelSpec | None,
                 lock: WriteLock, *, device: str | None, encoder: Encoder | None,
                 one_shot: bool) -> None:
        self.catalog, self.folder, self.device, self.one_shot = catalog, folder, device, one_shot
        self.lock = lock
        self.threads: int | None = None  # the search encoder's threads (None: every core)
        self._loading = threading.Lock()
        self.injected = encoder is not None
        self._encoder = encoder
        self._indexer: Encoder | None = None
        self._dim: int | None = None
        self._seconds: dict[ModelSpec, Encoder] = {}
        self._texts: Any = None
        self.spec = self._bind(requested)

    # -- what the collection is bound to ---------------------------------------------------------

    def _bound(self) -> ModelSpec | None:
        m = self.catalog.get_settings().get("model")
        return ModelSpec(m["name"], m.get("pretrained")) if m else None

    def _bind(self, requested: ModelSpec | None) -> ModelSpec:
        bound = self._bound()
        if requested is not None and not self.injected:
            requested = with_weights(requested, bound)
        if requested is None:
            if bound is None:  # created by a run that failed before it recorded a model
                raise CollectionNotFoundError(
                    f"collection {self.folder} has no model yet; index into it with --model")
            return bound
        if bound == requested:
            return requested
        with self.lock.hold():  # (re)binding is a write: one process at a time
            bound = self._bound()
            if bound is not None and bound != requested and self._has_vectors():
                raise ModelMismatchError(
                    f"collection {self.folder} holds vectors of model {bound}; it cannot take "
                    f"{requested}. Use another --collection for that model, or omit --model")
            if bound != requested:
                created = self.catalog.get_settings().get("created_at") or dt.datetime.now(
                    dt.timezone.utc).replace(microsecond=0).isoformat()
                self.catalog.set_settings(model=requested.to_dict(), dim=None,
                                          model_identity=None, created_at=created)
        return requested

    def _has_vectors(self) -> bool:
        counts = self.catalog.counts()
        return bool(counts["image"] or counts["text"])

    def bind_precision(self, precision: str) -> None:
        from .encoders.resolve import check_precision

        current = self.precision
        if check_precision(precision) == current:
            return
        with self.lock.hold():
            if self._has_vectors():
                raise ModelMismatchError(
                    f"collection {self.folder} holds {current} vectors; it cannot take "
                    f"{precision} ones. Index into another --collection for {precision}")
            self.catalog.set_settings(precision=precision)

    @property
    def precision(self) -> str:
        """fp32, or int8 (the ONNX export's quantised variant, CPU)."""
        return str(self.catalog.get_settings().get("precision") or "fp32")

    @property
    def identity(self) -> str | None:
        """The hash of the config and weights the collection's vectors were made with."""
        value = self.catalog.get_settings().get("model_identity")
        return str(value) if value else None

    @property
    def dim(self) -> int:
        if self._dim is None:
            dim = self.catalog.get_settings().get("dim")
            if dim is None:
                return self.encoder.dim
            self._dim = int(dim)
        return self._dim

    # -- encoders -----------------------------------------------------------------------------

    @property
    def encoder(self) -> Encoder:
        """The encoder for searches: the model's ONNX export when it has one (no torch)."""
        with self._loading:
            if self._encoder is None:
                from .encoders.resolve import for_search

                self._encoder = for_search(
                    self.spec, identity=self.identity, precision=self.precision,
                    device=self.device, one_shot=self.one_shot, threads=self.threads,
                    hint=f"Run `retrieval --collection {self.folder} model export` (or index "
                         "again) once to make them fast.",
                    repair=f"retrieval --collection {self.folder} model export --force")
        return self._checked(self._encoder)

    @property
    def loaded(self) -> Encoder | None:
        """The encoder already loaded, if any (nothing is loaded by asking)."""
        return self._encoder

    def indexing_encoder(self, progress: ProgressCallback | None = None) -> Encoder:
        """The encoder for embedding many items; exports the model first if it has no export,
        and records the identity of the weights the vectors are made with."""
        if self._bound() != self.spec:  # re-bound by another process since it was opened
            raise ModelMismatchError(
                f"collection {self.folder} was bound to model {self._bound()} by another "
                "process after it was opened here; run the command again")
        if self.injected:
            return self.encoder
        if self._indexer is None:
            from .encoders.resolve import for_indexing

            encoder, identity = for_indexing(
                self.spec, identity=self.identity, precision=self.precision,
                device=self.device, on_event=messages(progress, "model"))
            if self.identity != identity:
                self.catalog.set_settings(model_identity=identity)
            self._indexer = self._encoder = encoder  # searches in this process reuse it
        return self._checked(self._indexer)

    def _checked(self, encoder: Encoder) -> Encoder:
        if self._dim is None:  # once: searches need not read the settings again
            dim = self.catalog.get_settings().get("dim")
            if dim is None:
                self.catalog.set_settings(dim=int(encoder.dim))
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
            self.catalog.set_settings(model_identity=identity)
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
    if requested.name == DEFAULT_MODEL.name:
        return DEFAULT_MODEL
    from .encoders import check_architecture

    check_architecture(requested.name)
    raise ModelNotFoundError(
        f"model {requested.name} needs pretrained weights: pass --pretrained with a tag (see "
        "open_clip.list_pretrained_tags_by_model) or a checkpoint file")
