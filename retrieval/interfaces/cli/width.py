"""Text as wide as a terminal shows it: Chinese, Japanese and Korean characters (East Asian
wide and fullwidth) take two columns, combining marks and zero-width characters none.

``str.ljust`` and slicing count characters, so a table holding CJK text runs past its columns
and past the terminal's width; these count display columns instead (``unicodedata``'s East
Asian width, as terminals do; emoji presentation sequences may still differ by terminal).
"""

from __future__ import annotations

import unicodedata

ELLIPSIS = "..."


def char_width(ch: str) -> int:
    """Columns one character takes: 0, 1 or 2."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Columns ``text`` takes on a terminal."""
    if text.isascii():
        return len(text)
    return sum(char_width(ch) for ch in text)


def clip(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in "..." when cut."""
    if display_width(text) <= width:
        return text
    room = max(0, width - len(ELLIPSIS))
    used = 0
    for i, ch in enumerate(text):
        w = char_width(ch)
        if used + w > room:
            return text[:i] + ELLIPSIS
        used += w
    return text + ELLIPSIS  # not reached: the text was wider than width


def clip_start(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns from the start, beginning with "..." when cut
    (a path keeps its file name)."""
    if display_width(text) <= width:
        return text
    room = max(0, width - len(ELLIPSIS))
    used = 0
    for i in range(len(text) - 1, -1, -1):
        w = char_width(text[i])
        if used + w > room:
            return ELLIPSIS + text[i + 1:]
        used += w
    return ELLIPSIS + text  # not reached: the text was wider than width


Span = tuple[str, bool]  # a piece of a line, and whether it is marked (a matched word)


def clip_spans(spans: list[Span], width: int) -> list[Span]:
    """Marked pieces of a line cut to at most ``width`` columns, ending in an unmarked "..."
    when cut (the marks are drawn after cutting, so they never count as columns)."""
    if sum(display_width(t) for t, _ in spans) <= width:
        return spans
    room = max(0, width - len(ELLIPSIS))
    out: list[Span] = []
    for text, marked in spans:
        w = display_width(text)
        if w <= room:
            out.append((text, marked))
            room -= w
            continue
        used = cut = 0
        for cut, ch in enumerate(text):  # noqa: B007 (cut is read after the loop)
            if used + char_width(ch) > room:
                break
            used += char_width(ch)
        if cut:
            out.append((text[:cut], marked))
        break
    return [*out, (ELLIPSIS, False)]
