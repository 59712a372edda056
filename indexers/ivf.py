"""Inverted-file indexes: k-means cells, search visits the ``nprobe`` nearest cells.

Codecs: ``flat`` stores float32 vectors (exact scores within the visited cells); ``sq8`` stores
one byte per dimension and ``pq`` 4-bit product-quantisation codes scanned with FAISS's
fast-scan kernels. The compressed codecs re-score their best ``k * k_factor`` candidates with
the exact vectors of a :class:`~indexers.exact_vectors.ExactVectors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import VectorIndex, as_ids, as_pairs, as_vectors, id_selector
from .exact_vectors import ExactVectors
from .kinds import register

CODECS = ("flat", "sq8", "pq")
K_FACTORS = (1, 2, 4, 8, 16, 32)
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
           2048, 3072, 4096)


def nprobe_grid(nlist: int) -> list[int]:
    """The nprobe values recall tuning tries for an IVF index of ``nlist`` cells, ending with
    all of them (a sample's index may have, say, 78 cells: without it the grid stopped at 64,
    and data that need most cells scanned never reached the target there)."""
    return [p for p in NPROBES if p < nlist] + [max(1, nlist)]


def widen_nprobe(params: dict[str, Any], selectivity: float, nlist: int) -> dict[str, Any]:
    """``params`` with nprobe raised for a filter that keeps ``selectivity`` of the vectors,
    so about as many allowed vectors are scanned as without it."""
    nprobe = int(params.get("nprobe", 1))
    return {**params, "nprobe": int(min(nlist, np.ceil(nprobe / max(selectivity, 1e-6))))}


@register
class IVFIndex(VectorIndex):
    """IVF with a flat coarse quantizer; ids are stored in the inverted lists."""

    kind = "ivf"

    def __init__(self, dim: int, metric: str = "ip", *, nlist: int = 1024, codec: str = "flat",
                 _index: Any = None, _store: ExactVectors | None = None) -> None:
        super().__init__(dim, metric)
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
        self.nlist, self.codec = int(nlist), codec
        mt = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        if _index is None:
            quantizer = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
            if codec == "flat":
                _index = faiss.IndexIVFFlat(quantizer, dim, self.nlist, mt)
            elif codec == "sq8":
                _index = faiss.IndexIVFScalarQuantizer(
                    quantizer, dim, self.nlist, faiss.ScalarQuantizer.QT_8bit, mt)
            else:
                if dim % 2:
                    raise ValueError("the pq codec needs an even dimension")
                _index = faiss.IndexIVFPQFastScan(quantizer, dim, self.nlist, dim // 2, 4, mt)
                _index.by_residual = True  # codes of residuals: far better candidates
            _index.quantizer_trains_alone = 0
            _index.own_fields = True
            quantizer.this.disown()  # the IVF index owns and frees its quantizer
            _index.cp.niter = 10
            _index.cp.max_points_per_centroid = 64
        if self.codec == "flat" and _index.direct_map.type == faiss.DirectMap.NoMap:
            # id -> position, to fetch vectors for exact search on short allow-lists
            _index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._index = _index
        self._store = _store if _store is not None else (
            ExactVectors(dim) if codec != "flat" else None)
        self.search_params = {"nprobe": max(1, self.nlist // 64)}
        if self._store is not None:
            self.search_params["k_factor"] = 4

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    def train(self, sample: Any) -> None:
        x = as_vectors(sample, self.dim)
        if len(x) < self.nlist:
            raise ValueError(f"{len(x)} training vectors for {self.nlist} cells")
        self._index.train(x)

    def add(self, ids: Any, vectors: Any) -> None:
        ids, x = as_pairs(ids, vectors, self.dim)
        if not len(ids):
            return
        self._check_writable()
        self._index.add_with_ids(x, ids)
        if self._store is not None:
            self._store.add(ids, x)

    def remove(self, ids: Any) -> int:
        ids = as_ids(ids)
        if not len(ids) or not self.ntotal:
            return 0
        self._check_writable()
        # The id hashtable can only remove an explicit array of ids.
        n = int(self._index.remove_ids(faiss.IDSelectorArray(ids)))
        if self._store is not None:
            self._store.remove(ids)
        return n

    def ids(self) -> np.ndarray:
        invlists = self._index.invlists
        parts = []
        for lst in range(self.nlist):
            size = invlists.list_size(lst)
            if size:
                ptr = invlists.get_ids(lst)
                parts.append(faiss.rev_swig_ptr(ptr, size).copy())
                invlists.release_ids(lst, ptr)
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def _search(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        nprobe = int(min(self.nlist, params.get("nprobe", 1)))
        sel = id_selector(allow)
        sp = faiss.SearchParametersIVF(nprobe=nprobe, sel=sel) if sel is not None else \
            faiss.SearchParametersIVF(nprobe=nprobe)
        if self._store is None:
            return self._index.search(q, k, params=sp)
        kf = int(params.get("k_factor", 4))
        _, cand = self._index.search(q, k * kf, params=sp)
        return self._store.rerank(q, cand, k, self.metric)

    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = as_ids(ids)
        if self._store is not None:
            return self._store.get(ids)
        out = np.zeros((len(ids), self.dim), np.float32)
        present = np.isin(ids, self.ids())
        if present.any():
            out[present] = self._index.reconstruct_batch(ids[present])
        return present, out

    def widen(self, params: dict[str, Any], selectivity: float) -> dict[str, Any]:
        return widen_nprobe(params, selectivity, self.nlist)

    def tuning_grid(self) -> list[dict[str, Any]]:
        nprobes = nprobe_grid(self.nlist)
        if self._store is None:
            return [{"nprobe": p} for p in nprobes]
        # Cost model: cells scanned (codes) plus candidates re-scored (full vectors, ~4x a
        # code); cheapest first.
        per_cell = max(1.0, self.ntotal / self.nlist)
        grid = [{"nprobe": p, "k_factor": f} for p in nprobes for f in K_FACTORS]
        return sorted(grid, key=lambda g: g["nprobe"] * per_cell + 40 * g["k_factor"])

    def to_faiss(self) -> Any:
        return self._index

    def extra_arrays(self) -> dict[str, np.ndarray]:
        if self._store is None:
            return {}
        ids, vectors = self._store.arrays()
        return {"store_ids": ids, "store_vectors": vectors}

    @classmethod
    def from_faiss(cls, index: Any, params: dict[str, Any], extra: dict[str, Path],
                   mmap: bool) -> IVFIndex:
        store = None
        if params.get("codec", "flat") != "flat":
            store = ExactVectors.load(extra["store_ids"], extra["store_vectors"],
                                     int(params["dim"]), mmap=mmap)
        obj = cls(int(params["dim"]), params.get("metric", "ip"), nlist=int(params["nlist"]),
                  codec=params.get("codec", "flat"), _index=index, _store=store)
        obj.read_only = mmap
        return obj

    def params(self) -> dict[str, Any]:
        return {**super().params(), "nlist": self.nlist, "codec": self.codec}

    def bytes_per_vector(self) -> float:
        # codes + the id in the list (+ the id -> position hashtable for flat codes)
        code = {"flat": 4.0 * self.dim + 16, "sq8": float(self.dim), "pq": self.dim / 4}
        return code[self.codec] + 8
