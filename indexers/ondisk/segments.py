"""On-disk segments of the IVF tier: one immutable directory each, and the file work on them
(writing, merging, moving into a collection's folder)."""

from __future__ import annotations

import contextlib
import mmap
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..base import as_ids, id_selector

CODECS = ("sq8", "pq", "flat", "pq4fs")
FAST_FILE = "fastscan.index"  # a merged pq4fs segment's codes, packed for SIMD scanning
EXPORT_BYTES = 256 * 1024**2  # codes per shard file when a segment is re-merged

_QUIET = threading.Lock()


@contextlib.contextmanager
def quiet_stdout() -> Iterator[None]:
    """Silence FAISS's on-disk code, which prints to the C stdout ("resizing ...", "updating
    ondisk filename ..."); the library never prints."""
    with _QUIET:
        sys.stdout.flush()
        saved = os.dup(1)
        try:
            with open(os.devnull, "wb") as null:
                os.dup2(null.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(saved, 1)
        finally:
            os.close(saved)


def pq_subquantizers(dim: int) -> int:
    """Sub-quantizers of the pq codec: dim / 8 (64 bytes for 512 dimensions; at least 16 for
    small dimensions), dividing dim."""
    m = max(1, dim // 8, min(dim // 2, 16))
    while dim % m:
        m -= 1
    return m


def empty_ivf(dim: int, metric: str, nlist: int, codec: str) -> Any:
    """An untrained FAISS IVF index of this tier's codecs."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
    mt = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    quantizer: Any = faiss.IndexFlatIP(dim) if metric == "ip" else faiss.IndexFlatL2(dim)
    index: Any
    if codec == "pq":
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, pq_subquantizers(dim), 8, mt)
        index.use_precomputed_table = -1  # L2 tables would take nlist x 256 x M floats of RAM
    elif codec == "pq4fs":
        if dim % 2:
            raise ValueError("the pq4fs codec needs an even dimension")
        # 4-bit codes of pairs of dimensions (d/4 bytes); on disk as plain IVFPQ lists, and a
        # merged segment keeps a copy packed for fast-scan in memory (FAST_FILE).
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, dim // 2, 4, mt)
        index.use_precomputed_table = -1
    elif codec == "sq8":
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist,
                                              faiss.ScalarQuantizer.QT_8bit, mt)
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, mt)
    index.quantizer_trains_alone = 0
    index.own_fields = True
    quantizer.this.disown()
    index.cp.niter = 10
    index.cp.max_points_per_centroid = 64
    return index


def is_pq4(index: Any) -> bool:
    """A plain IVFPQ index of 4-bit codes (the pq4fs codec's on-disk form)."""
    ivfpq = faiss.downcast_index(index)
    return isinstance(ivfpq, faiss.IndexIVFPQ) and int(ivfpq.pq.nbits) == 4


def empty_like(index: Any) -> Any:
    """A trained, empty copy (same quantizer and codec)."""
    out = faiss.deserialize_index(faiss.serialize_index(index)) if index.ntotal == 0 \
        else faiss.clone_index(index)
    out.reset()
    return out


def fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def commit_dir(tmp: Path, final: Path) -> Path:
    """fsync a finished segment directory and rename it into place."""
    for f in tmp.iterdir():
        fsync(f)
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return final


def new_segment_dir(parent: Path) -> tuple[Path, Path]:
    """(temporary directory to write, final name) of a new segment under ``parent``."""
    parent.mkdir(parents=True, exist_ok=True)
    name = f"seg-{uuid.uuid4().hex[:12]}"
    tmp = parent / f".{name}.tmp"
    tmp.mkdir()
    return tmp, parent / name


def _prefetch(array: np.ndarray, rows: np.ndarray) -> None:
    """Ask the kernel to read these rows of a memory-mapped array now, all at once.

    Re-scoring touches rows scattered over a file larger than the page cache; faulted in one
    by one, each waits for its own disk read (about a millisecond here, worse under load).
    MADV_WILLNEED queues them together, so they cost about one read's latency."""
    mm = getattr(array, "_mmap", None)
    if mm is None or len(rows) < 2 or not hasattr(mmap, "MADV_WILLNEED"):
        return
    row_bytes = int(array.strides[0])
    offset = int(getattr(array, "offset", 0))
    starts = offset + rows.astype(np.int64) * row_bytes
    first = starts // mmap.PAGESIZE * mmap.PAGESIZE
    with contextlib.suppress(OSError, ValueError):
        for a, s in zip(first.tolist(), starts.tolist(), strict=True):
            mm.madvise(mmap.MADV_WILLNEED, a, s + row_bytes - a)


@dataclass
class Segment:
    """One immutable directory of codes, ids and exact vectors, with its tombstones."""

    path: Path
    index: Any
    ids: np.ndarray  # ascending, memory-mapped
    vectors: np.ndarray  # rows of ``ids``, memory-mapped
    dead: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # ascending
    fast: Any = None  # the codes packed for fast-scan, in memory (pq4fs segments)
    _sel: Any = None

    @property
    def searched(self) -> Any:
        """The FAISS index a search scans: the fast-scan copy where there is one."""
        return self.fast if self.fast is not None else self.index

    @property
    def merged(self) -> bool:
        return (self.path / "ivf.ivfdata").exists()

    @classmethod
    def open(cls, path: Path, dead: np.ndarray | None = None) -> Segment:
        path = Path(path)
        # Merged lists are read in place from the .ivfdata beside the metadata; spilled ones are
        # memory-mapped. (IO_FLAG_MMAP on a merged index crashes FAISS.)
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR if (path / "ivf.ivfdata").exists() \
            else faiss.IO_FLAG_MMAP
        with quiet_stdout():
            index = faiss.read_index(str(path / "ivf.index"), flags | faiss.IO_FLAG_READ_ONLY)
        ids = np.load(path / "ids.npy", mmap_mode="r")
        vectors = np.load(path / "vectors.npy", mmap_mode="r")
        if index.ntotal != len(ids) or len(vectors) != len(ids):
            raise ValueError(f"segment {path} holds {index.ntotal} codes, {len(ids)} ids and "
                             f"{len(vectors)} vectors")
        fast = faiss.read_index(str(path / FAST_FILE)) if (path / FAST_FILE).exists() else None
        seg = cls(path, index, ids, vectors, fast=fast)
        if dead is not None and len(dead):
            seg.set_dead(np.unique(as_ids(dead)))
        return seg

    def files(self) -> list[Path]:
        return sorted(p for p in self.path.iterdir() if not p.name.startswith("."))

    @property
    def live(self) -> int:
        return len(self.ids) - len(self.dead)

    def set_dead(self, dead: np.ndarray) -> None:
        self.dead = dead
        self._sel = id_selector(deny=dead) if len(dead) else None

    def rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each live id, -1 where absent or removed."""
        if not len(self.ids) or not len(ids):
            return np.full(len(ids), -1, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        rows = np.where(self.ids[pos] == ids, pos, -1)
        if len(self.dead):
            rows[np.isin(ids, self.dead)] = -1
        return rows

    def get(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = self.rows(ids)
        present = rows >= 0
        out = np.zeros((len(ids), self.vectors.shape[1]), np.float32)
        if present.any():
            # Ascending rows read the memory-mapped file front to back.
            want = rows[present]
            order = np.argsort(want, kind="stable")
            _prefetch(self.vectors, want[order])
            got = np.empty((len(want), out.shape[1]), np.float32)
            got[order] = self.vectors[want[order]]
            out[present] = got
        return present, out

    def live_ids(self) -> np.ndarray:
        ids = np.asarray(self.ids)
        return ids[~np.isin(ids, self.dead)] if len(self.dead) else ids.copy()

    def selector(self, allow: Any) -> Any:
        if allow is None:
            return self._sel
        return id_selector(allow, self.dead if len(self.dead) else None)



def adopt(path: Path, home: Path, owned: bool) -> Path:
    """Move (our own scratch) or hard-link (another folder's) segment ``path`` under ``home``."""
    final = home / path.name
    if final.exists():
        return final
    if owned:
        with contextlib.suppress(OSError):
            os.replace(path, final)
            fsync_dir(home)
            return final
    tmp = home / f".{path.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for f in path.iterdir():
        if f.name.startswith("."):
            continue
        try:
            os.link(f, tmp / f.name)
        except OSError:
            shutil.copy2(f, tmp / f.name)
    return commit_dir(tmp, final)


def export_lists(seg: Segment, template: Any, prefix: Path) -> list[str]:
    """The live entries of a segment's lists as shard files of at most EXPORT_BYTES of codes
    (without re-encoding: codes are copied list by list)."""
    invlists = seg.index.invlists
    cs = int(invlists.code_size)
    files: list[str] = []
    shard, held = empty_like(template), 0

    def flush() -> None:
        nonlocal shard, held
        if shard.ntotal:
            path = f"{prefix}.{len(files)}.index"
            faiss.write_index(shard, path)
            files.append(path)
        shard, held = empty_like(template), 0

    for lst in range(int(invlists.nlist)):
        n = int(invlists.list_size(lst))
        if not n:
            continue
        ptr = invlists.get_ids(lst)
        ids = faiss.rev_swig_ptr(ptr, n).copy().astype(np.int64)
        invlists.release_ids(lst, ptr)
        cptr = invlists.get_codes(lst)
        codes = faiss.rev_swig_ptr(cptr, n * cs).copy().reshape(n, cs)
        invlists.release_codes(lst, cptr)
        if len(seg.dead):
            keep = ~np.isin(ids, seg.dead)
            ids, codes = ids[keep], codes[keep]
        if not len(ids):
            continue
        ids, codes = np.ascontiguousarray(ids), np.ascontiguousarray(codes)
        shard.invlists.add_entries(lst, len(ids), faiss.swig_ptr(ids), faiss.swig_ptr(codes))
        shard.ntotal += len(ids)
        held += codes.nbytes
        if held >= EXPORT_BYTES:
            flush()
    flush()
    return files


def merge_codes(template: Any, shard_files: list[str], out: Path) -> None:
    """Merge shard files into ``out/ivf.ivfdata`` and write ``out/ivf.index``."""
    from faiss.contrib.ondisk import merge_ondisk

    index = empty_like(template)
    with quiet_stdout():
        if shard_files:
            merge_ondisk(index, shard_files, str(out / "ivf.ivfdata"))
        else:  # an empty on-disk segment still needs its data file
            invlists: Any = faiss.OnDiskInvertedLists(index.nlist, index.code_size,
                                                      str(out / "ivf.ivfdata"))
            index.replace_invlists(invlists, True)
            invlists.this.disown()
        faiss.write_index(index, str(out / "ivf.index"))
        if is_pq4(index) and index.ntotal:
            faiss.write_index(faiss.IndexIVFPQFastScan(index), str(out / FAST_FILE))
        del index  # unmaps the data file before the directory is renamed


def merge_vectors(parts: Sequence[Segment], out: Path, dim: int,
                   chunk: int = 65536) -> None:
    """Live ids (ascending) and their exact vectors of ``parts`` into ``out``."""
    live = [p.rows(np.asarray(p.ids)) >= 0 for p in parts]
    ids = np.concatenate([np.asarray(p.ids)[m] for p, m in zip(parts, live, strict=True)]
                         or [np.zeros(0, np.int64)])
    src = np.concatenate([np.full(int(m.sum()), i, np.int32) for i, m in enumerate(live)]
                         or [np.zeros(0, np.int32)])
    row = np.concatenate([np.flatnonzero(m) for m in live] or [np.zeros(0, np.int64)])
    order = np.argsort(ids, kind="stable")
    np.save(out / "ids.npy", ids[order])
    vectors = np.lib.format.open_memmap(out / "vectors.npy", mode="w+", dtype=np.float32,
                                        shape=(len(ids), dim))
    for lo in range(0, len(ids), chunk):
        take = order[lo:lo + chunk]
        block = np.empty((len(take), dim), np.float32)
        for i, part in enumerate(parts):
            mine = src[take] == i
            if mine.any():
                block[mine] = part.vectors[row[take][mine]]
        vectors[lo:lo + len(take)] = block
    vectors.flush()
    del vectors


# -- parallel sharded build ---------------------------------------------------------------------
