"""Issue 19, item 7: the work of one search is bounded.

Before: a rerank string of 62 ``mmr:0.5`` stages at k=10000 over 12,000 texts held a core for
minutes and 1.3 GB; ``exact,mmr:0.7`` at k=10000 took 7 s and 600 MB (a C x C similarity
matrix); nothing could stop a search once started. Now the query builder allows each kind of
stage once (four at most) and a re-ranking depth (offset + k) of at most ``MAX_CANDIDATES``;
stages are handed at most that many candidates; MMR and dedup update one vector of similarities
per pick instead of building a matrix; and a search's deadline and cancel flag are checked
between its phases and inside the stages' loops.

No test here measures speed: cancellation is driven by flags that count their checks, and
the memory test counts bytes allocated (tracemalloc), not seconds.
"""

from __future__ import annotations

import math
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rerank_reference import dedup_reference, mmr_reference

from retrieval import Collection, QueryError, RetrievalError
from retrieval.errors import SearchCancelled, SearchInterrupted, SearchTimeout
from retrieval.search import build_query
from retrieval.search.budget import UNLIMITED, Budget
from retrieval.search.query import Query, Term
from retrieval.search.rerank import (
    MAX_CANDIDATES,
    MMR,
    Candidate,
    Dedup,
    Exact,
    ModelRerank,
    RerankContext,
    Stage,
)

N_TEXTS = MAX_CANDIDATES + 500  # more than any stage may be handed


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


class CountingFlag:
    """A cancel flag that answers "set" from its ``after``-th check on (0: never), and counts
    the checks; ``on_trip`` runs once, at the check that trips it."""

    def __init__(self, after: int = 0, on_trip: Any = None) -> None:
        self.after, self.on_trip, self.checks = after, on_trip, 0

    def is_set(self) -> bool:
        self.checks += 1
        tripped = bool(self.after) and self.checks >= self.after
        if tripped and self.checks == self.after and self.on_trip is not None:
            self.on_trip()
        return tripped


def _ctx(vecs: np.ndarray, q: np.ndarray, k: int, budget: Budget = UNLIMITED) -> RerankContext:
    def stored(ids: list[int]) -> np.ndarray:
        return vecs[ids]

    def no_second_model(_spec: Any) -> Any:
        raise AssertionError("no second model here")

    return RerankContext(Query([Term("vector", q)], k=k), q, k, stored, no_second_model, budget)


