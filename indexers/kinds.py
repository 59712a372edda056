"""The index types by name: each type registers itself here, so nothing below needs to know
them all (and ``base`` never imports the types that build on it)."""

from __future__ import annotations

from typing import Any, TypeVar

from .base import VectorIndex

T = TypeVar("T", bound=type[VectorIndex])
_KINDS: dict[str, type[VectorIndex]] = {}


def register(cls: T) -> T:
    """Class decorator: make an index type known by its ``kind``."""
    _KINDS[cls.kind] = cls
    return cls


def index_class(kind: str) -> type[VectorIndex]:
    if kind not in _KINDS:
        raise ValueError(f"unknown index kind {kind!r}; expected one of {sorted(_KINDS)}")
    return _KINDS[kind]


def build_index(dim: int, kind: str = "flat", metric: str = "ip", **params: Any) -> VectorIndex:
    """An empty index: 'flat' (exact), 'ivf' (nlist=, codec=flat|sq8|pq) or 'hnsw' (m=)."""
    return index_class(kind)(dim, metric, **params)
