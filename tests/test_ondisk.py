"""The on-disk IVF tier: sharded build, recall, memory-mapped reload, live updates through an
in-memory delta and tombstones, persistence, compaction, tier choice, and a collection on it."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from vectors import clustered, far_queries

import indexers
from indexers import (
    IndexerError,
    OnDiskIVFIndex,
    build_index,
    build_ondisk,
    choose_index,
    exact_search,
    load_index,
    needs_rebuild,
    neighbour_recall,
    read_manifest,
    save_index,
)
from indexers.ondisk import process_runner

D = 32
N = 6000
WIDE = {"nprobe": 16, "k_factor": 16}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, np.ndarray, np.ndarray]:
    """A .npy of base vectors and their (unsorted, sparse) ids."""
    xb = clustered(N)
    ids = np.random.default_rng(2).choice(10**12, N, replace=False).astype(np.int64)
    path = tmp_path_factory.mktemp("ondisk") / "xb.npy"
    np.save(path, xb)
    return str(path), ids, xb


def _build(data: tuple[str, np.ndarray, np.ndarray], tmp_path, codec: str = "sq8",
           **kw: object) -> OnDiskIVFIndex:
    path, ids, _ = data
    kw.setdefault("runner", process_runner(1))  # in this process: fast for small tests
    return build_ondisk(path, ids, nlist=32, codec=codec, shard_size=1500,
                        workdir=tmp_path / "work", **kw)  # type: ignore[arg-type]


def _recall(index: OnDiskIVFIndex, xb: np.ndarray, ids: np.ndarray, xq: np.ndarray,
            params: dict | None = None) -> float:
    truth = exact_search(xb, ids, xq, 10)[1]
    return neighbour_recall(index.search(xq, 10, params=params or WIDE)[1], truth)


@pytest.mark.parametrize("codec, processes", [("pq", 2), ("sq8", 1), ("pq4fs", 1)])
def test_sharded_build_in_processes_reaches_recall(data, tmp_path, codec, processes):
    """Shards encoded in two worker processes (once: the other codecs encode their shards in
    this process, the same code) merge into one on-disk segment; re-scored results reach
    exact search's neighbours for in-distribution and far queries."""
    _, ids, xb = data
    stages: dict[str, float] = {}
    index = _build(data, tmp_path, codec, runner=process_runner(processes),
                   on_event=lambda s, t: stages.__setitem__(s, t))
    assert set(stages) == {"train", "encode", "merge"}
    assert index.ntotal == N and len(index.segments) == 1 and index.segments[0].merged
    assert sorted(index.ids().tolist()) == sorted(ids.tolist())
    assert _recall(index, xb, ids, clustered(200, seed=5)) >= 0.95
    assert _recall(index, xb, ids, far_queries(xb, 200)) >= 0.95
    present, vecs = index.vectors(ids[:5])
    assert present.all() and np.allclose(vecs, xb[:5])


def test_reload_memory_mapped_from_a_moved_folder(data, tmp_path):
    xb = data[2]
    index = _build(data, tmp_path)
    save_index(index, tmp_path / "a", "image", {"seq": 3})
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").iterdir())
    shutil.move(tmp_path / "a", tmp_path / "b")
    loaded, meta = load_index(tmp_path / "b", "image")
    assert meta == {"seq": 3} and loaded.kind == "ivf-ondisk" and loaded.ntotal == N
    seg = loaded.segments[0]
    assert isinstance(seg.vectors, np.memmap) and isinstance(seg.ids, np.memmap)
    xq = xb[:50]
    assert np.array_equal(loaded.search(xq, 10, params=WIDE)[1],
                          index.search(xq, 10, params=WIDE)[1])


def test_add_remove_upsert_after_build(data, tmp_path):
    """New ids come back from the delta; removed ids never come back, from any part."""
    _, ids, xb = data
    index = _build(data, tmp_path)
    new = clustered(300, seed=9)
    new_ids = np.arange(10**12 + 1, 10**12 + 301)
    index.add(new_ids, new)
    assert index.ntotal == N + 300
    _, found = index.search(new[:20], 1, params=WIDE)
    assert found[:, 0].tolist() == new_ids[:20].tolist()

    gone = np.concatenate([ids[:100], new_ids[:50]])
    assert index.remove(gone) == 150 and index.remove(gone) == 0
    assert index.ntotal == N + 300 - 150
    _, found = index.search(np.vstack([xb[:100], new[:50]]), 10, params=WIDE)
    assert not set(found.reshape(-1).tolist()) & set(gone.tolist())
    assert not set(index.ids().tolist()) & set(gone.tolist())

    # upsert: a stored id (in the segment) gets a new vector, which is what search finds
    moved = -xb[200:210]
    index.upsert(ids[200:210], moved)
    scores, found = index.search(moved, 1, params=WIDE)
    assert found[:, 0].tolist() == ids[200:210].tolist()
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    _, found = index.search(xb[200:210], 10, params=WIDE)
    assert not set(found.reshape(-1).tolist()) & set(ids[200:210].tolist())
    # filtered search sees the delta and respects tombstones
    allow = np.concatenate([ids[:150], new_ids[40:60]])
    _, found = index.search(xb[:5], 10, allow=allow, params=WIDE)
    got = set(found[found >= 0].tolist())
    assert got <= set(allow.tolist()) - set(gone.tolist())


