"""Re-ranking stages: small classes with one method, chained from a spec string.

Each stage type registers itself under its ``kind`` (:func:`stage`); a new stage is one
class here with its :meth:`Stage.parse` and ``usage``.

    exact            re-score candidates with the stored full-precision vectors
    mmr:LAMBDA       maximal marginal relevance: trade relevance (LAMBDA) against diversity
    dedup:COSINE     collapse near-duplicates into the best one, listed on its hit
    model:SPEC[@PRETRAINED][:TOP_N]
                     re-score the top N (default 50) with a second open_clip model

``parse_pipeline("exact,mmr:0.7,dedup:0.95")`` builds the chain. Every stage takes the
candidates best first and returns them best first; none drops below ``k`` results while enough
candidates exist (the query layer fetches a larger pool when a pipeline is given).

Pages are slices: the searcher hands the stages the same pool whatever the page (the best
``MAX_CANDIDATES``), and :func:`run_pipeline` asks each stage for as much of its output as the
next one needs, each stage answering exactly what it would had it processed the whole pool:
MMR's first m picks are the first m of any longer run, dedup's first m kept items (and what
was merged into them) those of the whole pass, and sorts break ties by item id. So the first
``offset + k`` results of a search are the head of the same search with a larger k.

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
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, TypeVar

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


# The pool that fusion and re-ranking work on, the same whatever the page (so that pages are
# slices of one list), and so the deepest page they serve (offset + k). Every such search pays
# for the whole pool (the stages read its stored vectors, fusion ranks both lists), so it is
# as small as the deepest page allows (costs by pool size: README, "Query layer").
MAX_CANDIDATES = 500
MAX_TOP_N = MAX_CANDIDATES  # the most items the model stage re-embeds
BLOCK = 256  # candidates whose stored vectors are read (and the budget checked) at a time
ALL = 2**62  # a depth beyond any pool: the whole output

# ``upstream(depth, whole)``: the output of the stages before, and how many of its first
# entries (at least ``depth``) are final, as they would be had every stage processed all the
# candidates; with ``whole`` the list also holds exactly the candidates that run would keep.
Upstream = Callable[[int, bool], tuple[list["Candidate"], int]]


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
    # vectors read so far (the stages of a pipeline share them): rows of ``read``, by id
    rows: dict[int, int] = field(default_factory=dict, repr=False)
    read: list[np.ndarray] = field(default_factory=list, repr=False)

    def stored(self, cands: Sequence[Candidate]) -> np.ndarray:
        """The candidates' stored vectors, read a block at a time between budget checks, once
        per search."""
        missing = [c.id for c in cands if c.id not in self.rows]
        parts = [self.read[0]] if self.read else []
        for start in range(0, len(missing), BLOCK):
            self.budget.check()
            block = missing[start:start + BLOCK]
            self.rows.update(zip(block, range(len(self.rows), len(self.rows) + len(block)),
                                 strict=True))
            parts.append(self.vectors(block))
        if missing:
            self.read[:] = [np.concatenate(parts) if len(parts) > 1 else parts[0]]
        if not cands:
            return np.zeros((0, len(self.vector)), np.float32)
        return self.read[0][[self.rows[c.id] for c in cands]]


class Stage(ABC):
    """One re-ranking step. ``kind`` names the stage's type (a query has each kind once) and
    its spelling in a pipeline, ``usage`` how a pipeline spells it with its argument."""

    name: str = ""
    kind: str = ""
    usage: str = ""

    @classmethod
    def parse(cls, arg: str) -> Stage:
        """The stage spelled ``KIND:ARG`` (``arg`` empty for ``KIND`` alone); ValueError when
        ``arg`` does not spell one. A stage that no pipeline spells (one passed as an object)
        leaves this as is and is not registered."""
        raise ValueError(arg)

    @abstractmethod
    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        """Re-order (and possibly merge) candidates, best first."""

    def ranked(self, ctx: RerankContext, upstream: Upstream, depth: int, whole: bool
               ) -> tuple[list[Candidate], int]:
        """This stage's output with its first ``depth`` entries final, and how many are (see
        :data:`Upstream`). A stage that does not say more processes everything it is given."""
        out = self.apply(ctx, upstream(ALL, True)[0])
        return out, len(out)

    def __repr__(self) -> str:
        return self.name


STAGES: dict[str, type[Stage]] = {}  # by kind, in the order their usage is listed
S = TypeVar("S", bound=type[Stage])


def stage(cls: S) -> S:
    """Class decorator: make a stage type known by its ``kind``."""
    STAGES[cls.kind] = cls
    return cls


@stage
class Exact(Stage):
    """Re-score with the catalog's float32 vectors (an approximate index's scores are not)."""

    name = kind = usage = "exact"

    @classmethod
    def parse(cls, arg: str) -> Stage:
        if arg:
            raise ValueError(arg)
        return cls()

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if not cands:
            return cands
        scores = similarities(ctx.stored(cands), ctx.vector)
        for c, s in zip(cands, scores, strict=True):
            c.score = float(s)
            c.scores["exact"] = float(s)
        return sorted(cands, key=by_score)

    def ranked(self, ctx: RerankContext, upstream: Upstream, depth: int, whole: bool
               ) -> tuple[list[Candidate], int]:
        out = self.apply(ctx, upstream(0, True)[0])  # a sort: all of it is final
        return out, len(out)


@stage
class MMR(Stage):
    """Maximal marginal relevance: each pick maximises
    ``lam * sim(query, d) - (1 - lam) * max(sim(d, picked))``.

    Each candidate's largest similarity to the picks is kept and updated with one vector
    product per pick: k picks over C candidates cost k·C·d, never a C x C matrix."""

    kind = "mmr"
    usage = "mmr[:LAMBDA]"

    @classmethod
    def parse(cls, arg: str) -> Stage:
        return cls(float(arg) if arg else 0.7)

    def __init__(self, lam: float = 0.7) -> None:
        if not 0 <= lam <= 1:
            raise QueryError(f"mmr lambda must be between 0 and 1, got {lam}")
        self.lam = lam
        self.name = f"mmr:{lam:g}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        if len(cands) < 2:
            return cands
        vecs = ctx.stored(cands)
        rel = similarities(vecs, ctx.vector)
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

    def ranked(self, ctx: RerankContext, upstream: Upstream, depth: int, whole: bool
               ) -> tuple[list[Candidate], int]:
        """``depth`` picks: greedy, so the first m are those of any longer run."""
        cands = upstream(0, True)[0]  # all of them, as for any page: each pick sees every one
        picks = min(depth, len(cands))
        out = self.apply(replace(ctx, k=picks), cands)
        return out, len(out) if picks >= len(out) - 1 else picks


@stage
class Dedup(Stage):
    """Keep the best of each group of near-duplicates (cosine >= threshold).

    Candidates are taken best first: one is kept unless it is a near-duplicate of one kept
    before it, and then it is listed on the first (best) such kept candidate (duplicates by
    score, then id). Each kept
    candidate costs one vector product over the candidates after it (kept·C·d); the m best
    kept ones, and what merges into them, need only m of them (:meth:`ranked`)."""

    kind = "dedup"
    usage = "dedup[:COSINE]"

    @classmethod
    def parse(cls, arg: str) -> Stage:
        return cls(float(arg) if arg else 0.95)

    def __init__(self, threshold: float = 0.95) -> None:
        if not -1 <= threshold <= 1:
            raise QueryError(f"dedup threshold is a cosine in [-1, 1], got {threshold}")
        self.threshold = threshold
        self.name = f"dedup:{threshold:g}"

    def apply(self, ctx: RerankContext, cands: list[Candidate]) -> list[Candidate]:
        return self._first(ctx, cands, len(cands))[0]

    def ranked(self, ctx: RerankContext, upstream: Upstream, depth: int, whole: bool
               ) -> tuple[list[Candidate], int]:
        """The first ``depth`` kept candidates, with every candidate that merges into them.
        They depend on the candidates up to the last of them, in order, and on which come
        after (a candidate after them merges into the first kept one it is close to, or
        into none of them): the stages before are asked for more until that prefix is
        final."""
        if whole:
            out = self.apply(ctx, upstream(ALL, True)[0])
            return out, len(out)
        want = depth + depth // 2 + 16
        while True:
            cands, final = upstream(want, True)
            out, end = self._first(ctx, cands, depth)
            if end <= final or want >= len(cands):
                return out, len(out) if end == len(cands) else depth
            want = max(2 * want, end)

    def _first(self, ctx: RerankContext, cands: list[Candidate], depth: int
               ) -> tuple[list[Candidate], int]:
        """The first ``depth`` kept candidates (with their duplicates), then the others not
        merged into them, and how many candidates the kept ones were chosen from."""
        if len(cands) < 2:
            return cands, len(cands)
        vecs = ctx.stored(cands)
        first_of = np.full(len(cands), -1, dtype=np.int64)  # the kept one each merges into
        kept: list[int] = []
        end = len(cands)
        for i in range(len(cands)):
            if first_of[i] >= 0:
                continue
            if len(kept) == depth:
                end = i
                break
            ctx.budget.check()
            kept.append(i)
            close = (_column(vecs[i:], 0)[1:] >= self.threshold) & (first_of[i + 1:] < 0)
            first_of[i + 1:][close] = i
        merged: dict[int, list[Candidate]] = {i: [] for i in kept}
        for j in np.flatnonzero(first_of >= 0).tolist():
            merged[int(first_of[j])].append(cands[j])
        for i in kept:  # best first: the order they came in may depend on the page
            cands[i].duplicates = [c.id for c in sorted(merged[i], key=by_score)]
        rest = [cands[j] for j in range(end, len(cands)) if first_of[j] < 0]
        return [cands[i] for i in kept] + rest, end


def by_score(c: Candidate) -> tuple[float, int]:
    """The order of results: best score first, ties by item id."""
    return -c.score, c.id


def run_pipeline(stages: Sequence[Stage], ctx: RerankContext, pool: list[Candidate],
                 depth: int) -> list[Candidate]:
    """The stages applied in turn to ``pool`` (best first, a total order), with the first
    ``depth`` results as they would be had each stage processed every candidate."""
    def upstream(n: int) -> Upstream:
        def output(d: int, whole: bool) -> tuple[list[Candidate], int]:
            if n == 0:
                return pool, len(pool)
            ctx.budget.check()
            return stages[n - 1].ranked(ctx, upstream(n - 1), d, whole)
        return output

    return upstream(len(stages))(depth, False)[0]


def _column(vecs: np.ndarray, i: int) -> np.ndarray:
    """``vecs @ vecs[i]`` on one core. Stages call it once per pick; OpenBLAS spreads each
    matrix-vector product over all its threads, which on a busy machine costs many times what
    numpy's own loop (einsum) does for the pool's sizes, and this keeps one search on one
    core."""
    return similarities(vecs, vecs[i])


def similarities(vecs: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``vecs @ v``, each row's dot product computed the same way whatever the number of rows:
    a BLAS matrix-vector product rounds a row differently depending on the matrix's shape
    (OpenBLAS's kernels take tails apart), and a candidate's score must not depend on how
    deep a page the search was asked for (a page is a slice of the full run)."""
    return np.einsum("ij,j->i", vecs, v)


