"""Exact vectors by id, for re-scoring the candidates of a compressed index.

A compressed index (scalar or product quantisation) ranks candidates approximately; the exact
float32 vectors re-score the best ``k * k_factor`` of them. They live here rather than in
FAISS's ``IndexRefineFlat``, which can neither take caller ids nor remove vectors. On disk they
are a plain ``.npy`` array loaded memory-mapped, so they cost page cache rather than RAM: an
index's memory budget covers its codes, and only the rows that queries touch are read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class ExactVectors:
    """float32 rows keyed by int64 ids; removed rows are dropped at the next save."""

    def __init__(self, dim: int, ids: np.ndarray | None = None, vectors: Any = None) -> None:
        self.dim = dim
        self._ids = np.zeros(0, np.int64) if ids is None else np.asarray(ids, np.int64)
        self._vectors: Any = np.zeros((0, dim), np.float32) if vectors is None else vectors
        self._live = np.ones(len(self._ids), bool)
        self._new: list[tuple[np.ndarray, np.ndarray]] = []
        self._sort()

    def _sort(self) -> None:
        self._order = np.argsort(self._ids, kind="stable")
        self._sorted = self._ids[self._order]

    def _flush(self) -> None:
        """Fold rows added since the last lookup into the arrays."""
        if not self._new:
            return
        self._ids = np.concatenate([self._ids[self._live], *(i for i, _ in self._new)])
        self._vectors = np.concatenate(
            [np.asarray(self._vectors)[self._live], *(v for _, v in self._new)])
        self._live = np.ones(len(self._ids), bool)
        self._new = []
        self._sort()

    def __len__(self) -> int:
        return int(self._live.sum()) + sum(len(i) for i, _ in self._new)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self._new.append((np.array(ids, np.int64), np.array(vectors, np.float32)))

    def remove(self, ids: np.ndarray) -> None:
        self._flush()
        rows = self.rows(ids)
        self._live[rows[rows >= 0]] = False

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each live id, -1 where absent."""
        self._flush()
        ids = np.asarray(ids, np.int64)
        if not len(self._sorted):
            return np.full(len(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, ids), len(self._sorted) - 1)
        rows = np.where(self._sorted[pos] == ids, self._order[pos], -1)
        rows[rows >= 0] = np.where(self._live[rows[rows >= 0]], rows[rows >= 0], -1)
        return rows

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mask of ids present, their vectors; zeros where absent)."""
        rows = self.rows(ids)
        present = rows >= 0
        out = np.zeros((len(rows), self.dim), np.float32)
        if present.any():
            out[present] = np.asarray(self._vectors[rows[present]], np.float32)
        return present, out

    def rerank(self, queries: np.ndarray, cand: np.ndarray, k: int, metric: str
               ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of candidate ids (-1 = none) for each query; the best k, best first."""
        nq = len(queries)
        worst = -np.inf if metric == "ip" else np.inf
        scores = np.full((nq, k), worst, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        rows = self.rows(cand.reshape(-1)).reshape(cand.shape)
        for i in range(nq):
            ok = rows[i] >= 0
            if not ok.any():
                continue
            vecs = np.asarray(self._vectors[rows[i][ok]], np.float32)
            if metric == "ip":
                s = vecs @ queries[i]
                order = np.argsort(-s, kind="stable")[:k]
            else:
                s = ((vecs - queries[i]) ** 2).sum(1)
                order = np.argsort(s, kind="stable")[:k]
            scores[i, :len(order)] = s[order]
            ids[i, :len(order)] = cand[i][ok][order]
        return scores, ids

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors) of the live rows, for saving."""
        self._flush()
        return self._ids[self._live], np.asarray(self._vectors)[self._live]

    @classmethod
    def load(cls, ids_path: Path, vectors_path: Path, dim: int, mmap: bool = True
             ) -> ExactVectors:
        """Load a store; the vectors stay on disk (memory-mapped) unless ``mmap`` is False."""
        ids = np.load(ids_path)
        vectors = np.load(vectors_path, mmap_mode="r" if mmap else None)
        if vectors.shape != (len(ids), dim):
            raise ValueError(f"vector store holds {vectors.shape}, expected ({len(ids)}, {dim})")
        return cls(dim, ids, vectors)
