"""Exact ground truth, recall, and tuning search parameters to a recall target."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import VectorIndex, as_vectors


def exact_search(xb: np.ndarray, ids: np.ndarray, xq: np.ndarray, k: int, metric: str = "ip"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force (scores, ids) of the k nearest stored vectors, computed blockwise."""
    import faiss

    from .base import threads_for

    mt = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    with threads_for(len(xq)):
        scores, rows = faiss.knn(as_vectors(xq, xb.shape[1]), xb, min(k, len(xb)), metric=mt)
    return scores, np.where(rows >= 0, np.asarray(ids)[np.maximum(rows, 0)], -1)


def neighbour_recall(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of the true k nearest ids among the k returned ("k-recall@k")."""
    hits = [len(set(f[:k][f[:k] >= 0].tolist()) & set(t[:k][t[:k] >= 0].tolist()))
            / max(1, min(k, int((t[:k] >= 0).sum()))) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 1.0


def tune(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, *, k: int = 10,
         target: float = 0.95, groups: np.ndarray | list[str] | None = None) -> dict[str, Any]:
    """Set ``index.search_params`` to the cheapest setting that reaches ``target`` recall@k on
    ``queries`` (whose exact neighbours are ``truth``); record what was measured.

    ``groups`` labels each query with its kind (say ``"image"`` and ``"text"``): the target
    must then hold for every kind on its own, so that a few hard cross-modal queries are not
    averaged away by many easy in-distribution ones. When no setting reaches the target, the
    one whose worst group recall is best is kept."""
    labels = np.asarray(groups if groups is not None else ["all"] * len(queries))
    if len(labels) != len(queries):
        raise ValueError("groups must label every query")
    kinds = sorted(set(labels.tolist()))
    best: tuple[float, dict[str, Any], dict[str, float]] | None = None
    chosen = None
    for params in index.tuning_grid():
        _, found = index.search(queries, k, params=params)
        per = {g: neighbour_recall(found[labels == g], truth[labels == g], k) for g in kinds}
        r = min(per.values()) if per else 1.0
        if best is None or r > best[0]:
            best = (r, params, per)
        if r >= target:
            chosen = (r, params, per)
            break
    r, params, per = chosen or best or (1.0, {}, {})
    index.search_params = {**index.search_params, **params}
    key = "recall_at_10" if k == 10 else f"recall_at_{k}"
    index.tuning = {key: round(r, 4), "recall_target": target,
                    "tuned_on_queries": len(queries), "target_met": chosen is not None}
    if groups is not None:
        index.tuning[f"{key}_by_kind"] = {g: round(v, 4) for g, v in per.items()}
    return index.tuning
