"""Re-ranking (``retrieval.search.rerank``): the stages on their narrow context, parsing a
pipeline, then the stages on the shared collection, a second model's included.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from models import write_tiny_model
from query_fixtures import Data, _assert_ranking, _img, unit

from retrieval import QueryError
from retrieval.search import embedding
from retrieval.search.embedding import embed_image
from retrieval.search.query import Query, Term, combine
from retrieval.search.rerank import (
    MMR,
    STAGES,
    Candidate,
    Dedup,
    Exact,
    ModelRerank,
    RerankContext,
    parse_pipeline,
)


def _fake_ctx(vectors: dict[int, np.ndarray], q: np.ndarray, k: int) -> RerankContext:
    def stored(ids: list[int]) -> np.ndarray:
        return np.stack([vectors[i] for i in ids])

    def no_second_model(_spec: Any) -> Any:
        raise AssertionError("these stages need no second model")

    return RerankContext(Query([Term("vector", q)], k=k), unit(q), k, stored, no_second_model)


def _near_dup_vectors() -> tuple[dict[int, np.ndarray], np.ndarray]:
    q = np.array([1.0, 0, 0, 0], np.float32)
    vectors = {
        1: unit([1, 0.1, 0, 0]),
        2: unit([1, 0.1, 0.002, 0]),    # nearly the same as 1
        3: unit([1, 0, 0.5, 0]),        # less relevant, different direction
        4: unit([1, -0.3, -0.4, 0.6]),  # least relevant, most different from 1
    }
    return vectors, q


def test_exact_resorts_by_true_score() -> None:
    vectors, q = _near_dup_vectors()
    cands = [Candidate(4, 0.99), Candidate(3, 0.98), Candidate(2, 0.5), Candidate(1, 0.1)]
    out = Exact().apply(_fake_ctx(vectors, q, 4), cands)
    true = {i: float(v @ unit(q)) for i, v in vectors.items()}
    assert [c.id for c in out] == sorted(true, key=lambda i: -true[i])
    for c in out:
        assert c.score == pytest.approx(true[c.id]) and c.scores["exact"] == c.score
    assert Exact().apply(_fake_ctx(vectors, q, 4), []) == []


def test_mmr_lambda_extremes() -> None:
    vectors, q = _near_dup_vectors()
    rel = {i: float(v @ unit(q)) for i, v in vectors.items()}
    order = sorted(rel, key=lambda i: -rel[i])
    assert order[:2] == [1, 2]  # the two near-identical items are the top two
    cands = [Candidate(i, rel[i]) for i in order]
    out = MMR(1.0).apply(_fake_ctx(vectors, q, 4), [Candidate(i, rel[i]) for i in order])
    assert [c.id for c in out] == order
    out = MMR(0.0).apply(_fake_ctx(vectors, q, 4), cands)
    assert out[0].id == 1
    least_similar = min((2, 3, 4), key=lambda i: float(vectors[i] @ vectors[1]))
    assert out[1].id == least_similar == 4
    assert out[0].scores["mmr_relevance"] == pytest.approx(rel[1])


def test_mmr_moderate_lambda_demotes_near_duplicate() -> None:
    vectors, q = _near_dup_vectors()
    rel = {i: float(v @ unit(q)) for i, v in vectors.items()}
    order = sorted(rel, key=lambda i: -rel[i])
    out = MMR(0.3).apply(_fake_ctx(vectors, q, 2), [Candidate(i, rel[i]) for i in order])
    assert out[0].id == 1 and out[1].id != 2
    assert sorted(c.id for c in out) == [1, 2, 3, 4]  # nothing is dropped


def test_dedup_collapses_identical() -> None:
    vectors, q = _near_dup_vectors()
    vectors[5] = vectors[3].copy()
    cands = [Candidate(i, float(vectors[i] @ unit(q))) for i in (1, 2, 3, 5, 4)]
    out = Dedup(0.999).apply(_fake_ctx(vectors, q, 3), cands)
    assert [c.id for c in out] == [1, 3, 4]
    assert out[0].duplicates == [2] and out[1].duplicates == [5] and out[2].duplicates == []
    strict = Dedup(1.0 - 1e-6).apply(
        _fake_ctx(vectors, q, 3), [Candidate(i, 0.0) for i in (1, 2, 3, 5, 4)])
    assert [c.id for c in strict] == [1, 2, 3, 4]  # only the exact copy goes


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 40), k=st.integers(1, 12))
@settings(max_examples=30, deadline=None, database=None)
def test_stages_keep_k(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    q = unit(rng.normal(size=16))
    vectors = {i: unit(rng.normal(size=16)) for i in range(n)}
    assume(max(float(vectors[a] @ vectors[b]) for a in range(n) for b in range(a)) < 0.95)
    rel = sorted(vectors, key=lambda i: -float(vectors[i] @ q))
    for stage in (Exact(), MMR(0.0), MMR(0.7), MMR(1.0), Dedup(0.95)):
        out = stage.apply(_fake_ctx(vectors, q, k), [Candidate(i, 0.0) for i in rel])
        assert len(out) >= k, stage
        assert len({c.id for c in out}) == len(out) and {c.id for c in out} <= set(vectors)


def test_parse_pipeline() -> None:
    stages = parse_pipeline("exact, mmr:0.7 ,dedup:0.95")
    assert [type(s) for s in stages] == [Exact, MMR, Dedup]
    assert stages[1].lam == pytest.approx(0.7) and stages[2].threshold == pytest.approx(0.95)
    assert [repr(s) for s in stages] == ["exact", "mmr:0.7", "dedup:0.95"]
    defaults = parse_pipeline("mmr,dedup")
    assert defaults[0].lam == pytest.approx(0.7) and defaults[1].threshold == pytest.approx(0.95)
    model = parse_pipeline("model:local-dir:/x:30")
    assert len(model) == 1 and isinstance(model[0], ModelRerank)
    assert model[0].top_n == 30 and model[0].spec.name == "local-dir:/x"
    default_top = parse_pipeline("model:local-dir:/x")[0]
    assert isinstance(default_top, ModelRerank) and default_top.top_n == 50
    assert default_top.spec.name == "local-dir:/x"
    assert parse_pipeline(None) == [] and parse_pipeline("") == []
    assert parse_pipeline(stages) == stages


@pytest.mark.parametrize("spec", ["bogus", "mmr:abc", "exact:1", "dedup:x", "model", "model:",
                                  "mmr:1.5", "dedup:2", "model:ViT-B-32"])
def test_parse_pipeline_rejects(spec: str) -> None:
    with pytest.raises(QueryError):
        parse_pipeline(spec)


def test_parse_pipeline_unknown_message() -> None:
    with pytest.raises(QueryError, match="unknown rerank stage 'bogus'"):
        parse_pipeline("exact,bogus")
    with pytest.raises(QueryError, match="unknown rerank stage 'mmr:abc'"):
        parse_pipeline("mmr:abc")


def test_stages_are_registered_by_kind_and_listed_by_usage() -> None:
    assert list(STAGES) == ["exact", "mmr", "dedup", "model"]
    assert all(cls.kind == kind and cls.usage.startswith(kind) for kind, cls in STAGES.items())
    with pytest.raises(QueryError, match=r"stages: exact, mmr\[:LAMBDA\], dedup\[:COSINE\], "
                                         r"model:SPEC\[@PRETRAINED\]\[:TOP_N\]$"):
        parse_pipeline("bogus")


# --- on the shared collection ---------------------------------------------------------------------

def test_exact_on_collection(data: Data) -> None:
    q = unit(np.random.default_rng(7).normal(size=data.col.dim))
    hits = data.col.search(vector=q, k=10, rerank="exact")
    ids, vecs = data.col._catalog.vectors([img.id for img in data.images], data.col.dim)
    _assert_ranking(hits, list(zip(ids.tolist(), (vecs @ q).tolist(), strict=True)), 10)
    assert all(h.metadata["scores"]["exact"] == pytest.approx(h.score) for h in hits)


def test_pipeline_on_collection_keeps_k(data: Data) -> None:
    for spec in ("exact", "mmr:0", "mmr:0.7", "dedup:0.95", "exact,mmr:0.7,dedup:0.95"):
        for k in (1, 5, 12):
            hits = data.col.search("a photo", k=k, rerank=spec)
            assert len(hits) == k, (spec, k)
            assert len({h.id for h in hits}) == k


def test_dedup_on_collection_lists_copy(data: Data) -> None:
    orig, copy = _img(data, "wide/img000.jpg"), _img(data, "tall/copy_of_img000.jpg")
    assert np.array_equal(data.vector_of(orig.id), data.vector_of(copy.id))
    plain = data.col.search(image=orig.path, k=5)
    assert {h.id for h in plain[:2]} == {orig.id, copy.id}
    hits = data.col.search(image=orig.path, k=5, rerank="dedup:0.999")
    assert len(hits) == 5
    ids = [h.id for h in hits]
    assert ids[0] in (orig.id, copy.id)
    other = copy.id if ids[0] == orig.id else orig.id
    assert other not in ids
    assert hits[0].metadata["duplicates"] == [other]
    assert all("duplicates" not in h.metadata for h in hits[1:])


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("second") / "tiny1", seed=1)


def test_model_rerank(data: Data, second_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval import ModelSpec, load_encoder

    col = data.col
    spec = f"local-dir:{second_model}"
    key = str(ModelSpec.parse(spec))
    text, k = "a colourful picture", 8
    pool = col.search(text, k=50)  # the candidates the stage re-scores: its default top N
    assert len(pool) == 50
    pool_ids = [h.id for h in pool]
    assert col._catalog.aux_vectors(key, pool_ids) == {}

    aux = load_encoder(ModelSpec.parse(spec), "cpu")
    qv = combine([aux.embed_texts([text])[0]], [1.0])
    paths = {img.id: img.path for img in data.images}
    expected = [(i, float(embed_image(aux, paths[i]) @ qv)) for i in pool_ids]

    calls: list[list[int]] = []
    real = embedding.embed_stored

    def counting(catalog: Any, ids: Any, encoder: Any) -> Any:
        calls.append(list(ids))
        return real(catalog, ids, encoder)

    monkeypatch.setattr(embedding, "embed_stored", counting)
    hits = col.search(text, k=k, rerank=f"model:{spec}")
    _assert_ranking(hits, expected, k)
    assert [h.id for h in hits] != pool_ids[:k], "the second model did not re-order anything"
    assert all(h.metadata["scores"]["model"] == pytest.approx(h.score) for h in hits)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(pool_ids)
    cached = col._catalog.aux_vectors(key, pool_ids)
    assert set(cached) == set(pool_ids)
    for i, s in expected[:5]:
        assert float(cached[i] @ qv) == pytest.approx(s, abs=1e-4)

    again = col.search(text, k=k, rerank=f"model:{spec}")
    assert len(calls) == 1, "cached vectors were embedded again"
    assert [h.id for h in again] == [h.id for h in hits]

    # top_n: only the head is re-scored; the tail keeps the first model's order
    head = col.search(text, k=k, rerank=f"model:{spec}:3")
    assert len(head) == k
    top3 = sorted(pool_ids[:3], key=lambda i: -dict(expected)[i])
    assert [h.id for h in head][:3] == top3
    assert [h.id for h in head][3:] == pool_ids[3:k]


def test_model_rerank_uses_cached_vectors(data: Data, second_model: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The read side of the second-model cache, with the cache filled directly (the write side
    fails, see test_model_rerank): no item is embedded, the order follows the cached vectors."""
    from sqlalchemy import delete, insert

    from retrieval import ModelSpec, load_encoder
    from retrieval.storage.records import encode_vector
    from retrieval.storage.schema import aux_vectors

    col = data.col
    spec = f"local-dir:{second_model}"
    key = str(ModelSpec.parse(spec))
    text, k = "a bright scene", 6
    pool_ids = [h.id for h in col.search(text, k=50)]  # the stage's default top N
    aux = load_encoder(ModelSpec.parse(spec), "cpu")
    qv = combine([aux.embed_texts([text])[0]], [1.0])
    items = col._catalog.get_items(pool_ids)
    vecs = {i: embed_image(aux, items[i].path) for i in pool_ids}
    expected = [(i, float(v @ qv)) for i, v in vecs.items()]

    def clear() -> None:
        with col._catalog.engine.begin() as conn:
            conn.execute(delete(aux_vectors).where(aux_vectors.c.model == key))

    clear()
    try:
        with col._catalog.engine.begin() as conn:
            conn.execute(insert(aux_vectors), [
                {"model": key, "item_id": i, "content_hash": items[i].content_hash,
                 "data": encode_vector(v)} for i, v in vecs.items()])
        assert set(col._catalog.aux_vectors(key, pool_ids)) == set(pool_ids)

        def no_embedding(*_: Any) -> Any:
            raise AssertionError("a cached item was embedded again")

        monkeypatch.setattr(embedding, "embed_stored", no_embedding)
        hits = col.search(text, k=k, rerank=f"model:{spec}")
        _assert_ranking(hits, expected, k)
        assert [h.id for h in hits] != pool_ids[:k], "the second model did not re-order"
        assert all(h.metadata["scores"]["model"] == pytest.approx(h.score) for h in hits)
    finally:
        clear()
