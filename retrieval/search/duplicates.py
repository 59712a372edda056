"""Clusters of near-duplicate images: each image's nearest neighbours above a cosine threshold,
joined into groups (union-find)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..errors import QueryError
from ..storage.records import IMAGE

if TYPE_CHECKING:
    from ..storage import Catalog


def duplicate_clusters(catalog: Catalog, index: Any, dim: int, threshold: float = 0.95,
                       neighbours: int = 10) -> list[dict[str, Any]]:
    """Clusters of images whose vectors are within ``threshold`` cosine of each other,
    largest first: ``{"ids": [...], "paths": [...]}``."""
    if not -1 <= threshold <= 1:
        raise QueryError(f"threshold is a cosine in [-1, 1], got {threshold}")
    ids = catalog.vector_ids(IMAGE)
    parent = {int(i): int(i) for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for start in range(0, len(ids), 1024):
        batch = ids[start:start + 1024]
        _, vecs = catalog.vectors(batch.tolist(), dim)
        scores, found = index.search(vecs, min(neighbours + 1, max(1, index.ntotal)))
        for a, row_s, row_i in zip(batch.tolist(), scores, found, strict=True):
            for s, b in zip(row_s, row_i, strict=True):
                if b >= 0 and b != a and s >= threshold:
                    ra, rb = root(a), root(int(b))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(root(i), []).append(i)
    clusters = [sorted(g) for g in groups.values() if len(g) > 1]
    found_items = catalog.get_items(i for g in clusters for i in g)
    out = [{"ids": g, "paths": [found_items[i].path for i in g if i in found_items]}
           for g in clusters]
    return sorted(out, key=lambda c: (-len(c["ids"]), c["ids"][0]))
