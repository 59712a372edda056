"""A proximity graph on 8-bit codes, inverted lists beside it where they pay, exact re-scoring.

The in-memory index for collections past exact search (``choose_index``). Its parts share one
numbering of the vectors (labels: positions, mapped to the caller's ids by a
:class:`~indexers.labels.LabelMap`) and one array of exact float32 vectors:

* **graph**: FAISS HNSW over 8-bit scalar codes (``IndexHNSWSQ``): a walk touches a quarter of
  the bytes a float32 graph does, so the same walk is faster and builds faster;
* **lists** (when ``nlist`` > 0): an inverted file over 8-bit codes with an HNSW coarse
  quantizer. Queries that sit across the modality gap (a text query in an image collection)
  are ranked inside their neighbourhood by directions the graph's edges know nothing of, so a
  walk has to visit most of the neighbourhood, one random read per vector, where a list scan
  reads it front to back (``benchmarks/ann.py --regimes tight``: a 20x difference);
* **exact vectors**: the best ``k * k_factor`` candidates of either part are re-scored with
  them, so scores are exact and 8-bit rounding costs no recall. Saved as a ``.npy`` that large
  indexes memory-map.

Which parts a collection gets is measured on its own vectors and queries (``indexers.select``);
``tune`` then sets, for each query kind, the part and the setting (``efSearch`` or ``nprobe``)
that reach the recall target fastest. Removal tombstones a label (searches skip it through a
bitmap selector); past ``COMPACT_AT`` tombstones every part is rebuilt from the live vectors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import VectorIndex, as_ids, as_pairs, as_vectors
from .choose import LISTS_TRAIN_PER_CELL, graph_bytes_per_vector
from .ivf import nprobe_grid
from .kinds import register
from .labels import LabelMap, Rows
from .reduce import rotation

COMPACT_AT = 0.2  # rebuild when tombstones exceed this share of labels
EF_SEARCH = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072,
             4096)
K_FACTOR = 2  # candidates per result re-scored exactly: 8-bit codes rank nearly exactly,
GRAPH_K_FACTORS = (1, 2)  # so a walk on every dimension re-scores its own top k or 2k,
REDUCED_K_FACTORS = (2, 4, 8)  # and one on fewer dimensions ranks more roughly
QT_8BIT: Any = faiss.ScalarQuantizer.QT_8bit
# Lists from which the coarse quantizer is itself a graph. A graph over the centroids loses
# its way on text queries as a graph over the vectors does (at 200k on tight clusters recall
# stalled at 0.76 with a 32-wide walk), and an exact scan of 4,096 centroids costs about what
# a walk wide enough for them does: exact up to 16,384 lists (collections of 16M vectors).
HNSW_QUANTIZER_MIN = 16384
QUANTIZER_EF = 128


def _metric(metric: str) -> int:
    return faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2


@register
class GraphIndex(VectorIndex):
    """HNSW on 8-bit codes (+ optional IVF lists), exact re-scoring; see the module."""

    kind = "graph"

    def __init__(self, dim: int, metric: str = "ip", *, m: int = 32, ef_construction: int = 80,
                 nlist: int = 0, codec: str = "sq8", planned_n: int = 0, reduce: int = 0,
                 _graph: Any = None, _lists: Any = None, _labels: LabelMap | None = None,
                 _rows: Rows | None = None, _rotation: np.ndarray | None = None) -> None:
        super().__init__(dim, metric)
        if codec != "sq8":
            raise ValueError(f"the graph index stores sq8 codes, not {codec!r}")
        self.m, self.ef_construction, self.nlist, self.codec = \
            int(m), int(ef_construction), int(nlist), codec
        self.planned_n = int(planned_n)  # the size its parts were chosen for
        # The graph walks on this many leading principal coordinates (0: all of them).
        self.reduce = int(reduce) if 0 < int(reduce) < self.dim else 0
        self._rotation = _rotation
        if not self.m and not self.nlist:
            raise ValueError("a graph index needs a graph (m > 0), lists (nlist > 0) or both")
        self._graph = _graph if _graph is not None else (
            self._empty_graph() if self.m else None)
        self._lists = _lists if _lists is not None else (
            self._empty_lists() if self.nlist else None)
        self._labels = _labels or LabelMap()
        self._rows = _rows or Rows(dim)
        # Removed labels leave the lists at once (a scan that skips them through a selector
        # costs up to 40% more); lists saved before that was so keep them until compaction.
        self._lists_hold_dead = _lists is not None and _lists.ntotal > self._labels.live
        self.search_params = {"via": "graph", "efSearch": 64, "k_factor": K_FACTOR}
        self._params_cache: dict[tuple[bool, int], tuple[Any, Any]] = {}

    def _empty_graph(self) -> Any:
        index = faiss.IndexHNSWSQ(self.reduce or self.dim, QT_8BIT, self.m,
                                  _metric(self.metric))
        index.hnsw.efConstruction = self.ef_construction
        return index

    def _empty_lists(self) -> Any:
        mt = _metric(self.metric)
        quantizer: Any = faiss.IndexHNSWFlat(self.dim, 32, mt) \
            if self.nlist >= HNSW_QUANTIZER_MIN else faiss.IndexFlat(self.dim, mt)
        if self.nlist >= HNSW_QUANTIZER_MIN:
            quantizer.hnsw.efSearch = 2 * QUANTIZER_EF  # for assigning the vectors added
        lists = faiss.IndexIVFScalarQuantizer(quantizer, self.dim, self.nlist,
                                              QT_8BIT, mt)
        lists.own_fields = True
        quantizer.this.disown()
        return lists

    # -- content -------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return self._labels.live

    @property
    def tombstones(self) -> int:
        return self._labels.tombstones

    @property
    def parts(self) -> list[str]:
        return [name for name, part in (("graph", self._graph), ("lists", self._lists))
                if part is not None]

    @property
    def is_trained(self) -> bool:
        return all(part is None or part.is_trained for part in (self._graph, self._lists))

    def _walked(self, x: np.ndarray) -> np.ndarray:
        """Vectors as the graph stores them (their leading principal coordinates)."""
        if self._rotation is None:
            return x
        return np.ascontiguousarray(x @ self._rotation.T)

    def train(self, sample: Any) -> None:
        x = as_vectors(sample, self.dim)
        if self._graph is not None:
            if self.reduce:
                self._rotation = rotation(x, self.reduce)
            self._graph.train(self._walked(x))
        if self._lists is not None:
            if len(x) < self.nlist:
                raise ValueError(f"{len(x)} training vectors for {self.nlist} cells")
            # k-means with an exact quantizer (a graph quantizer would be rebuilt every
            # iteration), then the centroids go into the graph quantizer.
            km = faiss.Kmeans(self.dim, self.nlist, niter=10,
                              max_points_per_centroid=LISTS_TRAIN_PER_CELL,
                              min_points_per_centroid=1, spherical=self.metric == "ip", seed=1)
            km.train(x)
            self._lists.quantizer.add(km.centroids)
            self._lists.train(x)  # the 8-bit ranges of the residuals

    def add(self, ids: Any, vectors: Any) -> None:
        ids, x = as_pairs(ids, vectors, self.dim)
        if not len(ids):
            return
        if not self.is_trained:
            raise ValueError("train the index before adding vectors")
        self.remove(ids[self._labels.lookup(ids) >= 0])
        labels = self._labels.append(ids)
        if self._graph is not None:
            self._graph.add(self._walked(x))
        if self._lists is not None:
            self._lists.add_with_ids(x, labels)
        self._rows.append(x)

    def remove(self, ids: Any) -> int:
        labels = self._labels.lookup(np.unique(as_ids(ids)))
        labels = labels[labels >= 0]
        self._labels.kill(labels)
        if self._lists is not None and len(labels):
            self._lists.remove_ids(faiss.IDSelectorBatch(labels))
        if len(labels) and self.tombstones > COMPACT_AT * max(1, len(self._labels)):
            self.compact()
        return len(labels)

    def compact(self) -> None:
        """Rebuild every part from the live vectors, dropping tombstones."""
        live = np.flatnonzero(~self._labels.dead)
        ids, vectors = self._labels.ids[live], self._rows.get(live)
        old = self._graph
        if old is not None:
            self._graph = self._empty_graph()  # the same 8-bit ranges, no nodes
            faiss.downcast_index(self._graph.storage).sq.trained = \
                faiss.downcast_index(old.storage).sq.trained
            self._graph.storage.is_trained = self._graph.is_trained = True
        if self._lists is not None:
            self._lists.reset()  # keeps its centroids and ranges
            self._lists_hold_dead = False
        self._labels, self._rows = LabelMap(), Rows(self.dim)
        for lo in range(0, len(ids), 65536):
            self.add(ids[lo:lo + 65536], vectors[lo:lo + 65536])

    def ids(self) -> np.ndarray:
        return self._labels.live_ids()

    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        labels = self._labels.lookup(as_ids(ids))
        present = labels >= 0
        out = np.zeros((len(labels), self.dim), np.float32)
        if present.any():
            out[present] = self._rows.get(labels[present])
        return present, out

    # -- search --------------------------------------------------------------------------------

    def _search(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        kk = min(len(self._labels), k * max(1, int(params.get("k_factor", K_FACTOR))))
        lists = self._lists is not None and (params.get("via") == "lists" or self._graph is None)
        if lists:
            value = int(min(self.nlist, params.get("nprobe", 8)))
        else:
            value = max(int(params.get("efSearch", 64)), kk)
        sp = self._search_parameters(lists, value, allow)
        part, x = (self._lists, q) if lists else (self._graph, self._walked(q))
        # FAISS's own wrapper checks and converts what is already checked here (a few
        # microseconds of a query that can take twenty): the C++ search, called directly.
        dist = np.empty((len(x), kk), np.float32)
        labels = np.empty((len(x), kk), np.int64)
        part.search_c(len(x), faiss.swig_ptr(x), kk, faiss.swig_ptr(dist),
                      faiss.swig_ptr(labels), sp)
        return self._rescore(q, labels, k)

    def _search_parameters(self, lists: bool, value: int, allow: Any) -> Any:
        """FAISS search parameters. Without an allow-list they are kept for reuse, with the
        tombstones' selector they hold (the same object until labels change): making them
        costs a few microseconds of a query that can take twenty."""
        sel = None if lists and allow is None and not self._lists_hold_dead \
            else self._labels.selector(allow)
        key = (lists, value)
        if allow is None:
            kept = self._params_cache.get(key)
            if kept is not None and kept[0] is sel:
                return kept[1]
        if lists:
            sp = faiss.SearchParametersIVF()
            sp.nprobe = value
            if self.nlist >= HNSW_QUANTIZER_MIN:  # the coarse graph walks ~2 nprobe wide
                qp = faiss.SearchParametersHNSW()
                qp.efSearch = max(QUANTIZER_EF, 4 * value)
                sp.quantizer_params = qp
                sp.referenced = qp
        else:
            sp = faiss.SearchParametersHNSW()
            sp.efSearch = value
        if sel is not None:
            sp.sel = sel
            sp.referenced_sel = sel
        if allow is None:
            self._params_cache[key] = (sel, sp)
        return sp

    def _rescore(self, q: np.ndarray, labels: np.ndarray, k: int
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Exact scores of the candidate labels (-1 = none); the best k as (scores, ids),
        fewer columns when there are fewer candidates."""
        if len(q) == 1:  # the common case, kept short
            lab = labels[0] if labels[0, -1] >= 0 else labels[0][labels[0] >= 0]
            s = self._scores(q[0], self._rows.get(lab))
            order = (-s if self.metric == "ip" else s).argsort(kind="stable")[:k]
            return s[order][None], self._labels.ids[lab[order]][None]
        worst = -np.inf if self.metric == "ip" else np.inf
        scores = np.full((len(q), k), worst, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for i in range(len(q)):
            lab = labels[i][labels[i] >= 0]
            if not len(lab):
                continue
            s = self._scores(q[i], self._rows.get(lab))
            order = np.argsort(-s if self.metric == "ip" else s, kind="stable")[:k]
            scores[i, :len(order)] = s[order]
            ids[i, :len(order)] = self._labels.ids[lab[order]]
        return scores, ids

    def _scores(self, q: np.ndarray, vecs: np.ndarray) -> np.ndarray:
        if self.metric == "ip":
            return np.dot(vecs, q)
        return ((vecs - q) ** 2).sum(1)

    def widen(self, params: dict[str, Any], selectivity: float) -> dict[str, Any]:
        grow = 1 / max(selectivity, 1e-6)
        return {**params, "efSearch": int(min(8192, np.ceil(params.get("efSearch", 64) * grow))),
                "nprobe": int(min(max(1, self.nlist), np.ceil(params.get("nprobe", 8) * grow)))}

    def tuning_families(self) -> dict[str, list[dict[str, Any]]]:
        out = {}
        if self._lists is not None:  # first: cheap to walk, and it bounds the graph's walk
            out["lists"] = [{"via": "lists", "nprobe": p, "k_factor": K_FACTOR}
                            for p in nprobe_grid(self.nlist)]
        if self._graph is not None:
            # A walk on fewer dimensions ranks its candidates more roughly: more of them are
            # re-scored (cheap next to the walk).
            # (A walk keeps at least the k x k_factor candidates it re-scores: settings whose
            # efSearch is below that would be the same walk.)
            kfs = REDUCED_K_FACTORS if self.reduce else GRAPH_K_FACTORS
            out["graph"] = [{"via": "graph", "efSearch": ef, "k_factor": kf}
                            for ef in EF_SEARCH for kf in kfs if ef >= 10 * kf or kf == kfs[0]]
        return out

    def tuning_grid(self) -> list[dict[str, Any]]:
        return [p for grid in self.tuning_families().values() for p in grid]

    def drop_unused(self) -> None:
        """Free the part (graph or lists) that no query kind's tuned settings search."""
        used = {self.search_params.get("via")} | {
            p.get("via") for p in (self.search_params.get("by_kind") or {}).values()}
        if len(self.parts) < 2:
            return
        if "lists" not in used:
            self._lists, self.nlist = None, 0
        elif "graph" not in used:
            self._graph, self.m, self.reduce, self._rotation = None, 0, 0, None
            self.search_params["via"] = "lists"
        self._params_cache.clear()

    # -- persistence ---------------------------------------------------------------------------

    def to_faiss(self) -> Any:
        return self._graph if self._graph is not None else self._lists

    def extra_arrays(self) -> dict[str, np.ndarray]:
        out = {"labels": self._labels.ids, "dead": self._labels.dead,
               "vectors": self._rows.array()}
        if self._rotation is not None and self._graph is not None:
            out["rotation"] = self._rotation
        if self._graph is not None and self._lists is not None:
            out["lists"] = faiss.serialize_index(self._lists)
        return out

    @classmethod
    def from_faiss(cls, index: Any, params: dict[str, Any], extra: dict[str, Path],
                   mmap: bool) -> GraphIndex:
        dim = int(params["dim"])
        vectors = np.load(extra["vectors"], mmap_mode="r" if mmap else None)
        labels = LabelMap(np.load(extra["labels"]), np.load(extra["dead"]))
        m = int(params["m"])
        graph, lists = (index, None) if m else (None, index)
        if "lists" in extra:
            lists = faiss.deserialize_index(np.load(extra["lists"]))
        # The graph holds every label, live or dead; the lists every live one, and dead ones
        # only when saved before removals left them at once.
        if vectors.shape != (len(labels), dim) or \
                (graph is not None and graph.ntotal != len(labels)) or \
                (lists is not None and not labels.live <= lists.ntotal <= len(labels)):
            raise ValueError(f"index of {index.ntotal} vectors, {len(labels)} labels "
                             f"({labels.live} live) and vectors {vectors.shape}")
        return cls(dim, params.get("metric", "ip"), m=m,
                   ef_construction=int(params["ef_construction"]),
                   nlist=int(params.get("nlist", 0)) if lists is not None else 0,
                   planned_n=int(params.get("planned_n", 0)),
                   reduce=int(params.get("reduce", 0)) if graph is not None else 0,
                   _graph=graph, _lists=lists, _labels=labels, _rows=Rows(dim, vectors),
                   _rotation=np.load(extra["rotation"]) if "rotation" in extra else None)

    def params(self) -> dict[str, Any]:
        return {**super().params(), "m": self.m, "ef_construction": self.ef_construction,
                "nlist": self.nlist, "codec": self.codec, "planned_n": self.planned_n,
                "reduce": self.reduce}

    def bytes_per_vector(self) -> float:
        return graph_bytes_per_vector(self.dim, self.m, self.nlist > 0, self.reduce)
