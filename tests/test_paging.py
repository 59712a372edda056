"""Results are a total order and pages are slices of it (issue 20).

Scores tie often: identical texts embed to identical vectors, and a model may score unlike
items alike (here texts embed to one of six vectors). Every search orders by score and breaks
ties by item id, and fusion and re-ranking work on a pool that does not depend on the page,
so the hits of (k, offset) are
exactly ``hits[offset:offset + k]`` of the same search with a larger k: plain, filtered
(inside the index and by over-fetching), hybrid and re-ranked searches, on random small
collections full of equal scores.
"""

from __future__ import annotations

import itertools
import re
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from query_fixtures import Data

from indexers import build_index
from retrieval import Collection, QueryError
from retrieval.search.builder import MAX_HYBRID_DEPTH, build_query, validate
from retrieval.search.planning import filtered_search
from retrieval.search.query import Hybrid, Query, Term
from retrieval.search.rerank import (
    MMR,
    Candidate,
    Dedup,
    Exact,
    ModelRerank,
    RerankContext,
    Stage,
    by_score,
    run_pipeline,
)

PROPERTY = settings(max_examples=12, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# A few phrases, so that a collection holds many copies of each (equal vectors and keyword
# scores); "g" sorts texts into groups for filters of every selectivity.
PHRASES = ("a red box", "a green box", "red", "a blue ball", "green green ball", "a box")
MODES: dict[str, dict[str, Any]] = {
    "plain": {},
    "filter inside the index": {"filters": ["g = 0"]},
    "filter by over-fetching": {"filters": ["g >= 1"]},
    "hybrid": {"hybrid": True},
    "hybrid, filtered": {"hybrid": True, "filters": ["g != 2"]},
    "exact": {"rerank": "exact"},
    "mmr": {"rerank": "mmr:0.5"},
    "dedup": {"rerank": "dedup:0.9"},
    "exact, mmr, dedup": {"rerank": "exact,mmr:0.7,dedup:0.95"},
    "dedup, mmr, hybrid": {"rerank": "dedup:0.99,mmr:0.3", "hybrid": True},
}


class TaggedEncoder:
    """The tiny test model under its own name and width, but a text embeds to one of a few
    fixed vectors: the one its ``#n`` tag names, else one its words pick. Many unlike texts
    then score exactly alike, and how a text ranks by vector is unrelated to how it ranks by
    keyword."""

    def __init__(self, encoder: Any) -> None:
        self._encoder = encoder
        rng = np.random.default_rng(7)
        base = rng.normal(size=(6, encoder.dim)).astype(np.float32)
        self.base = base / np.linalg.norm(base, axis=1, keepdims=True)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._encoder, name)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.base[self._pick(t) % len(self.base)] for t in texts])

    @staticmethod
    def _pick(text: str) -> int:
        tag = re.search(r"#(\d+)", text)
        return int(tag.group(1)) if tag else zlib.crc32(text.encode())


@pytest.fixture(scope="module")
def tagged(encoder: Any) -> TaggedEncoder:
    return TaggedEncoder(encoder)


_RUNS = itertools.count()  # ids differ between examples: on PostgreSQL they share a database


def _collection(root: Path, encoder: TaggedEncoder, picks: list[tuple[int, int]]
                ) -> Collection:
    col = Collection(root, encoder=encoder)
    run = next(_RUNS)
    records = [{"text": f"{PHRASES[p]} #{v}", "id": f"r{run}-t{i}", "g": i % 5}
               for i, (p, v) in enumerate(picks)]
    assert col.add_texts(records).added == len(records)
    return col


def _view(hits: list[Any]) -> list[tuple[int, float | None, list[int]]]:
    return [(h.id, h.score, h.metadata.get("duplicates", [])) for h in hits]


def _assert_pages(col: Collection, text: str, n: int, opts: dict[str, Any]) -> None:
    """Pages of one, two and three over the first results, and the last pages, against the
    search for all n."""
    full = _view(col.search(text, target="text", k=n, **opts))
    if "rerank" not in opts:
        scores = [s or 0.0 for _, s, _ in full]
        assert scores == sorted(scores, reverse=True)
    pages = [(k, offset) for k in (1, 2, 3) for offset in range(0, 12, k)]
    pages += [(3, n - 4), (2, n - 1), (1, n)]
    for k, offset in pages:
        page = _view(col.search(text, target="text", k=k, offset=offset, **opts))
        assert page == full[offset:offset + k], (opts, k, offset)


