"""Approximate nearest-neighbour indexes side by side, per data regime and query kind, in one run.

Data regimes (``--regimes``, all by default; ``benchmarks/regimes.py``): ``tight`` clusters,
``overlap`` (soft clusters on a curved manifold of intrinsic dimension ~20 with a power-law
spectrum), ``uniform`` (nearly uniform on the sphere), and ``demo``: real vectors of the demo
model (image vectors of generated scenes, caption vectors as text queries; 96 dimensions,
``benchmarks/demo_vectors.py``, at most as many as are cached). Each has ``image`` queries
(drawn like the base vectors) and ``text`` queries (across a modality gap); exact ground truth.

Methods, each a recall-vs-latency curve (``benchmarks/ann_methods.py``):

* ``ours``: what a collection does: ``choose_index`` under the memory budget, the parts of the
  graph index measured on a sample (``indexers.select``), built, then tuned to recall@10 >=
  0.95 per query kind on separate tuning queries (500 of each kind, as a collection tunes on
  its own images and texts); its curve walks the part the tuning chose for each kind, and its
  first point (``tuned``) is what a search gets with no parameters (the router at work);
* ``hnswlib`` M=16 ef_construction=200; ``faiss-hnsw`` IndexHNSWFlat M=32 efConstruction=200;
  ``faiss-ivf`` IVF-Flat with 4 sqrt(n) lists; ``autofaiss`` with the same memory budget
  (its own tuned setting first, then its main parameter swept).

Latency is one query at a time on one thread, as the CPU time of the searching thread (the
machine may be shared); recall is over all queries of the kind. Results: a JSON file and a PNG
of the curves (``--out``, default ``benchmarks/results/ann-regimes-<n>``), and a table of every
method's latency at recall@10 = 0.95 (interpolated between the two points around it).

    python benchmarks/ann.py --n 200000 --dim 512
    python benchmarks/ann.py --n 20000 --regimes tight,overlap --skip autofaiss   # quick
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import ann_methods as am
import regimes as rg

TARGET = 0.95
KINDS = ("image", "text")
ALL_REGIMES = (*rg.REGIMES, "demo")
PEERS = {"hnswlib": am.build_hnswlib, "faiss-hnsw": am.build_faiss_hnsw,
         "faiss-ivf": am.build_faiss_ivf, "autofaiss": am.build_autofaiss}


def regime_data(name: str, n: int, dim: int, nq: int, cache: Path) -> dict[str, np.ndarray]:
    if name == "demo":
        import demo_vectors

        data = demo_vectors.make(cache, 200_000, nq)
        return {**data, "xb": np.ascontiguousarray(data["xb"][:n])}
    reg = rg.regime(name, n, dim)
    rng = np.random.default_rng([7, rg.REGIMES.index(name)])
    return {"xb": rg.base_vectors(reg, n), "image": reg.queries("image", nq, rng),
            "text": reg.queries("text", nq, rng), "tune_image": reg.queries("image", 500, rng),
            "tune_text": reg.queries("text", 500, rng)}


def exact_truth(xb: np.ndarray, xq: np.ndarray) -> np.ndarray:
    import faiss

    faiss.omp_set_num_threads(am.THREADS)
    return faiss.knn(xq, xb, am.K, metric=faiss.METRIC_INNER_PRODUCT)[1]


def build_ours(xb: np.ndarray, budget: int, data: dict[str, np.ndarray]) -> am.Built:
    from indexers import build_index, choose_index, exact_search, select_parts, tune
    from indexers.select import MEASURE_FROM

    n, dim = xb.shape
    ids = np.arange(n, dtype=np.int64)
    tq = np.vstack([data["tune_image"], data["tune_text"]])
    kinds = ["image"] * len(data["tune_image"]) + ["text"] * len(data["tune_text"])
    stages: dict[str, float] = {}
    with am.build_timer() as t:
        s = time.perf_counter()
        plan = choose_index(n, dim, budget)
        if plan.kind == "graph" and n > MEASURE_FROM:
            plan = select_parts(plan, xb, {"image": data["tune_image"],
                                           "text": data["tune_text"]}, n)
        stages["select"] = time.perf_counter() - s
        s = time.perf_counter()
        index = build_index(dim, plan.kind, **plan.params)
        if not index.is_trained:
            rows = np.random.default_rng(1).choice(n, plan.train_size(n), replace=False)
            index.train(xb[np.sort(rows)])
        for lo in range(0, n, 100_000):
            index.add(ids[lo:lo + 100_000], xb[lo:lo + 100_000])
        stages["build"] = time.perf_counter() - s
        s = time.perf_counter()
        tune(index, tq, exact_search(xb, ids, tq, am.K)[1], k=am.K, target=TARGET, groups=kinds)
        index.drop_unused()
        stages["tune"] = time.perf_counter() - s
    extra = xb[: max(1, n // 100)] + np.random.default_rng(9).standard_normal(
        (max(1, n // 100), dim)).astype(np.float32) * np.float32(0.1 / np.sqrt(dim))
    extra /= np.linalg.norm(extra, axis=1, keepdims=True)
    s = time.perf_counter()
    index.add(np.arange(n, n + len(extra)), extra)
    add_s = time.perf_counter() - s
    index.remove(np.arange(n, n + len(extra)))

    def search(q: np.ndarray, setting: Any) -> np.ndarray:
        return index.search(q, am.K, params=setting)[1]
    info = {"plan": plan.describe(), "tier": plan.tier, "reason": plan.reason,
            "measured_ms": plan.measured, "stages_s": stages, "describe": index.describe(),
            "add_1pct_s": add_s, "add_ratio": add_s / max(1e-9, stages["build"])}
    info["describe"].pop("routing", None)
    return am.Built("ours", search, lambda kind: am.ours_settings(index, kind), am.ours_label,
                    t["wall"], t["cpu"], index.bytes_per_vector(), info)


def at_target(points: list[dict[str, Any]], key: str = "p50_ms") -> dict[str, Any] | None:
    """Latency at recall@10 = TARGET, interpolated (in log time) between the points around it;
    the first point's when it is already above."""
    pts = [p for p in points if p["setting"] != "tuned"]
    for i, p in enumerate(pts):
        if p["recall_at_10"] >= TARGET:
            if i == 0 or pts[i - 1]["recall_at_10"] >= p["recall_at_10"]:
                return {"ms": p[key], "exact_point": p}
            a = pts[i - 1]
            f = (TARGET - a["recall_at_10"]) / (p["recall_at_10"] - a["recall_at_10"])
            ms = math.exp(math.log(a[key]) + f * (math.log(p[key]) - math.log(a[key])))
            return {"ms": round(ms, 4), "exact_point": p}
    return None


