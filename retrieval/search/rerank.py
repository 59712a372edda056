"""Re-ranking stages: small classes with one method, chained from a spec string.

    exact            re-score candidates with the stored full-precision vectors
    mmr:LAMBDA       maximal marginal relevance: trade relevance (LAMBDA) against diversity
    dedup:COSINE     collapse near-duplicates into the best one, listed on its hit
    model:SPEC[@PRETRAINED][:TOP_N]
                     re-score the top N (default 50) with a second open_clip model

``parse_pipeline("exact,mmr:0.7,dedup:0.95")`` builds the chain. Every stage takes the
candidates best first and returns them best first; none drops below ``k`` results while enough
candidates exist (the query layer fetches a larger pool when a pipeline is given).

Costs are bounded: the searcher hands stages at most ``MAX_CANDIDATES`` candidates (C) and the
query builder allows each kind of stage once. With d the vectors' width, ``exact`` is one
product (C·d), ``mmr`` keeps each candidate's largest similarity to the picks so far and updates
it with one vector product per pick (k·C·d, memory C·d), ``dedup`` one product per kept
candidate (kept·C·d), and ``model`` embeds at most ``top_n`` items. Every stage checks the
search's :class:`~.budget.Budget` between blocks of work and inside its loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..encoders.spec import ModelSpec
from ..errors import QueryError
from .budget import UNLIMITED, Budget

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

    def embed_query(self, terms: Sequence[Term], check: Callable[[], None] = ...) -> np.ndarray:
        """The query's terms embedded by this model and combined; ``check`` runs before each
        term (a search's budget raises there)."""
        ...

    def item_vectors(self, ids: Sequence[int]) -> dict[int, np.ndarray]:
        """Stored items embedded by this model (cached by content); unreadable ones left out."""
        ...


MAX_CANDIDATES = 2_000  # the most candidates a stage is given (the searcher's pool)
MAX_TOP_N = MAX_CANDIDATES  # the most items the model stage re-embeds
BLOCK = 256  # candidates whose stored vectors are read (and the budget checked) at a time


@dataclass
class RerankContext:
    """What stages may use: the query, its vector, the final k, the stored vectors of
    candidates, second models by spec, and the search's budget (check it in loops)."""

    query: Query
    vector: np.ndarray
    k: int
    vectors: Callable[[list[int]], np.ndarray]
    second_model: Callable[[ModelSpec], SecondModel]
    budget: Budget = UNLIMITED

    def stored(self, cands: Sequence[Candidate]) -> np.ndarray:
        """The candidates' stored vectors, read a block at a time between budget checks."""
        parts = []
        for start in range(0, len(cands), BLOCK):
            self.budget.check()
            parts.append(self.vectors([c.id for c in cands[start:start + BLOCK]]))
        return np.concatenate(parts) if parts else np.zeros((0, len(self.vector)), np.float32)


class Stage(ABC):
    """One re-ranking step. ``kind`` names the stage's type (a query has each kind once)."""

    name: str = ""
    kind: str = ""

    @abstractmethod
    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        """Re-order (and possibly merge) candidates, best first."""

    def __repr__(self) -> str:
        return self.name


class Exact(Stage):
    """Re-score with the catalog's float32 vectors (an approximate index's scores are not)."""

    name = kind = "exact"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if not cands:
            return cands
        scores = ctx.stored(cands) @ ctx.vector
        for c, s in zip(cands, scores, strict=True):
            c.score = float(s)
            c.scores["exact"] = float(s)
        return sorted(cands, key=lambda c: -c.score)


class MMR(Stage):
    """Maximal marginal relevance: each pick maximises
    ``lam * sim(query, d) - (1 - lam) * max(sim(d, picked))``.

    Each candidate's largest similarity to the picks is kept and updated with one vector
    product per pick: k picks over C candidates cost k·C·d, never a C x C matrix."""

    kind = "mmr"

    def __init__(self, lam: float = 0.7) -> None:
        if not 0 <= lam <= 1:
            raise QueryError(f"mmr lambda must be between 0 and 1, got {lam}")
        self.lam = lam
        self.name = f"mmr:{lam:g}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if len(cands) < 2:
            return cands
        vecs = ctx.stored(cands)
        rel = vecs @ ctx.vector
        gain = self.lam * rel  # before the first pick nothing is penalised
        taken = np.zeros(len(cands), dtype=bool)
        max_sim: np.ndarray | None = None  # each candidate's largest similarity to the picks
        picked: list[int] = []
        for _ in range(min(ctx.k, len(cands))):
            ctx.budget.check()
            if max_sim is not None:
                gain = self.lam * rel - (1 - self.lam) * max_sim
            gain[taken] = -np.inf
            best = int(np.argmax(gain))  # ties: the earlier candidate, as before
            picked.append(best)
            taken[best] = True
            sims = _column(vecs, best)
            max_sim = sims if max_sim is None else np.maximum(max_sim, sims, out=max_sim)
        order = picked + np.flatnonzero(~taken).tolist()  # the rest keep their order
        out = [cands[i] for i in order]
        for c, i in zip(out, order, strict=True):
            c.scores["mmr_relevance"] = float(rel[i])
        return out


class Dedup(Stage):
    """Keep the best of each group of near-duplicates (cosine >= threshold).

    A candidate joins the kept candidate it is most similar to, when that similarity reaches the
    threshold; each candidate's best kept match is updated with one vector product per kept
    candidate (kept·C·d)."""

    kind = "dedup"

    def __init__(self, threshold: float = 0.95) -> None:
        if not -1 <= threshold <= 1:
            raise QueryError(f"dedup threshold is a cosine in [-1, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"dedup:{threshold:g}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if len(cands) < 2:
            return cands
        vecs = ctx.stored(cands)
        best_sim = np.full(len(cands), -np.inf, dtype=np.float32)  # to the kept ones so far
        best_of = np.zeros(len(cands), dtype=np.int64)
        kept: list[int] = []
        for i, c in enumerate(cands):
            if best_sim[i] >= self.threshold:
                cands[int(best_of[i])].duplicates.append(c.id)
                continue
            ctx.budget.check()
            kept.append(i)
            sims = _column(vecs[i:], 0)[1:]
            closer = sims > best_sim[i + 1:]  # strictly: ties stay with the earlier kept one
            best_sim[i + 1:][closer] = sims[closer]
            best_of[i + 1:][closer] = i
        return [cands[i] for i in kept]


def _column(vecs: np.ndarray, i: int) -> np.ndarray:
    """``vecs @ vecs[i]`` on one core. Stages call it once per pick; OpenBLAS spreads each
    matrix-vector product over all its threads, which on a busy machine cost 6-8 ms per call
    for 2,000 x 512 where numpy's own loop (einsum) takes 0.2-0.4 ms (measured at load 9 on
    two cores), and it keeps one search on one core."""
    return np.einsum("ij,j->i", vecs, vecs[i])


class ModelRerank(Stage):
    """Re-score the top N with a second (usually stronger) open_clip model. Its embeddings of
    items are cached in the catalog, keyed by the model and the item's content. The top N are
    embedded a batch at a time, with a budget check between batches."""

    kind = "model"
    batch = 64  # items embedded between budget checks (the default top N is one batch)

    def __init__(self, spec: str, top_n: int = 50) -> None:
        name, _, pretrained = spec.partition("@")
        self.spec = ModelSpec.parse(name, pretrained or None)
        if self.spec.random_weights:
            raise QueryError(f"model re-ranking needs weights: use model:{name}@TAG")
        if not 1 <= top_n <= MAX_TOP_N:
            raise QueryError(f"model re-ranking's top N is between 1 and {MAX_TOP_N}, "
                             f"got {top_n}")
        self.top_n = top_n
        self.name = f"model:{spec}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if not cands:
            return cands
        model = ctx.second_model(self.spec)
        qv = model.embed_query(ctx.query.terms, ctx.budget.check)
        head, tail = cands[: self.top_n], cands[self.top_n:]
        vectors: dict[int, np.ndarray] = {}
        for start in range(0, len(head), self.batch):
            ctx.budget.check()
            vectors.update(model.item_vectors([c.id for c in head[start:start + self.batch]]))
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
