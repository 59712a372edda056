"""The one place where raw input becomes a :class:`~.query.Query`.

The command line, the HTTP service and Python callers hand over what they were given (texts,
images, item ids, vectors, weighted terms, filters as strings, dates, tags, fusion and
re-ranking settings); :func:`build_query` checks it against one set of rules and says what is
wrong in one line (:class:`~retrieval.errors.QueryError`), whichever surface it came from.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ItemNotFoundError, QueryError
from ..items import TARGET_KINDS
from ..pathnames import clean_text
from .filters import Filter, parse_date, parse_where, path_filter
from .query import TARGETS, TERM_KINDS, Hybrid, Query, Term
from .rerank import MAX_CANDIDATES, parse_pipeline

if TYPE_CHECKING:
    from .rerank import Stage

MAX_K = 10_000
MAX_OFFSET = 10_000
MAX_TEXT = 2_000  # characters in a text term
MAX_TERMS = 32
# Each image term is decoded, up to the pixel limit (the costliest work one request can ask
# for: benchmarks/worst_request.py): a few are enough to combine examples.
MAX_IMAGE_TERMS = 4
MAX_ITEM_ID = 2**63 - 1  # item ids are 64-bit integers
MAX_FILTERS = 100  # conditions, --path/--after/--before/--tag included
# Re-ranking: each kind of stage (exact, mmr, dedup, model) at most once, so at most four
# stages; they re-rank at most MAX_CANDIDATES candidates, so offset + k is at most that.
MAX_STAGES = 4
MAX_RERANK_DEPTH = MAX_CANDIDATES
# Keyword fusion ranks the same pool of candidates whatever the page (pages are slices of one
# list), so a hybrid search's offset + k is within that pool too.
MAX_HYBRID_DEPTH = MAX_CANDIDATES
MAX_KEYWORD_WEIGHT = 100
# a target's name, its plural and its kind, to the kind of item searched
_TARGET_NAMES = {**{k: v for k, v in TARGET_KINDS.items()},
                 **{f"{k}s": v for k, v in TARGET_KINDS.items()},
                 **{v: v for v in TARGET_KINDS.values()}}
CUTOFFS = (None, "auto")


def build_query(
    text: str | None = None,
    *,
    image: str | os.PathLike[str] | bytes | None = None,
    like: int | str | None = None,
    vector: Sequence[float] | None = None,
    terms: Sequence[Term | Mapping[str, Any]] = (),
    target: str = "image",
    segments: bool = False,
    k: int = 10,
    offset: int = 0,
    path: str | None = None,
    after: str | None = None,
    before: str | None = None,
    tags: Sequence[str] = (),
    filters: Sequence[Filter | str] = (),
    keywords: bool = False,
    hybrid: bool | Hybrid = False,
    keyword_weight: float | None = None,
    rerank: str | Sequence[Stage] | None = None,
    min_score: float | None = None,
    cutoff: str | None = None,
) -> Query:
    """A checked query. ``text``, ``image``, ``like`` and ``vector`` are shorthands for terms
    of weight 1; ``terms`` are :class:`Term` objects or ``{"kind", "value", "weight"}``
    mappings. ``filters`` are :class:`Filter` objects or ``"FIELD OP VALUE"`` strings;
    ``path``, ``after``, ``before`` and ``tags`` add the usual filters. ``target`` is
    ``image``, ``text`` or ``video`` (plurals accepted); ``segments``: a video search lists
    every matching shot, not only each video's best. ``keywords`` ranks by the keyword index alone
    (text terms only; no fusion, cut or re-ranking). ``min_score`` (a cosine) and ``cutoff``
    (``"auto"``) end the ranked list (:mod:`.cutoff`). The parameters are the fields of
    :data:`~retrieval.search.fields.FIELDS`."""
    all_terms = [as_term(t) for t in terms]
    for kind, value in (("text", text), ("image", image), ("like", like), ("vector", vector)):
        if value is not None:
            all_terms.append(as_term(Term(kind, value)))  # type: ignore[arg-type]
    query = Query(all_terms, target=_target(target), segments=segments, k=k, offset=offset,
                  filters=_filters(filters, path, after, before, tags),
                  hybrid=_hybrid(hybrid, keyword_weight),
                  rerank=parse_pipeline(rerank if isinstance(rerank, str | None) else
                                        list(rerank)), min_score=min_score, cutoff=cutoff,
                  keywords=keywords)
    _check_rules(query)  # its terms were checked as they were made
    return query


def validate(query: Query) -> None:
    """The rules every query meets, however it was made (a query built or changed by hand)."""
    if not query.terms:
        raise QueryError("nothing to search for: give a text, an image or an item id")
    if len(query.terms) > MAX_TERMS:
        raise QueryError(f"at most {MAX_TERMS} query terms, got {len(query.terms)}")
    query.terms = [as_term(t) for t in query.terms]
    _check_rules(query)


def ensure_valid(query: Query) -> Query:
    """``query`` checked once: :func:`validate` runs unless the query was checked (by
    :func:`build_query` or an earlier run) and is unchanged since (:attr:`Query.checked`)."""
    if not query.checked:
        validate(query)
    return query


def _check_rules(query: Query) -> None:
    """The rules on a query whose terms are checked; marks it checked."""
    if not query.terms:
        raise QueryError("nothing to search for: give a text, an image or an item id")
    if len(query.terms) > MAX_TERMS:
        raise QueryError(f"at most {MAX_TERMS} query terms, got {len(query.terms)}")
    images = sum(t.kind == "image" for t in query.terms)
    if images > MAX_IMAGE_TERMS:
        raise QueryError(f"at most {MAX_IMAGE_TERMS} image terms, got {images}")
    query.target = _target(query.target)
    if not isinstance(query.segments, bool | np.bool_):
        raise QueryError(f"segments is true or false, got {query.segments!r}")
    query.segments = bool(query.segments)
    if not _is_int(query.k) or not 1 <= query.k <= MAX_K:
        raise QueryError(f"k must be an integer between 1 and {MAX_K}, got {query.k!r}")
    if not _is_int(query.offset) or not 0 <= query.offset <= MAX_OFFSET:
        raise QueryError(f"offset must be an integer between 0 and {MAX_OFFSET}, "
                         f"got {query.offset!r}")
    if len(query.filters) > MAX_FILTERS:
        raise QueryError(f"at most {MAX_FILTERS} filters, got {len(query.filters)}")
    if query.keywords is not False:
        _check_keywords(query)
    if query.rerank:
        _check_rerank(query)
    if query.hybrid is not None and query.offset + query.k > MAX_HYBRID_DEPTH:
        raise QueryError(f"with hybrid, offset + k is at most {MAX_HYBRID_DEPTH}, "
                         f"got {query.offset + query.k}")
    if query.min_score is not None or query.cutoff is not None:
        _check_cut(query)
    query.mark_checked()


def _check_keywords(query: Query) -> None:
    """A keyword search ranks by words alone: text terms, and nothing that needs vectors."""
    if not isinstance(query.keywords, bool | np.bool_):
        raise QueryError(f"keywords is true or false, got {query.keywords!r}")
    query.keywords = bool(query.keywords)
    if not query.keywords:
        return
    other = next((t for t in query.terms if t.kind != "text" or t.weight <= 0), None)
    if other is not None:
        what = ("a negative text term (it cannot push results away)" if other.kind == "text"
                else f"a{'n' if other.kind == 'image' else ''} {other.kind} term")
        raise QueryError(f"a keyword search ranks by the words of its texts: leave out {what}, "
                         "or search by vectors without --keywords")
    for given, name in ((query.hybrid is not None, "hybrid (which fuses keywords with the "
                         "vector ranking)"),
                        (query.min_score is not None, "min score (a cosine similarity)"),
                        (query.cutoff is not None, "cutoff (on cosine similarities)"),
                        (bool(query.rerank), "rerank (its stages work on vectors)")):
        if given:
            raise QueryError(f"keywords ranks by the keyword index alone, without vectors: "
                             f"leave out keywords or {name}")


def _check_cut(query: Query) -> None:
    """``min_score`` and ``cutoff`` judge the collection model's cosine similarities: not the
    fused ranks of a hybrid search, nor the scores of a second model."""
    score = query.min_score
    if score is not None and (not _is_number(score) or not -1 <= score <= 1):
        raise QueryError(f"min score is a cosine similarity between -1 and 1, got {score!r}")
    if query.cutoff not in CUTOFFS:
        raise QueryError(f"unknown cutoff {query.cutoff!r}; expected auto")
    what = "min score" if query.cutoff is None else "cutoff"
    if query.hybrid is not None:
        raise QueryError(f"{what} applies to cosine similarities, and a hybrid search scores "
                         "by fused ranks: leave out one or the other")
    if any(stage.kind == "model" for stage in query.rerank):
        raise QueryError(f"{what} applies to this collection model's cosine similarities, and "
                         "the model rerank stage scores with another model: leave out one or "
                         "the other")


def _check_rerank(query: Query) -> None:
    """Bounded re-ranking: a few stages, each kind once, over a bounded depth."""
    if len(query.rerank) > MAX_STAGES:
        raise QueryError(f"at most {MAX_STAGES} rerank stages, got {len(query.rerank)}")
    kinds = [stage.kind or type(stage).__name__ for stage in query.rerank]
    again = next((kind for i, kind in enumerate(kinds) if kind in kinds[:i]), None)
    if again is not None:
        raise QueryError(f"rerank stage {again!r} is given twice; each kind of stage "
                         "(exact, mmr, dedup, model) runs at most once")
    if query.offset + query.k > MAX_RERANK_DEPTH:
        raise QueryError(f"with rerank, offset + k is at most {MAX_RERANK_DEPTH}, "
                         f"got {query.offset + query.k}")


def as_term(raw: Term | Mapping[str, Any]) -> Term:
    """A checked term from a Term or a mapping with ``kind``, ``value`` and ``weight``."""
    if isinstance(raw, Mapping):
        unknown = set(raw) - {"kind", "value", "weight"}
        if unknown or "kind" not in raw or "value" not in raw:
            raise QueryError("a term is {kind, value, weight}"
                             + (f"; unknown field {sorted(unknown)[0]!r}" if unknown else ""))
        raw = Term(raw["kind"], raw["value"], raw.get("weight", 1.0))
    if raw.kind not in TERM_KINDS:
        raise QueryError(f"unknown term kind {raw.kind!r}; expected one of "
                         f"{', '.join(TERM_KINDS)}")
    weight = raw.weight
    if not _is_number(weight) or not math.isfinite(weight):
        raise QueryError(f"term weight must be a finite number, got {weight!r}")
    value = {"text": _text, "image": _image, "like": item_id, "vector": _vector}[raw.kind](
        raw.value)
    limit = raw.max_pixels
    if limit is not None and (not _is_int(limit) or limit < 1):
        raise QueryError(f"an image term's pixel limit is a positive integer, got {limit!r}")
    return Term(raw.kind, value, float(weight), limit)


def item_id(value: Any) -> int:
    """An item id from user input: an integer in the 64-bit range (a numeric string is
    accepted, as the command line gives one)."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not _is_int(value):
        raise QueryError(f"item id must be an integer, got {value!r}")
    if not 0 <= value <= MAX_ITEM_ID:
        raise ItemNotFoundError(f"no item with id {value}")
    return int(value)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise QueryError(f"a text term is a string, got {type(value).__name__}")
    if not value.strip():
        raise QueryError("empty text term")
    if len(value) > MAX_TEXT:
        raise QueryError(f"a text term is at most {MAX_TEXT} characters, got {len(value)}")
    return clean_text(value)