def run_regime(name: str, args: argparse.Namespace, budget: int) -> dict[str, Any]:
    t = time.perf_counter()
    data = regime_data(name, args.n, args.dim, args.queries, Path(args.cache))
    xb = data["xb"]
    truth = {k: exact_truth(xb, data[k]) for k in KINDS}
    best = {k: float(np.mean(np.sum(xb[truth[k][:, 0]] * data[k], 1))) for k in KINDS}
    out: dict[str, Any] = {"regime": name, "n": len(xb), "dim": xb.shape[1],
                           "queries": args.queries, "mean_best_cosine": best, "methods": {}}
    print(f"[{name}] {len(xb)} x {xb.shape[1]}, mean best cosine image {best['image']:.3f} "
          f"text {best['text']:.3f} ({time.perf_counter() - t:.0f} s)", flush=True)
    builders = {"ours": lambda x, **kw: build_ours(x, budget, data), **PEERS}
    built: list[am.Built] = []
    for method, build in builders.items():
        if method in args.skip:
            continue
        b = build(xb, budget=budget)
        built.append(b)
        out["methods"][method] = {"build_s": round(b.build_s, 2),
                                  "build_cpu_s": round(b.build_cpu_s, 2),
                                  "bytes_per_vector": round(b.bytes_per_vector, 1), **b.info,
                                  "curves": {}}
        print(f"[{name}] {method}: build {b.build_s:.0f} s", flush=True)
    for kind in KINDS:
        points = []
        for b in built:
            curve = am.walk(b, kind, data[kind], truth[kind])
            out["methods"][b.name]["curves"][kind] = curve
            points += [(b, p) for p in curve]
        am.timed_rounds(points, data[kind], args.single)
        for b in built:
            curve = out["methods"][b.name]["curves"][kind]
            for p in curve:
                p.pop("raw", None)
            print(f"[{name}] {b.name} {kind}: " + " ".join(
                f"{p['recall_at_10']:.3f}@{p['p50_ms']:.2f}" for p in curve), flush=True)
    del built
    am.release(None)
    out["summary"] = summary(out)
    return out


def summary(res: dict[str, Any]) -> dict[str, Any]:
    """Per query kind: each method's ms at the target, and whether ours meets the targets."""
    out: dict[str, Any] = {}
    methods = res["methods"]
    for kind in KINDS:
        row = {m: at_target(r["curves"][kind]) for m, r in methods.items()}
        cell: dict[str, Any] = {m: (v["ms"] if v else None) for m, v in row.items()}
        if "ours" in methods:
            tuned = methods["ours"]["curves"][kind][0]
            cell["ours_tuned"] = {k: tuned[k] for k in ("recall_at_10", "p50_ms")}
            graphs = [cell.get(m) for m in ("hnswlib", "faiss-hnsw") if m in methods]
            best = min((g for g in graphs if g is not None), default=None)
            ours = cell.get("ours")
            cell["best_graph_peer_ms"] = best
            cell["ours_vs_best_graph_peer"] = round(ours / best, 3) if ours and best else None
            cell["latency_target_met"] = bool(ours is not None and (best is None or ours <= best))
        out[kind] = cell
    if "ours" in methods and "hnswlib" in methods:
        out["build_vs_hnswlib"] = round(methods["ours"]["build_s"] /
                                        methods["hnswlib"]["build_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--regimes", default=",".join(ALL_REGIMES),
                    help=f"comma-separated, of {', '.join(ALL_REGIMES)}")
    ap.add_argument("--queries", type=int, default=1000, help="per kind, for recall")
    ap.add_argument("--single", type=int, default=200, help="single queries timed per point")
    ap.add_argument("--memory", default="4G", help="memory budget for ours and autofaiss")
    ap.add_argument("--skip", default="", help="comma-separated methods to skip")
    ap.add_argument("--cache", default="/work/bench-cache", help="demo vectors' cache folder")
    ap.add_argument("--out", help="path prefix of the .json and .png results")
    args = ap.parse_args()
    args.skip = set(filter(None, args.skip.split(",")))
    from indexers import parse_bytes

    budget = parse_bytes(args.memory)
    out = Path(args.out or Path(__file__).parent / "results" / f"ann-regimes-{args.n}")
    results: dict[str, Any] = {"args": {k: sorted(v) if isinstance(v, set) else v
                                        for k, v in vars(args).items()},
                               "cores": os.cpu_count(), "regimes": []}
    for name in filter(None, args.regimes.split(",")):
        results["regimes"].append(run_regime(name, args, budget))
        results["load_average"] = os.getloadavg()
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
    import ann_report

    print(ann_report.table(results))
    ann_report.plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    main()
