"""Keep one FAISS index per modality in step with the catalog.

The catalog is the source of truth; an index is derived data that records the change-log
sequence number it reflects. Getting an index brings it up to date: it is loaded from disk,
checked against the catalog (same catalog id, dimension, a sequence number the catalog has
reached, the same number of vectors), caught up from the change log, and saved again when the
caller may write. An index that is missing, unreadable, or from another catalog state is
rebuilt from the catalog, with a warning on the ``retrieval`` logger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from indexers import IndexFileError, VectorIndex, build_index, load_index, save_index

from .catalog import MODALITIES, Catalog

log = logging.getLogger("retrieval")


@dataclass
class _Loaded:
    index: VectorIndex
    seq: int
    saved_seq: int = -1


class IndexSet:
    """The image and text indexes of one collection."""

    def __init__(
        self,
        catalog: Catalog,
        folder: Path,
        dim: int,
        catalog_id: str,
        can_save: Callable[[], bool],
    ) -> None:
        self.catalog = catalog
        self.folder = folder
        self.dim = dim
        self.catalog_id = catalog_id
        self._can_save = can_save
        self._loaded: dict[str, _Loaded] = {}

    def get(self, modality: str) -> VectorIndex:
        """The index of ``modality``, current with the catalog."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}")
        latest = self.catalog.max_seq()
        state = self._loaded.get(modality)
        if state is not None and state.seq == latest:
            return state.index
        floor = self.catalog.pruned_through()
        if state is None or state.seq < floor:
            state = self._load(modality, latest, floor) or self._rebuild(modality)
        self._catch_up(modality, state)
        self._loaded[modality] = state
        if state.seq != state.saved_seq and self._can_save():
            self._save(modality, state)
        return state.index

    def sync(self) -> None:
        """Bring every index up to date and save it, then prune the change log."""
        for modality in MODALITIES:
            self.get(modality)
        if self._loaded and self._can_save():
            self.catalog.prune_changes(min(s.seq for s in self._loaded.values()))

    def describe(self, modality: str) -> dict[str, Any]:
        return self.get(modality).describe()

    # -- internals ---------------------------------------------------------------------------

    def _load(self, modality: str, latest: int, floor: int) -> _Loaded | None:
        if not (self.folder / f"{modality}.json").exists():
            if modality in (self.catalog.get_settings().get("indexes_saved") or []):
                log.warning("the %s index is missing; rebuilding it from the catalog", modality)
            return None
        try:
            index, meta = load_index(self.folder, modality)
        except IndexFileError as exc:
            log.warning("%s; rebuilding the %s index from the catalog", exc, modality)
            return None
        seq = int(meta.get("seq", -1))
        problem = None
        if meta.get("catalog_id") != self.catalog_id:
            problem = "belongs to another catalog"
        elif index.dim != self.dim:
            problem = f"has dimension {index.dim}, the collection {self.dim}"
        elif seq > latest:
            problem = f"reflects change {seq}, beyond the catalog's latest ({latest})"
        elif seq < floor:
            problem = f"is older ({seq}) than the change log kept by the catalog ({floor})"
        if problem:
            log.warning("the %s index %s; rebuilding it from the catalog", modality, problem)
            return None
        state = _Loaded(index, seq, saved_seq=seq)
        self._catch_up(modality, state)
        expected = self.catalog.counts_with_vectors()[modality]
        if index.ntotal != expected:
            log.warning(
                "the %s index holds %d vectors where the catalog has %d; rebuilding it",
                modality, index.ntotal, expected,
            )
            return None
        return state

    def _rebuild(self, modality: str) -> _Loaded:
        seq = self.catalog.max_seq()
        index = build_index(self.dim, "flat")
        for ids, vectors in self.catalog.iter_vectors(modality, self.dim):
            index.add(ids, vectors)
        return _Loaded(index, seq)

    def _catch_up(self, modality: str, state: _Loaded) -> None:
        latest, ids = self.catalog.changed_since(state.seq, modality)
        if ids:
            # Re-reading the current vectors makes catching up idempotent: an item changed
            # twice, or changed again while this runs, ends in its latest state.
            state.index.remove(ids)
            present, vectors = self.catalog.vectors(ids, self.dim)
            state.index.add(present, vectors)
        state.seq = latest

    def _save(self, modality: str, state: _Loaded) -> None:
        meta = {"seq": state.seq, "catalog_id": self.catalog_id, "modality": modality}
        save_index(state.index, self.folder, modality, meta)
        state.saved_seq = state.seq
        saved = self.catalog.get_settings().get("indexes_saved") or []
        if modality not in saved:
            self.catalog.set_settings(indexes_saved=[*saved, modality])
