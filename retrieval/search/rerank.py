"""Re-ranking stages: small classes with one method, chained from a spec string.

    exact            re-score candidates with the stored full-precision vectors
    mmr:LAMBDA       maximal marginal relevance: trade relevance (LAMBDA) against diversity
    dedup:COSINE     collapse near-duplicates into the best one, listed on its hit
    model:SPEC[@PRETRAINED][:TOP_N]
                     re-score the top N (default 50) with a second open_clip model

``parse_pipeline("exact,mmr:0.7,dedup:0.95")`` builds the chain. Every stage takes the
candidates best first and returns them best first; none drops below ``k`` results while enough
candidates exist (the query layer fetches a larger pool when a pipeline is given).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..encoders.spec import ModelSpec
from ..errors import QueryError

if TYPE_CHECKING:
    from .query import Query, Term


@dataclass
class Candidate:
    """A result on its way through the pipeline."""

    id: int
    score: float
    duplicates: list[int] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)


class SecondModel(Protocol):
    """A second model as the model stage uses it (see :mod:`.searcher`)."""

    def embed_query(self, terms: Sequence[Term]) -> np.ndarray:
        """The query's terms embedded by this model and combined."""
        ...

    def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored items embedded by this model (cached by content); unreadable ones left out."""
        ...


@dataclass
class RerankContext:
    """What stages may use: the query, its vector, the final k, the stored vectors of
    candidates, and second models by spec."""

    query: Query
    vector: np.ndarray
    k: int
    vectors: Callable[[list[int]], np.ndarray]
    second_model: Callable[[ModelSpec], SecondModel]


class Stage(ABC):
    """One re-ranking step."""

    name: str = ""

    @abstractmethod
    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        """Re-order (and possibly merge) candidates, best first."""

    def __repr__(self) -> str:
        return self.name


class Exact(Stage):
    """Re-score with the catalog's float32 vectors (an approximate index's scores are not)."""

    name = "exact"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if not cands:
            return cands
        scores = ctx.vectors([c.id for c in cands]) @ ctx.vector
        for c, s in zip(cands, scores, strict=True):
            c.score = float(s)
            c.scores["exact"] = float(s)
        return sorted(cands, key=lambda c: -c.score)


class MMR(Stage):
    """Maximal marginal relevance: each pick maximises
    ``lam * sim(query, d) - (1 - lam) * max(sim(d, picked))``."""

    def __init__(self, lam: float = 0.7) -> None:
        if not 0 <= lam <= 1:
            raise QueryError(f"mmr lambda must be between 0 and 1, got {lam}")
        self.lam = lam
        self.name = f"mmr:{lam:g}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if len(cands) < 2:
            return cands
        vecs = ctx.vectors([c.id for c in cands])
        rel = vecs @ ctx.vector
        sims = vecs @ vecs.T
        picked: list[int] = []
        left = list(range(len(cands)))
        max_sim = np.full(len(cands), -np.inf)
        while left and len(picked) < ctx.k:
            penalty = np.where(np.isfinite(max_sim[left]), max_sim[left], 0.0)
            gain = self.lam * rel[left] - (1 - self.lam) * penalty
            best = left[int(np.argmax(gain))]
            picked.append(best)
            left.remove(best)
            max_sim = np.maximum(max_sim, sims[best])
        order = picked + left  # the rest keep their previous order
        out = [cands[i] for i in order]
        for c, i in zip(out, order, strict=True):
            c.scores["mmr_relevance"] = float(rel[i])
        return out


class Dedup(Stage):
    """Keep the best of each group of near-duplicates (cosine >= threshold)."""

    def __init__(self, threshold: float = 0.95) -> None:
        if not -1 <= threshold <= 1:
            raise QueryError(f"dedup threshold is a cosine in [-1, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"dedup:{threshold:g}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if len(cands) < 2:
            return cands
        vecs = ctx.vectors([c.id for c in cands])
        kept: list[int] = []
        for i, c in enumerate(cands):
            if kept:
                sims = vecs[kept] @ vecs[i]
                j = int(np.argmax(sims))
                if sims[j] >= self.threshold:
                    cands[kept[j]].duplicates.append(c.id)
                    continue
            kept.append(i)
        return [cands[i] for i in kept]


class ModelRerank(Stage):
    """Re-score the top N with a second (usually stronger) open_clip model. Its embeddings of
    items are cached in the catalog, keyed by the model and the item's content."""

    def __init__(self, spec: str, top_n: int = 50) -> None:
        name, _, pretrained = spec.partition("@")
        self.spec = ModelSpec.parse(name, pretrained or None)
        if self.spec.random_weights:
            raise QueryError(f"model re-ranking needs weights: use model:{name}@TAG")
        self.top_n = top_n
        self.name = f"model:{spec}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if not cands:
            return cands
        model = ctx.second_model(self.spec)
        qv = model.embed_query(ctx.query.terms)
        head, tail = cands[: self.top_n], cands[self.top_n:]
        vectors = model.item_vectors([c.id for c in head])
        for c in head:
            v = vectors.get(c.id)
            c.score = float(v @ qv) if v is not None else -np.inf
            c.scores["model"] = c.score
        return sorted(head, key=lambda c: -c.score) + tail


def parse_pipeline(spec: str | list[Stage] | tuple[Stage, ...] | None) -> list[Stage]:
    """Build stages from ``"exact,mmr:0.7,dedup:0.95,model:ViT-B-32@laion2b_s34b_b79k:30"``."""
    if spec is None or isinstance(spec, (list, tuple)):
        return list(spec or [])
    stages: list[Stage] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, arg = part.partition(":")
        try:
            if name == "exact" and not arg:
                stages.append(Exact())
            elif name == "mmr":
                stages.append(MMR(float(arg) if arg else 0.7))
            elif name == "dedup":
                stages.append(Dedup(float(arg) if arg else 0.95))
            elif name == "model" and arg:
                model, top = arg, 50
                head, _, last = arg.rpartition(":")
                if head and last.isdigit():
                    model, top = head, int(last)
                stages.append(ModelRerank(model, top))
            else:
                raise ValueError
        except ValueError:
            raise QueryError(
                f"unknown rerank stage {part!r}; stages: exact, mmr[:LAMBDA], "
                "dedup[:COSINE], model:SPEC[@PRETRAINED][:TOP_N]") from None
    return stages