def _image(value: Any) -> str | bytes:
    if isinstance(value, (bytes, bytearray)):
        if not value:
            raise QueryError("the query image is empty")
        return bytes(value)
    if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
        return os.fspath(value)
    raise QueryError("an image term is a file path or the image file's bytes")


def _vector(value: Any) -> np.ndarray:
    if not isinstance(value, np.ndarray):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or not all(
                _is_number(x) for x in value):
            raise QueryError("a query vector is a flat list of numbers")
        with np.errstate(over="ignore"):  # 1e300 becomes inf, refused below
            value = np.asarray(value, dtype=np.float32)
    if value.ndim != 1 or not value.size or not np.issubdtype(value.dtype, np.number):
        raise QueryError("a query vector is a flat list of numbers")
    with np.errstate(over="ignore"):
        value = value.astype(np.float32)
    if not np.isfinite(value).all():
        raise QueryError("a query vector holds only finite numbers")
    return value


def _target(value: Any) -> str:
    if value not in _TARGET_NAMES:
        raise QueryError(f"unknown target {value!r}; expected one of {', '.join(TARGETS)}")
    return _TARGET_NAMES[value]


def _filters(filters: Sequence[Filter | str], path: str | None, after: str | None,
             before: str | None, tags: Sequence[str]) -> list[Filter]:
    out = [f if isinstance(f, Filter) else parse_where(_as_str(f)) for f in filters]
    if path:
        out.append(path_filter(path))
    if after:
        parse_date(after, "--after")
        out.append(Filter("date", ">=", after))
    if before:
        parse_date(before, "--before")
        out.append(Filter("date", "<", before))
    out += [Filter("tag", "=", t) for t in tags]
    return out


def _hybrid(hybrid: bool | Hybrid, keyword_weight: float | None) -> Hybrid | None:
    if isinstance(hybrid, Hybrid):
        return hybrid
    if keyword_weight is not None and (not _is_number(keyword_weight) or
                                       not 0 <= keyword_weight <= MAX_KEYWORD_WEIGHT):
        raise QueryError(f"keyword weight must be a number between 0 and {MAX_KEYWORD_WEIGHT}, "
                         f"got {keyword_weight!r}")
    if not hybrid:
        return None
    return Hybrid(keyword_weight=1.0 if keyword_weight is None else float(keyword_weight))


def _as_str(value: Any) -> str:
    if not isinstance(value, str):
        raise QueryError(f"a filter is a string 'FIELD OP VALUE', got {value!r}")
    return value


def _is_int(value: Any) -> bool:
    """An integer, numpy's included (ids come back from the catalog and indexes as those)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
