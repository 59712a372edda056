"""Filters as SQL: a :class:`~.records.Condition` (checked and read by
:mod:`retrieval.search.filters`) compiled into a SQLAlchemy condition on ``items``.

What differs between databases (globs, JSON fields, epoch times) is written with the
constructs of :mod:`.dialects`, which each backend compiles in its own form.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from sqlalchemy import and_, case, exists, func, not_, or_, select

from ..items import CAPTIONS, RECOGNISED, TEXT
from .dialects import EpochTime, Glob, JsonValue
from .records import Condition
from .schema import items, tags

DATES = ("date", "taken", "mtime")


def compile_condition(c: Condition) -> Any:
    """The SQL condition on ``items`` for ``c``."""
    if c.field in DATES:
        return _date(c)
    if c.field.startswith("meta."):
        return _metadata(c)
    if c.field in ("width", "height", "size", "duration"):
        return _compare(items.c[c.field], c.op, c.value)
    return _FIELDS[c.field](c)


def _compare(column: Any, op: str, value: Any) -> Any:
    return {"=": column == value, "!=": column != value, "<": column < value,
            "<=": column <= value, ">": column > value, ">=": column >= value}[op]


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)


def _path(c: Condition) -> Any:
    """A text's path is its image's (a caption's parent)."""
    parent = items.alias("parent")
    path = (select(parent.c.path).where(parent.c.id == items.c.parent_id).scalar_subquery()
            if c.kind == TEXT else items.c.path)
    if c.op == "~":
        return Glob(path, c.value)
    if c.op == "under":
        return or_(path == c.value, Glob(path, _glob_escape(c.value) + os.sep + "*"))
    return _compare(path, c.op, c.value)


def _date(c: Condition) -> Any:
    mtime = EpochTime(items.c.mtime_ns / 1_000_000_000)
    column = {"taken": items.c.taken_at, "mtime": mtime,
              "date": func.coalesce(items.c.taken_at, mtime)}[c.field]
    if c.until is not None:  # = or != the whole period the value names
        inside = and_(column >= c.value, column < c.until)
        return inside if c.op == "=" else not_(inside)
    return _compare(column, c.op, c.value)


def _orientation(c: Condition) -> Any:
    shape = case((items.c.width > items.c.height, "landscape"),
                 (items.c.width < items.c.height, "portrait"), else_="square")
    return _compare(shape, c.op, c.value)


def _camera(c: Condition) -> Any:
    camera = func.lower(func.trim(func.coalesce(items.c.camera_make, "") + " " +
                                  func.coalesce(items.c.camera_model, "")))
    if c.op == "~":
        return Glob(camera, c.value)
    hit = or_(camera == c.value, func.lower(items.c.camera_model) == c.value)
    return hit if c.op == "=" else not_(hit)


def _tag(c: Condition) -> Any:
    has = exists().where(tags.c.item_id == items.c.id, tags.c.tag == c.value)
    return has if c.op == "=" else not_(has)


def _caption(c: Condition) -> Any:
    """Sidecar and generated captions alike."""
    cap = items.alias("caption")
    of_image = (cap.c.parent_id == items.c.id) & cap.c.source.in_(CAPTIONS)
    if c.op == "~":
        return exists().where(of_image, Glob(func.lower(cap.c.text), c.value))
    has = exists().where(of_image)
    return has if (c.op == "=") == c.value else not_(has)


def _ocr(c: Condition) -> Any:
    """An image's recognised text (its child of source ``ocr``). On a text search the text
    itself: a recognised text, and its own words for ``~`` (a text has no children, so the
    image's meaning would keep nothing, or everything)."""
    if c.kind == TEXT:
        own = items.c.source == RECOGNISED
        if c.op == "~":
            return and_(own, Glob(func.lower(items.c.text), c.value))
        return own if (c.op == "=") == c.value else items.c.source.is_distinct_from(RECOGNISED)
    ocr = items.alias("ocr")
    of_image = (ocr.c.parent_id == items.c.id) & (ocr.c.source == RECOGNISED)
    if c.op == "~":
        return exists().where(of_image, Glob(func.lower(ocr.c.text), c.value))
    has = exists().where(of_image)
    return has if (c.op == "=") == c.value else not_(has)


def _metadata(c: Condition) -> Any:
    """The value may be stored as text or as a number."""
    key = c.field[len("meta."):]
    text = JsonValue(items.c.metadata, key)
    number = JsonValue(items.c.metadata, key, number=True)
    if c.op == "~":
        return Glob(text, c.value)
    if c.op == "=":
        return text == c.value if c.number is None else or_(text == c.value, number == c.number)
    if c.op == "!=":
        return text != c.value if c.number is None else and_(
            text != c.value, or_(number.is_(None), number != c.number))
    return _compare(text, c.op, c.value) if c.number is None else _compare(number, c.op,
                                                                           c.number)


_FIELDS: dict[str, Callable[[Condition], Any]] = {
    "path": _path, "orientation": _orientation, "camera": _camera, "tag": _tag,
    "caption": _caption, "ocr": _ocr}
