"""The catalog, its change log, and the FAISS indexes derived from it always agree."""

from __future__ import annotations

import logging
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexers import FlatIndex, IndexFileError, build_index, load_index, save_index
from retrieval.storage import Catalog, ImageRecord, TextRecord
from retrieval.storage.lock import WriteLock
from retrieval.storage.vector_indexes import VectorIndexes

DIM = 8


def _vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _image(path: str, seed: int) -> ImageRecord:
    return ImageRecord(path=path, size=seed, mtime_ns=seed, content_hash=f"h{seed}",
                       vector=_vec(seed))


def _catalog_ids(cat: Catalog, modality: str) -> set[int]:
    return {int(i) for ids, _ in cat.iter_vectors(modality, DIM) for i in ids}


def _lock(folder: Path, held: bool) -> WriteLock:
    """A writer holds a collection lock (it may save indexes); a reader does not. Each index
    set here stands for its own process, so each gets a lock of its own."""
    folder = folder.parent / f"lock-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    lock = WriteLock(folder)
    if held:
        assert lock.acquire()
    return lock


def _index_set(cat: Catalog, folder: Path, can_save: bool = True) -> VectorIndexes:
    return VectorIndexes(cat, folder, DIM, cat.ensure_catalog_id(), _lock(folder, can_save))


