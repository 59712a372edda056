"""Re-ranking stages as first written (a C x C similarity matrix, lists scanned per pick): the
reference the incremental stages must match exactly, and the baseline
``benchmarks/worst_request.py --stages`` times them against."""

from __future__ import annotations

import numpy as np


def mmr_reference(vecs: np.ndarray, q: np.ndarray, k: int, lam: float) -> list[int]:
    """MMR as first written: the full similarity matrix, the remaining ones in a list."""
    rel = vecs @ q
    sims = vecs @ vecs.T
    picked: list[int] = []
    left = list(range(len(vecs)))
    max_sim = np.full(len(vecs), -np.inf)
    while left and len(picked) < k:
        penalty = np.where(np.isfinite(max_sim[left]), max_sim[left], 0.0)
        best = left[int(np.argmax(lam * rel[left] - (1 - lam) * penalty))]
        picked.append(best)
        left.remove(best)
        max_sim = np.maximum(max_sim, sims[best])
    return picked + left


def dedup_reference(vecs: np.ndarray, threshold: float) -> list[tuple[int, list[int]]]:
    """Dedup as first written: each item against every item kept so far (it joins the first,
    best, kept item it is a near-duplicate of)."""
    kept: list[int] = []
    dups: dict[int, list[int]] = {}
    for i in range(len(vecs)):
        if kept:
            close = np.flatnonzero(vecs[kept] @ vecs[i] >= threshold)
            if len(close):
                dups[kept[int(close[0])]].append(i)
                continue
        kept.append(i)
        dups[i] = []
    return [(i, dups[i]) for i in kept]
