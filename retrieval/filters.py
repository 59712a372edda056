"""Filters on catalog fields, parsed from the CLI and compiled to SQL.

A filter is ``FIELD OP VALUE``. Fields:

=================  ====================================================================
``path``           the image's path (a caption's image path); ``~`` takes a glob, ``=``
                   the exact path; a value without wildcards under ``--path`` is a prefix
``date``           capture date (EXIF), else the file's modification time
``taken``          capture date only; ``mtime`` modification time only
``width``          pixels, after EXIF orientation; also ``height``, ``size`` (bytes)
``orientation``    ``landscape``, ``portrait`` or ``square``
``camera``         camera make and model (``~`` glob, ``=`` case-insensitive)
``tag``            a tag from ``retrieval tag`` (``=`` only)
``caption``        ``true`` when the image has a caption (``=`` only)
``meta.KEY``       a metadata field of JSONL texts (a bare ``KEY`` works when it exists)
=================  ====================================================================

Operators: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` and ``~`` (glob: ``*``, ``?``, ``[..]``).
Dates are ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import QueryError

OPS = ("!=", "<=", ">=", "=", "<", ">", "~")
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(!=|<=|>=|=|<|>|~)\s*(.*?)\s*$", re.S)
NUMERIC = ("width", "height", "size")
DATES = ("date", "taken", "mtime")
FIELDS = ("path", *DATES, *NUMERIC, "orientation", "camera", "tag", "caption")


@dataclass(frozen=True)
class Filter:
    """One condition on a catalog field."""

    field: str
    op: str
    value: str

    def __str__(self) -> str:
        return f"{self.field} {self.op} {self.value}"


def parse_where(text: str) -> Filter:
    """Parse ``"FIELD OP VALUE"`` (``--where``)."""
    m = _WHERE.match(text)
    if not m or not m.group(3):
        raise QueryError(f"cannot read filter {text!r}: expected FIELD OP VALUE, e.g. "
                         "'width >= 1024' (operators: = != < <= > >= ~)")
    value = m.group(3)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return Filter(m.group(1).lower() if not m.group(1).startswith("meta.") else m.group(1),
                  m.group(2), value)


_DATE_FORMATS = (("%Y-%m-%dT%H:%M:%S", "second"), ("%Y-%m-%d %H:%M:%S", "second"),
                 ("%Y-%m-%dT%H:%M", "minute"), ("%Y-%m-%d %H:%M", "minute"),
                 ("%Y-%m-%d", "day"), ("%Y-%m", "month"), ("%Y", "year"))


def _parse_period(text: str) -> tuple[dt.datetime, str]:
    for fmt, unit in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text.strip(), fmt), unit
        except ValueError:
            continue
    raise ValueError(text)


def parse_date(text: str, where: str = "date") -> dt.datetime:
    """A date or date-time, as the start of the period it names."""
    try:
        return _parse_period(text)[0]
    except ValueError:
        pass
    raise QueryError(f"malformed date {text!r} in {where} (use YYYY, YYYY-MM, YYYY-MM-DD or "
                     "YYYY-MM-DDTHH:MM)")


def path_filter(value: str) -> Filter:
    """``--path``: a glob if it has wildcards, else that file or everything under that
    folder."""
    if any(c in value for c in "*?["):
        return Filter("path", "~", value if value.startswith(("*", "/")) or os.path.isabs(value)
                      else os.path.abspath(value))
    return Filter("path", "under", os.path.abspath(os.path.expanduser(value)).rstrip(os.sep))


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def compile_filters(filters: list[Filter], catalog: Any, kind: str) -> list[Any]:
    """SQLAlchemy conditions on ``Item`` for these filters; raises :class:`QueryError` for an
    unknown field, a bad operator for the field, or a malformed value."""
    conditions = []
    meta_keys: set[str] | None = None
    for f in filters:
        if f.op not in OPS and not (f.op == "under" and f.field == "path"):
            raise QueryError(f"unknown operator {f.op!r} in filter '{f}'")
        field = f.field
        if field not in FIELDS and not field.startswith("meta."):
            meta_keys = catalog.metadata_keys() if meta_keys is None else meta_keys
            if field not in meta_keys:
                known = ", ".join(FIELDS)
                extra = f"; metadata fields: {', '.join(sorted(meta_keys))}" if meta_keys else ""
                raise QueryError(f"unknown filter field {field!r} (known: {known}, "
                                 f"meta.KEY{extra})")
            field = f"meta.{field}"
        conditions.append(_compile(Filter(field, f.op, f.value), kind))
    return conditions


def _compare(column: Any, op: str, value: Any) -> Any:
    return {"=": column == value, "!=": column != value, "<": column < value,
            "<=": column <= value, ">": column > value, ">=": column >= value}[op]


def _compile(f: Filter, kind: str) -> Any:
    from sqlalchemy import and_, case, exists, func, not_, or_, select
    from sqlalchemy.orm import aliased

    from .catalog import Item, Tag

    field, op, value = f.field, f.op, f.value
    if field == "path":
        parent = aliased(Item)
        path = (select(parent.path).where(parent.id == Item.parent_id).scalar_subquery()
                if kind == "text" else Item.path)
        if op == "~":
            return path.op("GLOB")(value)
        if op == "under":
            return or_(path == value, path.op("GLOB")(_glob_escape(value) + os.sep + "*"))
        if op in ("=", "!="):
            return _compare(path, op, os.path.abspath(os.path.expanduser(value)))
        raise QueryError(f"filter '{f}': path takes = != or ~ (a glob)")
    if field in DATES:
        when = parse_date(value, f"filter '{f}'")
        mtime = func.datetime(Item.mtime_ns / 1_000_000_000, "unixepoch")
        column = {"taken": Item.taken_at, "mtime": mtime,
                  "date": func.coalesce(Item.taken_at, mtime)}[field]
        if op == "~":
            raise QueryError(f"filter '{f}': dates compare with = != < <= > >=")
        if op in ("=", "!="):  # the whole period the value names: a day, a month, a year
            end = _period_end(value)
            inside = and_(column >= _sql_time(when), column < _sql_time(end))
            return inside if op == "=" else not_(inside)
        return _compare(column, op, _sql_time(when))
    if field in NUMERIC:
        try:
            number = float(value)
        except ValueError:
            raise QueryError(f"filter '{f}': {field} needs a number, got {value!r}") from None
        if op == "~":
            raise QueryError(f"filter '{f}': numbers compare with = != < <= > >=")
        return _compare({"width": Item.width, "height": Item.height, "size": Item.size}[field],
                        op, number)
    if field == "orientation":
        shape = case((Item.width > Item.height, "landscape"),
                     (Item.width < Item.height, "portrait"), else_="square")
        if value.lower() not in ("landscape", "portrait", "square") or op not in ("=", "!="):
            raise QueryError(f"filter '{f}': orientation = landscape, portrait or square")
        return _compare(shape, op, value.lower())
    if field == "camera":
        camera = func.lower(func.trim(func.coalesce(Item.camera_make, "") + " " +
                                      func.coalesce(Item.camera_model, "")))
        if op == "~":
            return camera.op("GLOB")(value.lower())
        if op in ("=", "!="):
            hit = or_(camera == value.lower(), func.lower(Item.camera_model) == value.lower())
            return hit if op == "=" else not_(hit)
        raise QueryError(f"filter '{f}': camera takes = != or ~ (a glob)")
    if field == "tag":
        if op not in ("=", "!="):
            raise QueryError(f"filter '{f}': tag takes = or !=")
        has = exists().where(Tag.item_id == Item.id, Tag.tag == value)
        return has if op == "=" else not_(has)
    if field == "caption":
        truth = value.lower() in ("true", "yes", "1")
        if value.lower() not in ("true", "yes", "1", "false", "no", "0") or op not in ("=", "!="):
            raise QueryError(f"filter '{f}': caption = true or false")
        cap = aliased(Item)
        has = exists().where(cap.parent_id == Item.id, cap.source == "caption")
        return has if (op == "=") == truth else not_(has)
    key = field[len("meta."):]
    if not re.fullmatch(r"[\w-]+", key):
        raise QueryError(f"filter '{f}': metadata keys are letters, digits, _ and -")
    column = func.json_extract(Item.meta, f'$."{key}"')
    if op == "~":
        return column.op("GLOB")(value)
    if op == "=":  # the value may be stored as text or as a number
        return or_(column == value, column == _number_or(value))
    if op == "!=":
        return and_(column != value, column != _number_or(value))
    try:
        return _compare(column, op, float(value))
    except ValueError:
        return _compare(column, op, value)


def _number_or(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def _period_end(text: str) -> dt.datetime:
    """The end of the period a date names: the next year, month, day, minute or second."""
    start, unit = _parse_period(text)
    if unit == "year":
        return start.replace(year=start.year + 1)
    if unit == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    step = {"day": dt.timedelta(days=1), "minute": dt.timedelta(minutes=1)}
    return start + step.get(unit, dt.timedelta(seconds=1))


def _sql_time(value: dt.datetime) -> str:
    """The text form SQLite stores datetimes in, which compares in time order."""
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")
