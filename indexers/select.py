"""Which parts of the graph index a collection needs, measured on its own vectors and queries.

``choose_index`` knows only sizes: it says a graph (and inverted lists beside it) fit the
memory budget. Whether a kind of query is served faster by a graph walk or by a scan of a few
lists depends on the data: on tight clusters a text query (across the modality gap) costs a
graph walk 20 times what it costs the lists, on softer data the graph wins every kind
(``benchmarks/ann.py --regimes``). So :func:`select_parts` builds both parts on a sample of the
collection at two sizes, tunes each part for each query kind to the recall target, times the
settings one query at a time (CPU time, so that other work on the machine does not count),
fits how each cost grows with the number of vectors (a power of n through the two sizes) and
extrapolates to the collection's size. The index is built with the parts some kind of query
may need: the cheaper part of each kind, and the other one too where it came within
``TIE`` of it (an extrapolation is not a measurement: tuning on the built index then times
both and keeps what each kind uses). The graph alone, the lists alone, or both.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import numpy as np

from .base import threads_for
from .choose import IndexPlan, graph_bytes_per_vector, nlist_for
from .graph import GraphIndex
from .tune import exact_search, walk_grid

SAMPLE = 20_000  # vectors the measurement builds on (and a quarter of that)
# Below this many vectors there is nothing to extrapolate: both parts are built on the whole
# collection and tuning keeps the ones some kind of query is served by.
MEASURE_FROM = 100_000
QUERIES = 200  # per kind
TIMED = 60  # queries timed per setting
TIE = 1.25  # a part extrapolated within this factor of the cheapest is built too


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


def measure(sample: np.ndarray, queries: dict[str, np.ndarray], plan: IndexPlan,
            target: float) -> dict[str, dict[str, float]]:
    """Seconds per query of each part (``graph``, ``lists``) for each query kind, on a
    graph index with lists built on ``sample``; inf where a part cannot reach ``target``."""
    n = len(sample)
    index = GraphIndex(sample.shape[1], plan.params.get("metric", "ip"),
                       m=int(plan.params.get("m", 32)),
                       ef_construction=int(plan.params.get("ef_construction", 40)),
                       nlist=min(nlist_for(n), max(1, n // 64)))
    ids = np.arange(n, dtype=np.int64)
    index.train(sample)
    index.add(ids, sample)
    out: dict[str, dict[str, float]] = {}
    for kind, xq in queries.items():
        truth = exact_search(sample, ids, xq, 10)[1]
        labels = np.array([kind] * len(xq))
        found = {}
        for part, grid in index.tuning_families().items():
            walk = walk_grid(index, grid, xq, truth, labels, [kind], 10, target)
            choice = walk.by_kind[kind]
            if choice is not None and choice[2]:
                found[part] = choice[0]
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


def select_parts(plan: IndexPlan, sample: np.ndarray, queries: dict[str, np.ndarray], n: int,
                 target: float = 0.95) -> IndexPlan:
    """``plan`` (a graph with lists) with only the parts that some query kind may be served
    fastest by, extrapolated to ``n`` vectors; the measurements are in ``plan.measured``."""
    rng = np.random.default_rng(0)
    sample = sample[rng.permutation(len(sample))[:SAMPLE]]
    queries = {k: q[:QUERIES] for k, q in queries.items() if len(q)}
    if not queries:
        queries = {"own": sample[rng.choice(len(sample), min(QUERIES, len(sample)), False)]}
    sizes = [len(sample) // 4, len(sample)]
    costs = [measure(sample[:s], queries, plan, target) for s in sizes]
    cost = {kind: {part: extrapolate(costs[0][kind][part], costs[1][kind][part],
                                      sizes[0], sizes[1], n)
                   for part in costs[1][kind]} for kind in queries}
    need = {p for parts in cost.values() for p, c in parts.items()
            if c <= TIE * min(parts.values())}
    measured = {kind: {part: round(c * 1000, 4) for part, c in parts.items()}
                for kind, parts in cost.items()}
    note = "; ".join(f"{kind}: " + ", ".join(f"{p} {c:.3g} ms" for p, c in parts.items())
                     for kind, parts in measured.items())
    why = f"{plan.reason}; measured on {sizes[1]} of the vectors, extrapolated to {n}: {note}"
    params = dict(plan.params)
    if "lists" not in need:
        params["nlist"] = 0
    if "graph" not in need:
        params["m"] = 0
    bpv = graph_bytes_per_vector(sample.shape[1], int(params["m"]), bool(params["nlist"]))
    tier = "+".join(p for p in ("graph", "lists") if p in need)
    return replace(plan, params=params, tier=tier, reason=why, bytes_per_vector=bpv,
                   measured=measured)