def _assert_agrees(cat: Catalog, idx: VectorIndexes) -> None:
    for modality in ("image", "text"):
        index = idx.get(modality)
        assert set(index.ids().tolist()) == _catalog_ids(cat, modality)
        ids, vecs = next(cat.iter_vectors(modality, DIM), (np.zeros(0, np.int64), None))
        if len(ids):
            scores, _ = index.search(vecs, 1)
            # every stored vector finds itself (or an identical copy) with cosine 1
            np.testing.assert_allclose(scores[:, 0], 1.0, atol=1e-5)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 15), st.integers(0, 40)),
        st.tuples(st.just("delete"), st.integers(0, 15), st.just(0)),
        st.tuples(st.just("text"), st.integers(0, 5), st.integers(0, 40)),
        st.tuples(st.just("sync"), st.just(0), st.just(0)),
        st.tuples(st.just("reopen"), st.just(0), st.just(0)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_index_always_matches_catalog(tmp_path_factory, ops):
    """Random writes, deletes, syncs and process restarts: ids in index == ids in catalog."""
    root = tmp_path_factory.mktemp("prop")
    cat = Catalog(root / "catalog.sqlite", create=True)
    idx = _index_set(cat, root / "indexes")
    for op, a, b in ops:
        if op == "write":
            cat.write_images([_image(f"/p/{a}.jpg", b)])
        elif op == "delete":
            found = cat.file_states([f"/p/{a}.jpg"])
            cat.delete_items(s.id for s in found.values())
        elif op == "text":
            cat.write_texts([TextRecord(text=f"t{b}", vector=_vec(1000 + b),
                                        content_hash=f"t{b}", external_id=str(a))])
        elif op == "sync":
            idx.sync()
        else:  # a new process: indexes come from disk and catch up from the log
            idx = _index_set(cat, root / "indexes")
        _assert_agrees(cat, idx)
    cat.close()


def test_ids_are_stable_and_never_reused(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    a, b = cat.write_images([_image("/a.jpg", 1), _image("/b.jpg", 2)])
    cat.delete_items([b])
    (c,) = cat.write_images([_image("/c.jpg", 3)])
    assert c > b > a
    (a2,) = cat.write_images([_image("/a.jpg", 4)])  # an update keeps the id
    assert a2 == a


def test_change_counter_and_catch_up_from_disk(tmp_path):
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    cat.write_images([_image(f"/{i}.jpg", i) for i in range(5)])
    s1 = cat.max_seq()
    idx = _index_set(cat, tmp_path / "ix")
    assert idx.get("image").ntotal == 5
    manifest_seq = load_index(tmp_path / "ix", "image")[1]["seq"]
    assert manifest_seq == s1
    cat.write_images([_image(f"/{i}.jpg", i) for i in range(5, 8)])
    cat.delete_items([cat.file_states(["/0.jpg"])["/0.jpg"].id])
    assert cat.max_seq() > s1
    # A reader that may not save still sees the latest state, in memory.
    reader = _index_set(cat, tmp_path / "ix", can_save=False)
    assert reader.get("image").ntotal == 7
    assert load_index(tmp_path / "ix", "image")[1]["seq"] == s1
    fresh = _index_set(cat, tmp_path / "ix")
    assert fresh.get("image").ntotal == 7
    assert load_index(tmp_path / "ix", "image")[1]["seq"] == cat.max_seq()


def _setup(tmp_path: Path, n: int = 6) -> tuple[Catalog, VectorIndexes]:
    cat = Catalog(tmp_path / "c.sqlite", create=True)
    cat.write_images([_image(f"/{i}.jpg", i) for i in range(n)])
    idx = _index_set(cat, tmp_path / "ix")
    idx.sync()
    return cat, idx


def _data_file(folder: Path, name: str = "image") -> Path:
    (f,) = folder.glob(f"{name}.*.faiss")
    return f


def test_truncated_index_is_rebuilt_with_a_warning(tmp_path, caplog):
    cat, _ = _setup(tmp_path)
    data = _data_file(tmp_path / "ix")
    data.write_bytes(data.read_bytes()[:50])
    with pytest.raises(IndexFileError, match="truncated"):
        load_index(tmp_path / "ix", "image")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        idx = _index_set(cat, tmp_path / "ix")
        assert idx.get("image").ntotal == 6
    assert "rebuilding" in caplog.text
    assert load_index(tmp_path / "ix", "image")[0].ntotal == 6


def test_garbage_same_size_index_is_rebuilt(tmp_path, caplog):
    cat, _ = _setup(tmp_path)
    data = _data_file(tmp_path / "ix")
    data.write_bytes(b"\x00" * data.stat().st_size)
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert _index_set(cat, tmp_path / "ix").get("image").ntotal == 6
    assert "unreadable" in caplog.text


def test_missing_index_is_rebuilt(tmp_path, caplog):
    cat, _ = _setup(tmp_path)
    shutil.rmtree(tmp_path / "ix")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert _index_set(cat, tmp_path / "ix").get("image").ntotal == 6
    assert "missing" in caplog.text


def test_index_from_another_catalog_is_rebuilt(tmp_path, caplog):
    cat, _ = _setup(tmp_path / "a", n=6)
    _setup(tmp_path / "b", n=3)
    shutil.rmtree(tmp_path / "a" / "ix")
    shutil.copytree(tmp_path / "b" / "ix", tmp_path / "a" / "ix")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert _index_set(cat, tmp_path / "a" / "ix").get("image").ntotal == 6
    assert "another catalog" in caplog.text


def test_index_ahead_of_catalog_is_rebuilt(tmp_path, caplog):
    """An index saved from a later state (the catalog was restored from a backup)."""
    cat, _ = _setup(tmp_path)
    cat.close()  # the last connection to close checkpoints the WAL into the file
    shutil.copy(tmp_path / "c.sqlite", tmp_path / "backup.sqlite")
    cat = Catalog(tmp_path / "c.sqlite")
    cat.write_images([_image("/late.jpg", 99)])
    _index_set(cat, tmp_path / "ix").sync()
    cat.close()
    shutil.copy(tmp_path / "backup.sqlite", tmp_path / "c.sqlite")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"c.sqlite{suffix}").unlink(missing_ok=True)
    restored = Catalog(tmp_path / "c.sqlite")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        assert _index_set(restored, tmp_path / "ix").get("image").ntotal == 6
    assert "beyond the catalog" in caplog.text


def test_old_index_behind_pruned_log_is_rebuilt(tmp_path, caplog):
    cat, idx = _setup(tmp_path)
    old = tmp_path / "old-ix"
    shutil.copytree(tmp_path / "ix", old)
    cat.write_images([_image(f"/n{i}.jpg", 50 + i) for i in range(4)])
    cat.delete_items([cat.file_states(["/1.jpg"])["/1.jpg"].id])
    idx.sync()  # saves and prunes the change log
    assert cat.pruned_through() > 0
    shutil.rmtree(tmp_path / "ix")
    shutil.copytree(old, tmp_path / "ix")
    with caplog.at_level(logging.WARNING, logger="retrieval"):
        fresh = _index_set(cat, tmp_path / "ix")
        assert set(fresh.get("image").ids().tolist()) == _catalog_ids(cat, "image")
    assert "older" in caplog.text


# --- the indexers package on its own -------------------------------------------------------------

def test_flat_index_matches_brute_force():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((300, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    ids = rng.choice(10**12, size=300, replace=False).astype(np.int64)
    ix = build_index(16)
    ix.add(ids, xb)
    xq = rng.standard_normal((5, 16)).astype(np.float32)
    scores, found = ix.search(xq, 10)
    ref = np.argsort(-(xq @ xb.T), axis=1)[:, :10]
    np.testing.assert_array_equal(found, ids[ref])
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert ix.remove(ids[:100]) == 100 and ix.ntotal == 200
    _, found = ix.search(xq, 300)
    assert set(found[found >= 0].tolist()) == set(ids[100:].tolist())
    assert (found == -1).sum() == 5 * 100  # fewer vectors than k: padded with -1


def test_storage_round_trip_and_atomic_generations(tmp_path):
    ix = FlatIndex(4)
    ix.add([1, 2], np.eye(4, dtype=np.float32)[:2])
    save_index(ix, tmp_path, "v", {"seq": 1})
    first = _data_file(tmp_path, "v")
    ix.add([3], np.eye(4, dtype=np.float32)[2:3])
    save_index(ix, tmp_path, "v", {"seq": 2})
    second = _data_file(tmp_path, "v")
    assert first != second and not first.exists()  # one generation left, old one removed
    loaded, meta = load_index(tmp_path, "v")
    assert loaded.ntotal == 3 and meta == {"seq": 2}
    assert not list(tmp_path.glob(".*tmp"))