def test_spilled_delta_and_save_load_round_trip(data, tmp_path):
    """A delta past delta_max is written out as a segment; a save merges spilled segments and
    keeps tombstones; a reload answers exactly as before and takes further changes."""
    _, ids, xb = data
    index = _build(data, tmp_path)
    index.delta_max = 200
    new = clustered(500, seed=11)
    new_ids = np.arange(-500, 0)
    for lo in range(0, 500, 100):
        index.add(new_ids[lo:lo + 100], new[lo:lo + 100])
    assert len(index.segments) == 3 and index.describe()["delta"] == 100
    assert not index.segments[1].merged
    index.remove(np.concatenate([ids[:30], new_ids[:30]]))
    save_index(index, tmp_path / "c", "image")
    assert len(index.segments) == 2 and all(s.merged for s in index.segments)
    manifest = read_manifest(tmp_path / "c", "image")
    assert any(k.startswith("seg.") and k.endswith(".ivfdata") for k in manifest["files"])
    loaded, _ = load_index(tmp_path / "c", "image")
    assert loaded.ntotal == index.ntotal == N + 500 - 60
    assert sorted(loaded.ids().tolist()) == sorted(index.ids().tolist())
    xq = np.vstack([xb[:40], new[:40]])
    assert np.array_equal(loaded.search(xq, 10, params=WIDE)[1],
                          index.search(xq, 10, params=WIDE)[1])
    loaded.add([7], xb[5:6])
    save_index(loaded, tmp_path / "c", "image")
    again, _ = load_index(tmp_path / "c", "image")
    assert again.search(xb[5:6], 1, params=WIDE)[1][0, 0] in (7, ids[5])
    assert 7 in set(again.ids().tolist())


