"""Where results end: precision and recall of ``--cutoff auto`` and of fixed ``--min-score``s.

Fresh demo images (``retrieval.training.synthetic``, seeds never used in training) of known
colours and shapes are indexed with the demo model; every "a {colour} {shape}" query (30) runs
through ``Collection.search`` with a large k, so that only the cut ends the results. For each
mode: precision (share of the returned images that show that colour and shape; a query that
returns nothing counts as 1) and recall (share of all such images returned), averaged over the
queries, the lowest recall of any query, the mean number returned and the queries that returned
nothing. A plain search with the same k is the baseline, timed in the same run, query by query. The
rule ``auto`` was chosen over is measured beside it: a threshold of mean + z·std of the query's
scores on the same sample (run as a min-score per query). What calibrating costs shows against
a min-score equal to the threshold auto found for the query (the same results).

Several data distributions, since one is a hypothesis: one or two objects per image (the demo
model's own), one object per image, a larger collection, a collection where a third of the
images hold a red circle (a query that a third of the collection matches does not stand out
from it), and one with no red object at all (the red queries match nothing: what comes back
is look-alikes).

    python benchmarks/cutoff.py [--k 200] [--model demo] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODES: dict[str, dict[str, Any]] = {
    "plain": {},
    "cutoff auto": {"cutoff": "auto"},
    "min-score 0.3": {"min_score": 0.3},
    "min-score 0.4": {"min_score": 0.4},
    "min-score 0.5": {"min_score": 0.5},
}
# The same results as auto's, without the calibration: what the sample costs.
SAME = "min-score = auto's"
# The rule auto was chosen over, on the same sample: mean + z std of the query's scores on it,
# run as a min-score per query.
Z_RULES = (2.0, 2.5)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=200)
    ap.add_argument("--model", default="demo")
    ap.add_argument("--seed", type=int, default=2323)
    ap.add_argument("--json", dest="json_out")
    args = ap.parse_args()

    from retrieval.training.synthetic import COLOURS, SHAPES

    queries = [(f"a {c} {s}", c, s) for c in COLOURS for s in SHAPES]
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, n, make) in enumerate(distributions()):
            scenes = write_images(Path(tmp) / f"d{i}", n, make, args.seed + 100 * i)
            rows = run(Path(tmp) / f"d{i}", args.model, scenes, queries, args.k)
            results[name] = rows
            report(name, n, rows, args.k)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=1))


def distributions() -> list[tuple[str, int, Callable[[random.Random], Any]]]:
    from retrieval.training.synthetic import Scene, Thing, random_scene

    def skewed(rng: random.Random) -> Any:
        scene = random_scene(rng)
        if rng.random() >= 0.3:
            return scene
        first = scene.things[0]
        rest = tuple(t for t in scene.things[1:] if t.colour != "red")
        return Scene((Thing("circle", "red", first.size, first.position), *rest),
                     scene.background)

    def no_red(rng: random.Random) -> Any:
        while True:
            scene = random_scene(rng)
            if all(t.colour != "red" for t in scene.things):
                return scene

    return [
        ("one or two objects (the demo's own mix), 600 images", 600, random_scene),
        ("one object per image, 2000 images", 2000, lambda rng: random_scene(rng, 1)),
        ("one or two objects, 3000 images", 3000, random_scene),
        ("a third of the images hold a red circle, 600 images", 600, skewed),
        ("no red object at all, 600 images", 600, no_red),
    ]


def write_images(folder: Path, n: int, make: Callable[[random.Random], Any], seed: int
                 ) -> dict[str, Any]:
    """``n`` rendered scenes as PNG files; {absolute path: scene}."""
    from retrieval.training.demo import IMAGE_SIZE
    from retrieval.training.synthetic import render

    folder.mkdir(parents=True)
    rng = random.Random(seed)
    scenes = {}
    for i in range(n):
        scene = make(rng)
        path = (folder / f"img{i:05d}.png").absolute()
        render(scene, IMAGE_SIZE, seed=rng.randrange(2**31)).save(path)
        scenes[str(path)] = scene
    return scenes


def run(folder: Path, model: str, scenes: dict[str, Any], queries: list[tuple[str, str, str]],
        k: int) -> list[dict[str, Any]]:
    """Every mode on every query, the modes of one query one after the other (a change of
    load on the machine touches them alike)."""
    from retrieval import Collection

    col = Collection(folder.parent / f"{folder.name}-col", model=model)
    col.index([folder])
    for text, _, _ in queries[:3]:  # warm up the model, the index and the sample
        col.search(text, k=k, cutoff="auto")
    modes = [*MODES, SAME, *(f"mean + {z:g} std" for z in Z_RULES)]
    acc: dict[str, dict[str, list[float]]] = {
        m: {"p": [], "r": [], "n": [], "ms": [], "absent_n": []} for m in modes}
    for text, colour, shape in queries:
        relevant = {p for p, sc in scenes.items() if sc.matches(colour, shape)}
        same = {SAME: {"min_score": col.search(text, k=k, cutoff="auto").threshold}}
        for mode, options in {**MODES, **same, **_z_rules(col, text, len(scenes))}.items():
            t = time.perf_counter()
            hits = col.search(text, k=k, **options)
            a = acc[mode]
            a["ms"].append((time.perf_counter() - t) * 1000)
            if not relevant:  # nothing to find: how much comes back anyway
                a["absent_n"].append(len(hits))
                continue
            found = sum(h.path in relevant for h in hits)
            a["p"].append(found / len(hits) if hits else 1.0)
            a["r"].append(found / len(relevant))
            a["n"].append(len(hits))
    col.close()
    return [_row(mode, a) for mode, a in acc.items()]


def _z_rules(col: Any, text: str, n: int) -> dict[str, dict[str, Any]]:
    """Min-scores of mean + z std of the query's scores on the sample auto uses (the scores
    of every item, from a search that returns them all)."""
    import numpy as np

    from retrieval.search.cutoff import sample_ids

    scores = {h.id: h.score for h in col.search(text, k=n)}
    sample = np.array([scores[i] for i in sample_ids(np.fromiter(scores, np.int64))])
    return {f"mean + {z:g} std": {"min_score": min(1.0, float(sample.mean() + z * sample.std()))}
            for z in Z_RULES}


def _row(mode: str, a: dict[str, list[float]]) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode, "ms": statistics.mean(a["ms"]),
                           "queries": len(a["p"]), "absent_queries": len(a["absent_n"])}
    if a["p"]:
        row.update(precision=statistics.mean(a["p"]), recall=statistics.mean(a["r"]),
                   min_recall=min(a["r"]), returned=statistics.mean(a["n"]),
                   empty=sum(n == 0 for n in a["n"]))
    if a["absent_n"]:
        row["returned_when_absent"] = statistics.mean(a["absent_n"])
    return row


def report(name: str, n: int, rows: list[dict[str, Any]], k: int) -> None:
    base = rows[0]["ms"]
    first = rows[0]
    print(f"\n{name}: {first['queries']} queries with matches"
          + (f", {first['absent_queries']} without" if first["absent_queries"] else "")
          + f", k={k}")
    print(f"{'mode':<16} {'precision':>9} {'recall':>7} {'min rec':>7} {'returned':>8} "
          f"{'empty':>5} {'ms':>6} {'x plain':>7}" + ("  returned w/o match"
                                                      if first["absent_queries"] else ""))
    for r in rows:
        line = f"{r['mode']:<16} "
        if "precision" in r:
            line += (f"{r['precision']:>9.3f} {r['recall']:>7.3f} {r['min_recall']:>7.2f} "
                     f"{r['returned']:>8.1f} {r['empty']:>5} ")
        else:
            line += " " * 42
        line += f"{r['ms']:>6.2f} {r['ms'] / base:>7.2f}"
        if "returned_when_absent" in r:
            line += f"  {r['returned_when_absent']:>8.1f}"
        print(line)


if __name__ == "__main__":
    main()