@stage
class ModelRerank(Stage):
    """Re-score the top N with a second (usually stronger) open_clip model. Its embeddings of
    items are cached in the catalog, keyed by the model and the item's content. The top N are
    embedded a batch at a time, with a budget check between batches."""

    kind = "model"
    usage = "model:SPEC[@PRETRAINED][:TOP_N]"
    batch = 64  # items embedded between budget checks (the default top N is one batch)

    @classmethod
    def parse(cls, arg: str) -> Stage:
        if not arg:
            raise ValueError(arg)
        model, top = arg, 50
        head, _, last = arg.rpartition(":")
        if head and last.isdigit():
            model, top = head, int(last)
        return cls(model, top)

    def __init__(self, spec: str, top_n: int = 50) -> None:
        name, _, pretrained = spec.partition("@")
        self.spec = ModelSpec.parse(name, pretrained or None, option=f"the tag @{pretrained}")
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
        return sorted(head, key=by_score) + tail

    def ranked(self, ctx: RerankContext, upstream: Upstream, depth: int, whole: bool
               ) -> tuple[list[Candidate], int]:
        """The top N re-scored, then the rest as given: final as far as the input is, once
        its top N are."""
        cands, final = upstream(max(self.top_n, depth), whole)
        out = self.apply(ctx, cands)
        return out, final if final >= min(self.top_n, len(cands)) else 0


def parse_pipeline(spec: str | list[Stage] | tuple[Stage, ...] | None) -> list[Stage]:
    """Build stages from ``"exact,mmr:0.7,dedup:0.95,model:ViT-B-32@laion2b_s34b_b79k:30"``."""
    if spec is None or isinstance(spec, (list, tuple)):
        return list(spec or [])
    stages: list[Stage] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        kind, _, arg = part.partition(":")
        try:
            if kind not in STAGES:
                raise ValueError(kind)
            stages.append(STAGES[kind].parse(arg))
        except ValueError:
            usages = ", ".join(s.usage for s in STAGES.values())
            raise QueryError(f"unknown rerank stage {part!r}; stages: {usages}") from None
    return stages
