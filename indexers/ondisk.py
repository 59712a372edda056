"""IVF on disk, for collections whose vectors do not fit the memory budget.

The index is a list of immutable **segments** plus a small in-memory **delta**:

* a segment is one directory: ``ivf.index`` (FAISS metadata: the trained coarse quantizer and
  codec), ``ivf.ivfdata`` (FAISS ``OnDiskInvertedLists``: the compressed codes and ids of every
  cell), ``ids.npy`` (its ids, ascending) and ``vectors.npy`` (their float32 vectors, same
  order). Searches memory-map all four, so they cost page cache rather than process memory.
  A segment written by a spill of the delta holds ordinary inverted lists (``ivf.index`` only)
  until the next save merges it;
* vectors added after a build go to the delta (the same trained quantizer and codec, in RAM);
  when it grows past ``delta_max`` vectors it is written out as a segment;
* removing an id from a segment records a tombstone, applied at query time with a FAISS id
  selector; an upsert is a tombstone plus an add to the delta.

Segments are never changed in place: ``add_with_ids`` on FAISS's on-disk lists corrupts them
(faiss issue #3498). :meth:`OnDiskIVFIndex.compact` (and a save, when tombstones pass a quarter
of a segment or segments pile up) re-merges into a new directory, written under a temporary
name, synced and renamed; the manifest's rename is the commit point (``persistence``).

Candidates come from the compressed codes (``sq8``, the default: one byte per dimension, close
enough to exact that few candidates need re-scoring; ``pq``: 8-bit product quantisation with
``dim / 8`` sub-quantizers, smaller but coarse; ``flat``: float32), and the best
``k * k_factor`` are re-scored exactly from the memory-mapped float32 vectors. Their rows are
scattered over a file larger than the page cache, so they are requested from the kernel all at
once (``MADV_WILLNEED``) before they are read: one disk round trip rather than one per row.

Large builds go through :func:`build_ondisk`: the coarse quantizer and codec are trained once
on a sample, shards are encoded in parallel worker processes (one FAISS thread each, or any
``runner``, such as Ray tasks) and merged into one on-disk segment with
``faiss.contrib.ondisk.merge_ondisk``.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import shutil
import sys
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import VectorIndex, as_ids, as_pairs, as_vectors, id_selector
from .exact_vectors import ExactVectors
from .kinds import register
from .persistence import SEGMENTS_SUFFIX

CODECS = ("sq8", "pq", "flat")
# Candidates per result re-scored exactly: 8-bit and float codes rank nearly exactly, so a few
# suffice; PQ codes are coarse and need many.
K_FACTORS = {"sq8": (1, 2, 4, 8), "flat": (1, 2), "pq": (4, 8, 16, 32, 64)}
DELTA_BYTES = 256 * 1024**2  # raw vectors held in the delta before it is written out
EXPORT_BYTES = 256 * 1024**2  # codes per shard file when a segment is re-merged
MAX_SEGMENTS = 8  # more are merged at the next save
COMPACT_DEAD = 0.25  # a segment with this share of tombstones is rewritten at the next save

Runner = Callable[[Callable[[dict[str, Any]], None], list[dict[str, Any]]], Any]


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


def _empty_like(index: Any) -> Any:
    """A trained, empty copy (same quantizer and codec)."""
    out = faiss.deserialize_index(faiss.serialize_index(index)) if index.ntotal == 0 \
        else faiss.clone_index(index)
    out.reset()
    return out


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _commit_dir(tmp: Path, final: Path) -> Path:
    """fsync a finished segment directory and rename it into place."""
    for f in tmp.iterdir():
        _fsync(f)
    _fsync_dir(tmp)
    os.replace(tmp, final)
    _fsync_dir(final.parent)
    return final


def _new_segment_dir(parent: Path) -> tuple[Path, Path]:
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
    _sel: Any = None

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
        seg = cls(path, index, ids, vectors)
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


def _search_part(index: Any, q: np.ndarray, kk: int, coarse: tuple[np.ndarray, np.ndarray],
                 sel: Any) -> np.ndarray:
    """Candidate ids of one part, its cells to visit given (every part shares the quantizer,
    so the cells are found once per query, not once per part)."""
    dq, iq = coarse
    sp: Any = faiss.SearchParametersIVF()
    sp.nprobe = iq.shape[1]
    if sel is not None:
        sp.sel = sel  # the caller keeps ``sel`` alive during the search
    n = len(q)
    dist = np.empty((n, kk), np.float32)
    found = np.empty((n, kk), np.int64)
    # The C++ call directly: FAISS's Python wrapper of search_preassigned refuses params.
    index.search_preassigned_c(n, faiss.swig_ptr(q), kk, faiss.swig_ptr(iq),
                               faiss.swig_ptr(dq), faiss.swig_ptr(dist), faiss.swig_ptr(found),
                               False, sp)
    return found


def _exact_scores(q: np.ndarray, vecs: np.ndarray, present: np.ndarray, metric: str
                  ) -> np.ndarray:
    """Exact scores of (nq, c, d) candidate vectors; worst where not present."""
    if metric == "ip":
        s = np.einsum("qd,qcd->qc", q, vecs)
        return np.where(present, s, -np.inf).astype(np.float32)
    s = ((vecs - q[:, None, :]) ** 2).sum(-1)
    return np.where(present, s, np.inf).astype(np.float32)


@register
class OnDiskIVFIndex(VectorIndex):
    """IVF whose codes and exact vectors live in memory-mapped segments (see the module)."""

    kind = "ivf-ondisk"

    def __init__(self, dim: int, metric: str = "ip", *, nlist: int = 1024, codec: str = "sq8",
                 delta_max: int | None = None, _template: Any = None) -> None:
        super().__init__(dim, metric)
        self.nlist, self.codec = int(nlist), codec
        self._template = _template if _template is not None else \
            empty_ivf(dim, metric, self.nlist, codec)
        self._delta: Any = _empty_like(self._template) if self._template.is_trained else None
        self._store = ExactVectors(dim)
        self.segments: list[Segment] = []
        self.delta_max = int(delta_max or max(1024, DELTA_BYTES // (4 * dim)))
        self._workdir: Path | None = None
        self.search_params = {"nprobe": max(1, self.nlist // 64),
                              "k_factor": 2 if codec != "pq" else 16}

    # -- content -------------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return sum(s.live for s in self.segments) + self._delta_n

    @property
    def _delta_n(self) -> int:
        return 0 if self._delta is None else int(self._delta.ntotal)

    @property
    def is_trained(self) -> bool:
        return bool(self._template.is_trained)

    def train(self, sample: Any) -> None:
        x = as_vectors(sample, self.dim)
        if len(x) < self.nlist:
            raise ValueError(f"{len(x)} training vectors for {self.nlist} cells")
        self._template.train(x)
        self._delta = _empty_like(self._template)

    def add(self, ids: Any, vectors: Any) -> None:
        ids, x = as_pairs(ids, vectors, self.dim)
        if not len(ids):
            return
        if self._delta is None:
            raise ValueError("train the index before adding vectors")
        self._delta.add_with_ids(x, ids)
        self._store.add(ids, x)
        if self._delta_n >= self.delta_max:
            self.spill()

    def remove(self, ids: Any) -> int:
        ids = np.unique(as_ids(ids))
        if not len(ids) or not self.ntotal:
            return 0
        n = 0
        for seg in self.segments:
            hit = ids[seg.rows(ids) >= 0]
            if len(hit):
                seg.set_dead(np.union1d(seg.dead, hit))
                n += len(hit)
        if self._delta_n:
            present = self._store.rows(ids) >= 0
            if present.any():
                n += int(self._delta.remove_ids(faiss.IDSelectorArray(ids[present])))
                self._store.remove(ids[present])
        return n

    def ids(self) -> np.ndarray:
        parts = [s.live_ids() for s in self.segments]
        if self._delta_n:
            parts.append(self._store.arrays()[0])
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        ids = as_ids(ids)
        present, out = self._store.get(ids)
        for seg in self.segments:
            todo = ~present
            if not todo.any():
                break
            p, v = seg.get(ids[todo])
            out[np.flatnonzero(todo)[p]] = v[p]
            present[np.flatnonzero(todo)[p]] = True
        return present, out

    # -- search --------------------------------------------------------------------------------

    def _search(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        nprobe = int(min(self.nlist, params.get("nprobe", 1)))
        kk = k * max(1, int(params.get("k_factor", 2)))
        # Blocks of queries bound the candidate vectors gathered at once (nq x kk x dim).
        step = max(1, (64 * 1024**2) // (4 * kk * self.dim))
        parts = [self._search_block(q[a:a + step], k, kk, nprobe, allow)
                 for a in range(0, len(q), step)]
        return np.vstack([s for s, _ in parts]), np.vstack([i for _, i in parts])

    def _search_block(self, q: np.ndarray, k: int, kk: int, nprobe: int, allow: Any
                      ) -> tuple[np.ndarray, np.ndarray]:
        all_s, all_i = [], []
        q = np.ascontiguousarray(q)
        dq, iq = self._template.quantizer.search(q, nprobe)
        coarse = (np.ascontiguousarray(dq), np.ascontiguousarray(iq))
        for seg in self.segments:
            if not seg.live:
                continue
            cand = _search_part(seg.index, q, kk, coarse, seg.selector(allow))
            present, vecs = seg.get(cand.reshape(-1))
            all_s.append(_exact_scores(q, vecs.reshape(*cand.shape, self.dim),
                                       present.reshape(cand.shape), self.metric))
            all_i.append(cand)
        if self._delta_n:
            cand = _search_part(self._delta, q, kk, coarse, id_selector(allow))
            present, vecs = self._store.get(cand.reshape(-1))
            all_s.append(_exact_scores(q, vecs.reshape(*cand.shape, self.dim),
                                       present.reshape(cand.shape), self.metric))
            all_i.append(cand)
        scores, ids = np.hstack(all_s), np.hstack(all_i)
        order = np.argsort(-scores if self.metric == "ip" else scores, axis=1,
                           kind="stable")[:, :k]
        scores = np.take_along_axis(scores, order, 1)
        ids = np.where(np.isfinite(scores), np.take_along_axis(ids, order, 1), -1)
        return scores, ids

    def widen(self, params: dict[str, Any], selectivity: float) -> dict[str, Any]:
        nprobe = int(params.get("nprobe", 1))
        return {**params, "nprobe": int(min(self.nlist, np.ceil(nprobe / max(selectivity,
                                                                               1e-6))))}

    def tuning_grid(self) -> list[dict[str, Any]]:
        nprobes = [p for p in (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512,
                               768, 1024) if p <= self.nlist]
        # Cost model: codes scanned plus candidates re-scored, a re-scored vector read from a
        # file larger than memory costing about as much as 200 scanned codes; cheapest first.
        per_cell = max(1.0, self.ntotal / self.nlist)
        grid = [{"nprobe": p, "k_factor": f} for p in nprobes for f in K_FACTORS[self.codec]]
        return sorted(grid, key=lambda g: g["nprobe"] * per_cell + 200 * g["k_factor"])

    # -- segments ------------------------------------------------------------------------------

    def _scratch(self) -> Path:
        """A private working directory for segments not yet saved (removed with the index)."""
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="ivf-ondisk-"))
            weakref.finalize(self, shutil.rmtree, self._workdir, True)
        return self._workdir

    def spill(self, parent: Path | None = None) -> None:
        """Write the delta out as a (spilled, not yet merged) segment."""
        if not self._delta_n:
            return
        tmp, final = _new_segment_dir(parent or self._scratch())
        ids, vectors = self._store.arrays()
        order = np.argsort(ids, kind="stable")
        np.save(tmp / "ids.npy", ids[order])
        np.save(tmp / "vectors.npy", vectors[order])
        faiss.write_index(self._delta, str(tmp / "ivf.index"))
        self.segments.append(Segment.open(_commit_dir(tmp, final)))
        self._delta = _empty_like(self._template)
        self._store = ExactVectors(self.dim)
        spilled = [s for s in self.segments if not s.merged]
        if len(spilled) >= MAX_SEGMENTS:
            # Many spills (a large build through add): fold them into one merged segment, so
            # a search visits few parts; each vector is rewritten a few times at most.
            merged = self._merge(spilled, parent or self._scratch())
            self.segments = [s for s in self.segments if s.merged] + [merged]
            self._retire(spilled)

    def compact(self, parent: Path | None = None) -> None:
        """Merge every segment and the delta into one on-disk segment without tombstones."""
        self.spill(parent)
        old = self.segments
        self.segments = [self._merge(old, parent or self._scratch())] if old else []
        self._retire(old)

    def _retire(self, segments: Sequence[Segment]) -> None:
        """Delete merged-away segments of our scratch directory (open maps stay readable);
        those of a saved folder go when a committed manifest stops naming them."""
        for seg in segments:
            if self._owns(seg.path) and seg not in self.segments:
                shutil.rmtree(seg.path, ignore_errors=True)

    def _merge(self, parts: Sequence[Segment], parent: Path) -> Segment:
        tmp, final = _new_segment_dir(parent)
        shards: list[str] = []
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".merge-") as scratch:
            for i, seg in enumerate(parts):
                if not seg.merged and not len(seg.dead):
                    shards.append(str(seg.path / "ivf.index"))
                else:
                    shards += _export_lists(seg, self._template, Path(scratch) / f"p{i}")
            _merge_codes(self._template, shards, tmp)
        _merge_vectors(parts, tmp, self.dim)
        return Segment.open(_commit_dir(tmp, final))

    def place_files(self, folder: Path, name: str) -> dict[str, Path]:
        """Put the segments under ``<folder>/<name>.segments`` (merging spilled ones, and
        compacting where tombstones or segments piled up) and return their files by key."""
        home = Path(folder) / f"{name}{SEGMENTS_SUFFIX}"
        home.mkdir(parents=True, exist_ok=True)
        if self._delta_n > self.delta_max // 2:
            self.spill()
        heavy = [s for s in self.segments
                 if len(s.dead) > COMPACT_DEAD * max(1, len(s.ids)) or not s.live]
        spilled = [s for s in self.segments if not s.merged and s not in heavy]
        rest = [s for s in self.segments if s not in heavy and s not in spilled]
        if len(rest) + bool(spilled) > MAX_SEGMENTS:
            spilled, rest = spilled + rest, []
        merged = [self._merge(group, home) for group in (heavy, spilled)
                  if group and sum(s.live for s in group)]
        self.segments = rest + merged
        self._retire(heavy + spilled)
        out: dict[str, Path] = {}
        for seg in self.segments:
            if seg.path.parent != home:
                seg.path = _adopt(seg.path, home, owned=self._owns(seg.path))
            for f in seg.files():
                out[f"seg.{seg.path.name}.{f.name}"] = f
        return out

    def _owns(self, path: Path) -> bool:
        return self._workdir is not None and path.parent == self._workdir

    # -- persistence ---------------------------------------------------------------------------

    def to_faiss(self) -> Any:
        return self._delta if self._delta is not None else self._template

    def extra_arrays(self) -> dict[str, np.ndarray]:
        ids, vectors = self._store.arrays()
        out = {"delta_ids": ids, "delta_vectors": vectors}
        for seg in self.segments:
            if len(seg.dead):
                out[f"dead.{seg.path.name}"] = seg.dead
        return out

    @classmethod
    def from_faiss(cls, index: Any, params: dict[str, Any], extra: dict[str, Path],
                   mmap: bool) -> OnDiskIVFIndex:
        obj = cls(int(params["dim"]), params.get("metric", "ip"), nlist=int(params["nlist"]),
                  codec=params.get("codec", "sq8"), delta_max=params.get("delta_max"),
                  _template=_empty_like(index))
        if index.is_trained:
            obj._delta = index
        obj._store = ExactVectors(obj.dim, np.load(extra["delta_ids"]),
                                  np.load(extra["delta_vectors"]))
        seen: dict[str, Path] = {}
        for key, path in extra.items():
            if key.startswith("seg."):
                seen.setdefault(key.split(".")[1], path.parent)
        for seg_name, path in seen.items():
            dead = np.load(extra[f"dead.{seg_name}"]) if f"dead.{seg_name}" in extra else None
            obj.segments.append(Segment.open(path, dead))
        return obj

    def params(self) -> dict[str, Any]:
        return {**super().params(), "nlist": self.nlist, "codec": self.codec,
                "delta_max": self.delta_max}

    def bytes_per_vector(self) -> float:
        from .choose import ONDISK_BYTES_PER_VECTOR

        return ONDISK_BYTES_PER_VECTOR

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["segments"] = len(self.segments)
        out["delta"] = self._delta_n
        out["tombstones"] = sum(len(s.dead) for s in self.segments)
        return out


def _adopt(path: Path, home: Path, owned: bool) -> Path:
    """Move (our own scratch) or hard-link (another folder's) segment ``path`` under ``home``."""
    final = home / path.name
    if final.exists():
        return final
    if owned:
        with contextlib.suppress(OSError):
            os.replace(path, final)
            _fsync_dir(home)
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
    return _commit_dir(tmp, final)


def _export_lists(seg: Segment, template: Any, prefix: Path) -> list[str]:
    """The live entries of a segment's lists as shard files of at most EXPORT_BYTES of codes
    (without re-encoding: codes are copied list by list)."""
    invlists = seg.index.invlists
    cs = int(invlists.code_size)
    files: list[str] = []
    shard, held = _empty_like(template), 0

    def flush() -> None:
        nonlocal shard, held
        if shard.ntotal:
            path = f"{prefix}.{len(files)}.index"
            faiss.write_index(shard, path)
            files.append(path)
        shard, held = _empty_like(template), 0

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


def _merge_codes(template: Any, shard_files: list[str], out: Path) -> None:
    """Merge shard files into ``out/ivf.ivfdata`` and write ``out/ivf.index``."""
    from faiss.contrib.ondisk import merge_ondisk

    index = _empty_like(template)
    with quiet_stdout():
        if shard_files:
            merge_ondisk(index, shard_files, str(out / "ivf.ivfdata"))
        else:  # an empty on-disk segment still needs its data file
            invlists: Any = faiss.OnDiskInvertedLists(index.nlist, index.code_size,
                                                      str(out / "ivf.ivfdata"))
            index.replace_invlists(invlists, True)
            invlists.this.disown()
        faiss.write_index(index, str(out / "ivf.index"))
        del index  # unmaps the data file before the directory is renamed


def _merge_vectors(parts: Sequence[Segment], out: Path, dim: int,
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
    import time

    report = on_event or (lambda _s, _t: None)
    src = np.load(source, mmap_mode="r")
    if src.ndim != 2 or src.dtype != np.float32:
        raise ValueError(f"{source}: expected a 2-d float32 array, got {src.dtype} {src.shape}")
    n, dim = src.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else as_ids(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} vectors")
    index = OnDiskIVFIndex(dim, metric, nlist=nlist, codec=codec)
    parent = Path(workdir) if workdir is not None else index._scratch()
    if workdir is not None:
        index._workdir = parent  # segments built here may be moved by a save
    tmp, final = _new_segment_dir(parent)

    t = time.perf_counter()
    n_train = min(n, train_size or (max(64 * nlist, 64 * 256) if codec == "pq" else 64 * nlist))
    pick = np.sort(np.random.default_rng(seed).choice(n, n_train, replace=False))
    index.train(np.ascontiguousarray(src[pick]))
    report("train", time.perf_counter() - t)

    t = time.perf_counter()
    order = np.argsort(ids, kind="stable")
    if len(np.unique(ids)) != n:
        raise ValueError("ids must be unique")
    np.save(tmp / "ids.npy", ids[order])
    scratch = Path(tempfile.mkdtemp(dir=parent, prefix=".build-"))
    try:
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
                os.link(source, tmp / "vectors.npy")
                linked = True
        if not linked:
            vec = np.lib.format.open_memmap(tmp / "vectors.npy", mode="w+", dtype=np.float32,
                                            shape=(n, dim))
            del vec
        faiss.write_index(index._template, str(scratch / "template.index"))
        tasks = [{"template": str(scratch / "template.index"), "source": str(Path(source)),
                  "ids": str(scratch / "ids.npy"), "rank": rank_path,
                  "vectors": "" if linked else str(tmp / "vectors.npy"),
                  "lo": lo, "hi": min(n, lo + shard_size),
                  "shard": str(scratch / f"shard{i:05d}.index")}
                 for i, lo in enumerate(range(0, n, shard_size))]
        run = runner or process_runner(workers or max(1, os.cpu_count() or 1))
        run(_encode_shard, tasks)
        report("encode", time.perf_counter() - t)
        t = time.perf_counter()
        _merge_codes(index._template, [task["shard"] for task in tasks], tmp)
        report("merge", time.perf_counter() - t)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    index.segments = [Segment.open(_commit_dir(tmp, final))]
    return index
