"""Exact search: every query is scored against every vector (FAISS IndexFlat + id map)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import VectorIndex, as_ids, as_pairs, id_selector
from .kinds import register


@register
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
        ids, x = as_pairs(ids, vectors, self.dim)
        if len(ids):
            self._index.add_with_ids(x, ids)

    def remove(self, ids: Any) -> int:
        ids = as_ids(ids)
        if not len(ids) or not self.ntotal:
            return 0
        return int(self._index.remove_ids(faiss.IDSelectorBatch(ids)))

    def _search(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        sel = id_selector(allow)
        sp = faiss.SearchParameters(sel=sel) if sel is not None else None
        return self._index.search(q, min(k, self.ntotal), params=sp)

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = as_ids(ids)
        present = np.isin(ids, self.ids())
        out = np.zeros((len(ids), self.dim), np.float32)
        if present.any():
            out[present] = self._index.reconstruct_batch(ids[present])
        return present, out

    def to_faiss(self) -> Any:
        return self._index

    @classmethod
    def from_faiss(cls, index: Any, params: dict[str, Any], extra: dict[str, Path],
                   mmap: bool) -> FlatIndex:
        return cls(int(params["dim"]), params.get("metric", "ip"), _index=index)

    def bytes_per_vector(self) -> float:
        return 4.0 * self.dim + 8 + 16  # float32 codes, the id, the reverse map entry
