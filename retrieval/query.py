"""The query model: weighted terms of any kind combined into one query vector.

A query is a list of terms; each term is a text, an image file, a stored item id or a raw
vector, with a weight (negative to push results away). Each term is embedded and
L2-normalised, the weighted sum is taken, and the sum is normalised again:

    q = normalize(sum_i w_i * normalize(e_i))

so weights are relative importances, independent of the embeddings' scales.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import QueryError

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


@dataclass
class Query:
    """What to search for, and where."""

    terms: list[Term] = field(default_factory=list)
    target: str = "images"
    k: int = 10

    def validate(self) -> None:
        if not self.terms:
            raise QueryError("nothing to search for: give a text, an image or an item id")
        if self.target not in TARGETS:
            raise QueryError(f"unknown target {self.target!r}; expected one of {TARGETS}")
        if not isinstance(self.k, int) or isinstance(self.k, bool) or not 1 <= self.k <= MAX_K:
            raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {self.k!r}")
        for t in self.terms:
            if not np.isfinite(t.weight):
                raise QueryError(f"term weight must be a finite number, got {t.weight}")
            if t.kind == "text" and not str(t.value).strip():
                raise QueryError("empty text term")

    @property
    def modality(self) -> str:
        return "image" if self.target == "images" else "text"


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
