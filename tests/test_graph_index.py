"""The graph index (HNSW on 8-bit codes, lists beside it, exact re-scoring): labels and
tombstones, per-kind tuning with a router, persistence of both, and the measured choice of
parts. Recall, filters, persistence and live updates of every tier are in test_indexers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from vectors import clustered, far_queries

import indexers.select
from indexers import (
    GraphIndex,
    build_index,
    choose_index,
    exact_search,
    load_index,
    neighbour_recall,
    save_index,
    select_parts,
    tune,
)
from indexers.labels import LabelMap, Rows
from indexers.routing import POOLED, Router

D = 32


def _graph(xb: np.ndarray, ids: np.ndarray | None = None, **params: int) -> GraphIndex:
    index = build_index(D, "graph", m=16, **params)
    assert isinstance(index, GraphIndex)
    index.train(xb)
    index.add(np.arange(len(xb)) if ids is None else ids, xb)
    return index


def test_label_map_reuses_an_id_under_a_new_label():
    labels = LabelMap()
    assert labels.append(np.array([10, 20, 30])).tolist() == [0, 1, 2]
    labels.kill(labels.lookup(np.array([20])))
    assert labels.lookup(np.array([20, 30, 99])).tolist() == [-1, 2, -1]
    assert labels.append(np.array([20])).tolist() == [3]
    assert labels.lookup(np.array([20])).tolist() == [3]
    assert labels.live == 3 and labels.tombstones == 1
    assert sorted(labels.live_ids().tolist()) == [10, 20, 30]
    many = labels.append(np.arange(1000, 200_000))  # past the re-sort threshold
    assert labels.lookup(np.array([150_000, 10]))[0] == many[149_000]
    assert labels.lookup(np.array([10])).tolist() == [0]


def test_rows_grow_in_a_tail_and_fold():
    rows = Rows(2)
    for i in range(0, 100_000, 1000):
        rows.append(np.full((1000, 2), i, np.float32))
    got = rows.get(np.array([0, 999, 1000, 99_999]))
    assert got[:, 0].tolist() == [0, 0, 1000, 99_000]
    assert rows.array().shape == (100_000, 2) and len(rows) == 100_000


def test_tombstones_then_compaction():
    xb = clustered(500, seed=7)
    index = _graph(xb, nlist=16)
    index.remove(np.arange(50))
    assert index.tombstones == 50 and index.ntotal == 450
    for via in ({"via": "graph", "efSearch": 256}, {"via": "lists", "nprobe": 16}):
        _, found = index.search(xb[:50], 10, params=via)
        assert not set(found.reshape(-1).tolist()) & set(range(50)), via
    index.remove(np.arange(50, 120))  # past 20% of the labels: every part rebuilt
    assert index.tombstones == 0 and index.ntotal == 380
    index.add([7], xb[7:8])  # a removed id comes back under a new label
    for via in ({"via": "graph", "efSearch": 64}, {"via": "lists", "nprobe": 16}):
        scores, found = index.search(xb[7:8], 1, params=via)
        assert found[0, 0] == 7 and abs(scores[0, 0] - 1) < 1e-5  # exact, re-scored


def _kinds_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xb = clustered(6000)
    near = xb[:300] + 0.02 * np.random.default_rng(3).standard_normal((300, D)).astype("f4")
    near /= np.linalg.norm(near, axis=1, keepdims=True)
    return xb, near, far_queries(xb, 300)


def test_each_kind_gets_its_own_settings_and_the_router_tells_them_apart(tmp_path):
    xb, near, far = _kinds_data()
    index = _graph(xb, nlist=64)
    queries = np.vstack([near[:150], far[:150]])
    kinds = ["image"] * 150 + ["text"] * 150
    result = tune(index, queries, exact_search(xb, np.arange(len(xb)), queries, 10)[1],
                  groups=kinds)
    assert result["target_met"] and set(result["recall_at_10_by_kind"]) == {"image", "text"}
    assert set(index.search_params["by_kind"]) == {"image", "text"}
    assert index.router is not None and result["routed_share"] == 1.0
    # Held-out queries of each kind are told apart and keep their recall.
    assert set(index.router.kinds(near[150:]).tolist()) == {"image"}
    assert set(index.router.kinds(far[150:]).tolist()) == {"text"}
    mixed = np.vstack([near[150:], far[150:]])
    truth = exact_search(xb, np.arange(len(xb)), mixed, 10)[1]
    found = index.search(mixed, 10)[1]
    assert neighbour_recall(found[:150], truth[:150]) >= 0.9
    assert neighbour_recall(found[150:], truth[150:]) >= 0.9
    # A batch of mixed kinds gets what each query gets alone.
    alone = np.vstack([index.search(q[None], 10)[1] for q in mixed[::30]])
    assert np.array_equal(alone, found[::30])
    save_index(index, tmp_path, "v")
    loaded, _ = load_index(tmp_path, "v")
    assert loaded.search_params == index.search_params
    assert loaded.router is not None and loaded.router.describe() == index.router.describe()
    assert np.array_equal(loaded.search(mixed, 10)[1], found)
    assert "routing" in loaded.describe()


def test_router_pools_the_queries_it_cannot_place():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 8)).astype(np.float32)
    b = a + 0.3  # overlapping kinds
    router = Router.fit(np.vstack([a, b]), np.array(["a"] * 200 + ["b"] * 200))
    assert router is not None and router.low_below < router.high_above
    got = router.kinds(np.vstack([a, b]))
    assert POOLED in got.tolist() and {"a", "b"} <= set(got.tolist())
    assert Router.from_dict(router.to_dict()).describe() == "a | pooled | b"
    assert Router.fit(a, np.array(["a"] * 200)) is None


def test_unused_lists_are_dropped_and_saved_without_them(tmp_path):
    xb, near, _ = _kinds_data()
    index = _graph(xb, nlist=64)
    truth = exact_search(xb, np.arange(len(xb)), near, 10)[1]
    tune(index, near, truth)
    index.search_params = {**index.search_params, "via": "graph"}
    index.drop_unused()
    assert index.parts == ["graph"] and index.params()["nlist"] == 0
    save_index(index, tmp_path, "v")
    assert not list(tmp_path.glob("v.*.lists.npy"))
    assert load_index(tmp_path, "v")[0].parts == ["graph"]


def test_walk_on_fewer_dimensions_where_the_spectrum_allows(tmp_path):
    """Data that fill 8 of 64 dimensions: the graph walks on 8 principal coordinates (the
    exact vectors re-score), reaches the target, and keeps its rotation through a save."""
    from indexers.reduce import dims_for

    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((64, 8)))[0].T
    xb = rng.standard_normal((5000, 8)) @ basis + 0.01 * rng.standard_normal((5000, 64))
    xb = (xb / np.linalg.norm(xb, axis=1, keepdims=True)).astype(np.float32)
    spread = rng.standard_normal((5000, 64)).astype(np.float32)
    assert dims_for(spread) == 0
    reduce = dims_for(np.vstack([xb] * 2), share=0.95)
    assert 0 < reduce <= 32
    index = build_index(64, "graph", m=16, reduce=reduce)
    index.train(xb)
    index.add(np.arange(len(xb)), xb)
    assert index.bytes_per_vector() < build_index(64, "graph", m=16).bytes_per_vector()
    q = xb[:200] + 0.01 * rng.standard_normal((200, 64)).astype(np.float32)
    result = tune(index, q, exact_search(xb, np.arange(len(xb)), q, 10)[1])
    assert result["target_met"] and index.search_params["k_factor"] >= 2
    save_index(index, tmp_path, "v")
    loaded, _ = load_index(tmp_path, "v")
    assert loaded.params()["reduce"] == reduce
    assert np.array_equal(loaded.search(q, 10)[1], index.search(q, 10)[1])
    loaded.remove(np.arange(1200))  # compaction re-projects the live vectors
    assert loaded.tombstones == 0 and loaded.search(xb[1500:1501], 1)[1][0, 0] == 1500


def test_extrapolation_is_a_bounded_power_of_n():
    assert indexers.select.extrapolate(1.0, 2.0, 10, 40, 160) == pytest.approx(4.0)
    assert indexers.select.extrapolate(2.0, 1.0, 10, 40, 160) == 1.0  # never cheaper
    assert indexers.select.extrapolate(1.0, 16.0, 10, 40, 80) == pytest.approx(32.0)  # <= n
    assert math.isinf(indexers.select.extrapolate(math.inf, 1.0, 10, 40, 80))


def test_selection_builds_the_parts_the_measurements_favour(monkeypatch):
    monkeypatch.setattr(indexers.select, "SAMPLE", 4000)
    monkeypatch.setattr(indexers.select, "TIMED", 20)
    xb, near, far = _kinds_data()
    plan = choose_index(1_000_000, D)
    assert plan.kind == "graph" and plan.params["nlist"] > 0
    chosen = select_parts(plan, xb, {"image": near, "text": far}, 1_000_000)
    assert set(chosen.measured) == {"image", "text"}
    tie = indexers.select.TIE
    costs = chosen.measured.values()
    walk = min(min(c[g] for c in costs) for g in chosen.measured["image"] if g != "lists")
    assert chosen.kind == "graph"
    if chosen.params["m"] == 0:  # lists alone: clearly cheaper for every kind
        assert all(c["lists"] * tie <= min(v for g, v in c.items() if g != "lists")
                   for c in costs)
    assert walk > 0 and "extrapolated to 1000000" in chosen.reason


def test_lists_alone(tmp_path):
    """A graph index of lists only (m=0): built, tuned, saved and loaded like the others."""
    xb, near, far = _kinds_data()
    index = build_index(D, "graph", m=0, nlist=64)
    assert isinstance(index, GraphIndex) and index.parts == ["lists"]
    index.train(xb)
    index.add(np.arange(len(xb)), xb)
    queries = np.vstack([near, far])
    tune(index, queries, exact_search(xb, np.arange(len(xb)), queries, 10)[1],
         groups=["image"] * len(near) + ["text"] * len(far))
    assert index.tuning["target_met"]
    save_index(index, tmp_path, "v")
    loaded, _ = load_index(tmp_path, "v")
    assert loaded.parts == ["lists"] and np.array_equal(loaded.search(far, 10)[1],
                                                        index.search(far, 10)[1])
    with pytest.raises(ValueError, match="graph"):
        build_index(D, "graph", m=0, nlist=0)


def test_a_walk_stops_past_its_cost_bound():
    """Tuning stops walking a structure once a setting costs more than another structure
    needed (stop_s); with a bound of zero only the first setting is tried."""
    from indexers.tune import walk_grid

    xb, _, far = _kinds_data()
    index = _graph(xb)
    truth = exact_search(xb, np.arange(len(xb)), far, 10)[1]
    grid = [{"via": "graph", "efSearch": 10, "k_factor": 1},
            {"via": "graph", "efSearch": 2048, "k_factor": 2}]
    labels = np.array(["text"] * len(far))
    full = walk_grid(index, grid, far, truth, labels, ["text"], 10, 0.999)
    cut = walk_grid(index, grid, far, truth, labels, ["text"], 10, 0.999, stop_s=0.0)
    assert full.by_kind["text"][0]["efSearch"] == 2048
    assert cut.by_kind["text"][0]["efSearch"] == 10 and not cut.by_kind["text"][2]


def test_removed_vectors_leave_the_lists(tmp_path):
    """A removal takes the labels out of the lists at once (their scan then needs no
    selector); lists saved still holding removed labels never return them either."""
    xb = clustered(500, seed=7)
    index = build_index(D, "graph", m=0, nlist=16)
    index.train(xb)
    index.add(np.arange(500), xb)
    index.remove(np.arange(50))
    assert index.to_faiss().ntotal == 450
    index._labels.kill(index._labels.lookup(np.arange(50, 60)))  # as saved before
    save_index(index, tmp_path, "v")
    for mmap in (False, True):
        loaded, _ = load_index(tmp_path, "v", mmap=mmap)
        assert loaded.to_faiss().ntotal == 450 and loaded.ntotal == 440
        _, found = loaded.search(xb[:60], 10, params={"via": "lists", "nprobe": 16})
        assert not set(found.reshape(-1).tolist()) & set(range(60))


def test_router_finds_the_direction_that_tells_kinds_apart():
    """Kinds whose means differ most along a direction the queries vary in a lot (and
    slightly along a quiet one): the means' direction cannot tell them apart, the
    discriminant one can, and held-out queries of each kind are placed."""
    rng = np.random.default_rng(0)

    def kind(shift: float, n: int) -> np.ndarray:
        x = rng.standard_normal((n, 8)) * np.array([10.0, 0.05, 1, 1, 1, 1, 1, 1])
        return (x + np.array([3 * shift, shift, 0, 0, 0, 0, 0, 0])).astype(np.float32)

    router = Router.fit(np.vstack([kind(0, 300), kind(1, 300)]),
                        np.array(["a"] * 300 + ["b"] * 300))
    assert router is not None and router.describe() == "a | b"
    assert np.mean(router.kinds(kind(0, 500)) == "a") > 0.99
    assert np.mean(router.kinds(kind(1, 500)) == "b") > 0.99


def test_the_nprobe_grid_ends_with_every_cell():
    """A sample's index has a number of cells no grid value hits (5,000 vectors: 78): its
    grid still ends with all of them, so data that need most cells scanned reach the target."""
    from indexers.ivf import nprobe_grid

    assert nprobe_grid(78)[-2:] == [64, 78]
    assert nprobe_grid(1024)[-2:] == [768, 1024] and nprobe_grid(1) == [1]


def test_a_walk_stopped_for_one_kind_does_not_decide_between_walks():
    """The overlapping regime at 200k: the walk on 64 coordinates was stopped on text queries
    (dearer than the lists there) and had cost half the full walk on image queries: the
    cheaper walk for the kinds both reached is the one built."""
    from indexers.select import _walk_cost

    costs = {"image": {"lists": 0.57, "graph": 0.48, "graph@64": 0.28},
             "text": {"lists": 0.44, "graph": 1.09, "graph@64": math.inf}}
    graphs = ["graph", "graph@64"]
    assert min(graphs, key=lambda g: _walk_cost(g, graphs, costs)) == "graph@64"
    costs["image"]["graph@64"] = math.inf  # reached by no variant for every kind: all count
    assert min(graphs, key=lambda g: _walk_cost(g, graphs, costs)) == "graph"
