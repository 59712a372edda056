"""The interface every index type implements, and helpers they share."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .routing import Router

METRICS = ("ip", "l2")
# An allow-list this short (or under 1% of the index) is searched exactly: fetching and scoring
# its vectors is cheaper than any index walk, and exact. Longer ones filter inside the search.
EXACT_ALLOW_MAX = 4096


def as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def as_vectors(x: Any, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {x.shape}")
    return x


def as_pairs(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Validated (ids, vectors) of equal length."""
    ids, x = as_ids(ids), as_vectors(vectors, dim)
    if len(ids) != len(x):
        raise ValueError(f"{len(ids)} ids for {len(x)} vectors")
    return ids, x


def id_selector(allow: Any = None, deny: Any = None) -> Any:
    """A FAISS selector keeping ids in ``allow`` (if given) and not in ``deny`` (if given)."""
    import faiss

    sel: Any = None
    if allow is not None:
        sel = faiss.IDSelectorBatch(as_ids(allow))
    if deny is not None and len(deny):
        denied = faiss.IDSelectorBatch(as_ids(deny))
        not_denied = faiss.IDSelectorNot(denied)
        # SWIG wrappers do not own the selectors they wrap: keep the inner ones alive with
        # the outer one, or FAISS reads freed memory.
        not_denied.referenced = denied
        if sel is None:
            sel = not_denied
        else:
            both = faiss.IDSelectorAnd(sel, not_denied)
            both.referenced = (sel, not_denied)
            sel = both
    return sel


_THREADS = max(1, os.cpu_count() or 1)


class threads_for:  # used as a function: ``with threads_for(len(q)):``
    """One OpenMP thread for a single query (waking a thread team costs more than it saves on
    one query), all cores for batches. (A class rather than a generator: a single query
    takes tens of microseconds, and this runs for every one.)"""

    def __init__(self, nq: int) -> None:
        import faiss

        self._set = faiss.omp_set_num_threads
        self._nq = nq

    def __enter__(self) -> None:
        self._set(1 if self._nq <= 1 else _THREADS)

    def __exit__(self, *exc: object) -> None:
        self._set(_THREADS)


def pad(scores: np.ndarray, ids: np.ndarray, k: int, metric: str
        ) -> tuple[np.ndarray, np.ndarray]:
    """Pad results to k columns with FAISS's convention (-1 ids, worst scores)."""
    if scores.shape[1] < k:
        extra = k - scores.shape[1]
        worst = -np.inf if metric == "ip" else np.inf
        scores = np.pad(scores, ((0, 0), (0, extra)), constant_values=worst)
        ids = np.pad(ids, ((0, 0), (0, extra)), constant_values=-1)
    return scores, ids


