"""Which index to build for n vectors of a dimension under a memory budget, and why.

The rules (measured on two cores: ``benchmarks/ann.py --regimes``; figures in the README):

1. **Exact (flat)** while n x d <= 2e6 (4,000 vectors of 512 dimensions, 20,000 of 96): a
   single query scans that in about 0.2 ms, recall is 1 by construction, adds and removes
   are free. Beyond it a graph answers at the recall target in a fraction of the time (at
   50,000 x 512, 0.06-0.2 ms against 2 ms; ``benchmarks/ann.py``).
2. **Graph on 8-bit codes, with inverted lists beside it** (``indexers.graph``) beyond that
   while they fit the budget (about 1.3 kB per 512-d vector; the exact vectors used to
   re-score are memory-mapped once saved). Size alone does not say which part serves a kind
   of query best: on tight clusters text-like queries (across the modality gap) cost a graph
   walk twenty times a list scan, on softer, overlapping data the graph wins both kinds by
   several times. So the parts are measured on a sample of the collection's own vectors and
   query kinds (``indexers.select``) and only the ones some kind needs are built: the graph
   alone, the lists alone (an IVF index, rule 3) or both; tuning then gives each kind of query
   its part and setting. A graph alone when the lists do not fit.
3. **IVF, 8-bit scalar codes** (d bytes per vector) when the graph does not fit, with the best
   ``k * k_factor`` candidates re-scored exactly from a memory-mapped vector file.
   ``nlist`` is the power of two nearest 4 sqrt(n) (FAISS's guideline is 4-16 sqrt(n)).
4. **IVF, 4-bit PQ fast-scan codes** (d/4 bytes per vector, SIMD scanning), also re-scored,
   when even 8-bit codes exceed the budget.
5. **IVF on disk** (``indexers.ondisk``) when not even 4-bit codes fit: 8-bit scalar codes
   (d bytes per vector) in FAISS on-disk inverted lists and exact vectors, both memory-mapped,
   so they cost page cache rather than process memory; the budget covers the ids that every
   query binary-searches (16 bytes per vector). 8-bit codes rather than PQ because they rank
   nearly exactly: a query re-scores 10-20 candidates from a vector file larger than memory
   where coarse PQ codes would need hundreds (``benchmarks/scale.py``). ``nlist`` stays at
   most 4096 (``ONDISK_MAX_NLIST``): k-means and assigning every vector cost n x nlist, which
   on a few cores is the build's dominant term, while the codes are small enough that
   scanning longer lists stays cheap (``benchmarks/scale.py``).

IVF with float32 codes (``kind='ivf', codec='flat'``) and HNSW on float32 vectors
(``kind='hnsw'``) stay available on request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .errors import IndexerError

DEFAULT_MEMORY_BUDGET = 4 * 1024**3
EXACT_MAX_WORK = 2_000_000  # n x d up to which exact search is chosen
MIN_NLIST, MAX_NLIST = 64, 16384
# k-means training points per IVF cell: FAISS warns below 39; 64 keeps the centroids stable
# while training stays a small share of the build.
TRAIN_PER_CELL = 64
# The graph index's lists are one way among two to answer, tuned per query kind, and their
# k-means is a large share of its build: half the points per cell.
LISTS_TRAIN_PER_CELL = 32
ONDISK_MAX_NLIST = 4096
# The on-disk tier's memory per vector: the ascending ids every query binary-searches to
# re-score its candidates, counted as resident though memory-mapped (like the in-memory tiers,
# the coarse quantizer is left out).
ONDISK_BYTES_PER_VECTOR = 16.0
# The graph: links per node (2m on the bottom layer) and the breadth of the build's search.
# At 200k x 512 on tight clusters m=32 with efConstruction=80 reached recall 0.95 on image
# queries with a walk 25% cheaper than efConstruction=40 (a 30% longer build) and than m=16
# or 24 with efConstruction 80-128 (longer builds); on the overlapping regime 40 and 80 were
# alike. It builds in less time than hnswlib's usual M=16/200 (``benchmarks/ann.py``).
GRAPH_M = 32
GRAPH_EF_CONSTRUCTION = 80


@dataclass(frozen=True)
class IndexPlan:
    """An index to build: kind and parameters, the tier name and the reason."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    tier: str = "exact"
    reason: str = ""
    bytes_per_vector: float = 0.0
    # What the choice measured (``indexers.select``): ms per query by query kind and part.
    measured: dict[str, dict[str, float]] = field(default_factory=dict)

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.kind}({args})" if args else self.kind

    def train_size(self, n: int) -> int:
        """How many of ``n`` vectors to train this index on (0 when it needs no training)."""
        if self.kind == "graph":  # 8-bit ranges, and the lists' centroids when present
            return min(n, max(LISTS_TRAIN_PER_CELL * int(self.params.get("nlist", 0)), 65536))
        if self.kind not in ("ivf", "ivf-ondisk"):
            return 0
        want = TRAIN_PER_CELL * int(self.params["nlist"])
        if self.params.get("codec") == "pq" and self.kind == "ivf-ondisk":
            want = max(want, 64 * 256)  # 64 per centroid of each 8-bit PQ sub-quantizer
        return min(n, want)


def graph_bytes_per_vector(dim: int, m: int = GRAPH_M, lists: bool = False, reduce: int = 0
                           ) -> float:
    """Memory per vector of the graph index held in RAM: 8-bit codes and links of the graph
    (of ``reduce`` principal coordinates when the walk uses fewer dimensions; 2m bottom-layer
    links, ~m/(m-1) upper ones, an offset and a level), the label's id and
    tombstone bit, and the lists' codes and label when present. The exact vectors are
    memory-mapped once saved and only re-scored rows are read, so they are not counted (as for
    the IVF tiers' re-scoring)."""
    graph = (reduce or dim) + 4 * 2 * m + 4 * m / max(1, m - 1) + 8 + 4 if m else 0.0
    return graph + 8 + 0.125 + ((dim + 8.0) if lists else 0.0)


