"""HNSW graph index, with deletions as tombstones and compaction.

FAISS's HNSW cannot remove nodes. Each vector gets an internal label (its position in the
graph) mapped to the caller's id; removing an id tombstones its label, searches skip tombstoned
labels inside the graph walk (an id selector), and once tombstones pass a share of the graph the
index is rebuilt from its live vectors. Re-adding a removed id gives it a new label.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import VectorIndex, as_ids, as_pairs, id_selector
from .kinds import register

COMPACT_AT = 0.2  # rebuild when tombstones exceed this share of graph nodes


@register
class HNSWIndex(VectorIndex):
    """FAISS IndexHNSWFlat keyed by caller ids through a label map."""

    kind = "hnsw"

    def __init__(self, dim: int, metric: str = "ip", *, m: int = 32, ef_construction: int = 80,
                 _index: Any = None, _labels: np.ndarray | None = None,
                 _dead: np.ndarray | None = None) -> None:
        super().__init__(dim, metric)
        self.m, self.ef_construction = int(m), int(ef_construction)
        self._index = _index if _index is not None else self._empty()
        self._label_ids = np.zeros(0, np.int64) if _labels is None else np.asarray(_labels)
        self._dead = np.zeros(len(self._label_ids), bool) if _dead is None else \
            np.asarray(_dead, bool).copy()
        self._by_id = {int(i): lab for lab, i in enumerate(self._label_ids)
                       if not self._dead[lab]}
        self.search_params = {"efSearch": 64}

    def _empty(self) -> Any:
        mt = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        index = faiss.IndexHNSWFlat(self.dim, self.m, mt)
        index.hnsw.efConstruction = self.ef_construction
        return index

    @property
    def ntotal(self) -> int:
        return len(self._by_id)

    @property
    def tombstones(self) -> int:
        return int(self._dead.sum())

    def add(self, ids: Any, vectors: Any) -> None:
        ids, x = as_pairs(ids, vectors, self.dim)
        if not len(ids):
            return
        self.remove(ids[np.fromiter((int(i) in self._by_id for i in ids), bool, len(ids))])
        start = int(self._index.ntotal)
        self._index.add(x)
        self._label_ids = np.concatenate([self._label_ids, ids])
        self._dead = np.concatenate([self._dead, np.zeros(len(ids), bool)])
        self._by_id.update({int(i): start + n for n, i in enumerate(ids)})

    def remove(self, ids: Any) -> int:
        removed = 0
        for i in as_ids(ids):
            lab = self._by_id.pop(int(i), None)
            if lab is not None:
                self._dead[lab] = True
                removed += 1
        if removed and self.tombstones > COMPACT_AT * max(1, len(self._dead)):
            self.compact()
        return removed

    def compact(self) -> None:
        """Rebuild the graph from the live vectors, dropping tombstones."""
        live = np.flatnonzero(~self._dead)
        vectors = self._index.reconstruct_batch(live) if len(live) else \
            np.zeros((0, self.dim), np.float32)
        ids = self._label_ids[live]
        self._index = self._empty()
        if len(live):
            self._index.add(vectors)
        self._label_ids = ids
        self._dead = np.zeros(len(ids), bool)
        self._by_id = {int(i): lab for lab, i in enumerate(ids)}

    def ids(self) -> np.ndarray:
        return self._label_ids[~self._dead]

    def _search(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        if allow is not None:
            labels = [self._by_id[int(i)] for i in as_ids(allow) if int(i) in self._by_id]
            sel = id_selector(labels)  # live labels only: tombstones are not in _by_id
        else:
            sel = id_selector(None, np.flatnonzero(self._dead)) if self.tombstones else None
        ef = int(params.get("efSearch", 64))
        sp = faiss.SearchParametersHNSW(efSearch=max(ef, k), sel=sel) if sel is not None else \
            faiss.SearchParametersHNSW(efSearch=max(ef, k))
        scores, labels = self._index.search(q, k, params=sp)
        ids = np.where(labels >= 0, self._label_ids[np.maximum(labels, 0)], -1)
        return scores, ids

    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = as_ids(ids)
        labels = np.fromiter((self._by_id.get(int(i), -1) for i in ids), np.int64, len(ids))
        present = labels >= 0
        out = np.zeros((len(ids), self.dim), np.float32)
        if present.any():
            out[present] = self._index.reconstruct_batch(labels[present])
        return present, out

    def widen(self, params: dict[str, Any], selectivity: float) -> dict[str, Any]:
        ef = int(params.get("efSearch", 64))
        return {**params, "efSearch": int(min(8192, np.ceil(ef / max(selectivity, 1e-6))))}

    def tuning_grid(self) -> list[dict[str, Any]]:
        return [{"efSearch": ef} for ef in (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                                            768, 1024, 2048)]

    def to_faiss(self) -> Any:
        return self._index

    def extra_arrays(self) -> dict[str, np.ndarray]:
        return {"labels": self._label_ids, "dead": self._dead}

    @classmethod
    def from_faiss(cls, index: Any, params: dict[str, Any], extra: dict[str, Path],
                   mmap: bool) -> HNSWIndex:
        return cls(int(params["dim"]), params.get("metric", "ip"), m=int(params["m"]),
                   ef_construction=int(params["ef_construction"]), _index=index,
                   _labels=np.load(extra["labels"]), _dead=np.load(extra["dead"]))

    def params(self) -> dict[str, Any]:
        return {**super().params(), "m": self.m, "ef_construction": self.ef_construction}

    def bytes_per_vector(self) -> float:
        # vector, level-0 links (2m int32), upper levels (~m/ln(m) on average), label map
        return 4.0 * self.dim + 4 * 2 * self.m + 4 * self.m / max(1.0, np.log(self.m)) + 8 + 48
