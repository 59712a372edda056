"""The hits table: why each hit was found, what its score is, and what it stands for.

One row per hit, numbered from the page's first position (``--offset 10`` starts at 11), with
a header naming the score (``similarity``, ``fused rank score`` for ``--hybrid``'s reciprocal
rank fusion, ``keyword score`` for ``--keywords``, ``re-ranked`` after ``--rerank``). Under a
row, lined up with its result, come the text that made the hit match, labelled by where it
comes from (``caption:``, ``generated caption:``, ``file name:``, ``recognised text:``; a text
hit's own text is its row), the text recognised in an image when something else made it match
(``recognised text:``, its first :data:`OCR_SHOWN` characters), the image a caption or a
recognised text belongs to (``caption of PATH``, ``recognised text of PATH``) and the
near-duplicates ``dedup`` merged into it (``+2 near-duplicates: 17, 42``).

Query words found in that text are marked: bold on a terminal, ``[word]`` in a pipe or under
``NO_COLOR`` (never escape codes in a pipe). Only on a terminal are lines cut to its width:
a path loses its start (it keeps its file name), a text its end.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import pairwise
from typing import TYPE_CHECKING

import click

from ...items import FILE_NAME, GENERATED, RECOGNISED, SIDECAR, TEXT, VIDEO
from ...pathnames import shown
from .width import Span, clip, clip_spans, clip_start, display_width

if TYPE_CHECKING:
    from ...search import Hit

SCORE_HEADERS = {"similarity": "similarity", "fused": "fused rank score",
                 "keywords": "keyword score", "reranked": "re-ranked"}
SOURCE_LABELS = {SIDECAR: "caption", GENERATED: "generated caption", TEXT: "text",
                 FILE_NAME: "file name", RECOGNISED: "recognised text"}
OUT_OF_ORDER = "note: the re-ranking stages set this order, so the scores are not in order"
MIN_PATH = 12  # columns a path cut from its start needs to show something of its name
OCR_SHOWN = 80  # characters of an image's recognised text shown when it did not make it match
_TOKEN = re.compile(r"[^\W_]+")
_CJK = re.compile("[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u31f0-\u31ff\u3400-\u4dbf"
                  "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]")


def fold(word: str) -> str:
    """A word as the keyword index compares it: lower case, without accents."""
    folded = unicodedata.normalize("NFKD", word.casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


def mark_words(text: str, words: Iterable[str]) -> list[Span]:
    """``text`` in pieces, the occurrences of ``words`` marked: whole words compared as the
    keyword index does (case and accents folded); Chinese, Japanese and Korean words, which
    sit inside runs of characters without spaces, wherever they occur."""
    wanted = {fold(w) for w in words if w.strip()}
    if not wanted:
        return [(text, False)]
    cjk = sorted((w for w in wanted if _CJK.search(w)), key=len, reverse=True)
    marked = [False] * len(text)
    for m in _TOKEN.finditer(text):
        if fold(m.group()) in wanted:
            marked[m.start():m.end()] = [True] * (m.end() - m.start())
            continue
        for w in cjk:
            for found in re.finditer(re.escape(w), m.group()):
                start = m.start() + found.start()
                marked[start:start + len(w)] = [True] * len(w)
    spans: list[Span] = []
    for ch, flag in zip(text, marked, strict=True):
        if spans and spans[-1][1] == flag:
            spans[-1] = (spans[-1][0] + ch, flag)
        else:
            spans.append((ch, flag))
    return spans


@dataclass
class Row:
    """One line of a hit: a path (cut from its start on a terminal) or marked text."""

    spans: list[Span]
    path: bool = False


def _quoted(text: str, words: list[str]) -> list[Span]:
    return [("\"", False), *mark_words(shown(text), words), ("\"", False)]


def _match(hit: Hit) -> tuple[str, str, list[str]] | None:
    """(source, text, matched words) of the text that made ``hit`` match: the search's own
    account (``metadata["match"]``), else an image's sidecar or generated caption."""
    match = hit.metadata.get("match")
    if isinstance(match, dict) and match.get("text"):
        return (str(match.get("source") or TEXT), str(match["text"]),
                [str(w) for w in match.get("words") or []])
    if hit.kind != TEXT and hit.text:
        return SIDECAR, hit.text, []
    if hit.kind != TEXT and hit.metadata.get("generated_caption"):
        return GENERATED, str(hit.metadata["generated_caption"]), []
    return None


def shortened(text: str, words: Iterable[str] = ()) -> str:
    """``text`` on one line, at most about :data:`OCR_SHOWN` characters: from the start, or
    from a little before the first of ``words`` found in it; ``...`` where it is cut."""
    flat = " ".join(text.split())
    if len(flat) <= OCR_SHOWN:
        return flat
    folded = flat.casefold()
    at = min((i for i in (folded.find(w.casefold()) for w in words if w) if i >= 0),
             default=0)
    start = 0 if at < OCR_SHOWN // 2 else at - 20
    piece = flat[start:start + OCR_SHOWN - 6].strip()
    return ("..." if start else "") + piece + ("..." if start + OCR_SHOWN - 6 < len(flat) else "")


