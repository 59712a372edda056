"""Query-layer quality and cost: plain, filtered, hybrid and re-ranked searches, same run.

On freshly generated demo images (``retrieval.training.synthetic``, never seen in training), indexed
with the demo model, every "a {colour} {shape}" query runs in each mode. Reported per mode:
precision@10 (share of the top 10 showing that colour and shape), recall@50 (share of all
matching images in the top 50), mean latency and its ratio to plain search. Modes whose filter
or re-ranking is neutral must return exactly what plain search returns; the script checks it.

    python benchmarks/query.py [--n 600] [--model demo]
    python benchmarks/query.py --catalog auto     # also on PostgreSQL, same images, same run

With ``--catalog URL`` (or ``auto``: a throwaway PostgreSQL server on 127.0.0.1, as the tests
start one) every mode also runs on a collection whose catalog is on that server, and the p50
latency of each mode is reported against the SQLite catalog's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from postgres import benchmark_catalog

K = 10
R = 50


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=600)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--seed", type=int, default=31337)
    ap.add_argument("--catalog", default=None,
                    help="a PostgreSQL URL, or 'auto' for a throwaway local server")
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from retrieval.training.demo import IMAGE_SIZE
    from retrieval.training.synthetic import read_scenes, write_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        half = args.n // 2
        write_dataset(root / "a", half, seed=args.seed, size=IMAGE_SIZE)
        write_dataset(root / "b", args.n - half, seed=args.seed + 1, size=IMAGE_SIZE)
        scenes = {**read_scenes(root / "a"), **read_scenes(root / "b")}
        with benchmark_catalog(args.catalog) as url:
            catalogs: dict[str, str | None] = {"sqlite": None}
            if url:
                catalogs["postgresql"] = url
            results = run_modes(root, catalogs, args.model, scenes)
    print(f"model {args.model}: {args.n} fresh images, {len(COMBOS)} colour-shape queries")
    for name, rows in results.items():
        print(f"\ncatalog: {name}")
        print(f"{'mode':<34} {'p@10':>6} {'r@50':>6} {'mean ms':>8} {'p50 ms':>7} {'x plain':>8}"
              "  neutral==plain")
        base = rows[0]["latency_ms"]
        for r in rows:
            r["latency_ratio"] = r["latency_ms"] / base
            same = "" if r["same_as_plain"] is None else str(r["same_as_plain"])
            print(f"{r['mode']:<34} {r['precision_at_10']:>6.3f} {r['recall_at_50']:>6.3f} "
                  f"{r['latency_ms']:>8.2f} {r['p50_ms']:>7.2f} {r['latency_ratio']:>8.2f}  {same}")
        bad = [r["mode"] for r in rows if r["same_as_plain"] is False]
        if bad:
            print("NEUTRAL MODES DIFFER FROM PLAIN:", ", ".join(bad))
    if "postgresql" in results:
        print("\np50 on PostgreSQL / p50 on SQLite (target <= 1.5 for plain and filtered):")
        for lite, pg in zip(results["sqlite"], results["postgresql"], strict=True):
            same = ("" if lite["top_ids"] == pg["top_ids"] else
                    "  (different results!)")
            print(f"  {lite['mode']:<34} {pg['p50_ms'] / lite['p50_ms']:>5.2f}{same}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


def _combos() -> list[tuple[str, str, str]]:
    from retrieval.training.synthetic import COLOURS, SHAPES

    return [(f"a {c} {s}", c, s) for c in COLOURS for s in SHAPES]


COMBOS = _combos()


def run_modes(root: Path, catalogs: dict[str, str | None], model: str, scenes: dict[str, Any]
              ) -> dict[str, list[dict[str, Any]]]:
    """Index both halves into one collection per catalog and run every mode; each query runs
    on every catalog in turn, so a change of load on the machine touches them alike."""
    from retrieval import Collection

    cols = {}
    for name, url in catalogs.items():
        cols[name] = Collection(root / f"col-{name}", model=model, catalog=url)
        cols[name].index([root / "a", root / "b"])
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
    for col in cols.values():
        for text, _, _ in COMBOS[:3]:  # warm up the model and the index
            col.search(text, k=R)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in cols}
    plain_ids: dict[tuple[str, str], list[int]] = {}
    for mode, opts in modes.items():
        acc = {name: {"p10": [], "r50": [], "times": [], "top": [], "same": True}
               for name in cols}
        for text, c, s in COMBOS:
            pool = scenes if mode != "filter (half: folder a)" else \
                {p: sc for p, sc in scenes.items() if p.startswith(str(root / "a"))}
            relevant = {p for p, sc in pool.items() if sc.matches(c, s)}
            if len(relevant) < K:
                continue
            for name, col in cols.items():
                a = acc[name]
                t = time.perf_counter()
                hits = col.search(text, k=R, **opts)
                a["times"].append((time.perf_counter() - t) * 1000)
                paths = [h.path for h in hits]
                a["top"].append(paths[:K])
                a["p10"].append(sum(p in relevant for p in paths[:K]) / K)
                a["r50"].append(sum(p in relevant for p in paths) / len(relevant))
                ids = [h.id for h in hits]
                if mode == "plain":
                    plain_ids[name, text] = ids
                elif "neutral" in mode and ids != plain_ids.get((name, text)):
                    a["same"] = False
        for name, a in acc.items():
            results[name].append({
                "mode": mode, "precision_at_10": statistics.mean(a["p10"]),
                "recall_at_50": statistics.mean(a["r50"]),
                "latency_ms": statistics.mean(a["times"]), "p50_ms": statistics.median(a["times"]),
                "queries": len(a["p10"]), "top_ids": a["top"],
                "same_as_plain": a["same"] if "neutral" in mode else None})
    for col in cols.values():
        col.close()
    return results


if __name__ == "__main__":
    main()
