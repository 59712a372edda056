"""SQL that differs between SQLite and PostgreSQL, written once as SQLAlchemy constructs.

Filters and keyword search build queries from these; each compiles to the database's own form
(SQLite's ``GLOB`` and ``json_extract``, PostgreSQL's regular expressions and ``->>``).
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Boolean, DateTime, Float, Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement, literal


class Glob(ColumnElement[bool]):
    """``value GLOB pattern`` (``*``, ``?``, ``[...]``, case-sensitive). Not cached: the
    pattern is rendered at compile time."""

    inherit_cache = False
    type = Boolean()

    def __init__(self, value: Any, pattern: str) -> None:
        self.value = value
        self.pattern = pattern


@compiles(Glob)
def _glob(element: Glob, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    return f"({value} GLOB {compiler.process(literal(element.pattern), **kw)})"


@compiles(Glob, "postgresql")
def _glob_pg(element: Glob, compiler: Any, **kw: Any) -> str:
    value = compiler.process(element.value, **kw)
    regex = glob_to_regex(element.pattern)
    return f"({value} ~ {compiler.process(literal(regex), **kw)})"


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


@compiles(EpochTime)
def _epoch(element: EpochTime, compiler: Any, **kw: Any) -> str:
    return f"datetime({compiler.process(element.clauses, **kw)}, 'unixepoch')"


@compiles(EpochTime, "postgresql")
def _epoch_pg(element: EpochTime, compiler: Any, **kw: Any) -> str:
    return (f"(to_timestamp({compiler.process(element.clauses, **kw)}) "
            "AT TIME ZONE 'UTC')")


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


@compiles(JsonValue)
def _json(element: JsonValue, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    path = compiler.process(literal(f'$."{element.key}"'), **kw)
    if element.number:
        return (f"(CASE WHEN json_type({column}, {path}) IN ('integer', 'real') "
                f"THEN json_extract({column}, {path}) END)")
    return f"json_extract({column}, {path})"


@compiles(JsonValue, "postgresql")
def _json_pg(element: JsonValue, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.clauses, **kw)
    key = compiler.process(literal(element.key), **kw)
    if element.number:
        return (f"(CASE WHEN json_typeof({column} -> {key}) = 'number' "
                f"THEN ({column} ->> {key})::float8 END)")
    return f"({column} ->> {key})"
