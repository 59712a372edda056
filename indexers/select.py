"""What the graph index of a collection is built with, measured on its own vectors and queries.

``choose_index`` knows only sizes: it says a graph (and inverted lists beside it) fit the
memory budget. The rest depends on the data, so :func:`select_parts` measures it on a sample
of the collection at two sizes: for each query kind, each candidate is tuned to the recall
target and its setting timed one query at a time (CPU time, so that other work on the machine
does not count); how each cost grows with the number of vectors (a power of n through the two
sizes) is extrapolated to the collection's size. The candidates:

* the graph walking all dimensions, or the leading principal coordinates that hold 99% of
  the sample's variance (``indexers.reduce``) when there are few enough: the cheaper one is
  built (on the overlapping-manifold regime 64 of 512 dimensions, a walk several times
  cheaper; on tight clusters or near-uniform data no reduction is possible);
* the lists, built beside the graph when some kind of query is extrapolated to cost them
  less than ``TIE`` times what it costs the graph (on tight clusters a text query costs a
  graph walk twenty times a list scan; on softer data the graph wins every kind); the lists
  alone when they are clearly (``TIE`` times) cheaper for every kind (near-uniform data at a
  few hundred thousand vectors). An extrapolation is not a measurement: tuning on the built
  index times the parts it has and keeps the one each kind is served by fastest. The lists'
  coarse search (an exact scan of their centroids) is timed apart at the collection's number
  of lists, since a sample has fewer.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from .base import threads_for
from .choose import GRAPH_LISTS_PER_ROOT, IndexPlan, graph_bytes_per_vector, nlist_for
from .graph import GraphIndex
from .reduce import dims_for
from .tune import PRUNE, exact_search, walk_grid

SAMPLE = 20_000  # vectors the measurement builds on (and a quarter of that)
# Below this many vectors there is nothing to extrapolate: both parts are built on the whole
# collection and tuning keeps the ones some kind of query is served by.
MEASURE_FROM = 100_000
QUERIES = 200  # per kind
TIMED = 60  # queries timed per setting
TIE = 1.5  # lists extrapolated within this factor of the graph are built too


def _cpu_median(index: GraphIndex, xq: np.ndarray, settings: list[dict[str, Any]]
                ) -> list[float]:
    """Median CPU seconds of one query at each setting, timed interleaved."""
    times: list[list[float]] = [[] for _ in settings]
    with threads_for(1):
        for q in xq[:TIMED]:
            for i, params in enumerate(settings):
                t = time.thread_time()
                index.search(q[None], 10, params=params)
                times[i].append(time.thread_time() - t)
    return [float(np.median(t)) for t in times]


def _sample_nlist(n: int) -> int:
    return min(nlist_for(n, GRAPH_LISTS_PER_ROOT), max(1, n // 64))


def quantizer_seconds(nlist: int, xq: np.ndarray) -> float:
    """Median CPU seconds of finding one query's nearest of ``nlist`` centroids exactly: the
    lists' fixed cost, which a sample (with fewer lists) does not show."""
    import faiss

    rng = np.random.default_rng(3)
    centroids = rng.standard_normal((nlist, xq.shape[1])).astype(np.float32)
    flat = faiss.IndexFlatIP(xq.shape[1])
    flat.add(centroids)
    times = []
    with threads_for(1):
        for q in xq[:TIMED]:
            t = time.thread_time()
            flat.search(q[None], 1)
            times.append(time.thread_time() - t)
    return float(np.median(times))


def measure(sample: np.ndarray, queries: dict[str, np.ndarray], plan: IndexPlan,
            target: float, reduce: int = 0) -> dict[str, dict[str, float]]:
    """Seconds per query of each part (``graph``, ``lists``) for each query kind, on a
    graph index with lists built on ``sample`` (its graph walking ``reduce`` principal
    coordinates when set); inf where a part cannot reach ``target``."""
    n = len(sample)
    index = GraphIndex(sample.shape[1], plan.params.get("metric", "ip"),
                       m=int(plan.params.get("m", 32)),
                       ef_construction=int(plan.params.get("ef_construction", 80)),
                       nlist=_sample_nlist(n), reduce=reduce)
    ids = np.arange(n, dtype=np.int64)
    index.train(sample)
    index.add(ids, sample)
    out: dict[str, dict[str, float]] = {}
    for kind, xq in queries.items():
        truth = exact_search(sample, ids, xq, 10)[1]
        labels = np.array([kind] * len(xq))
        found, stop = {}, np.inf
        for part, grid in index.tuning_families().items():
            walk = walk_grid(index, grid, xq, truth, labels, [kind], 10, target, PRUNE * stop)
            choice = walk.by_kind[kind]
            if choice is not None and choice[2]:
                found[part] = choice[0]
                stop = min(stop, walk.pooled_s)
        secs = _cpu_median(index, xq, list(found.values()))
        out[kind] = {part: math.inf for part in index.tuning_families()}
        out[kind].update(dict(zip(found, secs, strict=True)))
    return out


