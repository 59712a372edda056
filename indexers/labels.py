"""Caller ids of graph nodes: labels are positions, removed labels are tombstones.

FAISS's graph indexes number their vectors 0, 1, 2, ... and cannot delete them. A
:class:`LabelMap` keeps the caller's int64 id of every label, which labels are dead, the reverse
lookup (id -> live label) as sorted arrays rather than a dict (a dict of a million ids costs
~100 MB), and the FAISS selectors over labels that searches use (a bitmap: one bit per label,
tested in constant time inside the graph walk).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import as_ids

# Labels appended since the sorted lookup was rebuilt are searched on their own until they
# pass this share of the covered ones (amortised: a bulk build re-sorts a few dozen times).
RESORT_SHARE = 0.25


class LabelMap:
    """Ids by label, tombstones, and id -> label lookups."""

    def __init__(self, ids: np.ndarray | None = None, dead: np.ndarray | None = None) -> None:
        self.ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        self.dead = np.zeros(len(self.ids), bool) if dead is None else \
            np.array(dead, bool)  # a writable copy (the saved one may be memory-mapped)
        self._dead_count = int(self.dead.sum())  # kept up to date: searches ask every time
        self._resort()
        self._bitmap: np.ndarray | None = None
        self._live_selector: Any = None  # the selector of every live label, while unchanged

    def _resort(self) -> None:
        live = np.flatnonzero(~self.dead)
        order = np.argsort(self.ids[live], kind="stable")
        self._sorted_ids = self.ids[live][order]
        self._sorted_labels = live[order]
        self._covered = len(self.ids)

    def __len__(self) -> int:
        """Labels ever given out (live and dead)."""
        return len(self.ids)

    @property
    def live(self) -> int:
        return len(self.ids) - self.tombstones

    @property
    def tombstones(self) -> int:
        return self._dead_count

    def append(self, ids: np.ndarray) -> np.ndarray:
        """New labels for ``ids`` (which must not be live)."""
        start = len(self.ids)
        self.ids = np.concatenate([self.ids, as_ids(ids)])
        self.dead = np.concatenate([self.dead, np.zeros(len(ids), bool)])
        self._bitmap = self._live_selector = None
        if len(self.ids) - self._covered > RESORT_SHARE * max(self._covered, 65536):
            self._resort()
        return np.arange(start, len(self.ids), dtype=np.int64)

    def lookup(self, ids: np.ndarray) -> np.ndarray:
        """The live label of each id, -1 where it has none."""
        ids = as_ids(ids)
        out = np.full(len(ids), -1, np.int64)
        if len(self._sorted_ids):
            pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
            hit = self._sorted_ids[pos] == ids
            out[hit] = self._sorted_labels[pos[hit]]
        if self._covered < len(self.ids):  # labels appended since the last sort
            recent = np.arange(self._covered, len(self.ids))
            recent = recent[~self.dead[recent]]
            order = np.argsort(self.ids[recent], kind="stable")
            rid, rlab = self.ids[recent][order], recent[order]
            if len(rid):
                pos = np.minimum(np.searchsorted(rid, ids), len(rid) - 1)
                hit = rid[pos] == ids
                out[hit] = rlab[pos[hit]]
        out[out >= 0] = np.where(self.dead[out[out >= 0]], -1, out[out >= 0])
        return out

    def kill(self, labels: np.ndarray) -> None:
        labels = np.unique(np.asarray(labels, np.int64))
        if len(labels):
            self._dead_count += int((~self.dead[labels]).sum())
            self.dead[labels] = True
            self._bitmap = self._live_selector = None

    def live_ids(self) -> np.ndarray:
        return self.ids[~self.dead]

    def selector(self, allow: Any = None) -> Any:
        """A FAISS selector over labels: the live ones (None when none is dead; the same object
        until labels change, so that searches can keep parameters holding it), or the live
        labels of the ``allow`` ids."""
        import faiss

        if allow is None:
            if not self.tombstones:
                return None
            if self._live_selector is not None:
                return self._live_selector
            if self._bitmap is None:
                self._bitmap = np.packbits(~self.dead, bitorder="little")
            bits = self._bitmap
        else:
            keep = np.zeros(len(self.ids), bool)
            labels = self.lookup(as_ids(allow))
            keep[labels[labels >= 0]] = True
            bits = np.packbits(keep, bitorder="little")
        sel = faiss.IDSelectorBitmap(len(self.ids), faiss.swig_ptr(bits))
        sel.referenced = bits  # the selector reads the array: keep it alive with it
        if allow is None:
            self._live_selector = sel
        return sel


class Rows:
    """float32 rows by label, growing at the end: a large base array (memory-mapped once
    saved) and a tail of recent appends, folded into the base when it passes a quarter of it,
    so that appending n rows one batch at a time copies O(n) bytes in all."""

    def __init__(self, dim: int, base: Any = None) -> None:
        self.dim = dim
        self._base: Any = np.zeros((0, dim), np.float32) if base is None else base
        self._tail: list[np.ndarray] = []
        self._tail_rows = 0
        self._joined: np.ndarray | None = None  # the tail as one array, while unchanged

    def __len__(self) -> int:
        return len(self._base) + self._tail_rows

    def append(self, x: np.ndarray) -> None:
        self._tail.append(np.array(x, np.float32))
        self._tail_rows += len(x)
        self._joined = None
        if self._tail_rows > RESORT_SHARE * max(len(self._base), 65536):
            self._fold()

    def _fold(self) -> None:
        self._base = np.concatenate([np.asarray(self._base), *self._tail])
        self._tail, self._tail_rows, self._joined = [], 0, None

    def get(self, labels: np.ndarray) -> np.ndarray:
        """Rows of these labels (all below ``len(self)``)."""
        nb = len(self._base)
        if not self._tail_rows or (len(labels) and int(labels.max()) < nb):
            return self._base.take(labels, axis=0)
        if self._joined is None:
            self._joined = np.concatenate(self._tail)
        out = np.empty((len(labels), self.dim), np.float32)
        old = labels < nb
        out[old] = self._base[labels[old]]
        out[~old] = self._joined[labels[~old] - nb]
        return out

    def array(self) -> np.ndarray:
        """Every row as one array (for saving)."""
        if self._tail_rows:
            self._fold()
        return self._base
