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


def recall_at_k(found: np.ndarray, truth: np.ndarray, k: int = 10) -> float:
    """Mean share of the true k nearest ids among the k returned ("k-recall@k")."""
    hits = [len(set(f[:k][f[:k] >= 0].tolist()) & set(t[:k][t[:k] >= 0].tolist()))
            / max(1, min(k, int((t[:k] >= 0).sum()))) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) if hits else 1.0


def tune(index: VectorIndex, queries: np.ndarray, truth: np.ndarray, *, k: int = 10,
         target: float = 0.95) -> dict[str, Any]:
    """Set ``index.search_params`` to the cheapest setting that reaches ``target`` recall@k on
    ``queries`` (whose exact neighbours are ``truth``); record what was measured.

    When no setting reaches the target, the one with the best recall is kept."""
    best: tuple[float, dict[str, Any]] | None = None
    chosen = None
    for params in index.tuning_grid():
        _, found = index.search(queries, k, params=params)
        r = recall_at_k(found, truth, k)
        if best is None or r > best[0]:
            best = (r, params)
        if r >= target:
            chosen = (r, params)
            break
    r, params = chosen or best or (1.0, {})
    index.search_params = {**index.search_params, **params}
    index.tuning = {"recall_at_10" if k == 10 else f"recall_at_{k}": round(r, 4),
                    "recall_target": target, "tuned_on_queries": len(queries),
                    "target_met": chosen is not None}
    return index.tuning
