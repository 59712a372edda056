"""Building the on-disk IVF tier in parallel shards (worker processes or Ray tasks)."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..base import as_ids
from .segments import Segment, commit_dir, merge_codes, new_segment_dir
from .tier import OnDiskIVFIndex

Runner = Callable[[Callable[[dict[str, Any]], None], list[dict[str, Any]]], Any]


def _encode_shard(task: dict[str, Any]) -> None:
    """Worker: encode rows [lo, hi) of a .npy file into a shard file and copy their vectors to
    their rows of the segment's vector file. Runs in its own process (or Ray task)."""
    faiss.omp_set_num_threads(int(task.get("threads", 1)))
    index = faiss.read_index(task["template"])
    src = np.load(task["source"], mmap_mode="r")
    ids = np.load(task["ids"], mmap_mode="r")
    rank = np.load(task["rank"], mmap_mode="r") if task.get("rank") else None
    out = np.load(task["vectors"], mmap_mode="r+") if task["vectors"] else None
    lo, hi, step = int(task["lo"]), int(task["hi"]), int(task.get("chunk", 65536))
    for a in range(lo, hi, step):
        b = min(hi, a + step)
        x = np.ascontiguousarray(src[a:b], dtype=np.float32)
        index.add_with_ids(x, np.ascontiguousarray(ids[a:b], dtype=np.int64))
        if out is None:
            continue
        if rank is None:
            out[a:b] = x
        else:
            r = np.asarray(rank[a:b])
            order = np.argsort(r)
            out[r[order]] = x[order]
    if out is not None:
        out.flush()
    faiss.write_index(index, task["shard"])


def process_runner(workers: int) -> Runner:
    """Run shard tasks in ``workers`` fresh processes (spawned: FAISS's OpenMP does not survive
    a fork)."""
    def run(fn: Callable[[dict[str, Any]], None], tasks: list[dict[str, Any]]) -> None:
        if workers <= 1:
            for t in tasks:
                fn(t)
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            for _ in pool.map(fn, tasks):
                pass
    return run


def ray_runner(**options: Any) -> Runner:
    """Run shard tasks as Ray tasks (``ray.remote(**options)``, e.g. ``num_cpus=1``) on the
    connected cluster; every node must see the build's ``workdir`` and source file."""
    def run(fn: Callable[[dict[str, Any]], None], tasks: list[dict[str, Any]]) -> None:
        import ray

        remote = ray.remote(**options)(fn) if options else ray.remote(fn)
        ray.get([remote.remote(t) for t in tasks])
    return run


def build_ondisk(source: str | os.PathLike[str], ids: Any = None, *, nlist: int,
                 codec: str = "sq8", metric: str = "ip", train_size: int | None = None,
                 shard_size: int = 1_000_000, workers: int | None = None,
                 runner: Runner | None = None, workdir: str | os.PathLike[str] | None = None,
                 on_event: Callable[[str, float], None] | None = None, seed: int = 0,
                 link_source: bool = False) -> OnDiskIVFIndex:
    """Build the on-disk tier from a float32 ``.npy`` file of (n, dim) vectors.

    ``ids`` (default 0..n-1) are the vectors' ids, in file order. The quantizer and codec are
    trained once on ``train_size`` sampled rows (64 per cell); shards of ``shard_size`` rows are
    encoded by ``runner(fn, tasks)`` (default: ``workers`` spawned processes, one FAISS thread
    each; pass a function that maps ``fn`` over Ray tasks to spread them over a cluster: every
    task reads and writes files under ``workdir``, which they must share); the shards are merged
    into one on-disk segment under ``workdir`` (default: a private temporary directory; save
    the index into a folder of the same file system to move it there without copying).
    ``on_event(stage, seconds)`` reports each stage's time. ``link_source`` hard-links the
    source file as the segment's exact vectors instead of copying them, when its rows are
    already in ascending id order on the same file system (the index then shares the file:
    never change it in place).
    """

    report = on_event or (lambda _s, _t: None)
    src = np.load(source, mmap_mode="r")
    if src.ndim != 2 or src.dtype != np.float32:
        raise ValueError(f"{source}: expected a 2-d float32 array, got {src.dtype} {src.shape}")
    n, dim = src.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids)
    if len(ids) != n or len(np.unique(ids)) != n:
        raise ValueError(f"{n} vectors need {n} distinct ids, got {len(np.unique(ids))}")
    index = OnDiskIVFIndex(dim, metric, nlist=nlist, codec=codec)
    parent = Path(workdir) if workdir is not None else index._scratch()
    if workdir is not None:
        index._workdir = parent  # segments built here may be moved by a save
    tmp, final = new_segment_dir(parent)

    t = time.perf_counter()
    n_train = min(n, train_size or (max(64 * nlist, 64 * 256) if codec == "pq" else 64 * nlist))
    pick = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
    index.train(np.ascontiguousarray(src[pick]))
    report("train", time.perf_counter() - t)

    t = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(dir=parent, prefix=".build-"))
    try:
        tasks = _shard_tasks(index, Path(source), ids, tmp, scratch, shard_size, link_source)
        run = runner or process_runner(workers or max(1, os.cpu_count() or 1))
        run(_encode_shard, tasks)
        report("encode", time.perf_counter() - t)
        t = time.perf_counter()
        merge_codes(index._template, [task["shard"] for task in tasks], tmp)
        report("merge", time.perf_counter() - t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    index.segments = [Segment.open(commit_dir(tmp, final))]
    return index


def _shard_tasks(index: OnDiskIVFIndex, source: Path, ids: np.ndarray, seg: Path,
                 scratch: Path, shard_size: int, link_source: bool) -> list[dict[str, Any]]:
    """Write what the shard workers read (template, ids, rows of each id in the segment's
    ascending order) and the segment's ids and vector file; one task per shard."""
    n = len(ids)
    order = np.argsort(ids, kind="stable")
    np.save(seg / "ids.npy", ids[order])
    np.save(scratch / "ids.npy", ids)
    rank_path = ""
    if np.any(order != np.arange(n)):
        rank = np.empty(n, np.int64)
        rank[order] = np.arange(n)
        np.save(scratch / "rank.npy", rank)
        rank_path = str(scratch / "rank.npy")
    linked = False
    if link_source and not rank_path:
        with contextlib.suppress(OSError):
            os.link(source, seg / "vectors.npy")
            linked = True
    if not linked:
        vec = np.lib.format.open_memmap(seg / "vectors.npy", mode="w+", dtype=np.float32,
                                        shape=(n, index.dim))
        del vec
    faiss.write_index(index._template, str(scratch / "template.index"))
    return [{"template": str(scratch / "template.index"), "source": str(source),
             "ids": str(scratch / "ids.npy"), "rank": rank_path,
             "vectors": "" if linked else str(seg / "vectors.npy"),
             "lo": lo, "hi": min(n, lo + shard_size),
             "shard": str(scratch / f"shard{i:05d}.index")}
            for i, lo in enumerate(range(0, n, shard_size))]
