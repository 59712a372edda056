"""File names that are not valid UTF-8: stored losslessly, shown escaped.

Linux file names are bytes. Python gives a name's undecodable bytes as lone surrogates
(U+DC80-U+DCFF, PEP 383), which open() accepts but which SQL databases, JSON and terminals
refuse. The catalog stores each such byte as U+FFFF followed by two hex digits, and a literal
U+FFFF (a noncharacter, never seen in real names) as U+FFFF U+FFFF: valid UTF-8 text, mapped
character by character, so prefixes, ranges and globs on stored paths still mean the same
thing, and reading the path back gives exactly the name the file has.

:func:`shown` is for people: every byte that is not printable UTF-8 becomes ``\\xNN``, and
control characters (a newline in a name) their escape, so one path is one line.
"""

from __future__ import annotations

import re
from typing import Any

ESCAPE = "\uffff"
_SURROGATE = re.compile("[\udc80-\udcff\uffff]")
_STORED = re.compile("\uffff(\uffff|[0-9a-f]{2})")
_UNSHOWABLE = re.compile("[\x00-\x1f\x7f\udc80-\udcff\uffff]")
_ANY_SURROGATE = re.compile("[\ud800-\udfff\x00]")  # and NUL (PostgreSQL text cannot hold it)
_CONTROL = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    return ESCAPE + ESCAPE if c == ESCAPE else f"{ESCAPE}{ord(c) - 0xDC00:02x}"


def _unescape(m: re.Match[str]) -> str:
    code = m.group(1)
    return ESCAPE if code == ESCAPE else chr(0xDC00 + int(code, 16))


def to_stored(path: str) -> str:
    """A path as the catalog stores it (valid UTF-8)."""
    return _SURROGATE.sub(_escape, path) if _SURROGATE.search(path) else path


def from_stored(text: str) -> str:
    """The path a stored text stands for."""
    return _STORED.sub(_unescape, text) if ESCAPE in text else text


def _show(m: re.Match[str]) -> str:
    c = m.group()
    if c in _CONTROL:
        return _CONTROL[c]
    code = ord(c)
    return f"\\x{code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code:02x}" if code != 0xFFFF \
        else "\\uffff"


def shown(path: str | None) -> str:
    """A path for a message or a table: one line, printable, bad bytes as ``\\xNN``."""
    if path is None:
        return ""
    return _UNSHOWABLE.sub(_show, path)


def clean_text(text: str) -> str:
    """Text (not a path: a query, a caption) with undecodable bytes and stray surrogates
    (and NUL) replaced by U+FFFD, so it can be stored and encoded."""
    return _ANY_SURROGATE.sub("\ufffd", text)


def clean_data(value: Any) -> Any:
    """:func:`clean_text` on every string in JSON-like data (keys included)."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_data(k): clean_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_data(v) for v in value]
    return value
