"""Query-layer quality and cost: plain, filtered, hybrid and re-ranked searches, same run.

On freshly generated demo images (``retrieval.training.synthetic``, never seen in training), indexed
with the demo model, every "a {colour} {shape}" query runs in each mode. Reported per mode:
precision@10 (share of the top 10 showing that colour and shape), recall@50 (share of all
matching images in the top 50), mean latency and its ratio to plain search. Modes whose filter
or re-ranking is neutral must return exactly what plain search returns; the script checks it.

    python benchmarks/query.py [--n 600] [--model demo]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

K = 10
R = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--seed", type=int, default=31337)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from retrieval import Collection
    from retrieval.training.demo import IMAGE_SIZE
    from retrieval.training.synthetic import COLOURS, SHAPES, read_scenes, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        half = args.n // 2
        write_dataset(root / "a", half, seed=args.seed, size=IMAGE_SIZE)
        write_dataset(root / "b", args.n - half, seed=args.seed + 1, size=IMAGE_SIZE)
        scenes = {**read_scenes(root / "a"), **read_scenes(root / "b")}
        col = Collection(root / "col", model=args.model)
        col.index([root / "a", root / "b"])
        queries = [(f"a {c} {s}", c, s) for c in COLOURS for s in SHAPES]
        in_a = f"path ~ {root / 'a'}/*"
        modes: dict[str, dict[str, Any]] = {
            "plain": {},
            "filter (neutral: width >= 1)": {"filters": ["width >= 1"]},
            "filter (half: folder a)": {"filters": [in_a]},
            "hybrid (captions by keyword)": {"hybrid": True},
            "rerank exact (neutral)": {"rerank": "exact"},
            "rerank mmr:0.7": {"rerank": "mmr:0.7"},
            "rerank dedup:0.95": {"rerank": "dedup:0.95"},
            "rerank exact,mmr:0.7,dedup:0.95": {"rerank": "exact,mmr:0.7,dedup:0.95"},
        }
        for text, _, _ in queries[:3]:  # warm up the model and the index
            col.search(text, k=R)
        rows = []
        plain_ids: dict[str, list[int]] = {}
        for name, opts in modes.items():
            p10, r50, times = [], [], []
            neutral_equal = True
            for text, c, s in queries:
                pool = scenes if name != "filter (half: folder a)" else \
                    {p: sc for p, sc in scenes.items() if p.startswith(str(root / "a"))}
                relevant = {p for p, sc in pool.items() if sc.matches(c, s)}
                if len(relevant) < K:
                    continue
                t = time.perf_counter()
                hits = col.search(text, k=R, **opts)
                times.append((time.perf_counter() - t) * 1000)
                paths = [h.path for h in hits]
                p10.append(sum(p in relevant for p in paths[:K]) / K)
                r50.append(sum(p in relevant for p in paths) / len(relevant))
                ids = [h.id for h in hits]
                if name == "plain":
                    plain_ids[text] = ids
                elif "neutral" in name and ids != plain_ids.get(text):
                    neutral_equal = False
            rows.append({"mode": name, "precision_at_10": statistics.mean(p10),
                         "recall_at_50": statistics.mean(r50),
                         "latency_ms": statistics.mean(times), "queries": len(p10),
                         "same_as_plain": neutral_equal if "neutral" in name else None})
        base = rows[0]["latency_ms"]
        print(f"model {args.model}: {args.n} fresh images, {len(queries)} colour-shape queries")
        print(f"{'mode':<34} {'p@10':>6} {'r@50':>6} {'ms':>7} {'x plain':>8}  neutral==plain")
        for r in rows:
            r["latency_ratio"] = r["latency_ms"] / base
            same = "" if r["same_as_plain"] is None else str(r["same_as_plain"])
            print(f"{r['mode']:<34} {r['precision_at_10']:>6.3f} {r['recall_at_50']:>6.3f} "
                  f"{r['latency_ms']:>7.2f} {r['latency_ratio']:>8.2f}  {same}")
        bad = [r["mode"] for r in rows if r["same_as_plain"] is False]
        if bad:
            print("NEUTRAL MODES DIFFER FROM PLAIN:", ", ".join(bad))
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
