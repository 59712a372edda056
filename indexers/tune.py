"""Exact ground truth, recall, and tuning search parameters to a recall target."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from .base import VectorIndex, as_vectors
from .routing import Router


def exact_search(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int, metric: str = "ip"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force (scores, ids) of the k nearest stored vectors, computed blockwise."""
    import faiss

    from .base import threads_for

    mt = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    with threads_for(len(xq)):
        scores, rows = faiss.knn(as_vectors(xq, xb.shape[1]), xb, min(k, len(xb)), metric=mt)
    return scores, np.where(rows >= 0, np.asarray(ids)[np.maximum(rows, 0)], -1)


def query_recalls(found: np.ndarray, truth: np.ndarray, k: int = 10) -> np.ndarray:
    """Share of the true k nearest ids among the k returned, per query."""
    return np.array([len(set(f[:k][f[:k] >= 0].tolist()) & set(t[:k][t[:k] >= 0].tolist()))
                     / max(1, min(k, int((t[:k] >= 0).sum())))
                     for f, t in zip(found, truth, strict=True)], dtype=np.float64)


def neighbour_recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of the true k nearest ids among the k returned ("k-recall@k")."""
    hits = query_recalls(found, truth, k)
    return float(np.mean(hits)) if len(hits) else 1.0


PRUNE = 1.5

# A setting reaches the target when the recall it would have on queries not seen in tuning is
# above it with 95% confidence (one-sided): mean minus 1.645 standard errors. On 500 tuning
# queries of a kind this asks for about half a point more than the bare mean.
CONFIDENCE_Z = 1.645


def lower_bound(recalls: np.ndarray) -> float:
    if not len(recalls):
        return 1.0
    return float(recalls.mean() - CONFIDENCE_Z * recalls.std() / np.sqrt(len(recalls)))


def tune(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, *, k: int = 10,
         target: float = 0.95, groups: np.ndarray | list[str] | None = None) -> dict[str, Any]:
    """Set ``index.search_params`` to the cheapest setting that reaches ``target`` recall@k on
    ``queries`` (whose exact neighbours are ``truth``); record what was measured.

    ``groups`` labels each query with its kind (say ``"image"`` and ``"text"``): the target
    must then hold for every kind on its own, so that a few hard cross-modal queries are not
    averaged away by many easy in-distribution ones. With two kinds, each kind also gets the
    cheapest setting that reaches the target for it alone (``search_params["by_kind"]``) and
    the index a :class:`~indexers.routing.Router` that tells the kinds apart at search time.
    An index with several structures to search (``tuning_families``) has each kind's cheapest
    setting of each structure timed, one query at a time, and the faster one kept. A setting
    reaches the target when the recall's lower 95% confidence bound does (it must hold on
    queries tuning did not see). When no setting reaches it, the one whose worst group recall
    is best is kept."""
    labels = np.asarray(groups if groups is not None else ["all"] * len(queries))
    if len(labels) != len(queries):
        raise ValueError("groups must label every query")
    kinds = sorted(set(labels.tolist()))
    walks: list[Walk] = []
    for grid in index.tuning_families().values():
        # A structure whose settings already cost more than another one needed for every
        # kind (PRUNE times, for the noise of timing batches) cannot be the cheaper one for
        # any kind: it is not walked further (a graph walk wide enough for text queries on
        # tight clusters costs twenty times a list scan).
        stop = min((w.pooled_s for w in walks if w.pooled and w.pooled[2]), default=np.inf)
        walks.append(walk_grid(index, grid, queries, truth, labels, kinds, k, target,
                               PRUNE * stop))
    pooled = _fastest(index, [w.pooled for w in walks], queries)
    params, per, met = pooled
    index.search_params = {key: v for key, v in index.search_params.items() if key != "by_kind"}
    index.search_params.update(params)
    index.router = Router.fit(queries, labels) if groups is not None else None
    key = "recall_at_10" if k == 10 else f"recall_at_{k}"
    index.tuning = {key: round(min(per.values()), 4) if per else 1.0, "recall_target": target,
                    "tuned_on_queries": len(queries), "target_met": met}
    if index.router is not None:
        chosen = {kind: _fastest(index, [w.by_kind[kind] for w in walks],
                                 queries[labels == kind]) for kind in kinds}
        if all(c[0] == params for c in chosen.values()):  # one setting suits every kind
            index.router = None
    if index.router is not None:
        index.search_params["by_kind"] = {kind: c[0] for kind, c in chosen.items()}
        per = {kind: c[1][kind] for kind, c in chosen.items()}
        index.tuning.update({key: round(min(per.values()), 4),
                             "target_met": all(c[2] for c in chosen.values()),
                             "routed_share": round(index.router.share_placed(queries), 4)})
    if groups is not None:
        index.tuning[f"{key}_by_kind"] = {g: round(v, 4) for g, v in per.items()}
    return index.tuning


# (params, recall per kind, target met)
Choice = tuple[dict[str, Any], dict[str, float], bool]


class Walk:
    """What walking one structure's settings found: the first setting reaching the target for
    every kind at once (``pooled``) and for each kind alone (``by_kind``)."""

    def __init__(self) -> None:
        self.pooled: Choice | None = None
        self.pooled_s = np.inf  # batch seconds per query of the pooled setting
        self.by_kind: dict[str, Choice | None] = {}


def walk_grid(index: VectorIndex, grid: list[dict[str, Any]], queries: np.ndarray,
              truth: np.ndarray, labels: np.ndarray, kinds: list[str], k: int, target: float,
              stop_s: float = np.inf) -> Walk:
    """Walk ``grid`` from its cheapest setting until every kind reaches ``target`` (or a
    setting's batch search costs more than ``stop_s`` seconds a query)."""
    walk = Walk()
    best: dict[str, Choice] = {}  # best-so-far fallbacks, by kind and "*" for pooled
    for params in grid:
        t = time.perf_counter()
        _, found = index.search(queries, k, params=params)
        per_query = (time.perf_counter() - t) / max(1, len(queries))
        each = {g: query_recalls(found[labels == g], truth[labels == g], k) for g in kinds}
        per = {g: float(r.mean()) for g, r in each.items()}
        held = {g: lower_bound(r) >= target for g, r in each.items()}
        worst = min(per.values()) if per else 1.0
        for g in kinds:
            if g not in walk.by_kind and held[g]:
                walk.by_kind[g] = (params, per, True)
            if g not in best or per[g] > best[g][1][g]:
                best[g] = (params, per, False)
        if "*" not in best or worst > min(best["*"][1].values()):
            best["*"] = (params, per, False)
        if all(held.values()):
            walk.pooled, walk.pooled_s = (params, per, True), per_query
            break
        if per_query > stop_s:
            break
    walk.pooled = walk.pooled or best.get("*") or ({}, {}, True)
    for g in kinds:
        walk.by_kind[g] = walk.by_kind.get(g) or best[g]
    return walk


def _fastest(index: VectorIndex, options: list[Choice | None], queries: np.ndarray,
             sample: int = 100) -> Choice:
    """The option that meets the target (else the best recall); among several that meet it,
    the one with the lowest median single-query time on ``queries``, timed interleaved in CPU
    time (other work on the machine does not count)."""
    opts = [o for o in options if o is not None]
    met = [o for o in opts if o[2]]
    if not met:
        return max(opts, key=lambda o: min(o[1].values()) if o[1] else 1.0)
    if len(met) == 1:
        return met[0]
    times: list[list[float]] = [[] for _ in met]
    for q in queries[:sample]:
        for i, (params, _, _) in enumerate(met):
            t = time.thread_time()
            index.search(q[None], 10, params=params)
            times[i].append(time.thread_time() - t)
    return met[int(np.argmin([np.median(t) for t in times]))]
