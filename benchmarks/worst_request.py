"""The most expensive search the query builder lets through, and what it costs.

Builds (or reuses, with ``--collection``) a collection of ~12,000 generated captions embedded by
the demo model, then runs each request below in its own child process, in-process there: the
child opens the collection, runs a cheap search to load the model and the index, then times the
request and reads its peak RSS. Reported per request: wall time, its ratio to the plain k=10
search of the same run, the child's peak RSS and how much the request added to it. A request
the builder refuses is reported with its one-line message.

    python benchmarks/worst_request.py [--n 12000] [--collection DIR] [--only NAME ...]
    python benchmarks/worst_request.py --list       # the requests and their parameters

The "worst" requests combine everything allowed at once: the most re-ranking stages at the
largest depth re-ranking allows, hybrid keyword fusion, the most query terms (texts never
searched before, so the encoder runs), and many filters that keep every item.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_TEXTS = 12_000


def requests() -> dict[str, dict[str, Any]]:
    """Named requests, as keyword arguments of ``Collection.search`` (target texts)."""
    from retrieval.search import builder

    max_k = builder.MAX_K
    depth = getattr(builder, "MAX_RERANK_DEPTH", max_k)
    stages = getattr(builder, "MAX_STAGES", 62)
    words = ("red", "green", "blue", "yellow", "purple", "orange", "circle", "square",
             "triangle", "star", "cross", "small", "large", "left", "right", "center")
    terms = [{"kind": "text", "value": f"{words[i % 16]} {words[(i * 7) % 16]} shape {i}",
              "weight": 1.0 + (i % 3)} for i in range(getattr(builder, "MAX_TERMS", 32))]
    filters = ["meta.lang = en", "meta.n >= 0", "meta.n < 1000000"] * 10  # keep every text
    full = "exact,mmr:0.7,dedup:0.95"
    return {
        "plain k=10": {"text": "a red circle", "k": 10},
        "plain k=max": {"text": "a red circle", "k": max_k},
        "plain k=max offset=max": {"text": "a red circle", "k": max_k,
                                   "offset": builder.MAX_OFFSET},
        "hybrid k=max offset=max": {"text": "a red circle", "k": max_k,
                                    "offset": builder.MAX_OFFSET, "hybrid": True},
        "exact,mmr:0.7 k=10000": {"text": "a red circle", "k": 10_000, "rerank": "exact,mmr:0.7"},
        "62 x mmr:0.5 k=10000": {"text": "a red circle", "k": 10_000,
                                 "rerank": ",".join(["mmr:0.5"] * 62)},
        "exact,mmr:0.7 at max depth": {"text": "a red circle", "k": depth,
                                       "rerank": "exact,mmr:0.7"},
        f"{full} at max depth": {"text": "a red circle", "k": depth, "rerank": full},
        "worst: all stages, max depth, hybrid, 32 new terms, 30 filters": {
            "terms": terms, "k": depth, "hybrid": True, "filters": filters,
            "rerank": ",".join(["exact", "mmr:0.7", "dedup:0.95", "mmr:0.5"][:stages])},
    }


def captions(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` distinct generated scene captions (with a serial number: many scenes repeat),
    with metadata for filters to test."""
    from retrieval.training.synthetic import random_scene

    rng = random.Random(seed)
    return [{"text": f"{random_scene(rng).caption()} number {i}", "lang": "en", "n": i}
            for i in range(n)]


def build(folder: Path, n: int) -> None:
    from retrieval import Collection

    t = time.perf_counter()
    with Collection(folder, model="demo") as col:
        col.add_texts(captions(n))
    print(f"built {n} texts in {time.perf_counter() - t:.1f} s at {folder}", flush=True)


def child(folder: str, name: str) -> None:
    """Run one request in this process and print one JSON line about it."""
    from retrieval import Collection, RetrievalError

    kwargs = requests()[name]
    with Collection(folder) as col:
        col.search("warm up", k=10, target="text")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        try:
            hits = col.search(target="text", **kwargs)
            outcome = f"{len(hits)} hits"
        except RetrievalError as exc:
            outcome = f"refused: {exc}"
        took = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"name": name, "s": took, "peak_mb": peak / 1024,
                      "added_mb": (peak - before) / 1024, "outcome": outcome}))


def measure(folder: Path, name: str, timeout: float) -> dict[str, Any]:
    try:
        out = subprocess.run([sys.executable, __file__, "--child", str(folder), name],
                             capture_output=True, text=True, timeout=timeout, check=True)
    except subprocess.TimeoutExpired:
        return {"name": name, "s": float("inf"), "peak_mb": float("nan"),
                "added_mb": float("nan"), "outcome": f"still running after {timeout:g} s"}
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=N_TEXTS)
    ap.add_argument("--collection", type=Path, help="reuse (or build once) this collection")
    ap.add_argument("--only", action="append", help="a request's name (repeatable; default all)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.list:
        for name, kwargs in requests().items():
            print(f"{name}: {json.dumps(kwargs)[:300]}")
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.collection or Path(tmp) / "col"
        if not (folder / "catalog.sqlite").exists():
            build(folder, args.n)
        names = args.only or list(requests())
        base = measure(folder, "plain k=10", args.timeout)["s"]
        print(f"{'request':<64} {'time':>9} {'ratio':>8} {'peak RSS':>9} {'added':>8}  outcome")
        for name in names:
            r = measure(folder, name, args.timeout)
            print(f"{name:<64} {r['s']:>8.3f}s {r['s'] / base:>7.1f}x {r['peak_mb']:>7.0f}MB "
                  f"{r['added_mb']:>6.0f}MB  {r['outcome'][:90]}", flush=True)


if __name__ == "__main__":
    main()
