"""The index interface every index type implements, and the factory that builds one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

METRICS = ("ip", "l2")


def as_ids(ids: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(ids, dtype=np.int64).reshape(-1))


def as_vectors(x: Any, dim: int) -> np.ndarray:
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim == 1:
        x = x.reshape(1, -1)
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of dimension {dim}, got shape {x.shape}")
    return x


class VectorIndex(ABC):
    """Vectors keyed by int64 ids; ``search`` returns (scores, ids), ids -1 where none.

    Scores are inner products for ``metric='ip'`` (cosine similarity for L2-normalised
    vectors) and squared L2 distances for ``metric='l2'``.
    """

    kind: ClassVar[str]

    def __init__(self, dim: int, metric: str = "ip") -> None:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
        self.dim = int(dim)
        self.metric = metric

    @property
    @abstractmethod
    def ntotal(self) -> int:
        """Number of vectors held."""

    @abstractmethod
    def add(self, ids: Any, vectors: Any) -> None:
        """Add vectors under ids that are not in the index yet."""

    @abstractmethod
    def remove(self, ids: Any) -> int:
        """Remove ids (absent ones are ignored); returns how many were removed."""

    @abstractmethod
    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k best (scores, ids) per query row, best first."""

    @abstractmethod
    def ids(self) -> np.ndarray:
        """All ids held, in storage order."""

    @abstractmethod
    def to_faiss(self) -> Any:
        """The underlying FAISS index, for persistence."""

    @classmethod
    @abstractmethod
    def from_faiss(cls, index: Any, params: dict[str, Any]) -> VectorIndex:
        """Rebuild the wrapper around a FAISS index read from disk."""

    def params(self) -> dict[str, Any]:
        """What ``from_faiss`` needs besides the FAISS index (stored in the manifest)."""
        return {"dim": self.dim, "metric": self.metric}

    def upsert(self, ids: Any, vectors: Any) -> None:
        """Replace the vectors of ids already present and add the others."""
        ids = as_ids(ids)
        self.remove(ids)
        self.add(ids, vectors)

    def describe(self) -> dict[str, Any]:
        return {"type": self.kind, "ntotal": self.ntotal, "dim": self.dim, "metric": self.metric}


def build_index(dim: int, kind: str = "flat", metric: str = "ip") -> VectorIndex:
    """An empty index of the given kind ('flat': exact search)."""
    from .flat import FlatIndex

    kinds: dict[str, type[VectorIndex]] = {FlatIndex.kind: FlatIndex}
    if kind not in kinds:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {sorted(kinds)}")
    return kinds[kind](dim, metric)


def index_class(kind: str) -> type[VectorIndex]:
    from .flat import FlatIndex

    return {FlatIndex.kind: FlatIndex}[kind]