def _random(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return _unit(rng.normal(size=(n, d))), _unit(rng.normal(size=d))


def _cands(vecs: np.ndarray, q: np.ndarray) -> list[Candidate]:
    rel = vecs @ q
    return [Candidate(int(i), float(rel[i])) for i in np.argsort(-rel, kind="stable")]


@pytest.fixture(scope="module")
def col(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[Collection]:
    base = tmp_path_factory.mktemp("bounded")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRIEVAL_HOME", str(base / "home"))
        mp.setenv("HF_HUB_OFFLINE", "1")
        c = Collection(base / "col", encoder=encoder)
        words = ("red", "green", "blue", "round", "square", "small", "large", "bright")
        texts = [f"a {words[i % 8]} {words[(i // 8) % 8]} thing number {i}"
                 for i in range(N_TEXTS)]
        assert c.add_texts(texts).added == N_TEXTS
    yield c
    c.close()


# --- the builder's limits ---------------------------------------------------------------------

def test_sixty_two_stages_refused_in_one_line() -> None:
    attack = ",".join(["mmr:0.5"] * 62)  # 495 characters: under the service's 500
    with pytest.raises(QueryError) as err:
        build_query("a photo", k=10, rerank=attack)
    assert str(err.value) == "at most 4 rerank stages, got 62"


def test_a_kind_of_stage_runs_once() -> None:
    with pytest.raises(QueryError, match="rerank stage 'mmr' is given twice") as err:
        build_query("a photo", rerank="mmr:0.5,exact,mmr:0.9")
    assert "\n" not in str(err.value)
    assert len(build_query("a photo", rerank="exact,mmr:0.7,dedup:0.95").rerank) == 3


@pytest.mark.parametrize(("k", "offset"), [(10_000, 0), (MAX_CANDIDATES, 1), (1, MAX_CANDIDATES)])
def test_rerank_depth_bounded(k: int, offset: int) -> None:
    with pytest.raises(QueryError) as err:
        build_query("a photo", k=k, offset=offset, rerank="exact,mmr:0.7")
    assert str(err.value) == (f"with rerank, offset + k is at most {MAX_CANDIDATES}, "
                              f"got {k + offset}")
    build_query("a photo", k=k, offset=offset)  # without re-ranking the usual limits hold


def test_hand_made_query_checked_too(col: Collection) -> None:
    """A Query built by hand goes through the same rules when it is run."""
    query = Query([Term("text", "a red thing")], target="text", k=10,
                  rerank=[MMR(0.5) for _ in range(5)])
    with pytest.raises(QueryError, match="at most 4 rerank stages"):
        col.run(query)


# --- what a stage may touch ---------------------------------------------------------------

class Recorder(Stage):
    name = kind = "recorder"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        self.seen.append(len(cands))
        return cands


@pytest.mark.parametrize(("k", "offset"), [(10, 0), (MAX_CANDIDATES // 2, 0),
                                           (MAX_CANDIDATES // 2, MAX_CANDIDATES // 2)])
def test_stages_see_at_most_max_candidates(col: Collection, k: int, offset: int) -> None:
    recorder = Recorder()
    hits = col.search("a red thing", target="text", k=k, offset=offset, rerank=[recorder],
                      hybrid=True)
    assert len(hits) == k
    assert recorder.seen == [MAX_CANDIDATES]  # the same pool for every page


def test_worst_allowed_pipeline_runs(col: Collection) -> None:
    hits = col.search("a red thing", target="text", k=MAX_CANDIDATES,
                      rerank="exact,mmr:0.7,dedup:0.95", hybrid=True)
    # dedup merges this tiny model's many near-identical texts: fewer than k remain
    assert 0 < len(hits) <= MAX_CANDIDATES
    assert len({h.id for h in hits}) == len(hits)
    merged = sum(len(h.metadata.get("duplicates", [])) for h in hits)
    assert len(hits) + merged == MAX_CANDIDATES


def test_mmr_never_builds_a_candidate_matrix() -> None:
    """Old MMR: a C x C float32 matrix (16 MB at C = 2,000). Now: a few vectors of C."""
    c = 2_000  # more than the searcher hands a stage: the matrix would show
    vecs, q = _random(c, 32)
    cands = _cands(vecs, q)
    tracemalloc.start()
    try:
        MMR(0.7).apply(_ctx(vecs, q, 200), cands)
        Dedup(0.5).apply(_ctx(vecs, q, 200), cands)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < c * c * 4 // 8, peak


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(2, 60), k=st.integers(1, 70),
       lam=st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]), threshold=st.sampled_from([0.2, 0.6]))
@settings(max_examples=60, deadline=None, database=None, derandomize=True)
def test_incremental_stages_match_the_reference(seed: int, n: int, k: int, lam: float,
                                                threshold: float) -> None:
    # Few distinct directions, so that ties and near-duplicates are common.
    rng = np.random.default_rng(seed)
    base = _unit(rng.normal(size=(4, 8)))
    vecs = _unit(base[rng.integers(0, 4, n)] + 0.3 * rng.normal(size=(n, 8)))
    q = _unit(rng.normal(size=8))
    out = MMR(lam).apply(_ctx(vecs, q, k), [Candidate(i, 0.0) for i in range(n)])
    assert [c.id for c in out] == mmr_reference(vecs, q, k, lam)
    out = Dedup(threshold).apply(_ctx(vecs, q, k), [Candidate(i, 0.0) for i in range(n)])
    assert [(c.id, c.duplicates) for c in out] == dedup_reference(vecs, threshold)


# --- deadline and cancellation --------------------------------------------------------------

def test_deadline_already_past_raises_at_once(col: Collection) -> None:
    with pytest.raises(SearchTimeout) as err:
        col.search("a red thing", target="text", k=10, deadline=time.monotonic() - 1)
    assert "deadline" in str(err.value) and "\n" not in str(err.value)
    assert not isinstance(err.value, QueryError)  # the service answers 503, not 400
    assert isinstance(err.value, SearchInterrupted) and isinstance(err.value, RetrievalError)
    hits = col.search("a red thing", target="text", k=10, deadline=time.monotonic() + 3600)
    assert len(hits) == 10


def test_cancel_set_before_run_raises(col: Collection) -> None:
    cancel = threading.Event()
    cancel.set()
    query = build_query("a red thing", target="text", k=MAX_CANDIDATES, rerank="exact,mmr:0.7")
    with pytest.raises(SearchCancelled) as err:
        col.run(query, cancel=cancel)
    assert str(err.value) == "the search was cancelled by its caller"


@pytest.mark.parametrize(("stage", "k"), [(MMR(0.7), 500), (Dedup(0.2), 500), (Exact(), 500)])
def test_stage_checks_inside_its_loop(stage: Stage, k: int) -> None:
    """A flag that trips at its n-th check stops the stage there: the stage kept checking."""
    vecs, q = _random(2_000, 16)  # exact checks once per block of 256: several blocks
    cands = _cands(vecs, q)
    free = CountingFlag()
    stage.apply(_ctx(vecs, q, k, Budget(cancel=free)), list(cands))
    assert free.checks > 5  # exact: one per block of 256; mmr, dedup: one per pick
    trip = free.checks - 2  # well past the first check: inside the loop
    flag = CountingFlag(after=trip)
    with pytest.raises(SearchCancelled):
        stage.apply(_ctx(vecs, q, k, Budget(cancel=flag)), list(cands))
    assert flag.checks == trip  # stopped at the check that saw the flag, not at the end


def test_model_stage_checks_between_terms_and_batches() -> None:
    """The model stage: a check before each query term it embeds, and between batches of the
    items it re-embeds (a second model over images is the slowest stage there is)."""
    vecs, q = _random(MAX_CANDIDATES, 16)
    embedded: list[int] = []

    class Second:
        def embed_query(self, terms: Sequence[Term], check: Callable[[], None] = lambda: None
                        ) -> np.ndarray:
            for _ in terms:
                check()
            return q

        def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
            embedded.extend(ids)
            return {i: vecs[i] for i in ids}

    stage = ModelRerank("local-dir:/unused", top_n=MAX_CANDIDATES)
    query = Query([Term("text", "a"), Term("text", "b"), Term("text", "c")], k=10)

    def ctx(budget: Budget) -> RerankContext:
        return RerankContext(query, q, 10, lambda ids: vecs[ids], lambda _s: Second(), budget)

    free = CountingFlag()
    stage.apply(ctx(Budget(cancel=free)), _cands(vecs, q))
    assert free.checks == 3 + math.ceil(MAX_CANDIDATES / ModelRerank.batch)
    embedded.clear()
    flag = CountingFlag(after=3 + 5)  # the three terms, then five batches
    with pytest.raises(SearchCancelled):
        stage.apply(ctx(Budget(cancel=flag)), _cands(vecs, q))
    assert len(embedded) == 4 * ModelRerank.batch


def test_cancel_from_another_thread_stops_mmr() -> None:
    """Another thread sets the event while MMR runs: the check that trips waits until the
    other thread has set the real event, so nothing depends on timing."""
    vecs, q = _random(MAX_CANDIDATES, 16)
    cancel = threading.Event()
    midway = threading.Event()

    class Watch:
        checks = 0

        def is_set(self) -> bool:
            self.checks += 1
            if self.checks == 50:  # well inside the selection loop
                midway.set()
                assert cancel.wait(30), "the other thread never set the event"
            return cancel.is_set()

    def cancel_midway() -> None:
        if midway.wait(30):
            cancel.set()

    worker = threading.Thread(target=cancel_midway)
    worker.start()
    watch = Watch()
    try:
        with pytest.raises(SearchCancelled):
            MMR(0.7).apply(_ctx(vecs, q, 1000, Budget(cancel=watch)), _cands(vecs, q))
    finally:
        worker.join(30)
    assert watch.checks == 50


def test_collection_search_cancelled_inside_a_stage(col: Collection) -> None:
    """On a real collection: the flag trips after the phases before re-ranking, the search
    stops inside MMR's loop, and the collection keeps answering."""
    query = build_query("a red thing", target="text", k=MAX_CANDIDATES, rerank="exact,mmr:0.7")
    free = CountingFlag()
    col.run(query, cancel=free)
    flag = CountingFlag(after=free.checks - 100)
    with pytest.raises(SearchCancelled) as err:
        col.run(query, cancel=flag)
    frames = [f.name for f in err.traceback]
    assert "apply" in frames and frames[-1] == "check"
    assert len(col.search("a red thing", target="text", k=5)) == 5
