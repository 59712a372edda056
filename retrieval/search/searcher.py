"""Running a query: embed its terms, filter, search the vector index, fuse keyword matches,
re-rank, page, and read the hits from the catalog; the search's budget (deadline, cancel flag)
is checked between these phases and inside the re-ranking stages.

Results are a total order and a page is a slice of it: plain and filtered searches order by
score and item id (:mod:`.planning`); fusion and re-ranking work on a pool that does not
depend on the page (:func:`candidate_pool`), and the stages answer their first results as a
run over the whole pool would (:func:`.rerank.run_pipeline`). A cut (``min_score``,
``cutoff``) ends the vector ranking at a threshold that does not depend on the page either
(:mod:`.cutoff`), before the stages and the page. A keyword search (``keywords``) embeds
nothing and searches no vector index: it pages the keyword ranking itself
(:func:`.planning.keyword_ranking`). A video search ranks shots and keeps each video's best
(:func:`per_video`) unless the query asks for every segment.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np

from ..encoders.spec import ModelSpec
from ..errors import QueryError
from ..items import SHOT
from .budget import UNLIMITED, Budget
from .builder import ensure_valid
from .cutoff import (
    COUNT_LIMIT,
    FIRST_FETCH,
    Cut,
    Sampler,
    cut_ranking,
    threshold,
    wants_cut,
)
from .embedding import QueryEmbedder
from .filters import compile_filters
from .hits import Hit, Hits, explain, hydrate
from .planning import Pairs, filtered_search, fuse, keyword_ranking, normalised
from .query import Query
from .rerank import MAX_CANDIDATES, Candidate, RerankContext, SecondModel, run_pipeline

if TYPE_CHECKING:
    from indexers import VectorIndex

    from ..storage import Catalog

T = TypeVar("T")  # a ranked entry: an (id, score) pair or a candidate


class Indexes(Protocol):
    """The collection's vector indexes, as searches use them."""

    def searching(self, kind: str) -> AbstractContextManager[VectorIndex]:
        """The index of items of ``kind``, in step with the catalog, to search inside the
        block."""
        ...


