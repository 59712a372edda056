"""SQL that differs between databases, written once as SQLAlchemy constructs.

Filters (:mod:`.filter_sql`) build queries from these; each backend compiles them in its own
form (:mod:`.backends.sqlite`: ``GLOB`` and ``json_extract``; :mod:`.backends.postgresql`:
regular expressions and ``->>``). A database whose backend gives no form refuses the filter.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

from ..errors import CatalogError


class Glob(ColumnElement[bool]):
    """``value GLOB pattern`` (``*``, ``?``, ``[...]``, case-sensitive). Not cached: the
    pattern is rendered at compile time."""

    inherit_cache = False
    type = Boolean()

    def __init__(self, value: Any, pattern: str) -> None:
        self.value = value
        self.pattern = pattern


def glob_to_regex(pattern: str) -> str:
    """SQLite's GLOB pattern as an anchored POSIX regular expression."""
    out, i = ["^"], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[" and (end := _class_end(pattern, i)) > 0:
            body = pattern[i + 1:end]
            neg = body.startswith("^")
            body = body[1:] if neg else body
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out) + "$"


def _class_end(pattern: str, start: int) -> int:
    """Index of the ``]`` closing the class opened at ``start`` (a ``]`` right after ``[`` or
    ``[^`` is a member), or -1."""
    i = start + 1
    if i < len(pattern) and pattern[i] == "^":
        i += 1
    if i < len(pattern) and pattern[i] == "]":
        i += 1
    end = pattern.find("]", i)
    return end


class EpochTime(FunctionElement[Any]):
    """A datetime from seconds since the epoch (UTC, without a time zone), comparable with the
    catalog's DateTime columns."""

    inherit_cache = True
    name = "epoch_time"
    type = DateTime()


class JsonValue(FunctionElement[Any]):
    """The value under a key of a JSON column: text, or (``number=True``) a number where the
    stored value is one, else NULL. Not cached: the key is rendered at compile time."""

    inherit_cache = False
    name = "json_value"

    def __init__(self, column: Any, key: str, number: bool = False) -> None:
        self.key = key
        self.number = number
        self.type = Float() if number else Text()
        super().__init__(column)


@compiles(Glob)
@compiles(EpochTime)
@compiles(JsonValue)
def _no_form(element: Any, compiler: Any, **kw: Any) -> str:
    """A database whose backend did not give this construct a form (see :mod:`.backends`)."""
    raise CatalogError(f"filters need a SQLite or PostgreSQL catalog (the {compiler.dialect.name} "
                       f"catalog has no form of {type(element).__name__})")
