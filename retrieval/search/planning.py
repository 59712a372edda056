"""Planning a search: filters against the vector index, keyword fusion, and keyword-only
ranking.

A selective filter runs inside the index (FAISS id selector; exact on short allow-lists); a
broad one searches unfiltered with a pool sized by its selectivity and tops up until k matches
are found. Hybrid search fuses the vector ranking with the keyword ranking by reciprocal rank.
A keyword search (``keywords``) ranks by the keyword index alone (:func:`keyword_ranking`).

Results are a total order: by score, ties by item id. A search fetches past the k-th result
until the next score is lower (or the index is exhausted), so that the whole group of items
tied with the k-th is seen before it is cut: the best k of a search are then the first k of the
same search with any larger k, and a page (k, offset) is the slice of the full list.
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
# A filtered keyword search reads the keyword ranking in growing prefixes until a page's worth
# passes the filters, to at most this many matches (past it, what passed is what is found).
MAX_KEYWORD_FETCH = 200_000

Pairs = list[tuple[int, float]]


def filtered_search(index: VectorIndex, q: np.ndarray, k: int, allow: np.ndarray | None,
                    check: Callable[[], None] = lambda: None) -> tuple[Pairs, str]:
    """The best k (id, score) among ``allow`` (all ids when None), best first with ties by id,
    and the plan used.

    A selective filter runs inside the index (FAISS id selector; exact on short allow-lists).
    A broad one searches unfiltered with a pool sized by its selectivity, and tops up
    (doubling the pool) until k matches are found or the index is exhausted. Every plan
    fetches past the k-th until the next score is lower (ties complete); ``check`` runs
    before each top-up (a search's budget raises there)."""
    n = index.ntotal
    if allow is None:
        return _top(lambda f: _fetch(index, q, f), k, n, k + 1, check), "plain"
    if not len(allow) or not n:
        return [], "empty"
    share = len(allow) / n
    if share <= SELECTIVE:
        return _top(lambda f: _fetch(index, q, f, allow), k, min(n, len(allow)), k + 1,
                    check), "selector"

    def broad(fetch: int) -> tuple[Pairs, int]:
        pairs, found = _fetch(index, q, fetch)
        keep = np.isin(np.fromiter((i for i, _ in pairs), np.int64, len(pairs)), allow)
        return [p for p, ok in zip(pairs, keep.tolist(), strict=True) if ok], found

    start = math.ceil((k + 1) / share * 1.3) + 8
    return _top(broad, k, n, start, check), "overfetch"


def _fetch(index: VectorIndex, q: np.ndarray, fetch: int, allow: np.ndarray | None = None
           ) -> tuple[Pairs, int]:
    """The index's best ``fetch`` (id, score) and how many it found (fewer: no more exist)."""
    scores, ids = index.search(q, fetch, allow=allow)
    pairs = _pairs(scores[0], ids[0])
    return pairs, len(pairs)


def _top(search: Callable[[int], tuple[Pairs, int]], k: int, limit: int, start: int,
         check: Callable[[], None]) -> Pairs:
    """The best k of ``search(fetch)`` (pairs best first, and how many the index found),
    fetching more (doubling, up to ``limit``) until the items tied with the k-th are all in,
    then ordered by score and id."""
    fetch = max(1, min(limit, start))
    while True:
        pairs, found = search(fetch)
        if fetch >= limit or found < fetch or _settled(pairs, k):
            return sorted(pairs, key=_rank)[:k]
        fetch = min(limit, fetch * 2)
        check()


def _settled(pairs: Pairs, k: int) -> bool:
    """Whether the k-th of ``pairs`` (best first) is followed by a lower score: no item
    beyond them ties with it."""
    return len(pairs) > k and pairs[k][1] < pairs[k - 1][1]


def _rank(pair: tuple[int, float]) -> tuple[float, int]:
    return -pair[1], pair[0]


def _pairs(scores: np.ndarray, ids: np.ndarray) -> Pairs:
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


def fuse(vector: Pairs, keyword: Pairs, h: Hybrid) -> list[tuple[int, float, dict[str, float]]]:
    """Reciprocal rank fusion of two rankings: (id, fused score, parts), best first."""
    fused: dict[int, float] = {}
    parts: dict[int, dict[str, float]] = {}
    for weight, ranking, name in ((h.vector_weight, vector, "vector"),
                                  (h.keyword_weight, keyword, "keyword")):
        for rank, (item, score) in enumerate(ranking):
            fused[item] = fused.get(item, 0.0) + weight / (h.k0 + rank + 1)
            parts.setdefault(item, {})[name] = score
    # Ties (an item first in one list only, against an item first in the other) go to the
    # keyword match: an exact name or code the user typed beats a look-alike; then the id.
    kw_rank = {item: r for r, (item, _) in enumerate(keyword)}
    order = sorted(fused, key=lambda i: (-fused[i], kw_rank.get(i, len(keyword)), i))
    return [(i, fused[i], parts[i]) for i in order]


def keyword_ranking(search: Callable[[int], Pairs], need: int, allow: np.ndarray | None,
                    check: Callable[[], None] = lambda: None) -> Pairs:
    """The first ``need`` (id, score) of a keyword ranking among ``allow`` (all when None).

    ``search(n)`` is the ranking's first n matches, best first, ties by id (the catalog's
    keyword search): a total order, so a page is a slice of it. With filters, a prefix twice
    as long is read until ``need`` matches pass them or the ranking ends (at most
    :data:`MAX_KEYWORD_FETCH` matches); ``check`` runs before each longer read. The scores
    are the catalog's raw relevance (see :func:`normalised`)."""
    if need <= 0:
        return []
    fetch = need if allow is None else max(need * 4, 64)
    while True:
        fetch = min(fetch, MAX_KEYWORD_FETCH)
        pairs = search(fetch)
        kept = pairs if allow is None else [
            p for p, ok in zip(pairs, np.isin(np.fromiter((i for i, _ in pairs), np.int64,
                                                          len(pairs)), allow).tolist(),
                               strict=True) if ok]
        if len(kept) >= need or len(pairs) < fetch or fetch >= MAX_KEYWORD_FETCH:
            return kept[:need]
        check()
        fetch *= 2


def normalised(pairs: Pairs) -> list[tuple[int, float, float]]:
    """(id, score, raw relevance) of a keyword ranking read from its top: each relevance
    divided by the first (the best that passed the filters), so the first result scores 1 and
    the others the share of its relevance they have, whichever catalog ranked them (the raw
    relevance is bm25 on SQLite, a bm25-like sum of ``ts_rank`` on PostgreSQL: their scales
    differ)."""
    best = pairs[0][1] if pairs else 0.0
    return [(i, s / best if best > 0 else s, s) for i, s in pairs]
