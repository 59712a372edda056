"""Exact search: every query is scored against every vector (FAISS IndexFlat + id map)."""

from __future__ import annotations

from typing import Any

import faiss
import numpy as np

from .base import VectorIndex, as_ids, as_vectors


class FlatIndex(VectorIndex):
    """Exact inner-product (or L2) search keyed by int64 ids."""

    kind = "flat"

    def __init__(self, dim: int, metric: str = "ip", *, _index: Any = None) -> None:
        super().__init__(dim, metric)
        if _index is None:
            base = faiss.IndexFlatIP(self.dim) if metric == "ip" else faiss.IndexFlatL2(self.dim)
            _index = faiss.IndexIDMap2(base)
        self._index = _index

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def add(self, ids: Any, vectors: Any) -> None:
        ids = as_ids(ids)
        x = as_vectors(vectors, self.dim)
        if len(ids) != len(x):
            raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
        if len(ids):
            self._index.add_with_ids(x, ids)

    def remove(self, ids: Any) -> int:
        ids = as_ids(ids)
        if not len(ids) or not self.ntotal:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = as_vectors(queries, self.dim)
        k = int(k)
        if k <= 0:
            raise ValueError("k must be positive")
        if not self.ntotal:
            return (np.full((len(q), k), -np.inf, dtype=np.float32),
                    np.full((len(q), k), -1, dtype=np.int64))
        scores, ids = self._index.search(q, min(k, self.ntotal))
        if scores.shape[1] < k:  # fewer vectors than k: pad like FAISS does
            pad = k - scores.shape[1]
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        if self.metric == "l2":
            scores = np.where(ids >= 0, scores, np.inf)
        return scores, ids

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def to_faiss(self) -> Any:
        return self._index

    @classmethod
    def from_faiss(cls, index: Any, params: dict[str, Any]) -> FlatIndex:
        return cls(int(params["dim"]), params.get("metric", "ip"), _index=index)
