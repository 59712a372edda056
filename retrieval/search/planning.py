"""Planning a search: filters against the vector index, and keyword fusion.

A selective filter runs inside the index (FAISS id selector; exact on short allow-lists); a
broad one searches unfiltered with a pool sized by its selectivity and tops up until k matches
are found. Hybrid search fuses the vector ranking with the keyword ranking by reciprocal rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from .query import Hybrid

if TYPE_CHECKING:
    from indexers import VectorIndex

SELECTIVE = 0.25  # filters keeping at most this share search inside the index (id selector)


def filtered_search(index: VectorIndex, q: np.ndarray, k: int, allow: np.ndarray | None,
                    check: Callable[[], None] = lambda: None
                    ) -> tuple[list[tuple[int, float]], str]:
    """The best k (id, score) among ``allow`` (all ids when None), and the plan used.

    A selective filter runs inside the index (FAISS id selector; exact on short allow-lists).
    A broad one searches unfiltered with a pool sized by its selectivity, and tops up
    (doubling the pool) until k matches are found or the index is exhausted; ``check`` runs
    before each top-up (a search's budget raises there)."""
    n = index.ntotal
    if allow is None:
        scores, ids = index.search(q, k)
        return _pairs(scores[0], ids[0]), "plain"
    if not len(allow) or not n:
        return [], "empty"
    share = len(allow) / n
    if share <= SELECTIVE:
        scores, ids = index.search(q, k, allow=allow)
        return _pairs(scores[0], ids[0]), "selector"
    fetch = min(n, math.ceil(k / share * 1.3) + 8)
    while True:
        scores, ids = index.search(q, fetch)
        keep = np.isin(ids[0], allow)
        if keep.sum() >= k or fetch >= n:
            return _pairs(scores[0][keep], ids[0][keep])[:k], "overfetch"
        fetch = min(n, fetch * 2)
        check()


def _pairs(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


def fuse(vector: list[tuple[int, float]], keyword: list[tuple[int, float]], h: Hybrid
         ) -> list[tuple[int, float, dict[str, float]]]:
    """Reciprocal rank fusion of two rankings: (id, fused score, parts), best first."""
    fused: dict[int, float] = {}
    parts: dict[int, dict[str, float]] = {}
    for weight, ranking, name in ((h.vector_weight, vector, "vector"),
                                  (h.keyword_weight, keyword, "keyword")):
        for rank, (item, score) in enumerate(ranking):
            fused[item] = fused.get(item, 0.0) + weight / (h.k0 + rank + 1)
            parts.setdefault(item, {})[name] = score
    # Ties (an item first in one list only, against an item first in the other) go to the
    # keyword match: an exact name or code the user typed beats a look-alike.
    kw_rank = {item: r for r, (item, _) in enumerate(keyword)}
    order = sorted(fused, key=lambda i: (-fused[i], kw_rank.get(i, len(keyword))))
    return [(i, fused[i], parts[i]) for i in order]
