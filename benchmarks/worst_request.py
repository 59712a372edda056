"""The most expensive search the query builder lets through, and what it costs.

Builds (or reuses, with ``--collection``) a collection of ~12,000 generated captions embedded by
the demo model, then runs each request below in its own child process, in-process there: the
child opens the collection, runs a cheap search to load the model and the index, then times the
request and reads its peak RSS. Reported per request: wall time, its ratio to a plain k=10
search in the same run (median of 21), the child's peak RSS and how much the request added to
it. A request the builder refuses is reported with its one-line message.

    python benchmarks/worst_request.py [--n 12000] [--collection DIR] [--only NAME ...]
    python benchmarks/worst_request.py --list       # the requests and their parameters
    python benchmarks/worst_request.py --stages     # the stages alone, at d=512

The "worst" request combines everything allowed at once: every kind of re-ranking stage (the
model stage re-embedding its largest top N with the demo model as the second model) at the
largest depth re-ranking allows, hybrid keyword fusion, the most query terms (the most image
terms, each a 50-megapixel PNG, the service's upload limit; the rest texts never searched
before, so the encoder runs), and many filters that keep every item. Requests the
builder now refuses (62 stages, re-ranking at k=10000) are listed too: run with an older
checkout on ``PYTHONPATH`` to measure them there.

The demo model's vectors have 96 dimensions; ``--stages`` times the re-ranking stages alone on
random unit vectors of 512 (ViT-B-32's width) at the largest candidate count and depth, beside
MMR as it was first written (a C x C similarity matrix), in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

N_TEXTS = 12_000
BASE = "plain k=10"


def requests(image: str = "50mp.png") -> dict[str, dict[str, Any]]:
    """Named requests, as keyword arguments of ``Collection.search`` (target texts);
    ``image`` is the path of a large image (see :func:`large_image`)."""
    from retrieval.search import builder

    max_k = builder.MAX_K
    depth = getattr(builder, "MAX_RERANK_DEPTH", max_k)
    max_stages = getattr(builder, "MAX_STAGES", 62)
    words = ("red", "green", "blue", "yellow", "purple", "orange", "circle", "square",
             "triangle", "star", "cross", "small", "large", "left", "right", "center")
    fresh = os.getpid()  # the text cache persists: new words in every process
    terms = [{"kind": "text", "value": f"{words[i % 16]} {words[(i * 7) % 16]} {fresh} {i}",
              "weight": 1.0 + (i % 3)} for i in range(builder.MAX_TERMS)]
    images = getattr(builder, "MAX_IMAGE_TERMS", builder.MAX_TERMS)
    big = [{"kind": "image", "value": image, "weight": 0.5}] * images
    mixed = big + terms[:builder.MAX_TERMS - images]
    filters = ["meta.lang = en", "meta.n >= 0", "meta.n < 1000000"] * 10  # keep every text
    full = "exact,mmr:0.7,dedup:0.95"
    every = ["exact", "mmr:0.7", "dedup:0.95", f"model:demo:{depth}"][:max_stages]
    return {
        "plain k=10": {"text": "a red circle", "k": 10},
        "plain k=max": {"text": "a red circle", "k": max_k},
        "plain k=max offset=max": {"text": "a red circle", "k": max_k,
                                   "offset": builder.MAX_OFFSET},
        "hybrid at max depth": {"text": "a red circle", "k": depth, "hybrid": True},
        "exact,mmr:0.7 k=10000": {"text": "a red circle", "k": 10_000, "rerank": "exact,mmr:0.7"},
        "62 x mmr:0.5 k=10000": {"text": "a red circle", "k": 10_000,
                                 "rerank": ",".join(["mmr:0.5"] * 62)},
        "exact,mmr:0.7 at max depth": {"text": "a red circle", "k": depth,
                                       "rerank": "exact,mmr:0.7"},
        f"{full} at max depth": {"text": "a red circle", "k": depth, "rerank": full},
        "32 new text terms": {"terms": terms, "k": 10},
        f"{images} image terms of 50 megapixels": {"terms": big, "k": 10},
        "worst but the model stage": {
            "terms": mixed, "k": depth, "hybrid": True, "filters": filters, "rerank": full},
        f"worst: 4 stages, max depth, hybrid, {images} images + {32 - images} texts, "
        "30 filters": {"terms": mixed, "k": depth, "hybrid": True, "filters": filters,
                       "rerank": ",".join(every)},
        "the worst with a deadline 1 s away": {
            "terms": mixed, "k": depth, "hybrid": True, "filters": filters,
            "rerank": ",".join(every), "timeout": 1.0},
    }


def captions(n: int, seed: int = 7) -> list[dict[str, Any]]:
    """``n`` distinct generated scene captions (with a serial number: many scenes repeat),
    with metadata for filters to test."""
    from retrieval.training.synthetic import random_scene

    rng = random.Random(seed)
    return [{"text": f"{random_scene(rng).caption()} number {i}", "lang": "en", "n": i}
            for i in range(n)]


def large_image(path: Path) -> Path:
    """A 50-megapixel PNG (the service's upload limit) of one colour: 158 kB to send."""
    if not path.exists():
        from PIL import Image

        Image.new("RGB", (10_000, 5_000), (200, 30, 30)).save(path, "PNG")
    return path


def build(folder: Path, n: int) -> None:
    from retrieval import Collection

    t = time.perf_counter()
    with Collection(folder, model="demo") as col:
        col.add_texts(captions(n))
    print(f"built {n} texts in {time.perf_counter() - t:.1f} s at {folder}", flush=True)


def child(folder: str, name: str) -> None:
    """Run one request in this process and print one JSON line about it."""
    from retrieval import Collection, RetrievalError

    kwargs = requests(str(large_image(Path(folder).parent / "50mp.png")))[name]
    with Collection(folder) as col:
        col.search("warm up", k=10, target="text")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t = time.perf_counter()
        if "timeout" in kwargs:  # a deadline from the moment the search starts
            kwargs["deadline"] = time.monotonic() + kwargs.pop("timeout")
        try:
            hits = col.search(target="text", **kwargs)
            outcome = f"{len(hits)} hits"
        except RetrievalError as exc:
            outcome = f"{type(exc).__name__}: {exc}"
        took = time.perf_counter() - t
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if name == BASE:  # the ratios' baseline: the median of 21 runs
            times = [took]
            for _ in range(20):
                t = time.perf_counter()
                col.search(target="text", **kwargs)
                times.append(time.perf_counter() - t)
            took = statistics.median(times)
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


def stages(c: int, k: int, d: int = 512, seed: int = 0) -> None:
    """The stages alone on ``c`` random unit vectors of ``d``, ``k`` picks, and the first MMR."""
    import numpy as np

    from retrieval.search.query import Query, Term
    from retrieval.search.rerank import MMR, Dedup, Exact, RerankContext

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from rerank_reference import mmr_reference  # the stage as first written

    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(c, d)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    q = vecs[0].copy()
    ctx = RerankContext(Query([Term("vector", q)], k=k), q, k, lambda ids: vecs[ids],
                        lambda _spec: None)  # type: ignore[arg-type, return-value]
    print(f"stages alone: {c} candidates of {d} dimensions, k={k}")
    base = None
    for name, run in (("exact", lambda: Exact().apply(ctx, _cands(c))),
                      ("mmr:0.7", lambda: MMR(0.7).apply(ctx, _cands(c))),
                      ("dedup:0.95", lambda: Dedup(0.95).apply(ctx, _cands(c))),
                      ("mmr:0.7 as first written (C x C)",
                       lambda: mmr_reference(vecs, q, k, 0.7))):
        t = time.perf_counter()
        run()
        took = time.perf_counter() - t
        base = base or took
        print(f"  {name:<36} {took:8.3f} s  {took / base:7.1f}x exact")


def _cands(c: int) -> list[Any]:
    from retrieval.search.rerank import Candidate

    return [Candidate(i, 0.0) for i in range(c)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=N_TEXTS)
    ap.add_argument("--collection", type=Path, help="reuse (or build once) this collection")
    ap.add_argument("--only", action="append", help="a request's name (repeatable; default all)")
    ap.add_argument("--timeout", type=float, default=300, help="seconds per request")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--stages", action="store_true", help="time the stages alone at d=512")
    ap.add_argument("--child", nargs=2, metavar=("FOLDER", "NAME"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.stages:
        from retrieval.search.builder import MAX_RERANK_DEPTH
        from retrieval.search.rerank import MAX_CANDIDATES

        stages(MAX_CANDIDATES, MAX_RERANK_DEPTH)
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
        base = measure(folder, BASE, args.timeout)["s"]
        print(f"{'request':<64} {'time':>9} {'ratio':>8} {'peak RSS':>9} {'added':>8}  outcome")
        for name in names:
            r = measure(folder, name, args.timeout)
            print(f"{name:<64} {r['s']:>8.3f}s {r['s'] / base:>7.1f}x {r['peak_mb']:>7.0f}MB "
                  f"{r['added_mb']:>6.0f}MB  {r['outcome'][:90]}", flush=True)


if __name__ == "__main__":
    main()
