"""Image-to-text answers without repeats: hits whose texts are the same collapse into the best.

The same words are often stored more than once: a sidecar caption and the caption a model
generated for the same image, captions of look-alike images, a text added with ``add-texts``
that is also some image's caption. Listed as answers to "what describes this image", they
would repeat one description; :func:`distinct_texts` keeps the best-scored of each, and the
others' ids in its ``metadata["duplicates"]`` (as the ``dedup`` re-ranking stage does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .builder import MAX_K
from .hits import Hit


def text_key(text: str | None) -> str:
    """What makes two texts the same: their words, spacing and case aside."""
    return " ".join((text or "").split()).casefold()


def distinct_texts(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` (best first) with each text once: a later hit with the same text is left out
    and its id added to the first one's ``metadata["duplicates"]``."""
    kept: dict[str, Hit] = {}
    for hit in hits:
        first = kept.setdefault(text_key(hit.text), hit)
        if first is not hit:
            first.metadata.setdefault("duplicates", []).append(hit.id)
    return list(kept.values())


def best_distinct(search: Callable[[int], list[Hit]], k: int) -> list[Hit]:
    """The ``k`` best distinct texts of a search (``search(n)``: its ``n`` best hits), asking
    for more hits while repeats leave fewer than ``k``."""
    fetch = min(max(4 * k, 20), MAX_K)
    while True:
        hits = search(fetch)
        distinct = distinct_texts(hits)
        if len(distinct) >= k or len(hits) < fetch or fetch >= MAX_K:
            return distinct[:k]
        fetch = min(fetch * 4, MAX_K)