def clock(seconds: float) -> str:
    """A time in a video as players show it: ``01:23``, ``1:02:03`` past an hour."""
    s = max(0, int(seconds))
    h, m, s = s // 3600, s // 60 % 60, s % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def video_span(hit: Hit) -> str:
    """`` @ 01:23-01:31`` for a video's hit (its shot's time span), else nothing."""
    if hit.kind != VIDEO or hit.start is None:
        return ""
    end = hit.end if hit.end is not None else hit.start
    # the end as the second it reaches, so that a shot from 1.0 to 1.4 reads 00:01-00:02
    return f" @ {clock(hit.start)}-{clock(math.ceil(end))}"


def hit_rows(hit: Hit) -> list[Row]:
    """The lines of one hit's result column: what it is, then why it matched, whose caption
    it is, and what was merged into it."""
    match = _match(hit)
    if hit.kind == TEXT:
        words = match[2] if match else []
        own = hit.text or ""
        rows = [Row(_quoted(shortened(own, words) if hit.metadata.get("source") == RECOGNISED
                            else own, words))]
        if hit.path:
            source = hit.metadata.get("source")
            made = SOURCE_LABELS[source if source in (GENERATED, RECOGNISED) else SIDECAR]
            rows.append(Row([(f"{made} of ", False), (shown(hit.path), False)], path=True))
    else:
        rows = [Row([(shown(hit.path) + video_span(hit), False)], path=True)]
        if match and not (match[0] == FILE_NAME and not match[2]):  # a bare name is the path
            source, text, words = match
            label = SOURCE_LABELS.get(source, source)
            spans = (mark_words(shown(text), words) if source == FILE_NAME
                     else _quoted(shortened(text, words) if source == RECOGNISED else text,
                                  words))
            rows.append(Row([(f"{label}: ", False), *spans]))
        ocr = hit.metadata.get("ocr_text")
        if ocr and not (match and match[0] == RECOGNISED):
            rows.append(Row([(f"{SOURCE_LABELS[RECOGNISED]}: ", False),
                             *_quoted(shortened(str(ocr)), [])]))
    merged = hit.metadata.get("duplicates") or []
    if merged:
        what = "near-duplicate" if len(merged) == 1 else "near-duplicates"
        rows.append(Row([(f"+{len(merged)} {what}: {', '.join(map(str, merged))}", False)]))
    return rows


def score_kind(hits: list[Hit], default: str | None = None) -> str | None:
    """What the hits' scores are: the search's word for it, else ``default``."""
    kind = hits[0].metadata.get("score_kind") if hits else None
    return str(kind) if kind else default


def out_of_order(hits: list[Hit]) -> bool:
    scores = [h.score for h in hits if h.score is not None]
    return any(a < b for a, b in pairwise(scores))


def hits_table(hits: list[Hit], *, first: int = 1, columns: int | None = None,
               styled: bool = False, kind: str | None = None) -> list[str]:
    """The table's lines: numbered from ``first``, cut to ``columns`` when given (a
    terminal), matched words bold when ``styled``, else ``[word]``."""
    if not hits:
        return []
    kind = score_kind(hits, kind)
    decimals = 4 if kind == "fused" else 3
    label = SCORE_HEADERS.get(kind or "", "score")
    scores = ["" if h.score is None else f"{h.score:.{decimals}f}" for h in hits]
    n_w = max(3, len(str(first + len(hits) - 1)))
    s_w = max(len(label), *map(len, scores))
    id_w = max(2, *(len(str(h.id)) for h in hits))
    lines = [_fit(f"{'#':>{n_w}}  {label:>{s_w}}  {'id':>{id_w}}  {'kind':<5}  result",
                  columns)]
    for pos, (hit, score) in enumerate(zip(hits, scores, strict=True), first):
        head = f"{pos:>{n_w}}  {score:>{s_w}}  {hit.id:>{id_w}}  {hit.kind:<5}  "
        for i, row in enumerate(hit_rows(hit)):
            lines.append(_draw(head if i == 0 else " " * len(head), row, columns, styled))
    return lines


def _fit(line: str, columns: int | None) -> str:
    return line if columns is None else clip(line, columns)


def _draw(prefix: str, row: Row, columns: int | None, styled: bool) -> str:
    spans = row.spans if styled else [(f"[{t}]" if m else t, False) for t, m in row.spans]
    if columns is not None:
        room = columns - display_width(prefix)
        label, path = ("", spans[0][0]) if len(spans) == 1 else (spans[0][0], spans[1][0])
        if row.path and room - display_width(label) >= MIN_PATH:  # keep the file name
            spans = [(label, False), (clip_start(path, room - display_width(label)), False)]
        else:
            spans = clip_spans(spans, room)
    return prefix + "".join(click.style(t, bold=True) if m else t for t, m in spans)
