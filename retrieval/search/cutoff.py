"""Where a search's results end: ``min_score`` and ``cutoff="auto"``.

Both are a threshold on the collection model's cosine similarity, the score of a plain search:
``min_score`` is given; ``cutoff="auto"`` is set per query, from what the query scores on the
collection at large. Given both, the higher one holds. The threshold cuts the ranked list of
the vector search before re-ranking and paging (fusion takes no cut: its scores are ranks),
so results stay a total order: a page
is a slice of the cut list, pages past the cut are empty, and the search says how many results
the cut kept (:class:`~.hits.Hits`).

``cutoff="auto"`` keeps the results whose score lies at least :data:`AUTO_FRACTION` of the way
from the query's mean score on a fixed sample of the collection (:data:`SAMPLE` vectors) up to
its best result's score. Measured by ``benchmarks/cutoff.py`` (README, "Relevance cutoff")
against a threshold of mean + z·std of the same sample: the spread of a query's scores on the
demo model's collections says little about where its matches end, while the best score does.
On the two-object mixes that rule kept one look-alike in seven (z=2) or lost a third to nearly
half of the matches (z=2.5), and it lost every match of a query that a third of the collection
matches (the matches make the spread); auto kept precision >= 0.93 with recall >= 0.91 on every
distribution measured. The fraction was set between 0.7 (precision 0.90 on the 600-image mix)
and 0.8 (recall 0.84 there), measured on the same vectors outside the engine.

The sample is the same for every query of a collection: the vectors of the :data:`SAMPLE` ids
of smallest hash, read from the catalog once and again when the index's size changes (a few
hundred dot products a query).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .builder import MAX_K, MAX_OFFSET

if TYPE_CHECKING:
    from indexers import VectorIndex

    from ..storage import Catalog
    from .query import Query

SAMPLE = 256
AUTO_FRACTION = 0.75
# A cut list is counted as deep as a search can page; the deepest page ends here.
COUNT_LIMIT = MAX_OFFSET + MAX_K
FIRST_FETCH = 100  # results fetched first when counting (grown 4x at a time)

Pairs = list[tuple[int, float]]


@dataclass(frozen=True)
class Cut:
    """A cut ranked list: the (id, score) pairs at or above ``threshold``, best first (None
    when the ranking is empty)."""

    pairs: Pairs
    threshold: float | None


def wants_cut(query: Query) -> bool:
    return query.min_score is not None or query.cutoff is not None


def sample_ids(ids: np.ndarray, n: int = SAMPLE) -> np.ndarray:
    """A fixed pseudo-random choice of ``n`` ids: those of smallest hash (a multiplicative hash
    of the id), so a collection gives the same sample every time and a growing one keeps most
    of it."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) <= n:
        return np.sort(ids)
    h = ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # wraps around: meant
    h ^= h >> np.uint64(29)
    return np.sort(ids[np.argpartition(h, n)[:n]])


class Sampler:
    """The sample vectors of each target, read from the catalog once per index size."""

    def __init__(self, catalog: Catalog, dim: int) -> None:
        self.catalog, self.dim = catalog, dim
        self._by_target: dict[str, tuple[int, np.ndarray]] = {}
        self._lock = threading.Lock()

    def vectors(self, target: str, index: VectorIndex) -> np.ndarray:
        size = index.ntotal
        with self._lock:
            known = self._by_target.get(target)
        if known is not None and known[0] == size:
            return known[1]
        ids = sample_ids(index.ids())
        _, vectors = self.catalog.vectors(ids.tolist(), self.dim)
        with self._lock:
            self._by_target[target] = (size, vectors)
        return vectors


def auto_threshold(q: np.ndarray, sample: np.ndarray, best: float) -> float:
    """The score at :data:`AUTO_FRACTION` of the way from the query's mean score on the sample
    up to its best result's."""
    if not len(sample):
        return best
    mean = float(np.mean(sample @ q))
    return mean + AUTO_FRACTION * (best - mean) if best > mean else best


def threshold(query: Query, q: np.ndarray, best: float,
              sample: Callable[[], np.ndarray]) -> float:
    """The query's threshold given its best score (``sample()`` read only for auto)."""
    found = [] if query.min_score is None else [float(query.min_score)]
    if query.cutoff == "auto":
        found.append(auto_threshold(q, sample(), best))
    return max(found)


def cut_ranking(search: Callable[[int], Pairs], start: int, limit: int,
                threshold_of: Callable[[float], float],
                check: Callable[[], None] = lambda: None) -> Cut:
    """The head of a ranking (``search(n)``: its best n pairs, best first) at or above the
    threshold ``threshold_of(best score)``, fetched deeper (4x at a time, up to ``limit``)
    until a score below it is seen or the ranking ends."""
    fetch = max(1, min(limit, start))
    while True:
        pairs = search(fetch)
        if not pairs:
            return Cut([], None)
        cut = threshold_of(pairs[0][1])
        if len(pairs) < fetch or fetch >= limit or pairs[-1][1] < cut:
            return Cut([p for p in pairs if p[1] >= cut], cut)
        fetch = min(limit, fetch * 4)
        check()
