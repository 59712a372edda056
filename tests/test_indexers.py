"""Every index tier: recall against exact search, filtered search, live updates, persistence,
and the choice of tier under a memory budget."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vectors import clustered, far_queries

import indexers
from indexers import (
    IndexerError,
    IndexFileError,
    build_index,
    choose_index,
    exact_search,
    load_index,
    needs_rebuild,
    neighbour_recall,
    save_index,
    tune,
)

D = 32
TIERS = [
    ("flat", {}),
    ("ivf", {"nlist": 64, "codec": "flat"}),
    ("ivf", {"nlist": 64, "codec": "sq8"}),
    ("ivf", {"nlist": 64, "codec": "pq"}),
    ("hnsw", {"m": 16}),
    ("graph", {"m": 16}),
    ("graph", {"m": 16, "nlist": 64}),
]
TIER_IDS = ["flat", "ivf-flat", "ivf-sq8", "ivf-pq", "hnsw", "graph", "graph+lists"]


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    xb = clustered(6000)
    ids = np.random.default_rng(2).choice(10**12, len(xb), replace=False).astype(np.int64)
    return ids, xb


def _built(kind: str, params: dict, ids: np.ndarray, xb: np.ndarray):
    index = build_index(D, kind, **params)
    if not index.is_trained:
        index.train(xb[:4000])
    index.add(ids, xb)
    return index


@pytest.mark.parametrize(("kind", "params"), TIERS, ids=TIER_IDS)
def test_tuned_recall_on_both_query_kinds(data, kind, params):
    ids, xb = data
    index = _built(kind, params, ids, xb)
    near = xb[:150] + 0.02 * np.random.default_rng(3).standard_normal((150, D)).astype("f4")
    queries = np.vstack([near, far_queries(xb, 150)])
    truth = exact_search(xb, ids, queries, 10)[1]
    result = tune(index, queries, truth, target=0.95)
    assert result["target_met"], (kind, params, result, index.search_params)
    # Held-out queries of both kinds keep the recall the tuning measured (with some slack).
    for fresh in (xb[3000:3150] + 0.02, far_queries(xb, 150, seed=9)):
        fresh = fresh / np.linalg.norm(fresh, axis=1, keepdims=True)
        found = index.search(fresh, 10)[1]
        assert neighbour_recall(found, exact_search(xb, ids, fresh, 10)[1]) >= 0.9, kind


def test_tuning_holds_the_target_for_each_query_kind(data):
    """Many easy in-distribution queries must not average away a few hard far ones."""
    ids, xb = data
    rng = np.random.default_rng(5)
    near = xb[rng.integers(0, len(xb), 400)]
    far = far_queries(xb, 40, seed=6)
    queries = np.vstack([near, far])
    truth = exact_search(xb, ids, queries, 10)[1]
    kinds = ["image"] * len(near) + ["text"] * len(far)
    pooled = _built("ivf", {"nlist": 64, "codec": "flat"}, ids, xb)
    tune(pooled, queries, truth, target=0.95)
    split = _built("ivf", {"nlist": 64, "codec": "flat"}, ids, xb)
    result = tune(split, queries, truth, target=0.95, groups=kinds)
    assert result["target_met"] and set(result["recall_at_10_by_kind"]) == {"image", "text"}
    assert min(result["recall_at_10_by_kind"].values()) == result["recall_at_10"] >= 0.95
    far_recall = neighbour_recall(split.search(far, 10)[1], truth[len(near):])
    assert far_recall >= 0.95
    # The scenario matters: pooled tuning leaves the far queries well below the target.
    assert neighbour_recall(pooled.search(far, 10)[1], truth[len(near):]) < 0.9
    assert split.search_params["nprobe"] > pooled.search_params["nprobe"]
    with pytest.raises(ValueError, match="label every query"):
        tune(split, queries, truth, groups=kinds[:-1])


@pytest.mark.parametrize(("kind", "params"), TIERS, ids=TIER_IDS)
def test_filtered_search_equals_exact_search_on_the_allow_list(data, kind, params):
    ids, xb = data
    index = _built(kind, params, ids, xb)
    index.search_params.update({"nprobe": 64, "efSearch": 512, "k_factor": 32})
    rng = np.random.default_rng(4)
    for size in (5, 40, 600):
        allow = rng.choice(ids, size, replace=False)
        rows = np.flatnonzero(np.isin(ids, allow))
        q = xb[rng.integers(0, len(xb), 8)]
        _, found = index.search(q, 10, allow=allow)
        _, truth = exact_search(xb[rows], ids[rows], q, 10)
        assert set(found[found >= 0].tolist()) <= set(allow.tolist())
        assert neighbour_recall(found, truth, 10) >= 0.97, (kind, size)
        assert ((found >= 0).sum(1) == min(10, size)).all()  # never fewer than k while k match


@pytest.mark.parametrize(("kind", "params"), TIERS, ids=TIER_IDS)
def test_persistence_round_trip(tmp_path, data, kind, params):
    ids, xb = data
    index = _built(kind, params, ids[:3000], xb[:3000])
    index.remove(ids[:100])
    index.search_params.update({"nprobe": 8, "efSearch": 99})
    index.tuning = {"recall_at_10": 0.97}
    save_index(index, tmp_path, "v", {"seq": 7})
    loaded, meta = load_index(tmp_path, "v", mmap=True)
    assert meta == {"seq": 7} and loaded.ntotal == 2900
    assert sorted(loaded.ids().tolist()) == sorted(ids[100:3000].tolist())
    assert loaded.search_params == index.search_params and loaded.tuning == index.tuning
    q = xb[200:210]
    np.testing.assert_array_equal(loaded.search(q, 5)[1], index.search(q, 5)[1])
    if loaded.read_only:  # memory-mapped IVF lists: search only, updates need a real load
        with pytest.raises(IndexerError, match="read-only"):
            loaded.add(ids[:100], xb[:100])
        loaded = load_index(tmp_path, "v", mmap=False)[0]
    loaded.add(ids[:100], xb[:100])
    assert loaded.ntotal == 3000
    for f in tmp_path.glob("v.*.npy"):  # a truncated extra array is detected
        f.write_bytes(f.read_bytes()[:-8])
        with pytest.raises(IndexFileError, match="truncated"):
            load_index(tmp_path, "v")


@pytest.mark.parametrize(("kind", "params"), TIERS, ids=TIER_IDS)
@settings(max_examples=10, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["add", "remove"]),
                              st.lists(st.integers(0, 199), max_size=30)), max_size=12))
def test_ids_agree_after_any_adds_and_removes(kind, params, ops):
    xb = clustered(200, seed=5)
    index = build_index(D, kind, **params)
    if not index.is_trained:
        index.train(clustered(1000, seed=6))
    present: set[int] = set()
    for op, keys in ops:
        keys = sorted(set(keys))
        if op == "add":
            index.upsert(keys, xb[keys])
            present |= set(keys)
        else:
            index.remove(keys)
            present -= set(keys)
        assert set(index.ids().tolist()) == present
        assert index.ntotal == len(present)
        if present:
            _, found = index.search(xb[sorted(present)][:5], 3,
                                    params={"nprobe": 64, "efSearch": 256, "k_factor": 32})
            assert set(found[found >= 0].tolist()) <= present


def test_hnsw_tombstones_then_compaction():
    xb = clustered(500, seed=7)
    index = build_index(D, "hnsw", m=16)
    index.add(np.arange(500), xb)
    index.remove(np.arange(50))
    assert index.tombstones == 50 and index.ntotal == 450
    _, found = index.search(xb[:50], 10, params={"efSearch": 256})
    assert not set(found.reshape(-1).tolist()) & set(range(50))
    index.remove(np.arange(50, 120))  # past 20% of the graph: compacted
    assert index.tombstones == 0 and index.ntotal == 380
    index.add([7], xb[7:8])  # a removed id comes back with a new label
    _, found = index.search(xb[7:8], 1, params={"efSearch": 64})
    assert found[0, 0] == 7


def test_choice_follows_size_and_budget():
    assert choose_index(3_000, 512).kind == "flat" and choose_index(20_000, 96).kind == "flat"
    assert choose_index(10_000, 512).kind == "graph"
    mid = choose_index(200_000, 512)
    assert (mid.kind, mid.tier, mid.params["nlist"]) == ("graph", "graph+lists", 1024)
    assert 1200 < mid.bytes_per_vector < 1400
    alone = choose_index(1_000_000, 512, memory_budget=1000 * 1024**2)
    assert (alone.kind, alone.tier, alone.params["nlist"]) == ("graph", "graph", 0)
    big = choose_index(1_000_000, 512, memory_budget=700 * 1024**2)
    assert big.params["codec"] == "sq8" and big.bytes_per_vector == 520
    tight = choose_index(1_000_000, 512, memory_budget=300 * 1024**2)
    assert tight.params["codec"] == "pq"
    with pytest.raises(IndexerError, match="budget"):
        choose_index(1_000_000, 512, memory_budget=10 * 1024**2)
    flat = build_index(512).describe()
    assert needs_rebuild(flat, 3_000, 512, 4 * 1024**3) is None
    assert needs_rebuild(flat, 200_000, 512, 4 * 1024**3).kind == "graph"
    assert indexers.parse_bytes("2G") == 2 * 1024**3 and indexers.parse_bytes("512M") == 2**29


def test_collection_switches_tier_as_it_grows(tmp_path, monkeypatch, caplog):
    """A collection indexed past its tier is rebuilt into the right type on the next sync."""
    from test_index_sync import _lock

    from retrieval.storage import Catalog, ImageRecord
    from retrieval.storage.vector_indexes import VectorIndexes

    monkeypatch.setattr(indexers.choose, "EXACT_MAX_WORK", 300 * D)
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    xb = clustered(4000, seed=8)

    def write(lo: int, hi: int) -> None:
        cat.write_images([ImageRecord(f"/{i}.jpg", i, i, f"h{i}", xb[i]) for i in range(lo, hi)])

    events: list[str] = []
    idx = VectorIndexes(cat, tmp_path / "ix", D, cat.ensure_catalog_id(), _lock(tmp_path, True))
    write(0, 200)
    idx.sync(events.append)
    assert idx.get("image").kind == "flat" and not events
    write(200, 4000)
    with caplog.at_level(logging.INFO, logger="retrieval"):
        idx.sync(events.append)
    index = idx.get("image")
    assert index.kind == "graph" and index.ntotal == 4000
    assert any("rebuilding it as graph" in e for e in events), events
    assert index.tuning["recall_at_10"] >= 0.95 and index.search_params["k_factor"] >= 1
    # A new process loads the new tier with its tuned parameters.
    fresh = VectorIndexes(cat, tmp_path / "ix", D, cat.ensure_catalog_id(),
                           _lock(tmp_path / "reader", False))
    assert fresh.get("image").describe()["search_params"] == index.search_params


@pytest.mark.parametrize("budget", [None, 200_000], ids=["graph", "ivf-sq8"])
def test_memory_mapped_index_catches_up(tmp_path, monkeypatch, budget):
    """A reader maps a large index (IVF lists read-only; the graph's exact vectors); when the
    catalog moved on it applies the changes instead of failing (the IVF is reloaded into
    memory, the graph takes them in place)."""
    from test_index_sync import _lock

    from retrieval.storage import Catalog, ImageRecord
    from retrieval.storage.vector_indexes import VectorIndexes

    monkeypatch.setattr(indexers.choose, "EXACT_MAX_WORK", 100 * D)
    monkeypatch.setattr(indexers.persistence, "MMAP_MIN_BYTES", 0)
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    if budget:
        cat.set_settings(index_memory=budget)
    xb = clustered(3000, seed=10)
    cat.write_images([ImageRecord(f"/{i}.jpg", i, i, f"h{i}", xb[i]) for i in range(2500)])
    VectorIndexes(cat, tmp_path / "ix", D, cat.ensure_catalog_id(), _lock(tmp_path, True)).sync()
    reader = VectorIndexes(cat, tmp_path / "ix", D, cat.ensure_catalog_id(),
                           _lock(tmp_path / "reader", False))
    mapped = reader.get("image")
    assert mapped.kind == ("ivf" if budget else "graph") and mapped.ntotal == 2500
    if budget:
        assert mapped.read_only
    else:
        assert isinstance(mapped.extra_arrays()["vectors"], np.memmap)
    cat.write_images([ImageRecord(f"/{i}.jpg", i, i, f"h{i}", xb[i]) for i in range(2500, 3000)])
    index = reader.get("image")
    assert index.ntotal == 3000 and not index.read_only
    assert set(index.ids().tolist()) == set(cat.vector_ids("image").tolist())
    _, found = index.search(xb[2900:2910], 1)  # the new vectors are found (ids in write order)
    assert found[:, 0].tolist() == sorted(cat.vector_ids("image").tolist())[2900:2910]