class Searcher:
    """Queries against one collection, from any number of threads: the catalog, the vector
    ``indexes``, the ``embedder`` of query terms, and ``second_model(spec)`` for the
    re-ranking stage."""

    def __init__(self, catalog: Catalog, indexes: Indexes, embedder: QueryEmbedder,
                 second_model: Callable[[ModelSpec], SecondModel]) -> None:
        self.catalog, self.indexes, self.embedder = catalog, indexes, embedder
        self.second_model = second_model
        self.sampler = Sampler(catalog, embedder.dim)

    def run(self, query: Query, budget: Budget = UNLIMITED) -> Hits:
        """The query's hits; raises SearchTimeout / SearchCancelled when ``budget`` says so.
        A query from :func:`~.builder.build_query` is not checked again."""
        budget.check()
        ensure_valid(query)
        if query.keywords:
            return self._keywords(query, budget)
        q = self.embedder.vector(query.terms, budget.check)
        need = query.offset + query.k
        pool = candidate_pool(query)
        allow = None
        if query.filters:
            conditions = compile_filters(query.filters, self.catalog, query.target)
            allow = self.catalog.ids_where(query.target, conditions)
            budget.check()
        parents = self._parents(query)
        if parents is not None and not wants_cut(query):  # each video's best shot: deeper
            pairs, cut = per_video(lambda n: self._vector_search(query, q, n, allow, budget)[0],
                                   pool, parents, self.catalog.shot_parents), None
        else:
            pairs, cut = self._vector_search(query, q, pool, allow, budget)
        budget.check()
        cands = [Candidate(i, s, scores={"vector": s}) for i, s in pairs]
        if query.hybrid is not None:
            words = query.keyword_text()
            keyword = self.catalog.keyword_search(words, query.target, pool) if words else []
            if allow is not None:
                allowed = set(allow.tolist())
                keyword = [(i, s) for i, s in keyword if i in allowed]
            budget.check()
            cands = [Candidate(i, f, scores=parts)
                     for i, f, parts in fuse(pairs, keyword, query.hybrid)[:pool]]
        if query.rerank:
            ctx = RerankContext(query, q, need, self._stored, self.second_model, budget)
            # a cut list is ranked whole: its length after dedup is the total
            cands = run_pipeline(query.rerank, ctx, cands[:MAX_CANDIDATES],
                                 need if cut is None else len(cands))
        budget.check()
        if parents is not None:
            parents.update(self.catalog.shot_parents(
                c.id for c in cands if c.id not in parents))
            cands = _best_per_video(cands, lambda c: c.id, parents)
        hits = self._page(query, cands[query.offset:need])
        if cut is None:
            return Hits(hits)
        return Hits(hits, total=len(cands), threshold=cut.threshold)

    def _keywords(self, query: Query, budget: Budget) -> Hits:
        """The keyword ranking's page, scored by :func:`.planning.normalised` (``score_kind``
        ``keywords``; the raw relevance is ``scores["keyword"]``)."""
        words, need = query.keyword_text(), query.offset + query.k
        allow = None
        if query.filters:
            allow = self.catalog.ids_where(
                query.target, compile_filters(query.filters, self.catalog, query.target))
            budget.check()
        def ranking(n: int) -> Pairs:
            return keyword_ranking(lambda m: self.catalog.keyword_search(words, query.target, m),
                                   n, allow, budget.check)

        parents = self._parents(query)
        ranked = ranking(need) if parents is None else per_video(
            ranking, need, parents, self.catalog.shot_parents)
        page = normalised(ranked)[query.offset:need]
        budget.check()
        hits = hydrate(self.catalog, [(i, s) for i, s, _ in page])
        raw = {i: r for i, _, r in page}
        for h in hits:
            h.metadata["scores"] = {"keyword": raw[h.id]}
            explain(h, "keywords", words)
        return Hits(hits)

    def _vector_search(self, query: Query, q: np.ndarray, pool: int, allow: np.ndarray | None,
                       budget: Budget) -> tuple[Pairs, Cut | None]:
        """The vector ranking's best ``pool``; with a cut, the whole head above its threshold
        instead (as deep as the pool with fusion or re-ranking, else as deep as pages go)."""
        with self.indexes.searching(query.target) as index:
            if not wants_cut(query):
                return filtered_search(index, q, pool, allow, budget.check)[0], None
            cut = cut_ranking(
                lambda n: filtered_search(index, q, n, allow, budget.check)[0],
                start=max(pool, FIRST_FETCH),
                limit=MAX_CANDIDATES if query.rerank else COUNT_LIMIT,
                threshold_of=lambda best: threshold(
                    query, q, best, lambda: self.sampler.vectors(query.target, index)),
                check=budget.check)
        return cut.pairs, cut

    @staticmethod
    def _parents(query: Query) -> dict[int, int] | None:
        """Where a search that keeps each video's best shot records shot -> video as it
        reads them (empty to start); None for any other search."""
        return None if query.target != SHOT or query.segments else {}

    def _stored(self, ids: list[int]) -> np.ndarray:
        found, vecs = self.catalog.vectors(ids, self.embedder.dim)
        if len(found) != len(ids):
            missing = set(ids) - set(found.tolist())
            raise QueryError(f"items {sorted(missing)[:5]} vanished during the search; retry")
        return vecs

    def _page(self, query: Query, page: list[Candidate]) -> list[Hit]:
        hits = hydrate(self.catalog, [(c.id, c.score) for c in page])
        extra = {c.id: c for c in page}
        kind = "reranked" if query.rerank else "fused" if query.hybrid else "similarity"
        words = query.keyword_text() if query.hybrid and query.hybrid.keyword_weight else ""
        for h in hits:
            c = extra[h.id]
            if c.duplicates:
                h.metadata["duplicates"] = c.duplicates
            if query.hybrid is not None or query.rerank:
                h.metadata["scores"] = c.scores
            explain(h, kind, words if "keyword" in c.scores else None)
        return hits


def per_video(rank: Callable[[int], Pairs], need: int, parents: dict[int, int],
              parents_of: Callable[[list[int]], dict[int, int]]) -> Pairs:
    """The first ``need`` videos of a ranking of shots, each as its best shot (the ranking's
    first of that video): ``rank(n)`` is the ranking's first n, read deeper (four times as
    deep each time) until ``need`` videos are in it or it ends. ``parents`` (shot -> video)
    grows with what ``parents_of`` reads. A total order still: the videos in the order of
    their best shots, so a page is a slice of it."""
    fetch = need
    while True:
        pairs = rank(fetch)
        parents.update(parents_of([i for i, _ in pairs if i not in parents]))
        best = _best_per_video(pairs, lambda p: p[0], parents)
        if len(best) >= need or len(pairs) < fetch or fetch >= COUNT_LIMIT:
            return best
        fetch = min(COUNT_LIMIT, fetch * 4)


def _best_per_video(ranked: list[T], id_of: Callable[[T], int], parents: dict[int, int]
                    ) -> list[T]:
    """``ranked`` (pairs or candidates, best first) with each video's first shot only."""
    seen: set[int] = set()
    out = []
    for r in ranked:
        video = parents.get(id_of(r))
        if video is None or video not in seen:
            out.append(r)
            if video is not None:
                seen.add(video)
    return out


def candidate_pool(query: Query) -> int:
    """How many candidates the vector (and keyword) searches fetch: the page's depth (offset +
    k); with fusion or re-ranking MAX_CANDIDATES whatever the page, since both depend on
    the whole pool (reciprocal ranks on the lengths of both lists, MMR and dedup on every
    candidate): a pool that grew with the page would make pages that are not slices. The
    builder keeps such a search's depth within it."""
    if not (query.rerank or query.hybrid):
        return query.offset + query.k
    return MAX_CANDIDATES
