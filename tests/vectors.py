"""Synthetic unit vectors for the index tests: clustered "image-like" vectors, and
"text-like" queries far from them (a shared offset dominates, as CLIP's modality gap)."""

from __future__ import annotations

import numpy as np

D = 32


def clustered(n: int, seed: int = 0, d: int = D) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((40, d)).astype(np.float32)
    x = centers[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def far_queries(xb: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    """Cross-modal-like queries: a shared offset dominates, best cosine around 0.3."""
    rng = np.random.default_rng(seed)
    gap = rng.standard_normal(xb.shape[1]).astype(np.float32)
    gap /= np.linalg.norm(gap)
    q = 0.3 * xb[rng.integers(0, len(xb), n)] + 0.95 * gap
    q += 0.05 * rng.standard_normal(q.shape).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)