def extrapolate(small: float, large: float, n_small: int, n_large: int, n: int) -> float:
    """Cost at n of a cost measured at two sizes, growing as a power of n (exponent held
    between 0 and 1: a search never gets cheaper with more vectors, nor dearer than a scan)."""
    if not (math.isfinite(small) and math.isfinite(large)):
        return math.inf
    b = math.log(max(large, 1e-9) / max(small, 1e-9)) / math.log(n_large / n_small)
    return large * (n / n_large) ** min(1.0, max(0.0, b))


def _walk_cost(walk: str, graphs: list[str], costs: dict[str, dict[str, float]]) -> float:
    """A graph variant's cost summed over the kinds every variant reached the target for. A
    walk that did not reach it for some kind was stopped for costing more than the lists
    (``PRUNE``): that kind goes to the lists, and says nothing about which walk is cheaper for
    the others (on the overlapping regime the walk on 64 principal coordinates, half the cost
    of the full walk on image queries, was stopped on text queries and lost to the full one).
    Kinds no variant reached do not count; if none is reached by all, every kind counts."""
    both = [c for c in costs.values() if all(math.isfinite(c[g]) for g in graphs)]
    return sum(min(c[walk], 1e3) for c in (both or list(costs.values())))


def select_parts(plan: IndexPlan, sample: np.ndarray, queries: dict[str, np.ndarray], n: int,
                 target: float = 0.95) -> IndexPlan:
    """``plan`` (a graph with lists) with what measurements on a sample favour, extrapolated
    to ``n`` vectors: the graph walking fewer principal coordinates or all of them, and the
    lists where some kind of query may be served faster by them; in ``plan.measured``."""
    rng = np.random.default_rng(0)
    sample = sample[rng.permutation(len(sample))[:SAMPLE]]
    queries = {k: q[:QUERIES] for k, q in queries.items() if len(q)}
    if not queries:
        queries = {"own": sample[rng.choice(len(sample), min(QUERIES, len(sample)), False)]}
    sizes = [len(sample) // 4, len(sample)]
    reduce = dims_for(sample)
    xq = next(iter(queries.values()))
    # The lists' coarse search is measured apart: at n it scans nlist(n) centroids.
    fixed = [quantizer_seconds(_sample_nlist(s), xq) for s in sizes]
    at_n = quantizer_seconds(int(plan.params["nlist"]), xq)
    costs: dict[str, dict[str, float]] = {}
    for variant in ([0, reduce] if reduce else [0]):
        runs = [measure(sample[:s], queries, plan, target, variant) for s in sizes]
        for kind in queries:
            for part in runs[1][kind]:
                name = f"graph@{variant}" if part == "graph" and variant else part
                small, large = runs[0][kind][part], runs[1][kind][part]
                if part == "lists":
                    small, large = small - fixed[0], large - fixed[1]
                costs.setdefault(kind, {})[name] = extrapolate(
                    small, large, sizes[0], sizes[1], n) + (at_n if part == "lists" else 0)
    graphs = [p for p in costs[next(iter(costs))] if p.startswith("graph")]
    walk = min(graphs, key=lambda g: _walk_cost(g, graphs, costs))
    lists = any(c["lists"] <= TIE * c[walk] for c in costs.values())
    # The graph is left out only where the lists are clearly cheaper for every kind.
    graph = not all(c["lists"] * TIE <= c[walk] for c in costs.values())
    measured = {kind: {part: round(c * 1000, 4) for part, c in parts.items()}
                for kind, parts in costs.items()}
    note = "; ".join(f"{kind}: " + ", ".join(f"{p} {c:.3g} ms" for p, c in parts.items())
                     for kind, parts in measured.items())
    why = f"{plan.reason}; measured on {sizes[1]} of the vectors, extrapolated to {n}: {note}"
    params = dict(plan.params, reduce=int(walk.partition("@")[2] or 0) if graph else 0,
                  nlist=plan.params["nlist"] if lists else 0,
                  m=plan.params["m"] if graph else 0)
    bpv = graph_bytes_per_vector(sample.shape[1], int(params["m"]), lists, params["reduce"])
    tier = "+".join(([f"graph@{params['reduce']}d" if params["reduce"] else "graph"]
                     if graph else []) + (["lists"] if lists else []))
    return replace(plan, params=params, tier=tier, reason=why, bytes_per_vector=bpv,
                   measured=measured)
