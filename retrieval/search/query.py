"""The query model: weighted terms of any kind combined into one query vector.

A query is a list of terms; each term is a text, an image (a file or its bytes), a stored item
to search like, or a raw vector, with a weight (negative to push results away). Each term is
embedded and L2-normalised, the weighted sum is taken, and the sum is normalised again:

    q = normalize(sum_i w_i * normalize(e_i))

so weights are relative importances, independent of the embeddings' scales. Queries are made
from raw input by :func:`retrieval.search.builder.build_query`, the one place that checks it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ..errors import QueryError
from ..items import IMAGE, TARGET_KINDS

if TYPE_CHECKING:
    from .filters import Filter
    from .rerank import Stage

TermKind = Literal["text", "image", "like", "vector"]
TERM_KINDS: tuple[str, ...] = ("text", "image", "like", "vector")
TARGETS = tuple(TARGET_KINDS)  # what a search returns, as users name it (``target``)

_END = object()  # ends a list in a query's state (see Query.checked)
_WEIGHTED = re.compile(r"^\s*([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*:(.*)$", re.S)


@dataclass(frozen=True)
class Term:
    """One part of a query and its weight: a ``text``; an ``image`` (a path, or the file's
    bytes); ``like``, a stored item's id (more like it); or a raw ``vector``. ``max_pixels``
    bounds the decoding of an image term (a service passes its upload limit; None: the
    library's default)."""

    kind: TermKind
    value: Any
    weight: float = 1.0
    max_pixels: int | None = None


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
    """What to search for, and where: weighted terms, the target (the kind of item searched:
    ``image``, ``text``, or ``shot`` for a video search), k and an offset for paging,
    filters, optional keyword fusion, a re-ranking pipeline, and where the results end:
    ``min_score`` (a cosine) and ``cutoff`` (``"auto"``), which cut the ranked list before it
    is paged (:mod:`.cutoff`). ``keywords``: rank by the keyword index alone, no vectors
    (:func:`~.planning.keyword_ranking`). ``segments``: a video search lists every matching
    shot, not only each video's best."""

    terms: list[Term] = field(default_factory=list)
    target: str = IMAGE
    k: int = 10
    offset: int = 0
    filters: list[Filter] = field(default_factory=list)
    hybrid: Hybrid | None = None
    rerank: list[Stage] = field(default_factory=list)
    min_score: float | None = None
    cutoff: str | None = None
    keywords: bool = False
    segments: bool = False
    _checked_as: tuple[object, ...] | None = field(default=None, init=False, repr=False,
                                                   compare=False)

    @property
    def checked(self) -> bool:
        """Whether the query met the builder's rules and is unchanged since: every field, and
        every element of its lists, is still the object it was then (a query changed since is
        checked again when it runs)."""
        old, now = self._checked_as, self._state()
        return old is not None and len(old) == len(now) and all(
            a is b for a, b in zip(old, now, strict=True))

    def mark_checked(self) -> None:
        """Record that the query, as it is now, meets the builder's rules (the builder calls
        this)."""
        self._checked_as = self._state()

    def _state(self) -> tuple[object, ...]:
        return (self.target, self.k, self.offset, self.hybrid, self.min_score, self.cutoff,
                self.keywords, self.segments, *self.terms, _END, *self.filters, _END, *self.rerank)

    def keyword_text(self) -> str:
        """The words a keyword search (the keyword half of a hybrid search) looks for: positive
        text terms."""
        return " ".join(str(t.value) for t in self.terms if t.kind == "text" and t.weight > 0)


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
