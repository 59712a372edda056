"""The on-disk IVF tier as a :class:`~indexers.base.VectorIndex`: segments, delta, tombstones."""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..base import VectorIndex, as_ids, as_pairs, as_vectors, id_selector
from ..exact_vectors import ExactVectors
from ..ivf import nprobe_grid, widen_nprobe
from ..kinds import register
from ..persistence import SEGMENTS_SUFFIX
from .segments import (
    Segment,
    adopt,
    commit_dir,
    empty_ivf,
    empty_like,
    export_lists,
    merge_codes,
    merge_vectors,
    new_segment_dir,
)

# Candidates per result re-scored exactly: 8-bit and float codes rank nearly exactly, so a few
# suffice; PQ codes are coarse and need many.
K_FACTORS = {"sq8": (1, 2, 4, 8), "flat": (1, 2), "pq": (4, 8, 16, 32, 64),
             "pq4fs": (2, 4, 8, 16, 32, 64)}
# Codes scanned that cost about as much as one vector re-scored from a file larger than
# memory: fast-scan reads a 4-bit code in a few nanoseconds, an 8-bit one costs ten times that.
RESCORE_COST = {"sq8": 200, "flat": 200, "pq": 200, "pq4fs": 2000}
DELTA_BYTES = 256 * 1024**2  # raw vectors held in the delta before it is written out
MAX_SEGMENTS = 8  # more are merged at the next save
COMPACT_DEAD = 0.25  # a segment with this share of tombstones is rewritten at the next save


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
        self._delta: Any = empty_like(self._template) if self._template.is_trained else None
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
        self._delta = empty_like(self._template)

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
            cand = _search_part(seg.searched, q, kk, coarse, seg.selector(allow))
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
        return widen_nprobe(params, selectivity, self.nlist)

    def tuning_grid(self) -> list[dict[str, Any]]:
        nprobes = nprobe_grid(self.nlist)
        # Cost model: codes scanned plus candidates re-scored (RESCORE_COST); cheapest first.
        per_cell = max(1.0, self.ntotal / self.nlist)
        grid = [{"nprobe": p, "k_factor": f} for p in nprobes for f in K_FACTORS[self.codec]]
        weight = RESCORE_COST[self.codec]
        return sorted(grid, key=lambda g: g["nprobe"] * per_cell + weight * g["k_factor"])

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
        tmp, final = new_segment_dir(parent or self._scratch())
        ids, vectors = self._store.arrays()
        order = np.argsort(ids, kind="stable")
        np.save(tmp / "ids.npy", ids[order])
        np.save(tmp / "vectors.npy", vectors[order])
        faiss.write_index(self._delta, str(tmp / "ivf.index"))
        self.segments.append(Segment.open(commit_dir(tmp, final)))
        self._delta = empty_like(self._template)
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
        tmp, final = new_segment_dir(parent)
        shards: list[str] = []
        with tempfile.TemporaryDirectory(dir=tmp.parent, prefix=".merge-") as scratch:
            for i, seg in enumerate(parts):
                if not seg.merged and not len(seg.dead):
                    shards.append(str(seg.path / "ivf.index"))
                else:
                    shards += export_lists(seg, self._template, Path(scratch) / f"p{i}")
            merge_codes(self._template, shards, tmp)
        merge_vectors(parts, tmp, self.dim)
        return Segment.open(commit_dir(tmp, final))

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
                seg.path = adopt(seg.path, home, owned=self._owns(seg.path))
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
                  _template=empty_like(index))
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
        from ..choose import ONDISK_BYTES_PER_VECTOR

        # pq4fs: merged segments' codes are held in memory, packed for fast-scan
        return ONDISK_BYTES_PER_VECTOR + (self.dim / 4 if self.codec == "pq4fs" else 0.0)

    def describe(self) -> dict[str, Any]:
        out = super().describe()
        out["segments"] = len(self.segments)
        out["delta"] = self._delta_n
        out["tombstones"] = sum(len(s.dead) for s in self.segments)
        return out

