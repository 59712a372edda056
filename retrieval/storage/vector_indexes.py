"""Keep one FAISS index per kind of item in step with the catalog.

The catalog is the source of truth; an index is derived data that records the change-log
sequence number it reflects. Getting an index brings it up to date: it is loaded from disk,
checked against the catalog (same catalog id, dimension, a sequence number the catalog has
reached, the same number of vectors), caught up from the change log, and saved again when the
caller may write. An index that is missing, unreadable, or from another catalog state is
rebuilt from the catalog, with a warning on the ``retrieval`` logger.

Writers also maintain the indexes (:meth:`VectorIndexes.sync`): an index whose collection outgrew
its tier (``indexers.choose``) is rebuilt into the right type, and search parameters are tuned
to the recall target on a sample of the collection's own vectors plus, where the collection
has them, vectors of the other kind, so that cross-modal queries (text to image) hold
their recall too. A rebuild writes a new generation of files; searches in other processes
keep using the old one until it is committed.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexers import (
    DEFAULT_MEMORY_BUDGET,
    IndexerError,
    IndexFileError,
    IndexPlan,
    VectorIndex,
    build_index,
    choose_index,
    exact_search,
    load_index,
    needs_rebuild,
    parse_bytes,
    save_index,
    tune,
)
from indexers.select import MEASURE_FROM, SAMPLE, select_parts

from ..errors import DiskFullError, InputError, VectorIndexError, disk_full, is_disk_full
from ..items import IMAGE, KINDS, TEXT
from .catalog import Catalog
from .lock import ReadWriteLock, WriteLock

log = logging.getLogger("retrieval")

TUNING_QUERIES = 500  # per query kind (own vectors, the other kind's)


# On a catalog shared by processes on several hosts (a database server), a search checks the
# change log at most this often (seconds): another process's writes show within that time, as
# with Elasticsearch's refresh interval; this process's own writes show at once. A search then
# costs one round trip to the server instead of two.
SHARED_REFRESH_S = 0.25


@dataclass
class _Loaded:
    index: VectorIndex
    seq: int
    saved_seq: int = -1
    checked: float = 0.0  # time.monotonic() when seq was last known to be the catalog's


class VectorIndexes:
    """The image and text indexes of one collection."""

    def __init__(self, catalog: Catalog, folder: Path, dim: int, catalog_id: str,
                 lock: WriteLock, recall_target: float = 0.95) -> None:
        self.catalog = catalog
        self.folder = folder
        self.dim = dim
        self.catalog_id = catalog_id
        self._memory_budget: int | None = None  # read when a plan needs it (see below)
        self.recall_target = recall_target
        self.lock = lock
        self._loaded: dict[str, _Loaded] = {}
        self._writing = False  # inside sync; elsewhere a save that fails is only a warning
        self._rw = ReadWriteLock()

    def _can_save(self) -> bool:
        return self.lock.held

    def for_search(self, kind: str) -> VectorIndex:
        """:meth:`get` for a reader: a caught-up index is saved only when nobody writes."""
        index = self._current(kind)
        if index is not None:
            return index
        with self.lock.hold_if_free():
            return self._refresh(kind)

    @contextlib.contextmanager
    def searching(self, kind: str) -> Iterator[VectorIndex]:
        """The index of ``kind`` for searches in this block; threads search at once, and a
        catch-up with the catalog waits until they are done (and they for it)."""
        index = self.for_search(kind)
        with self._rw.reading():
            yield index

    @property
    def memory_budget(self) -> int:
        """The indexes' memory bound, read from the settings when an index is first planned:
        a search that loads its indexes from disk never reads it."""
        if self._memory_budget is None:
            self._memory_budget = int(self.catalog.get_settings().get("index_memory")
                                      or DEFAULT_MEMORY_BUDGET)
        return self._memory_budget

    def set_memory_budget(self, size: int | str) -> None:
        """Bound the indexes' memory (bytes, or a size such as "2G"); kept for later runs."""
        try:
            budget = parse_bytes(size)
        except ValueError as exc:
            raise InputError(str(exc)) from None
        if budget <= 0:
            raise InputError(f"index memory must be positive, got {size!r}")
        self.catalog.set_settings(index_memory=budget)
        self._memory_budget = budget

    def get(self, kind: str) -> VectorIndex:
        """The index of ``kind``, current with the catalog."""
        return self._current(kind) or self._refresh(kind)

    def _current(self, kind: str) -> VectorIndex | None:
        """The loaded index if nothing changed since it was brought up to date."""
        state = self._loaded.get(kind)
        if state is None:
            return None
        now = time.monotonic()
        if self.catalog.shared and now - state.checked < SHARED_REFRESH_S:
            return state.index
        if state.seq == self.catalog.max_seq():
            state.checked = now
            return state.index
        return None

    def _refresh(self, kind: str) -> VectorIndex:
        with indexer_errors(kind), self._rw.writing():
            return self._get(kind)

    def _get(self, kind: str) -> VectorIndex:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of item {kind!r}")
        checked = time.monotonic()
        latest = self.catalog.max_seq()
        state = self._loaded.get(kind)
        if state is not None and state.seq == latest:
            state.checked = checked
            return state.index
        floor = self.catalog.pruned_through()
        if state is None or state.seq < floor:
            state = self._load(kind, latest, floor) or self._rebuild(kind)
        self._catch_up(kind, state)
        state.checked = checked
        self._loaded[kind] = state
        self._save_if_changed(kind, state)
        return state.index

    def sync(self, on_event: Callable[[str], None] | None = None) -> None:
        """Bring every index up to date, switch tiers or re-tune where the collection changed
        enough, save, then prune the change log. For writers."""
        with self._rw.writing():
            self._writing = True
            try:
                for kind in KINDS:
                    with indexer_errors(kind):
                        self._get(kind)
                        self._maintain(kind, on_event or (lambda _m: None))
            finally:
                self._writing = False
        if self._loaded and self._can_save():
            self.catalog.prune_changes(min(s.seq for s in self._loaded.values()))

    def _check_space(self, index: VectorIndex) -> None:
        """Refuse a save that cannot fit before writing a byte (FAISS would print its own
        complaint on the way)."""
        need = index.ntotal * index.bytes_per_vector() * 1.1 + (1 << 20)
        where = self.folder if self.folder.exists() else self.folder.parent
        if shutil.disk_usage(where).free < need:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.folder))

    def describe(self, kind: str) -> dict[str, Any]:
        return self.get(kind).describe()

    # -- internals ---------------------------------------------------------------------------

    def _load(self, kind: str, latest: int, floor: int) -> _Loaded | None:
        if not (self.folder / f"{kind}.json").exists():
            if kind in (self.catalog.get_settings().get("indexes_saved") or []):
                log.warning("the %s index is missing; rebuilding it from the catalog", kind)
            return None
        try:
            # Memory-mapped (IVF): a search reads only the lists it probes; catching up with
            # changes loads it into memory instead (see _catch_up).
            index, meta = load_index(self.folder, kind, mmap=True)
        except IndexFileError as exc:
            log.warning("%s; rebuilding the %s index from the catalog", exc, kind)
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
            log.warning("the %s index %s; rebuilding it from the catalog", kind, problem)
            return None
        state = _Loaded(index, seq, saved_seq=seq)
        if not self._catch_up(kind, state):
            return state  # no change since it was saved: in step, no count needed
        expected = self.catalog.counts_with_vectors()[kind]
        if state.index.ntotal != expected:
            log.warning(
                "the %s index holds %d vectors where the catalog has %d; rebuilding it",
                kind, state.index.ntotal, expected,
            )
            return None
        return state

    def _rebuild(self, kind: str, plan: IndexPlan | None = None) -> _Loaded:
        seq = self.catalog.max_seq()
        ids = self.catalog.vector_ids(kind)
        plan = plan or choose_index(len(ids), self.dim, self.memory_budget)
        if plan.kind == "graph" and len(ids) > MEASURE_FROM:
            plan = self._measured(kind, plan, ids)
        index = build_index(self.dim, plan.kind, **plan.params)
        if not index.is_trained:
            n_train = plan.train_size(len(ids))
            sample = np.random.default_rng(0).choice(ids, n_train, replace=False)
            index.train(self.catalog.vectors(np.sort(sample).tolist(), self.dim)[1])
        for batch_ids, vectors in self.catalog.iter_vectors(kind, self.dim):
            index.add(batch_ids, vectors)
        state = _Loaded(index, seq)
        self._tune(kind, state.index)
        return state

    def _catch_up(self, kind: str, state: _Loaded) -> int:
        """Apply the catalog's changes since the index's seq; returns how many items changed."""
        latest, ids = self.catalog.changed_since(state.seq, kind)
        if ids and state.index.read_only:
            # Loaded memory-mapped for searching; changes need it in memory.
            state.index = load_index(self.folder, kind, mmap=False)[0]
        if ids:
            # Re-reading the current vectors makes catching up idempotent: an item changed
            # twice, or changed again while this runs, ends in its latest state.
            state.index.remove(ids)
            present, vectors = self.catalog.vectors(ids, self.dim)
            state.index.add(present, vectors)
        state.seq = latest
        return len(ids)

    def _maintain(self, kind: str, on_event: Callable[[str], None]) -> None:
        state = self._loaded[kind]
        current = state.index.describe()
        n = state.index.ntotal
        plan = needs_rebuild(current, n, self.dim, self.memory_budget)
        if plan is not None:
            was = current["type"] + (f"/{current['params'].get('codec')}"
                                     if current["params"].get("codec") else "")
            on_event(f"{kind} index: {n} vectors no longer suit {was}; rebuilding it as "
                     f"{plan.describe()} ({plan.reason})")
            state = self._rebuild(kind, plan)
            self._catch_up(kind, state)
            self._loaded[kind] = state
        elif state.index.kind != "flat":
            tuned_n = int(state.index.tuning.get("tuned_at_ntotal", 0))
            if not tuned_n or not 0.5 <= n / tuned_n <= 2:
                on_event(f"{kind} index: re-tuning search parameters for {n} vectors")
                self._tune(kind, state.index)
                state.saved_seq = -1
        self._save_if_changed(kind, state)

    def _tuning_queries(self, kind: str) -> tuple[np.ndarray, list[str]]:
        """A sample of the collection's own vectors and, where present, of the other
        modality's (texts for pictures, images for texts): the two kinds of query the index
        serves."""
        rng = np.random.default_rng(1)
        queries, kinds = [], []
        for m in (kind, IMAGE if kind == TEXT else TEXT):
            ids = self.catalog.vector_ids(m)
            if len(ids):
                pick = np.sort(rng.choice(ids, min(len(ids), TUNING_QUERIES), replace=False))
                queries.append(self.catalog.vectors(pick.tolist(), self.dim)[1])
                kinds += [m] * len(pick)
        return np.concatenate(queries), kinds

    def _measured(self, kind: str, plan: IndexPlan, ids: np.ndarray) -> IndexPlan:
        """The graph plan with the parts that measurements on a sample of the collection's
        own vectors and query kinds favour (``indexers.select``)."""
        pick = np.sort(np.random.default_rng(2).choice(ids, min(len(ids), SAMPLE), False))
        sample = self.catalog.vectors(pick.tolist(), self.dim)[1]
        xq, kinds = self._tuning_queries(kind)
        labels = np.asarray(kinds)
        plan = select_parts(plan, sample, {k: xq[labels == k] for k in sorted(set(kinds))},
                            len(ids), self.recall_target)
        log.info("%s index: %s", kind, plan.reason)
        return plan

    def _tune(self, kind: str, index: VectorIndex) -> None:
        """Tune search parameters on own vectors and, where present, the other kind's."""
        if index.kind == "flat" or not index.ntotal:
            index.tuning = {"recall_at_10": 1.0, "tuned_at_ntotal": index.ntotal}
            return
        xq, kinds = self._tuning_queries(kind)
        truth = self._exact_top(kind, xq, 10)
        # The target holds per query kind: cross-modal queries are the hard ones.
        tune(index, xq, truth, k=10, target=self.recall_target, groups=kinds)
        index.drop_unused()  # a part no kind of query is served by (the graph's lists)
        index.tuning["tuned_at_ntotal"] = index.ntotal
        log.info("%s index tuned: %s", kind, index.tuning)

    def _exact_top(self, kind: str, xq: np.ndarray, k: int) -> np.ndarray:
        """Exact top-k ids for queries, scanning the catalog's vectors a batch at a time."""
        best_s = np.full((len(xq), 0), -np.inf, np.float32)
        best_i = np.zeros((len(xq), 0), np.int64)
        for ids, vectors in self.catalog.iter_vectors(kind, self.dim):
            s, i = exact_search(vectors, ids, xq, k)
            best_s, best_i = np.hstack([best_s, s]), np.hstack([best_i, i])
            order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(best_s, order, 1)
            best_i = np.take_along_axis(best_i, order, 1)
        return best_i

    def _save_if_changed(self, kind: str, state: _Loaded) -> None:
        if state.seq == state.saved_seq or not self._can_save():
            return
        # "modality": the key index files have always had for the kind of item they hold
        meta = {"seq": state.seq, "catalog_id": self.catalog_id, "modality": kind}
        try:
            self._check_space(state.index)
            save_index(state.index, self.folder, kind, meta)
            state.saved_seq = state.seq
            saved = self.catalog.get_settings().get("indexes_saved") or []
            if kind not in saved:
                self.catalog.set_settings(indexes_saved=[*saved, kind])
        except (OSError, RuntimeError, IndexerError, DiskFullError) as exc:
            if not is_disk_full(exc):
                raise
            if self._writing:
                raise disk_full(f"the {kind} index", self.folder) from None
            # A reader only saves the catch-up to spare the next one; it works without.
            log.warning("the %s index is not saved (no space left on the device of %s); "
                        "searches still work", kind, self.folder)


@contextlib.contextmanager
def indexer_errors(kind: str) -> Iterator[None]:
    """The index layer's errors as the engine's: one line, a :class:`VectorIndexError`."""
    try:
        yield
    except IndexerError as exc:
        raise VectorIndexError(f"the {kind} index: {exc}") from None
    except (ValueError, RuntimeError) as exc:  # FAISS reports bad input as RuntimeError
        text = " ".join(str(exc).split())[:300]
        raise VectorIndexError(f"the {kind} index cannot be used as asked: {text}") from None
