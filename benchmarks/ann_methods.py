"""The methods ``benchmarks/ann.py`` compares, each built once and measured as a curve.

Every method is built, then walked through its search parameter (hnswlib's ``ef``, FAISS's
``efSearch`` or ``nprobe``) from cheap to expensive; each point is recall@10 over all queries
of a kind (one batch) and the median time of one query at a time on one thread, both as CPU
time of the searching thread (``p50_ms``) and as wall time (``wall_p50_ms``). The machine is
shared and its two cores may share caches, so even CPU time moves with what else runs: every
point of every method is timed in rounds (``timed_rounds``: a block of queries per point per
round, points in a shuffled order each round), so that the load weighs on all of them alike.
Build time is wall time with every core, plus the process's CPU time.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

K = 10
THREADS = os.cpu_count() or 1
EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
NPROBES = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536,
           2048, 4096)
STOP_RECALL = 0.995  # a curve ends once it reaches this
STOP_MS = 60.0  # ... or once one query takes this long


@dataclass
class Built:
    """A built method: how to search it at one setting, and what its build cost."""

    name: str
    search: Callable[[np.ndarray, Any], np.ndarray]  # (queries, setting) -> ids (nq, K)
    settings: Callable[[str], list[Any]]  # query kind -> settings, cheapest first
    label: Callable[[Any], str]
    build_s: float
    build_cpu_s: float
    bytes_per_vector: float
    info: dict[str, Any] = field(default_factory=dict)


@contextmanager
def build_timer() -> Iterator[dict[str, float]]:
    out: dict[str, float] = {}
    t, c = time.perf_counter(), time.process_time()
    yield out
    out["wall"], out["cpu"] = time.perf_counter() - t, time.process_time() - c


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    from indexers import neighbour_recall

    return neighbour_recall(found, truth, K)


def walk(built: Built, kind: str, xq: np.ndarray, truth: np.ndarray) -> list[dict[str, Any]]:
    """Recall of each setting, cheapest first, until it reaches STOP_RECALL (or a batch
    search costs STOP_MS a query on all cores)."""
    import faiss

    faiss.omp_set_num_threads(THREADS)
    out = []
    for setting in built.settings(kind):
        t = time.perf_counter()
        found = built.search(xq, setting)
        per_query_ms = 1000 * (time.perf_counter() - t) * THREADS / len(xq)
        out.append({"setting": built.label(setting), "raw": setting,
                    "recall_at_10": round(recall(found, truth), 4)})
        if setting is not None and (out[-1]["recall_at_10"] >= STOP_RECALL
                                    or per_query_ms >= STOP_MS):
            break
    return out


def timed_rounds(points: list[tuple[Built, dict[str, Any]]], xq: np.ndarray, n: int,
                 block: int = 20, seed: int = 0) -> None:
    """Time one query at a time on one thread for every (method, point), ``block`` queries
    per point per round, in a shuffled order each round; adds p50/p99 (CPU ms) and the wall
    p50 to each point."""
    import faiss

    rng = np.random.default_rng(seed)
    cpu: list[list[float]] = [[] for _ in points]
    wall: list[list[float]] = [[] for _ in points]
    faiss.omp_set_num_threads(1)
    try:
        for built, p in points:  # warm up
            built.search(xq[:1], p["raw"])
        for lo in range(0, n, block):
            for i in rng.permutation(len(points)):
                built, p = points[i]
                for q in xq[lo:min(n, lo + block)]:
                    t, c = time.perf_counter(), time.thread_time()
                    built.search(q[None], p["raw"])
                    cpu[i].append(time.thread_time() - c)
                    wall[i].append(time.perf_counter() - t)
    finally:
        faiss.omp_set_num_threads(THREADS)
    for (_, p), c, w in zip(points, cpu, wall, strict=True):
        p.update({"p50_ms": round(1000 * float(np.median(c)), 4),
                  "p99_ms": round(1000 * float(np.percentile(c, 99)), 4),
                  "wall_p50_ms": round(1000 * float(np.median(w)), 4)})


def release(built: Built | None) -> None:
    del built
    gc.collect()


# -- the methods ---------------------------------------------------------------------------------

def build_hnswlib(xb: np.ndarray, **_: Any) -> Built:
    import hnswlib

    n, dim = xb.shape
    with build_timer() as t:
        index = hnswlib.Index(space="ip", dim=dim)
        index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
        index.add_items(xb, np.arange(n), num_threads=THREADS)
    with tempfile.TemporaryDirectory() as tmp:
        index.save_index(os.path.join(tmp, "h.bin"))
        bpv = os.path.getsize(os.path.join(tmp, "h.bin")) / n

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        index.set_ef(ef)
        return index.knn_query(q, k=K, num_threads=1 if len(q) == 1 else THREADS)[0]
    return Built("hnswlib", search, lambda _k: list(EFS), lambda ef: f"ef={ef}",
                 t["wall"], t["cpu"], bpv, {"params": "M=16 efC=200"})


def build_faiss_hnsw(xb: np.ndarray, **_: Any) -> Built:
    import faiss

    n, dim = xb.shape
    with build_timer() as t:
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 200
        index.add(xb)
    bpv = len(faiss.serialize_index(index)) / n

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        return index.search(q, K, params=faiss.SearchParametersHNSW(efSearch=ef))[1]
    return Built("faiss-hnsw", search, lambda _k: list(EFS), lambda ef: f"efSearch={ef}",
                 t["wall"], t["cpu"], bpv, {"params": "IndexHNSWFlat M=32 efC=200"})


def build_faiss_ivf(xb: np.ndarray, **_: Any) -> Built:
    import faiss

    from indexers.choose import nlist_for

    n, dim = xb.shape
    nlist = nlist_for(n)
    with build_timer() as t:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.max_points_per_centroid = 64
        rows = np.random.default_rng(1).choice(n, min(n, 64 * nlist), replace=False)
        index.train(xb[np.sort(rows)])
        index.add(xb)

    def search(q: np.ndarray, nprobe: int) -> np.ndarray:
        return index.search(q, K, params=faiss.SearchParametersIVF(nprobe=nprobe))[1]
    return Built("faiss-ivf", search, lambda _k: [p for p in NPROBES if p <= nlist],
                 lambda p: f"nprobe={p}", t["wall"], t["cpu"], 4.0 * dim + 8,
                 {"params": f"IVF{nlist},Flat"})


def build_autofaiss(xb: np.ndarray, budget: int, **_: Any) -> Built:
    os.environ.setdefault("TQDM_DISABLE", "1")  # autofaiss draws progress bars
    import faiss
    from autofaiss import build_index as af_build

    n = len(xb)
    with tempfile.TemporaryDirectory() as tmp, build_timer() as t:
        index, infos = af_build(
            embeddings=xb, save_on_disk=False, max_index_memory_usage=f"{budget // 2**20}MB",
            current_memory_available=f"{max(budget * 4, 8 * 2**30) // 2**20}MB",
            metric_type="ip", verbose=40, index_path=os.path.join(tmp, "knn.index"),
            index_infos_path=os.path.join(tmp, "infos.json"))
    faiss.omp_set_num_threads(THREADS)  # autofaiss leaves its own setting
    key, own = str(infos.get("index_key", "?")), str(infos.get("index_param", ""))
    name = "nprobe" if "IVF" in key else "efSearch"
    space = faiss.ParameterSpace()

    def search(q: np.ndarray, setting: str) -> np.ndarray:
        space.set_index_parameters(index, setting)
        return index.search(q, K)[1]

    def settings(_kind: str) -> list[str]:
        grid = NPROBES if name == "nprobe" else EFS
        return [own] + [f"{name}={v}" for v in grid]
    return Built("autofaiss", search, settings, lambda s: s, t["wall"], t["cpu"],
                 len(faiss.serialize_index(index)) / n, {"params": f"{key} ({own})"})


def ours_settings(index: Any, kind: str) -> list[Any]:
    """The tuned setting first (``None``: the router picks), then the grid of the part the
    tuning chose for this kind."""
    chosen = (index.search_params.get("by_kind") or {}).get(kind) or index.search_params
    families = index.tuning_families()
    grid = families.get(chosen.get("via", ""), next(iter(families.values())))
    # One curve: the tuned candidates-per-result held, the breadth of the search walked.
    return [None, *(g for g in grid if g.get("k_factor") == chosen.get("k_factor"))]


def ours_label(setting: Any) -> str:
    if setting is None:
        return "tuned"
    return " ".join(f"{k}={v}" for k, v in setting.items() if k != "k_factor")