def test_compaction_drops_tombstones_and_old_segments(data, tmp_path):
    _, ids, xb = data
    index = _build(data, tmp_path)
    save_index(index, tmp_path / "d", "image")
    old = index.segments[0].path
    index.remove(ids[: N // 2])  # past a quarter: the next save compacts
    index.add([1, 2], xb[:2])
    before = index.search(xb[:30], 10, params=WIDE)
    save_index(index, tmp_path / "d", "image")
    assert index.describe()["tombstones"] == 0 and index.ntotal == N - N // 2 + 2
    assert not old.exists()  # the manifest no longer names it
    assert [p.name for p in (tmp_path / "d" / "image.segments").iterdir()] == \
        [index.segments[0].path.name]
    after = index.search(xb[:30], 10, params=WIDE)
    assert np.array_equal(before[1], after[1])
    index.compact()
    assert len(index.segments) == 1 and index.describe()["delta"] == 0
    assert np.array_equal(index.search(xb[:30], 10, params=WIDE)[1], before[1])


def test_choice_picks_the_ondisk_tier_when_codes_do_not_fit():
    plan = choose_index(10_000_000, 512, memory_budget=1024**3)
    assert plan.kind == "ivf-ondisk" and plan.params == {"nlist": 4096, "codec": "sq8"}
    assert plan.train_size(10_000_000) == 64 * 4096
    assert choose_index(10_000_000, 512, memory_budget=4 * 1024**3).kind == "ivf"
    with pytest.raises(IndexerError, match="on disk"):
        choose_index(10_000_000, 512, memory_budget=100 * 1024**2)
    index = build_index(512, plan.kind, **plan.params)
    assert isinstance(index, OnDiskIVFIndex) and not index.is_trained
    assert needs_rebuild(index.describe(), 10_000_000, 512, 1024**3) is None
    assert needs_rebuild(index.describe(), 10_000_000, 512, 5 * 1024**3).kind == "ivf"
    assert needs_rebuild(index.describe(), 10_000_000, 512, 8 * 1024**3).kind == "graph"


def test_collection_with_a_tiny_budget_runs_on_disk(tmp_path, monkeypatch):
    """Through VectorIndexes unchanged: rebuild into the tier, tune, save, catch up with adds
    and deletes, reload in another process, and always agree with the catalog."""
    from test_index_sync import _lock

    from retrieval.storage import Catalog, ImageRecord
    from retrieval.storage.vector_indexes import VectorIndexes

    dim, n = 64, 3000
    monkeypatch.setattr(indexers.choose, "EXACT_MAX_WORK", 100 * dim)
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    xb = clustered(n + 200, seed=12, d=dim)

    def write(lo: int, hi: int) -> None:
        cat.write_images([ImageRecord(f"/{i}.jpg", i, i, f"h{i}", xb[i]) for i in range(lo, hi)])

    write(0, n)
    idx = VectorIndexes(cat, tmp_path / "ix", dim, cat.ensure_catalog_id(),
                        _lock(tmp_path, True))
    idx.set_memory_budget(20 * n)  # 16 bytes per vector fit; 4-bit codes (24) do not
    idx.sync()
    index = idx.get("image")
    assert index.kind == "ivf-ondisk"
    assert index.tuning["recall_at_10"] >= 0.95
    assert (tmp_path / "ix" / "image.segments").is_dir()

    write(n, n + 200)
    gone = [cat.file_states([f"/{i}.jpg"])[f"/{i}.jpg"].id for i in range(10)]
    cat.delete_items(gone)
    idx.sync()
    index = idx.get("image")
    catalog_ids = {int(i) for ids, _ in cat.iter_vectors("image", dim) for i in ids}
    assert set(index.ids().tolist()) == catalog_ids and index.ntotal == n + 190
    reader = VectorIndexes(cat, tmp_path / "ix", dim, cat.ensure_catalog_id(),
                           _lock(tmp_path / "reader", False))
    fresh = reader.get("image")
    assert fresh.kind == "ivf-ondisk" and set(fresh.ids().tolist()) == catalog_ids
    _, vecs = next(cat.iter_vectors("image", dim))
    scores, found = fresh.search(vecs[:100], 1)
    np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)
    assert not set(found.reshape(-1).tolist()) & set(gone)


def test_no_output_on_stdout(data, tmp_path, capfd):
    """FAISS's on-disk code prints to the C stdout; the library keeps it quiet."""
    index = _build(data, tmp_path)
    save_index(index, tmp_path / "e", "image")
    os.rename(tmp_path / "e", tmp_path / "f")
    load_index(tmp_path / "f", "image")
    assert capfd.readouterr().out == ""


def test_many_spills_fold_into_merged_segments(data, tmp_path, monkeypatch):
    """A large build through ``add`` (as a collection's rebuild does) keeps few parts: spilled
    segments are merged every MAX_SEGMENTS spills, and the merged-away ones are deleted."""
    monkeypatch.setattr(indexers.ondisk.tier, "MAX_SEGMENTS", 3)
    _, ids, xb = data
    index = OnDiskIVFIndex(D, nlist=32, codec="sq8", delta_max=500)
    index.train(xb[:2000])
    for lo in range(0, N, 250):
        index.add(ids[lo:lo + 250], xb[lo:lo + 250])
    assert index.ntotal == N and len(index.segments) <= 5
    scratch = index._scratch()
    assert len([p for p in scratch.iterdir() if not p.name.startswith(".")]) == \
        len(index.segments)
    assert _recall(index, xb, ids, xb[:100] + 0.01) >= 0.95
    save_index(index, tmp_path / "g", "image")
    assert len(index.segments) == 1 and not any(scratch.iterdir())
    loaded, _ = load_index(tmp_path / "g", "image")
    assert sorted(loaded.ids().tolist()) == sorted(ids.tolist())


def test_build_can_link_the_source_as_exact_vectors(tmp_path):
    """Rows already in id order on the same file system: the source file becomes the segment's
    vector file without a copy."""
    xb = clustered(2000, seed=13)
    np.save(tmp_path / "xb.npy", xb)
    index = build_ondisk(tmp_path / "xb.npy", nlist=16, runner=process_runner(1),
                         workdir=tmp_path / "w", link_source=True)
    vec = index.segments[0].path / "vectors.npy"
    assert os.stat(vec).st_ino == os.stat(tmp_path / "xb.npy").st_ino
    assert index.search(xb[:20], 1)[1][:, 0].tolist() == list(range(20))


def test_pq4fs_segments_scan_a_fast_copy_through_updates_and_saves(data, tmp_path):
    """4-bit codes: merged segments keep a fast-scan copy in memory that searches use;
    tombstones, saves, reloads and compaction keep it."""
    _, ids, xb = data
    index = _build(data, tmp_path, "pq4fs")
    seg = index.segments[0]
    assert seg.fast is not None and seg.searched is seg.fast and index.bytes_per_vector() == 24
    assert _recall(index, xb, ids, far_queries(xb, 100), {"nprobe": 16, "k_factor": 32}) >= 0.95
    index.remove(ids[:300])
    _, found = index.search(xb[:300], 10, params=WIDE)
    assert not set(found.reshape(-1).tolist()) & set(ids[:300].tolist())
    save_index(index, tmp_path / "col", "image")
    loaded, _ = load_index(tmp_path / "col", "image")
    assert loaded.segments[0].fast is not None
    assert np.array_equal(loaded.search(xb[300:340], 10, params=WIDE)[1],
                          index.search(xb[300:340], 10, params=WIDE)[1])
    loaded.remove(ids[300:2000])  # past a quarter of the segment: the save rewrites it
    save_index(loaded, tmp_path / "col", "image")
    again, _ = load_index(tmp_path / "col", "image")
    assert len(again.segments) == 1 and not len(again.segments[0].dead)
    assert again.segments[0].fast is not None and again.ntotal == N - 2000
    _, found = again.search(xb[2000:2020], 1, params=WIDE)
    assert found[:, 0].tolist() == ids[2000:2020].tolist()
