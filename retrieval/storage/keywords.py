"""The keyword index: words of file names, captions, texts and tags, searched by relevance.

One row per item with three fields (:func:`rows`): ``name`` (the file name and its folder, or a
text's external id), ``body`` (a text, or an image's caption) and ``tags``. Every catalog write
that changes what an item shows refreshes its row in the same transaction. Each backend keeps
the rows in its database's own full-text index and searches them (:mod:`.backends.sqlite`:
FTS5; :mod:`.backends.postgresql`: a ``tsvector``); this module holds what they share: how
text becomes words, and which words of a text a query matched.

Chinese, Japanese and Korean text is indexed on both as characters and pairs of neighbouring
characters (:func:`cjk_grams`), so a word is found inside a sentence without a dictionary.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from ..items import IMAGE_TEXTS, VIDEO, VISUAL
from ..pathnames import clean_text
from .schema import items, tags

_WORD = re.compile(r"[^\W_]+")
# Han (with extensions and compatibility forms), kana, Hangul (syllables and jamo)
_CJK = ("\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff"
        "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f")
CJK_RUN = re.compile(f"[{_CJK}]+")
_CJK_SPLIT = re.compile(f"([{_CJK}]+)")


def words(text: str) -> list[str]:
    """The words of ``text`` as the index keeps them: lower case, without accents, split on
    anything that is not a letter or a digit; a run of CJK characters becomes its characters
    and their overlapping pairs (see :func:`cjk_grams`)."""
    return [g for w in query_tokens(text)
            for g in (cjk_grams_of(w) if CJK_RUN.search(w) else [w])]


def cjk_grams(run: str) -> list[str]:
    """Chinese, Japanese and Korean write words without spaces between them, so a word is
    found inside a sentence by its characters: each character and each pair of neighbours,
    in order (``自行车`` -> 自 自行 行 行车 车). A query word of two or more characters then
    matches by all its pairs, a one-character word by itself."""
    out = []
    for i, c in enumerate(run):
        out.append(c)
        if i + 1 < len(run):
            out.append(run[i:i + 2])
    return out


def cjk_grams_of(token: str) -> list[str]:
    """:func:`cjk_grams` of each CJK run of ``token``; other parts stay whole."""
    out: list[str] = []
    for part in _CJK_SPLIT.split(token):
        if part:
            out.extend(cjk_grams(part) if CJK_RUN.fullmatch(part) else [part])
    return out


def query_units(tokens: list[str]) -> list[list[str]]:
    """The units a query matches by: a word is one unit; a CJK word of several characters is
    the unit of all its pairs (all must match)."""
    units: list[list[str]] = []
    for token in tokens:
        for part in _CJK_SPLIT.split(token):
            if not part:
                continue
            if CJK_RUN.fullmatch(part) and len(part) > 1:
                units.append([part[i:i + 2] for i in range(len(part) - 1)])
            else:
                units.append([part])
    return list({tuple(u): u for u in units}.values())


def query_tokens(text: str) -> list[str]:
    """Lower case, without accents, split on anything that is not a letter or a digit."""
    folded = unicodedata.normalize("NFKD", text.casefold())
    return _WORD.findall("".join(c for c in folded if not unicodedata.combining(c)))


def matched_words(query: str, text: str) -> list[str]:
    """The words of ``text`` that the keyword search for ``query`` matches, as they are written
    in ``text``, each once, in order. Words compare as the index keeps them (case and accents
    folded); a Chinese, Japanese or Korean query word of several characters matches when all
    its pairs are in the text, and is shown where it is written whole (else its pairs)."""
    units = _units(query)
    if not units or not text:
        return []
    folded, origin = _fold_with_origin(text)
    tokens = _tokens_with_spans(folded)
    grams = {t for t, _, _ in tokens}
    spans: list[tuple[int, int]] = []
    for unit in units:
        if len(unit) == 1:
            spans += [(a, b) for t, a, b in tokens if t == unit[0]]
        elif all(g in grams for g in unit):
            word = unit[0] + "".join(g[1] for g in unit[1:])
            whole = [(m.start(), m.end()) for m in re.finditer(re.escape(word), folded)]
            spans += whole or [(a, b) for t, a, b in tokens if t in unit]
    out: list[str] = []
    for a, b in _merged(spans):
        start, end = origin[a], origin[b - 1] + 1
        while end < len(text) and unicodedata.combining(text[end]):
            end += 1  # an accent written as its own character belongs to its letter
        if text[start:end] not in out:
            out.append(text[start:end])
    return out


@functools.lru_cache(maxsize=64)
def _units(query: str) -> list[list[str]]:
    """:func:`query_units` of a query (the same for every hit of a search)."""
    return query_units(query_tokens(query))


def _fold_with_origin(text: str) -> tuple[str, Sequence[int]]:
    """``text`` folded as :func:`query_tokens` folds it, and for each folded character the
    position of the character of ``text`` it comes from."""
    if text.isascii():
        return text.lower(), range(len(text))
    chars: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKD", ch.casefold()):
            if not unicodedata.combining(c):
                chars.append(c)
                origin.append(i)
    return "".join(chars), origin


def _tokens_with_spans(folded: str) -> list[tuple[str, int, int]]:
    """The index's tokens of folded text (words; CJK characters and pairs) and their spans."""
    if folded.isascii():
        return [(m.group(), m.start(), m.end()) for m in _WORD.finditer(folded)]
    out: list[tuple[str, int, int]] = []
    for m in _WORD.finditer(folded):
        at = m.start()
        for part in _CJK_SPLIT.split(m.group()):
            if part and CJK_RUN.fullmatch(part):
                out += [(part[i:i + n], at + i, at + i + n) for i in range(len(part))
                        for n in (1, 2) if i + n <= len(part)]
            elif part:
                out.append((part, at, at + len(part)))
            at += len(part)
    return out


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(set(spans)):
        if out and a < out[-1][1]:
            out[-1] = (out[-1][0], max(b, out[-1][1]))
        else:
            out.append((a, b))
    return out


def name_words(path: str | None) -> str:
    """Searchable words of a path: the file name and its folder's name."""
    if not path:
        return ""
    p = path.replace("\\", "/").rstrip("/").split("/")
    return clean_text(" ".join(p[-2:]))


def rows(conn: Any, ids: Sequence[int]) -> list[tuple[int, str, str, str]]:
    """(id, name, body, tags) of these items as the index should hold them."""
    found = conn.execute(select(items.c.id, items.c.kind, items.c.path, items.c.text,
                                items.c.external_id).where(items.c.id.in_(ids))).all()
    captions: dict[int, str] = {}  # an image's texts: sidecar, generated, then recognised
    for parent, caption in conn.execute(select(items.c.parent_id, items.c.text).where(
            items.c.source.in_(IMAGE_TEXTS), items.c.parent_id.in_(ids))
            .order_by(items.c.source)):  # "caption" < "generated" < "ocr": IMAGE_TEXTS' order
        captions[parent] = f"{captions[parent]} {caption}" if parent in captions else caption
    labels: dict[int, list[str]] = {}
    for item_id, tag in conn.execute(select(tags.c.item_id, tags.c.tag)
                                     .where(tags.c.item_id.in_(ids))):
        labels.setdefault(item_id, []).append(tag)
    out = []
    for r in found:
        label_words = " ".join(labels.get(r.id, []))
        if r.kind in VISUAL or r.kind == VIDEO:
            out.append((r.id, name_words(r.path), captions.get(r.id) or "", label_words))
        else:
            out.append((r.id, r.external_id or "", r.text or "", label_words))
    return out
