"""Vector indexes over FAISS: float32 vectors and int64 ids in, ids and scores out.

This package is the engine's lowest layer. It knows nothing about images, texts or catalogs:
callers give it vectors with stable int64 ids and get back the ids of the nearest ones.

    plan = choose_index(n, dim, memory_budget)      # which index, and why
    plan = select_parts(plan, sample, queries, n)   # a graph's parts, measured on a sample
    index = build_index(dim, plan.kind, **plan.params)
    index.train(sample); index.add(ids, vectors)
    tune(index, queries, exact_search(...)[1])      # search parameters to a recall target
    scores, ids = index.search(queries, k, allow=allowed_ids)
    save_index(index, folder, "image", meta); load_index(folder, "image")

Collections too large for memory: ``build_ondisk(vectors_npy, ids, nlist=...)`` builds the
on-disk IVF tier in parallel shards (``indexers.ondisk``); ``choose_index`` picks it when not
even 4-bit codes fit the budget.
"""

from .base import VectorIndex, threads_for
from .choose import DEFAULT_MEMORY_BUDGET, IndexPlan, choose_index, needs_rebuild, parse_bytes
from .errors import IndexerError, IndexFileError
from .flat import FlatIndex
from .graph import GraphIndex
from .hnsw import HNSWIndex
from .ivf import IVFIndex
from .kinds import build_index, index_class, register
from .ondisk import OnDiskIVFIndex, build_ondisk
from .persistence import load_index, read_manifest, save_index
from .select import select_parts
from .tune import exact_search, neighbour_recall, tune

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "FlatIndex",
    "GraphIndex",
    "HNSWIndex",
    "IVFIndex",
    "IndexFileError",
    "IndexPlan",
    "IndexerError",
    "OnDiskIVFIndex",
    "VectorIndex",
    "build_index",
    "build_ondisk",
    "choose_index",
    "exact_search",
    "index_class",
    "load_index",
    "needs_rebuild",
    "neighbour_recall",
    "parse_bytes",
    "read_manifest",
    "register",
    "save_index",
    "select_parts",
    "threads_for",
    "tune",
]