def nlist_for(n: int, per_root: float = 4.0) -> int:
    """Power of two nearest ``per_root`` sqrt(n) (4 for the IVF tiers), within [64, 16384]."""
    target = per_root * math.sqrt(max(1, n))
    return int(min(MAX_NLIST, max(MIN_NLIST, 2 ** round(math.log2(target)))))


# The graph index's lists have half the IVF tiers' cells. A query the lists serve best
# (across the modality gap, or on tight clusters) scans a share of the vectors the number of
# cells hardly changes, plus every centroid exactly: at 200k x 512, 2,048 centroids are most
# of a one- or two-cell query (45 of 104 us). With 1,024 cells (benchmarks/ann.py, 200k, one
# thread, recall@10 >= 0.95): tight clusters 0.067 ms for image queries and 0.071 ms for text
# (0.104 and 0.109 ms with 2,048); the demo model 0.024 and 0.168 ms (0.031 and 0.191);
# near-uniform data 3.8 and 5.2 ms (3.8 and 6.8); k-means costs half as much.
GRAPH_LISTS_PER_ROOT = 2.0


def parse_bytes(text: str | int) -> int:
    """'4G', '512M', '2GB', '1500000000' -> bytes."""
    if isinstance(text, int):
        return text
    s = text.strip().upper().removesuffix("B").removesuffix("I")
    mult = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    try:
        if s and s[-1] in mult:
            return int(float(s[:-1]) * mult[s[-1]])
        return int(float(s))
    except ValueError:
        raise ValueError(f"not a size: {text!r} (use e.g. 512M, 4G)") from None


def choose_index(n: int, dim: int, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> IndexPlan:
    """The index for ``n`` vectors of ``dim`` dimensions within ``memory_budget`` bytes."""
    flat_bpv = 4.0 * dim + 24
    if n * dim <= EXACT_MAX_WORK and n * flat_bpv <= memory_budget:
        return IndexPlan("flat", {}, "exact", f"{n} x {dim} is small enough to scan exactly",
                         flat_bpv)
    nlist = nlist_for(n, GRAPH_LISTS_PER_ROOT)
    for lists in (True, False):
        bpv = graph_bytes_per_vector(dim, GRAPH_M, lists)
        if n * bpv <= memory_budget:
            params = {"m": GRAPH_M, "ef_construction": GRAPH_EF_CONSTRUCTION,
                      "nlist": nlist if lists else 0, "codec": "sq8", "planned_n": n}
            why = (f"{n} vectors; a graph{' and lists' if lists else ''} on 8-bit codes take "
                   f"{n * bpv / 2**20:.0f} MiB of the {memory_budget / 2**20:.0f} MiB budget")
            return IndexPlan("graph", params, "graph+lists" if lists else "graph", why, bpv)
    options = [("sq8", dim + 8.0, "ivf-sq8+refine"), ("pq", dim / 4 + 8.0, "ivf-pq4fs+refine")]
    for codec, bpv, tier in options:
        if codec == "pq" and dim % 2:
            continue
        if n * bpv <= memory_budget:
            why = (f"{n} vectors; {codec} codes take {n * bpv / 2**20:.0f} MiB of the "
                   f"{memory_budget / 2**20:.0f} MiB budget")
            return IndexPlan("ivf", {"nlist": nlist_for(n), "codec": codec}, tier, why, bpv)
    bpv = ONDISK_BYTES_PER_VECTOR
    if n * bpv <= memory_budget:
        why = (f"{n} vectors do not fit {memory_budget / 2**20:.0f} MiB even as 4-bit codes; "
               f"codes and vectors stay on disk, memory-mapped")
        return IndexPlan("ivf-ondisk", {"nlist": min(nlist_for(n), ONDISK_MAX_NLIST),
                                        "codec": "sq8"},
                         "ivf-ondisk-sq8+refine", why, bpv)
    raise IndexerError(
        f"{n} vectors of {dim} dimensions need at least {n * bpv / 2**20:.0f} MiB even with "
        f"codes and vectors on disk; the memory budget is {memory_budget / 2**20:.0f} MiB")


def needs_rebuild(current: dict[str, Any], n: int, dim: int, memory_budget: int
                  ) -> IndexPlan | None:
    """The plan to rebuild into when the collection outgrew (or outshrank) its index's tier;
    None while the current index still fits. ``current`` is the index's ``describe()``."""
    plan = choose_index(n, dim, memory_budget)
    params = current.get("params", {})
    kind, codec = current.get("type"), params.get("codec")
    if plan.kind == "graph":
        # A measured choice stands (the lists alone are an 8-bit IVF) until the collection
        # grows or shrinks 16-fold; then it is measured again.
        if kind == "graph":
            ratio = n / max(1, int(params.get("planned_n") or n))
            return plan if ratio >= 16 or ratio <= 1 / 16 else None
        if kind != "ivf" or codec != "sq8":
            return plan
    elif plan.kind != kind or plan.params.get("codec") != codec:
        return plan
    if plan.kind in ("ivf", "ivf-ondisk") or kind == "ivf":
        ratio = plan.params["nlist"] / max(1, int(params.get("nlist", 1)))
        if ratio >= 4 or ratio <= 0.25:  # the collection grew or shrank 16-fold
            return plan
    return None
