"""The query model: weighted terms of any kind combined into one query vector.

A query is a list of terms; each term is a text, an image file, a stored item id or a raw
vector, with a weight (negative to push results away). Each term is embedded and
L2-normalised, the weighted sum is taken, and the sum is normalised again:

    q = normalize(sum_i w_i * normalize(e_i))

so weights are relative importances, independent of the embeddings' scales.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .errors import QueryError

if TYPE_CHECKING:
    from indexers import VectorIndex

    from .filters import Filter
    from .rerank import Stage

TermKind = Literal["text", "image", "item", "vector"]
TARGETS = ("images", "texts")
MAX_K = 10_000

_WEIGHTED = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*:(.*)$", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a query and its weight."""

    kind: TermKind
    value: Any
    weight: float = 1.0


def parse_weighted(arg: str) -> tuple[float, str]:
    """Split ``"2:red car"`` into (2.0, "red car"); text without a number prefix weighs 1."""
    m = _WEIGHTED.match(arg)
    if not m or not m.group(2).strip():
        return 1.0, arg
    return float(m.group(1)), m.group(2).strip()


@dataclass(frozen=True)
class Hybrid:
    """Keyword + vector fusion by reciprocal rank: ``sum w / (k0 + rank)`` over both lists."""

    vector_weight: float = 1.0
    keyword_weight: float = 1.0
    k0: int = 60


@dataclass
class Query:
    """What to search for, and where: weighted terms, the target modality, k and an offset
    for paging, filters, optional keyword fusion, and a re-ranking pipeline."""

    terms: list[Term] = field(default_factory=list)
    target: str = "images"
    k: int = 10
    offset: int = 0
    filters: list[Filter] = field(default_factory=list)
    hybrid: Hybrid | None = None
    rerank: list[Stage] = field(default_factory=list)

    def validate(self) -> None:
        if not self.terms:
            raise QueryError("nothing to search for: give a text, an image or an item id")
        if self.target not in TARGETS:
            raise QueryError(f"unknown target {self.target!r}; expected one of {TARGETS}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {self.k!r}")
        if not isinstance(self.offset, int) or not 0 <= self.offset <= MAX_K:
            raise QueryError(f"offset must be an integer between 0 and {MAX_K}, "
                             f"got {self.offset!r}")
        for t in self.terms:
            if not np.isfinite(t.weight):
                raise QueryError(f"term weight must be a finite number, got {t.weight}")
            if t.kind == "text" and not str(t.value).strip():
                raise QueryError("empty text term")

    @property
    def modality(self) -> str:
        return "image" if self.target == "images" else "text"

    def keyword_text(self) -> str:
        """The words the keyword half of a hybrid search looks for: positive text terms."""
        return " ".join(str(t.value) for t in self.terms if t.kind == "text" and t.weight > 0)


# --- planning a filtered search -------------------------------------------------------------

SELECTIVE = 0.25  # filters keeping at most this share search inside the index (id selector)


def filtered_search(index: VectorIndex, q: np.ndarray, k: int, allow: np.ndarray | None
                    ) -> tuple[list[tuple[int, float]], str]:
    """The best k (id, score) among ``allow`` (all ids when None), and the plan used.

    A selective filter runs inside the index (FAISS id selector; exact on short allow-lists).
    A broad one searches unfiltered with a pool sized by its selectivity, and tops up
    (doubling the pool) until k matches are found or the index is exhausted."""
    n = index.ntotal
    if allow is None:
        scores, ids = index.search(q, k)
        return _pairs(scores[0], ids[0]), "plain"
    if not len(allow) or not n:
        return [], "empty"
    share = len(allow) / n
    if share <= SELECTIVE:
        scores, ids = index.search(q, k, allow=allow)
        return _pairs(scores[0], ids[0]), "selector"
    fetch = min(n, math.ceil(k / share * 1.3) + 8)
    while True:
        scores, ids = index.search(q, fetch)
        keep = np.isin(ids[0], allow)
        if keep.sum() >= k or fetch >= n:
            return _pairs(scores[0][keep], ids[0][keep])[:k], "overfetch"
        fetch = min(n, fetch * 2)


def _pairs(scores: np.ndarray, ids: np.ndarray) -> list[tuple[int, float]]:
    return [(int(i), float(s)) for i, s in zip(ids, scores, strict=True) if i >= 0]


def fuse(vector: list[tuple[int, float]], keyword: list[tuple[int, float]], h: Hybrid
         ) -> list[tuple[int, float, dict[str, float]]]:
    """Reciprocal rank fusion of two rankings: (id, fused score, parts), best first."""
    fused: dict[int, float] = {}
    parts: dict[int, dict[str, float]] = {}
    for weight, ranking, name in ((h.vector_weight, vector, "vector"),
                                  (h.keyword_weight, keyword, "keyword")):
        for rank, (item, score) in enumerate(ranking):
            fused[item] = fused.get(item, 0.0) + weight / (h.k0 + rank + 1)
            parts.setdefault(item, {})[name] = score
    # Ties (an item first in one list only, against an item first in the other) go to the
    # keyword match: an exact name or code the user typed beats a look-alike.
    kw_rank = {item: r for r, (item, _) in enumerate(keyword)}
    order = sorted(fused, key=lambda i: (-fused[i], kw_rank.get(i, len(keyword))))
    return [(i, fused[i], parts[i]) for i in order]


def combine(vectors: list[np.ndarray], weights: list[float]) -> np.ndarray:
    """Weighted sum of normalised vectors, normalised again."""
    acc = np.zeros_like(np.asarray(vectors[0], dtype=np.float32))
    for v, w in zip(vectors, weights, strict=True):
        v = np.asarray(v, dtype=np.float32)
        n = float(np.linalg.norm(v))
        if n == 0 or not np.isfinite(n):
            raise QueryError("a query term has a zero or invalid embedding")
        acc += (w / n) * v
    norm = float(np.linalg.norm(acc))
    if norm < 1e-6:
        raise QueryError("the query terms cancel out (their weighted sum is zero)")
    return (acc / norm).astype(np.float32)
