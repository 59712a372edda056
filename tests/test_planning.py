"""Filter planning and fusion (``retrieval.search.planning``): each plan returns the exact
filtered top k of a flat index, and reciprocal-rank fusion's arithmetic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from query_fixtures import unit

from indexers import build_index
from retrieval.search.planning import filtered_search, fuse
from retrieval.search.query import Hybrid


def _planner_index(n: int, dim: int, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = 1000 + 3 * np.arange(n, dtype=np.int64)  # ids are not row numbers
    index = build_index(dim, "flat")
    index.add(ids, vecs)
    return index, ids, vecs


def _exact(ids: np.ndarray, vecs: np.ndarray, q: np.ndarray, allow: np.ndarray, k: int
           ) -> list[tuple[int, float]]:
    mask = np.isin(ids, allow)
    scores = vecs[mask] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[mask][i]), float(scores[i])) for i in order]


def _same(pairs: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in pairs] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in pairs], [s for _, s in want], atol=1e-5)


def test_planner_branches() -> None:
    index, ids, vecs = _planner_index(400, 16)
    rng = np.random.default_rng(1)
    q = unit(rng.normal(size=16))
    selective = rng.choice(ids, 20, replace=False)
    pairs, plan = filtered_search(index, q, 10, selective)
    assert plan == "selector"
    _same(pairs, _exact(ids, vecs, q, selective, 10))

    broad = rng.choice(ids, 300, replace=False)
    pairs, plan = filtered_search(index, q, 10, broad)
    assert plan == "overfetch"
    _same(pairs, _exact(ids, vecs, q, broad, 10))

    # broad, but the best unfiltered results are all excluded: the pool must grow
    order = np.argsort(-(vecs @ q))
    allow = ids[order[80:]]
    pairs, plan = filtered_search(index, q, 10, allow)
    assert plan == "overfetch"
    _same(pairs, _exact(ids, vecs, q, allow, 10))
    # fewer matches than k: all of them
    few_but_broad = ids[order[-120:]]
    pairs, plan = filtered_search(index, q, 200, few_but_broad)
    assert plan == "overfetch" and len(pairs) == 120
    _same(pairs, _exact(ids, vecs, q, few_but_broad, 200))

    pairs, plan = filtered_search(index, q, 5, None)
    assert plan == "plain"
    _same(pairs, _exact(ids, vecs, q, ids, 5))
    assert filtered_search(index, q, 5, np.array([], np.int64)) == ([], "empty")


def test_planner_selector_inside_faiss() -> None:
    """An allow-list too long for the exact shortcut goes through FAISS's id selector."""
    index, ids, vecs = _planner_index(20_000, 8, seed=3)
    rng = np.random.default_rng(4)
    allow = rng.choice(ids, 4500, replace=False)  # 22.5%: selective, but > 4096 ids
    for _ in range(3):
        q = unit(rng.normal(size=8))
        pairs, plan = filtered_search(index, q, 25, allow)
        assert plan == "selector"
        _same(pairs, _exact(ids, vecs, q, allow, 25))


@given(share=st.floats(0.01, 1.0), k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None, database=None)
def test_planner_property(share: float, k: int, seed: int) -> None:
    index, ids, vecs = _planner_index(300, 8)
    rng = np.random.default_rng(seed)
    allow = rng.choice(ids, max(1, int(share * len(ids))), replace=False)
    q = unit(rng.normal(size=8))
    pairs, plan = filtered_search(index, q, k, allow)
    assert plan == ("selector" if len(allow) / len(ids) <= 0.25 else "overfetch")
    _same(pairs, _exact(ids, vecs, q, allow, k))


# --- fusion ---------------------------------------------------------------------------------------

def test_fuse_rrf_math() -> None:
    vector = [(1, 0.9), (2, 0.8), (3, 0.7)]
    keyword = [(2, 7.0), (4, 3.0)]
    out = fuse(vector, keyword, Hybrid())
    fused = {i: f for i, f, _ in out}
    assert fused[1] == pytest.approx(1 / 61)
    assert fused[2] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[3] == pytest.approx(1 / 63)
    assert fused[4] == pytest.approx(1 / 62)  # only in the keyword list, still there
    assert [i for i, _, _ in out] == [2, 1, 4, 3]
    parts = {i: p for i, _, p in out}
    assert parts[2] == {"vector": 0.8, "keyword": 7.0}
    assert parts[4] == {"keyword": 3.0}
    assert parts[1] == {"vector": 0.9}


def test_fuse_weights_and_k0() -> None:
    vector = [(1, 0.9), (2, 0.8)]
    keyword = [(2, 1.0)]
    out = fuse(vector, keyword, Hybrid(vector_weight=2.0, keyword_weight=0.5, k0=0))
    fused = {i: f for i, f, _ in out}
    assert fused == {1: pytest.approx(2.0), 2: pytest.approx(2.0 / 2 + 0.5 / 1)}
    assert [i for i, _, _ in out] == [1, 2]
    heavy = fuse(vector, keyword, Hybrid(keyword_weight=5.0))
    assert heavy[0][0] == 2
    assert fuse([], [], Hybrid()) == []