class VectorIndex(ABC):
    """Vectors keyed by int64 ids; ``search`` returns (scores, ids), ids -1 where none.

    Scores are inner products for ``metric='ip'`` (cosine similarity for L2-normalised
    vectors) and squared L2 distances for ``metric='l2'``. ``search_params`` holds the
    search-time settings (nprobe, efSearch, k_factor) that :func:`indexers.tune` chose, and
    ``tuning`` what it measured; both are saved with the index.
    """

    kind: ClassVar[str]

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.dim = int(dim)
        self.metric = metric
        self.search_params: dict[str, Any] = {}
        self.tuning: dict[str, Any] = {}
        # Tells query kinds apart, so that each gets ``search_params["by_kind"][kind]``
        # (set by :func:`indexers.tune` when it saw labelled kinds).
        self.router: Router | None = None
        self.read_only = False  # True when loaded memory-mapped: search only

    def _check_writable(self) -> None:
        if self.read_only:
            from .errors import IndexerError

            raise IndexerError("this index was loaded memory-mapped and is read-only; load it "
                               "with mmap=False to change it")

    # -- content -----------------------------------------------------------------------------

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of live vectors."""

    @abstractmethod
    def add(self, ids: Any, vectors: Any) -> None:
        """Add vectors under ids that are not in the index yet."""

    @abstractmethod
    def remove(self, ids: Any) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """All live ids."""

    def upsert(self, ids: Any, vectors: Any) -> None:
        """Replace the vectors of ids already present and add the others."""
        ids = as_ids(ids)
        self.remove(ids)
        self.add(ids, vectors)

    @property
    def is_trained(self) -> bool:
        return True

    def train(self, sample: Any) -> None:  # noqa: B027 - most types need no training
        """Learn what the index needs from a sample of vectors (IVF centroids, codebooks)."""

    # -- search ------------------------------------------------------------------------------

    def search(self, queries: Any, k: int, *, allow: Any = None,
               params: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The k best (scores, ids) per query row, best first.

        ``allow`` restricts results to these ids (FAISS id selectors, inside the search);
        ``params`` overrides the tuned search parameters for this call (and then every query
        gets them: the router is not asked)."""
        q = as_vectors(queries, self.dim)
        if int(k) <= 0:
            raise ValueError("k must be positive")
        if allow is not None:
            allow = np.unique(as_ids(allow))
        if not self.ntotal or (allow is not None and not len(allow)):
            worst = -np.inf if self.metric == "ip" else np.inf
            return (np.full((len(q), k), worst, np.float32),
                    np.full((len(q), k), -1, np.int64))
        with threads_for(len(q)):
            if allow is not None and len(allow) <= max(EXACT_ALLOW_MAX, self.ntotal // 100):
                scores, ids = self._search_exact(q, int(k), allow)
            else:
                scores, ids = self._search_groups(q, int(k), allow, params)
        return pad(scores, ids, int(k), self.metric)

    def _search_groups(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any] | None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Search each kind of query (as the router tells them apart) with its settings.
        (The settings passed on may hold the "by_kind" entry: the types read only their own
        keys.)"""
        base = self.search_params
        by_kind = base.get("by_kind")
        groups: list[tuple[Any, dict[str, Any]]]
        if params is not None or self.router is None or not by_kind:
            groups = [(slice(None), {**base, **params} if params else base)]
        elif len(q) == 1:  # the common case, kept short
            kind = self.router.kind_of(q[0])
            groups = [(slice(None), {**base, **by_kind[kind]} if kind in by_kind else base)]
        else:
            kinds = self.router.kinds(q)
            groups = [(kinds == kind, {**base, **by_kind.get(kind, {})})
                      for kind in set(kinds.tolist())]
        parts = []
        for rows, p in groups:
            if allow is not None:  # a selective filter needs a wider walk to find k
                p = self.widen(p, len(allow) / max(1, self.ntotal))
            parts.append((rows, *self._search(q[rows], k, allow, p)))
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        width = max(s.shape[1] for _, s, _ in parts)
        scores = np.full((len(q), width), -np.inf if self.metric == "ip" else np.inf, np.float32)
        ids = np.full((len(q), width), -1, np.int64)
        for rows, s, i in parts:
            scores[rows, :s.shape[1]], ids[rows, :i.shape[1]] = s, i
        return scores, ids

    def _search_exact(self, q: np.ndarray, k: int, allow: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        found, vectors = self.vectors(allow)
        ids, vectors = allow[found], vectors[found]
        if not len(ids):
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        if self.metric == "ip":
            scores = q @ vectors.T
            order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        else:
            scores = ((q[:, None, :] - vectors[None]) ** 2).sum(-1)
            order = np.argsort(scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(scores, order, 1).astype(np.float32), ids[order]

    def widen(self, params: dict[str, Any], selectivity: float) -> dict[str, Any]:
        """Search parameters for a filter that keeps ``selectivity`` of the vectors."""
        return params

    @abstractmethod
    def vectors(self, ids: Any) -> tuple[np.ndarray, np.ndarray]:
        """(mask of ids present, their stored vectors; zeros where absent)."""

    @abstractmethod
    def _search(self, q: np.ndarray, k: int, allow: Any, params: dict[str, Any]
                ) -> tuple[np.ndarray, np.ndarray]:
        ...

    def tuning_grid(self) -> list[dict[str, Any]]:
        """Search settings to try when tuning, from cheapest to most expensive."""
        return [{}]

    def drop_unused(self) -> None:  # noqa: B027 - most types have one part
        """Free the parts that no tuned setting searches (after :func:`indexers.tune`)."""

    def tuning_families(self) -> dict[str, list[dict[str, Any]]]:
        """The tuning grids of each structure this index can search by (a graph, inverted
        lists): tuning takes each one's cheapest setting that reaches the target and times
        them against each other. One structure for most types."""
        return {"": self.tuning_grid()}

    # -- persistence ---------------------------------------------------------------------------

    @abstractmethod
    def to_faiss(self) -> Any:
        """The FAISS index to write to disk."""

    @classmethod
    @abstractmethod
    def from_faiss(cls, index: Any, params: dict[str, Any], extra: dict[str, Path],
                   mmap: bool) -> VectorIndex:
        """Rebuild the wrapper around a FAISS index read from disk; ``extra`` maps the names
        of :meth:`extra_arrays` to their files."""

    def params(self) -> dict[str, Any]:
        """Construction parameters saved in the manifest."""
        return {"dim": self.dim, "metric": self.metric}

    def extra_arrays(self) -> dict[str, np.ndarray]:
        """Arrays saved as .npy files beside the FAISS data (loaded memory-mapped)."""
        return {}

    def place_files(self, folder: Path, name: str) -> dict[str, Path]:
        """Files that outlive one saved generation (immutable on-disk segments), placed under
        ``<folder>/<name>.segments/`` before a save; returned by key, the manifest records them
        and a load passes them to :meth:`from_faiss` with the extra arrays. Most types have
        none."""
        return {}

    # -- reporting -------------------------------------------------------------------------------

    @abstractmethod
    def bytes_per_vector(self) -> float:
        """Memory held per vector in RAM (codes and ids, not memory-mapped extras)."""

    def describe(self) -> dict[str, Any]:
        out = {"type": self.kind, "ntotal": self.ntotal, "dim": self.dim, "metric": self.metric,
               "bytes_per_vector": round(self.bytes_per_vector(), 1),
               "params": {k: v for k, v in self.params().items() if k not in ("dim", "metric")},
               "search_params": dict(self.search_params), **self.tuning}
        if self.router is not None:
            out["routing"] = self.router.describe()
        return out