# More texts than the pools fusion and re-ranking used to fetch for a page of ten (4 x its
# depth, at least depth + 40), which grew with the page.
@given(picks=st.lists(st.tuples(st.integers(0, len(PHRASES) - 1), st.integers(0, 5)),
                     min_size=60, max_size=90),
       query=st.sampled_from((*PHRASES, "box", "green ball")))
@PROPERTY
def test_every_page_is_a_slice_of_the_full_list(tmp_path_factory: pytest.TempPathFactory,
                                                tagged: TaggedEncoder,
                                                picks: list[tuple[int, int]],
                                                query: str) -> None:
    col = _collection(tmp_path_factory.mktemp("paging") / "col", tagged, picks)
    try:
        n = len(col._catalog.vector_ids("text"))  # more than picks on a shared database
        for opts in MODES.values():
            _assert_pages(col, query, n, opts)
    finally:
        col.close()


def test_ties_are_broken_by_id(tmp_path: Path, tagged: TaggedEncoder) -> None:
    """Sixteen texts on two vectors: equal scores come in id order."""
    col = _collection(tmp_path / "col", tagged, [(0, 0), (3, 1)] * 8)
    try:
        hits = col.search("a red box", target="text", k=16)
        scores = [h.score for h in hits]
        assert scores[:8] == [scores[0]] * 8 and scores[8:] == [scores[8]] * 8
        assert [h.id for h in hits[:8]] == sorted(h.id for h in hits[:8])
        assert [h.id for h in hits[8:]] == sorted(h.id for h in hits[8:])
        # the symptom: pages of two repeated one hit and skipped another
        pages = [h.id for off in range(0, 16, 2)
                 for h in col.search("a red box", target="text", k=2, offset=off)]
        assert pages == [h.id for h in hits]
    finally:
        col.close()


def test_hybrid_depth_is_within_its_pool() -> None:
    build_query("x", hybrid=True, k=MAX_HYBRID_DEPTH - 10, offset=10)
    with pytest.raises(QueryError) as err:
        build_query("x", hybrid=True, k=MAX_HYBRID_DEPTH, offset=1)
    assert str(err.value) == (f"with hybrid, offset + k is at most {MAX_HYBRID_DEPTH}, "
                              f"got {MAX_HYBRID_DEPTH + 1}")
    hand_made = Query([Term("text", "x")], hybrid=Hybrid(), k=MAX_HYBRID_DEPTH, offset=5)
    with pytest.raises(QueryError, match=r"^with hybrid, offset"):
        validate(hand_made)  # what every search runs first


# --- the planner on its own: every plan completes the group tied with the k-th ---------------

