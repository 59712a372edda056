"""Building a query (``retrieval.search.query`` and ``.builder``): weighted terms and how they
combine, validation, the bounds on stages, filters and image terms, and the candidate pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from query_fixtures import unit

from retrieval import QueryError
from retrieval.search.builder import validate
from retrieval.search.query import Query, Term, combine, parse_weighted
from retrieval.search.rerank import (
    parse_pipeline,
)


@pytest.mark.parametrize("arg, expected", [
    ("2:red car", (2.0, "red car")),
    ("-0.5:x", (-0.5, "x")),
    ("+1.5: spaced ", (1.5, "spaced")),
    (".25:y", (0.25, "y")),
    ("note: hi", (1.0, "note: hi")),
    ("3:", (1.0, "3:")),
    ("3:   ", (1.0, "3:   ")),
    ("plain words", (1.0, "plain words")),
    ("12:30 meeting", (12.0, "30 meeting")),
])
def test_parse_weighted(arg: str, expected: tuple[float, str]) -> None:
    assert parse_weighted(arg) == expected


@given(st.integers(-9999, 9999), st.text(min_size=1, max_size=20).filter(lambda s: s.strip()))
@settings(max_examples=60, deadline=None, database=None)
def test_parse_weighted_roundtrip(hundredths: int, text: str) -> None:
    weight = hundredths / 100
    assert parse_weighted(f"{weight:.2f}:{text}") == (pytest.approx(weight), text.strip())


def _vectors(seed: int, n: int, dim: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=dim).astype(np.float32) * rng.uniform(0.1, 10) for _ in range(n)]


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5),
       weights=st.lists(st.floats(0.05, 10), min_size=5, max_size=5),
       scale=st.floats(0.01, 100))
@settings(max_examples=60, deadline=None, database=None)
def test_combine_unit_norm_and_relative_weights(seed: int, n: int, weights: list[float],
                                                scale: float) -> None:
    vecs, w = _vectors(seed, n), weights[:n]
    q = combine(vecs, w)
    assert q.dtype == np.float32
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)
    scaled = combine(vecs, [scale * x for x in w])
    np.testing.assert_allclose(scaled, q, atol=1e-5)
    # each term is normalised first: the embeddings' lengths do not matter either
    rescaled = combine([v * (i + 3.7) for i, v in enumerate(vecs)], w)
    np.testing.assert_allclose(rescaled, q, atol=1e-5)


@given(seed=st.integers(0, 2**32 - 1), w=st.floats(0.05, 5))
@settings(max_examples=60, deadline=None, database=None)
def test_negative_weight_moves_away(seed: int, w: float) -> None:
    a, b = _vectors(seed, 2)
    ua, ub = unit(a), unit(b)
    assume(abs(float(ua @ ub)) < 0.98)
    alone = combine([a], [1.0])
    pushed = combine([a, b], [1.0, -w])
    assert float(pushed @ ub) < float(alone @ ub) - 1e-4
    pulled = combine([a, b], [1.0, w])
    assert float(pulled @ ub) > float(alone @ ub) + 1e-4


def test_combine_errors() -> None:
    v = np.array([1.0, 2.0, 3.0], np.float32)
    with pytest.raises(QueryError, match="cancel"):
        combine([v, v], [1.0, -1.0])
    with pytest.raises(QueryError, match="cancel"):
        combine([v, 5 * v], [2.0, -2.0])  # normalised first: cancels despite the lengths
    with pytest.raises(QueryError, match="zero or invalid"):
        combine([v, np.zeros(3, np.float32)], [1.0, 1.0])
    with pytest.raises(QueryError, match="zero or invalid"):
        combine([np.array([np.nan, 1, 1], np.float32)], [1.0])
    np.testing.assert_allclose(combine([v], [1.0]), unit(v), atol=1e-6)


@pytest.mark.parametrize("query, message", [
    (Query([]), "nothing to search for"),
    (Query([Term("text", "x")], k=0), "k must be"),
    (Query([Term("text", "x")], k=-3), "k must be"),
    (Query([Term("text", "x")], k=10_001), "k must be"),
    (Query([Term("text", "x")], k=True), "k must be"),
    (Query([Term("text", "x")], target="movies"), "unknown target"),
    (Query([Term("text", "x")], offset=-1), "offset"),
    (Query([Term("text", "x", float("nan"))]), "finite"),
    (Query([Term("text", "   ")]), "empty text"),
])
def test_query_validate_errors(query: Query, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        validate(query)


def test_query_validate_accepts_and_keyword_text() -> None:
    q = Query([Term("text", "red car", 2.0), Term("text", "people", -1.0),
               Term("vector", [1.0, 0.0])], target="texts", k=10_000, offset=5)
    validate(q)
    assert q.target == "text"  # the plural is accepted and normalised
    assert q.keyword_text() == "red car"  # only positive text terms are keywords


def test_rerank_bounds_in_builder() -> None:
    from retrieval.search.builder import MAX_FILTERS, MAX_RERANK_DEPTH, MAX_STAGES, build_query
    from retrieval.search.rerank import MAX_TOP_N

    full = build_query("x", k=MAX_RERANK_DEPTH, rerank="exact,mmr:0.7,dedup:0.95,model:demo:5")
    assert [s.kind for s in full.rerank] == ["exact", "mmr", "dedup", "model"]
    assert len(full.rerank) == MAX_STAGES
    with pytest.raises(QueryError, match=f"^at most {MAX_STAGES} rerank stages, got 5$"):
        build_query("x", rerank="exact,mmr,dedup,model:demo,mmr:0.1")
    with pytest.raises(QueryError, match=r"^rerank stage 'dedup' is given twice"):
        build_query("x", rerank="dedup:0.9,dedup:0.8")
    with pytest.raises(QueryError, match=rf"offset \+ k is at most {MAX_RERANK_DEPTH}"):
        build_query("x", k=MAX_RERANK_DEPTH - 9, offset=10, rerank="exact")
    for top in (0, MAX_TOP_N + 1):
        with pytest.raises(QueryError, match="top N is between 1 and"):
            parse_pipeline(f"model:demo:{top}")
    build_query("x", filters=["width > 1"] * MAX_FILTERS)
    with pytest.raises(QueryError, match=f"^at most {MAX_FILTERS} filters, got"):
        build_query("x", filters=["width > 1"] * MAX_FILTERS, tags=["a"])


def test_image_terms_bounded() -> None:
    from retrieval.search.builder import MAX_IMAGE_TERMS, build_query

    image = {"kind": "image", "value": b"\x89PNG not decoded by the builder"}
    assert len(build_query("x", terms=[image] * MAX_IMAGE_TERMS).terms) == MAX_IMAGE_TERMS + 1
    message = f"^at most {MAX_IMAGE_TERMS} image terms, got {MAX_IMAGE_TERMS + 1}$"
    with pytest.raises(QueryError, match=message):
        build_query(terms=[image] * (MAX_IMAGE_TERMS + 1))


@pytest.mark.parametrize(("k", "offset", "extra", "pool"), [
    (10, 0, {}, 10), (10, 5, {"hybrid": True}, 500), (10, 0, {"rerank": "mmr"}, 500),
    (400, 100, {"rerank": "mmr"}, 500), (500, 0, {"rerank": "exact"}, 500),
    (490, 10, {"hybrid": True}, 500), (10_000, 0, {}, 10_000), (10_000, 10_000, {}, 20_000),
])
def test_candidate_pool(k: int, offset: int, extra: dict[str, Any], pool: int) -> None:
    from retrieval.search.builder import build_query
    from retrieval.search.searcher import candidate_pool

    assert candidate_pool(build_query("x", k=k, offset=offset, **extra)) == pool
