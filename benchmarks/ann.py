"""Approximate nearest-neighbour indexes side by side, on two kinds of queries, in one run.

Synthetic, well-clustered, L2-normalised base vectors with exact ground truth, and two query
sets: ``image`` queries drawn like the base vectors (image-to-image search; best cosine ~0.85)
and ``text`` queries that sit far from every base vector, as CLIP text embeddings sit far from
image embeddings (the modality gap; best cosine ~0.3). Methods:

* ``exact``     FAISS exact inner-product search (the baseline);
* ``ours``      ``indexers.choose_index`` under the memory budget, tuned to recall@10 >= 0.95 on
                a sample of the base vectors plus a separate sample of far queries, as a
                collection tunes on its own images and texts;
* ``autofaiss`` autofaiss ``build_index`` with the same memory budget;
* ``hnswlib``   hnswlib M=16, ef_construction=200, ef tuned to ours' recall per query kind.

For each: build seconds, bytes per vector, recall@10, single-query p50/p99 latency (ms) and
batch QPS; plus the cost of adding 1% more vectors to ours, against its full build.

    python benchmarks/ann.py --n 1000000 --dim 512 --json ann.json
    python benchmarks/ann.py --n 100000 --dim 256        # a quick run
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np

K = 10


def make_data(n: int, dim: int, nq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n_clusters = max(16, int(np.sqrt(n)))
    centers = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)

    def points(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 100_000):
            e = min(m, s + 100_000)
            x = centers[rng.integers(0, n_clusters, e - s)]
            x = x + rng.standard_normal((e - s, dim)).astype(np.float32) * (0.5 / np.sqrt(dim))
            out[s:e] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    gap = rng.standard_normal(dim).astype(np.float32)
    gap /= np.linalg.norm(gap)

    def far(m: int) -> np.ndarray:
        q = 0.3 * points(m) + 0.95 * gap
        q += rng.standard_normal(q.shape).astype(np.float32) * (0.3 / np.sqrt(dim))
        return q / np.linalg.norm(q, axis=1, keepdims=True)

    return {"xb": points(n), "extra": points(max(1, n // 100)), "image": points(nq),
            "text": far(nq), "tune_text": far(500)}


def exact_truth(xb: np.ndarray, xq: np.ndarray, k: int = K) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return faiss.knn(xq, xb, k, metric=faiss.METRIC_INNER_PRODUCT)[1]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    from indexers import neighbour_recall

    return neighbour_recall(found, truth, K)


def timed_queries(search_one: Callable[[np.ndarray], Any], search_batch: Callable[[np.ndarray],
                  np.ndarray], xq: np.ndarray, n_single: int) -> tuple[np.ndarray, float, float,
                                                                       float]:
    """(ids of the batch search, p50 ms, p99 ms, batch qps)."""
    for q in xq[:5]:
        search_one(q[None])  # warm up
    lat = []
    for q in xq[:n_single]:
        t = time.perf_counter()
        search_one(q[None])
        lat.append((time.perf_counter() - t) * 1000)
    t = time.perf_counter()
    found = search_batch(xq)
    qps = len(xq) / (time.perf_counter() - t)
    return found, float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), qps


def row(method: str, params: str, build_s: float, bpv: float, queries: str, rec: float,
        p50: float, p99: float, qps: float) -> dict[str, Any]:
    return {"method": method, "params": params, "build_s": round(build_s, 2),
            "bytes_per_vector": round(bpv, 1), "recall_at_10": round(rec, 4),
            "p50_ms": round(p50, 3), "p99_ms": round(p99, 3), "qps": round(qps, 1),
            "queries": queries}


def run_exact(data: dict[str, np.ndarray], truth: dict[str, np.ndarray], n_single: int
              ) -> list[dict[str, Any]]:
    import faiss

    xb = data["xb"]
    t = time.perf_counter()
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    build = time.perf_counter() - t
    rows = []
    for kind in ("image", "text"):
        found, p50, p99, qps = timed_queries(
            lambda q: index.search(q, K), lambda q: index.search(q, K)[1], data[kind], n_single)
        rows.append(row("exact", "IndexFlatIP", build, 4 * xb.shape[1], kind,
                        recall(found, truth[kind]), p50, p99, qps))
    return rows


def run_ours(data: dict[str, np.ndarray], truth: dict[str, np.ndarray], budget: int,
             n_single: int) -> tuple[list[dict[str, Any]], dict[str, float]]:
    from indexers import build_index, choose_index, exact_search, tune

    xb = data["xb"]
    n, dim = xb.shape
    ids = np.arange(n, dtype=np.int64)
    t = time.perf_counter()
    plan = choose_index(n, dim, budget)
    index = build_index(dim, plan.kind, **plan.params)
    if not index.is_trained:
        sample = np.random.default_rng(1).choice(n, plan.train_size(n), replace=False)
        index.train(xb[np.sort(sample)])
    index.add(ids, xb)
    built = time.perf_counter() - t
    own = xb[np.random.default_rng(2).choice(n, 500, replace=False)]
    tq = np.vstack([own, data["tune_text"]])
    kinds = ["image"] * len(own) + ["text"] * len(data["tune_text"])
    tune(index, tq, exact_search(xb, ids, tq, K)[1], k=K, target=0.95, groups=kinds)
    build = time.perf_counter() - t
    extra = data["extra"]
    t = time.perf_counter()
    index.add(np.arange(n, n + len(extra)), extra)
    add_s = time.perf_counter() - t
    index.remove(np.arange(n, n + len(extra)))
    desc = index.describe()
    params = f"{plan.describe()} {index.search_params}"
    rows = []
    for kind in ("image", "text"):
        found, p50, p99, qps = timed_queries(
            lambda q: index.search(q, K), lambda q: index.search(q, K)[1], data[kind], n_single)
        rows.append(row("ours", params, build, desc["bytes_per_vector"], kind,
                        recall(found, truth[kind]), p50, p99, qps))
    return rows, {"build_s": build, "build_without_tuning_s": built, "add_1pct_s": add_s,
                  "add_ratio": add_s / built}


def run_autofaiss(data: dict[str, np.ndarray], truth: dict[str, np.ndarray], budget: int,
                  n_single: int) -> list[dict[str, Any]]:
    os.environ.setdefault("TQDM_DISABLE", "1")  # autofaiss draws progress bars
    import faiss
    from autofaiss import build_index as af_build

    xb = data["xb"]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        index, infos = af_build(
            embeddings=xb, save_on_disk=False, max_index_memory_usage=f"{budget // 2**20}MB",
            current_memory_available=f"{max(budget * 4, 8 * 2**30) // 2**20}MB",
            metric_type="ip", verbose=40, index_path=os.path.join(tmp, "knn.index"),
            index_infos_path=os.path.join(tmp, "infos.json"))
        build = time.perf_counter() - t
    size = len(faiss.serialize_index(index))
    params = f"{infos.get('index_key', '?')} {infos.get('index_param', '')}".strip()
    rows = []
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    for kind in ("image", "text"):
        found, p50, p99, qps = timed_queries(
            lambda q: index.search(q, K), lambda q: index.search(q, K)[1], data[kind], n_single)
        rows.append(row("autofaiss", params, build, size / len(xb), kind,
                        recall(found, truth[kind]), p50, p99, qps))
    return rows


def run_hnswlib(data: dict[str, np.ndarray], truth: dict[str, np.ndarray],
                targets: dict[str, float], n_single: int) -> list[dict[str, Any]]:
    import hnswlib

    xb = data["xb"]
    n, dim = xb.shape
    threads = os.cpu_count() or 1
    t = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=dim)
    index.init_index(max_elements=n, M=16, ef_construction=200, random_seed=0)
    index.add_items(xb, np.arange(n), num_threads=threads)
    build = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "h.bin")
        index.save_index(path)
        bpv = os.path.getsize(path) / n
    rows = []
    for kind in ("image", "text"):
        xq, tr = data[kind], truth[kind]
        chosen, rec = None, 0.0
        for ef in (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096):
            index.set_ef(ef)
            rec = recall(index.knn_query(xq[:300], k=K, num_threads=threads)[0], tr[:300])
            chosen = ef
            if rec >= targets[kind]:
                break
        index.set_ef(chosen)
        found, p50, p99, qps = timed_queries(
            lambda q: index.knn_query(q, k=K, num_threads=1),
            lambda q: index.knn_query(q, k=K, num_threads=threads)[0], xq, n_single)
        rows.append(row("hnswlib", f"M=16 efC=200 ef={chosen}", build, bpv, kind,
                        recall(found, tr), p50, p99, qps))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=1000, help="per kind, for recall and QPS")
    ap.add_argument("--single", type=int, default=300, help="single queries timed per kind")
    ap.add_argument("--memory", default="2G", help="memory budget for ours and autofaiss")
    ap.add_argument("--skip", default="", help="comma-separated methods to skip")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from indexers import parse_bytes

    budget = parse_bytes(args.memory)
    skip = set(filter(None, args.skip.split(",")))
    t = time.perf_counter()
    data = make_data(args.n, args.dim, args.queries)
    truth = {k: exact_truth(data["xb"], data[k]) for k in ("image", "text")}
    sims = {k: float(np.mean(data["xb"][truth[k][:, 0]].__mul__(data[k]).sum(1)))
            for k in ("image", "text")}
    print(f"data: {args.n} x {args.dim}, {args.queries} queries per kind; mean best cosine: "
          f"image {sims['image']:.2f}, text {sims['text']:.2f} ({time.perf_counter() - t:.0f}s)",
          flush=True)
    rows: list[dict[str, Any]] = []
    if "exact" not in skip:
        rows += run_exact(data, truth, min(args.single, 50))
    ours, add = run_ours(data, truth, budget, args.single)
    rows += ours
    print(f"ours: incremental add of 1% ({len(data['extra'])} vectors) took "
          f"{add['add_1pct_s']:.2f}s = {100 * add['add_ratio']:.2f}% of the "
          f"{add['build_without_tuning_s']:.1f}s build (tuning took "
          f"{add['build_s'] - add['build_without_tuning_s']:.1f}s more)", flush=True)
    if "autofaiss" not in skip:
        rows += run_autofaiss(data, truth, budget, args.single)
    if "hnswlib" not in skip:
        targets = {r["queries"]: r["recall_at_10"] for r in ours}
        rows += run_hnswlib(data, truth, targets, args.single)
    cols = ["method", "queries", "recall_at_10", "p50_ms", "p99_ms", "qps", "build_s",
            "bytes_per_vector", "params"]
    print(" | ".join(cols))
    for r in sorted(rows, key=lambda r: (r["queries"], r["method"])):
        print(" | ".join(str(r[c]) for c in cols))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(rows, f, indent=1)
        with open(args.json_out.replace(".json", "") + ".add.json", "w") as f:
            json.dump(add, f, indent=1)


if __name__ == "__main__":
    main()