def _tied_index(n: int, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """n vectors drawn from four, under ids that are not in row order."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(4, 8)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    vecs = base[rng.integers(0, 4, n)]
    ids = rng.permutation(np.arange(100, 100 + 7 * n, 7, dtype=np.int64))
    index = build_index(8, "flat")
    index.add(ids, vecs)
    return index, ids, base


@given(n=st.integers(8, 300), share=st.sampled_from([None, 0.1, 0.25, 0.3, 0.7, 1.0]),
       seed=st.integers(0, 2**16), k=st.integers(1, 40))
@settings(max_examples=80, deadline=None, database=None, derandomize=True)
def test_planner_pages_are_slices(n: int, share: float | None, seed: int, k: int) -> None:
    index, ids, base = _tied_index(n, seed)
    rng = np.random.default_rng(seed + 1)
    allow = None if share is None else rng.choice(ids, max(1, int(share * n)), replace=False)
    q = base[0] + 0.5 * base[1]
    q = (q / np.linalg.norm(q)).astype(np.float32)
    everything = len(ids) if allow is None else len(allow)
    full, _ = filtered_search(index, q, everything, allow)
    assert sorted(i for i, _ in full) == sorted((ids if allow is None else allow).tolist())
    assert full == sorted(full, key=lambda p: (-p[1], p[0]))  # by score, then id
    for kk in _around(k, everything):
        page, _ = filtered_search(index, q, kk, allow)
        assert page == full[:kk], kk


def _around(k: int, n: int) -> Iterator[int]:
    yield from sorted({1, k, min(n, k + 1), max(1, n - 1)})


# --- the re-ranking stages: asked for a few results, they answer what a full run would -------

class _SecondModel:
    """A second model for the model stage: another fixed vector per item."""

    def __init__(self, vectors: np.ndarray, query: np.ndarray) -> None:
        self.vectors, self.query = vectors, query

    def embed_query(self, terms: Any, check: Any = None) -> np.ndarray:
        return self.query

    def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        return {i: self.vectors[i] for i in ids}


def _stage_ctx(vecs: np.ndarray, q: np.ndarray, second: _SecondModel, k: int) -> RerankContext:
    return RerankContext(Query([Term("vector", q)], k=k), q, k, lambda ids: vecs[ids],
                         lambda _spec: second)


def _pool(vecs: np.ndarray, q: np.ndarray) -> list[Candidate]:
    scores = (vecs @ q).tolist()
    return sorted((Candidate(i, s, scores={"vector": s}) for i, s in enumerate(scores)),
                  key=by_score)


STAGE_KINDS = ("exact", "mmr", "dedup", "model")


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


@given(seed=st.integers(0, 2**16), n=st.integers(2, 120),
       order=st.permutations(STAGE_KINDS), used=st.integers(1, 4), top_n=st.integers(1, 40),
       lam=st.sampled_from([0.0, 0.4, 0.8]), threshold=st.sampled_from([0.5, 0.8, 0.999]))
@settings(max_examples=200, deadline=None, database=None, derandomize=True)
def test_pipeline_heads_are_those_of_a_full_run(seed: int, n: int, order: list[str],
                                                used: int, top_n: int, lam: float,
                                                threshold: float) -> None:
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(5, 8)))
    # copies of five vectors (equal scores) and vectors near them (near-duplicates)
    vecs = base[rng.integers(0, 5, n)]
    near = rng.random(n) < 0.5
    vecs[near] = _unit(vecs[near] + 0.4 * rng.normal(size=(int(near.sum()), 8)))
    q = base[0]
    second = _SecondModel(base[rng.integers(0, 5, n)], base[1])

    def stages() -> list[Stage]:
        make = {"exact": Exact, "mmr": lambda: MMR(lam), "dedup": lambda: Dedup(threshold),
                "model": lambda: ModelRerank("ViT-B-32@laion2b_s34b_b79k", top_n)}
        return [make[kind]() for kind in order[:used]]

    full = _pool(vecs, q)
    for stage in stages():  # every stage over every candidate: MMR picks them all
        full = stage.apply(_stage_ctx(vecs, q, second, n), full)
    want = [(c.id, c.score, c.duplicates) for c in full]
    for depth in sorted({1, 2, n // 3 + 1, n - 1, n} - {0}):
        got = run_pipeline(stages(), _stage_ctx(vecs, q, second, depth), _pool(vecs, q), depth)
        assert [(c.id, c.score, c.duplicates) for c in got[:depth]] == want[:depth], depth


@pytest.mark.parametrize("kinds", [("mmr", "dedup"), ("mmr", "model", "dedup")])
def test_dedup_asks_the_stages_before_for_more(kinds: tuple[str, ...]) -> None:
    """25 copies of the best item come first; after them MMR prefers B to the more relevant
    A. Dedup keeps the best copy and then B, the first candidate past 25 in MMR's order: it
    must ask MMR for more picks than it first did (and through the model stage too)."""
    e = np.eye(8, dtype=np.float32)
    best, a, b = _unit(e[0] + 0.1 * e[1]), _unit(e[0] + 0.5 * e[1]), _unit(e[0] + 0.6 * e[2])
    vecs = np.stack([best] * 25 + [a, b])
    q = e[0]
    make = {"mmr": lambda: MMR(0.6), "dedup": lambda: Dedup(0.999),
            "model": lambda: ModelRerank("ViT-B-32@laion2b_s34b_b79k", 2)}
    second = _SecondModel(vecs, q)  # the same scores as the first model
    for depth in (2, 3):
        got = run_pipeline([make[k]() for k in kinds], _stage_ctx(vecs, q, second, depth),
                           _pool(vecs, q), depth)
        assert [c.id for c in got[:depth]] == [0, 26, 25][:depth]
        assert got[0].duplicates == list(range(1, 25))


# --- on the query tests' shared collection (query_fixtures.data) ----------------------------------

@pytest.mark.parametrize("extra", [
    {}, {"filters": ["orientation != square"]}, {"hybrid": True}, {"rerank": "exact,mmr:0.5"},
    {"target": "texts"},
])
def test_paging(data: Data, extra: dict[str, Any]) -> None:
    full = data.col.search("a picture", k=10, **extra)
    second = data.col.search("a picture", k=5, offset=5, **extra)
    assert len(full) == 10
    assert [h.id for h in second] == [h.id for h in full[5:]]
    assert [h.score for h in second] == pytest.approx([h.score for h in full[5:]])
    beyond = data.col.search("a picture", k=5, offset=490, **extra)  # within every pool
    assert beyond == []
