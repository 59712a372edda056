"""Clusters of near-duplicate images: each image's nearest neighbours above a cosine threshold,
joined into groups (union-find), with each member's similarity to its closest other member
(exact, from the stored vectors) and which members are byte-identical copies (the same content
hash)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import QueryError
from ..items import IMAGE

if TYPE_CHECKING:
    from ..storage import Catalog

EDGE_BATCH = 4096  # pairs whose similarity is computed at a time


def duplicate_clusters(catalog: Catalog, index: Any, dim: int, threshold: float = 0.95,
                       neighbours: int = 10) -> list[dict[str, Any]]:
    """Clusters of images whose vectors are within ``threshold`` cosine of each other,
    largest first: ``{"ids", "paths", "similarity", "identical", "members"}``. A member is
    ``{"id", "path", "similarity", "identical_to"}``: its cosine to its closest other member,
    and the other members with the same bytes. A cluster's ``similarity`` is the lowest of its
    members' (single linkage: every member is at least that close to another one), and
    ``identical`` says all its members are copies of one file."""
    if not -1 <= threshold <= 1:
        raise QueryError(f"threshold is a cosine in [-1, 1], got {threshold}")
    ids = catalog.vector_ids(IMAGE)
    parent = {int(i): int(i) for i in ids}

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    edges: set[tuple[int, int]] = set()
    for start in range(0, len(ids), 1024):
        batch = ids[start:start + 1024]
        _, vecs = catalog.vectors(batch.tolist(), dim)
        scores, found = index.search(vecs, min(neighbours + 1, max(1, index.ntotal)))
        for a, row_s, row_i in zip(batch.tolist(), scores, found, strict=True):
            for s, b in zip(row_s, row_i, strict=True):
                if b >= 0 and b != a and s >= threshold:
                    edges.add((min(a, int(b)), max(a, int(b))))
                    ra, rb = root(a), root(int(b))
                    if ra != rb:
                        parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for i in parent:
        groups.setdefault(root(i), []).append(i)
    clusters = [sorted(g) for g in groups.values() if len(g) > 1]
    best = closest_similarities(catalog, dim, edges)
    found_items = catalog.get_items(i for g in clusters for i in g)
    out = [_cluster([i for i in g if i in found_items], found_items, best) for g in clusters]
    out = [c for c in out if len(c["ids"]) > 1]
    return sorted(out, key=lambda c: (-len(c["ids"]), c["ids"][0]))


def closest_similarities(catalog: Catalog, dim: int, pairs: Iterable[tuple[int, int]]
                         ) -> dict[int, float]:
    """Each id's largest cosine over the pairs it is part of, from the stored full-precision
    vectors (an approximate index's scores are not exact)."""
    pairs = sorted(pairs)
    best: dict[int, float] = {}
    for start in range(0, len(pairs), EDGE_BATCH):
        part = pairs[start:start + EDGE_BATCH]
        wanted = sorted({i for p in part for i in p})
        present, vecs = catalog.vectors(wanted, dim)
        row = {int(i): n for n, i in enumerate(present.tolist())}
        part = [(a, b) for a, b in part if a in row and b in row]
        if not part:
            continue
        left = vecs[[row[a] for a, _ in part]]
        right = vecs[[row[b] for _, b in part]]
        sims = np.clip(np.einsum("ij,ij->i", left, right), -1.0, 1.0)
        for (a, b), s in zip(part, sims.tolist(), strict=True):
            for i in (a, b):
                best[i] = max(best.get(i, -1.0), s)
    return best


def _cluster(ids: list[int], items: dict[int, Any], best: dict[int, float]) -> dict[str, Any]:
    by_hash: dict[str, list[int]] = {}
    for i in ids:
        if items[i].content_hash:
            by_hash.setdefault(items[i].content_hash, []).append(i)
    members = []
    for i in ids:
        same = by_hash.get(items[i].content_hash or "", [i])
        members.append({"id": i, "path": items[i].path,
                        "similarity": round(best[i], 6) if i in best else None,
                        "identical_to": [j for j in same if j != i]})
    known = [m["similarity"] for m in members if m["similarity"] is not None]
    return {"ids": ids, "paths": [items[i].path for i in ids],
            "similarity": min(known) if known else None,
            "identical": len(by_hash) == 1 and len(next(iter(by_hash.values()))) == len(ids),
            "members": members}
