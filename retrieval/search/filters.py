"""Filters on catalog fields: parsed from the CLI, checked, and handed to the catalog as plain
conditions (:class:`~retrieval.storage.records.Condition`), which it compiles to SQL.

A filter is ``FIELD OP VALUE``. Fields:

=================  ====================================================================
``path``           the image's or video's path (a caption's image path); ``~`` takes a glob, ``=``
                   the exact path; a value without wildcards under ``--path`` is a prefix
``date``           capture date (EXIF), else the file's modification time
``taken``          capture date only; ``mtime`` modification time only
``width``          pixels, after EXIF orientation; also ``height``, ``size`` (bytes)
``duration``       a video's length in seconds (``--target video``: its shots' video's)
``orientation``    ``landscape``, ``portrait`` or ``square``
``camera``         camera make and model (``~`` glob, ``=`` case-insensitive)
``tag``            a tag from ``retrieval tag`` (``=`` only)
``caption``        ``true`` when the image has a caption, sidecar or generated (``=``);
                   ``~`` globs the caption text, case-insensitive (``caption ~ *beach*``)
``ocr``            ``true`` when text was recognised in the image (``=``); ``~`` globs that
                   text, case-insensitive (``ocr ~ *invoice*``). On a text search
                   (``--target text``): ``true`` for recognised texts themselves, and ``~``
                   globs a recognised text's own text
``meta.KEY``       a metadata field of JSONL texts (a bare ``KEY`` works when it exists)
=================  ====================================================================

Operators: ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` and ``~`` (glob: ``*``, ``?``, ``[..]``).
``=`` compares exactly, so ``path = *red*`` would find nothing: on a field that takes ``~`` an
unquoted ``*`` or ``?`` after ``=`` is an error that suggests ``~`` (quote the value,
``path = '*red*'``, to mean the characters). A metadata field on an image search is an error
unless images have it (JSONL fields belong to texts: ``--target text``).
Dates are ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDTHH:MM[:SS]``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

from ..errors import QueryError
from ..items import IMAGE
from ..storage.records import Condition

OPS = ("!=", "<=", ">=", "=", "<", ">", "~")
_WHERE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*([!<>=~]+)\s*(.*?)\s*$", re.S)
NUMERIC = ("width", "height", "size", "duration")
DATES = ("date", "taken", "mtime")
FIELDS = ("path", *DATES, *NUMERIC, "orientation", "camera", "tag", "caption", "ocr")
GLOBBED = ("path", "camera", "caption", "ocr")  # fields that take ~ (and metadata fields)


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
    op = "=" if m.group(2) == "==" else m.group(2)
    if op not in OPS:
        hint = "; != means not equal" if m.group(2) in ("<>", "=!", "!==") else ""
        raise QueryError(f"filter {text!r}: unknown operator {m.group(2)!r} (operators: "
                         f"= != < <= > >= ~{hint})")
    value = m.group(3)
    quoted = len(value) >= 2 and value[0] == value[-1] and value[0] in "'\""
    if quoted:
        value = value[1:-1]
    field = m.group(1).lower() if not m.group(1).startswith("meta.") else m.group(1)
    if op == "=" and not quoted and (field in GLOBBED or field not in FIELDS):
        _check_not_a_glob(Filter(field, op, value))
    return Filter(field, op, value)


def _check_not_a_glob(f: Filter) -> None:
    """``path = *red*`` compares exactly and so finds nothing: a wildcard after ``=`` is
    taken for a mistake unless the value is quoted (``path = '*red*'`` means the name)."""
    if "*" in f.value or "?" in f.value:
        raise QueryError(f"filter '{f}': = compares exactly; for a glob use ~ "
                         f"('{f.field} ~ {f.value}'), or quote the value to match * and ? "
                         f"as they are ('{f.field} = \"{f.value}\"')")


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


def compile_filters(filters: list[Filter], catalog: Any, kind: str) -> list[Condition]:
    """The catalog's conditions for these filters (values read, fields resolved; the catalog
    compiles them into SQL); raises :class:`QueryError` for an unknown field, a field the
    searched kind of item does not have, a bad operator for the field, or a malformed value."""
    conditions = []
    keys = _Keys(catalog)
    for f in filters:
        if f.op not in OPS and not (f.op == "under" and f.field == "path"):
            raise QueryError(f"unknown operator {f.op!r} in filter '{f}'")
        field = f.field if f.field in FIELDS else _metadata_field(f, keys, kind)
        conditions.append(_condition(Filter(field, f.op, f.value), kind))
    return conditions


class _Keys:
    """The metadata keys users gave items (read once, when a filter needs them)."""

    def __init__(self, catalog: Any) -> None:
        self.catalog = catalog
        self._all: set[str] | None = None
        self._images: set[str] | None = None

    def all(self) -> set[str]:
        if self._all is None:
            self._all = set(self.catalog.metadata_keys())
        return self._all

    def images(self) -> set[str]:
        if self._images is None:
            self._images = set(self.catalog.metadata_keys(IMAGE))
        return self._images


def _metadata_field(f: Filter, keys: _Keys, kind: str) -> str:
    """``meta.KEY`` for a metadata filter (``meta.KEY``, or a bare ``KEY`` that exists);
    a field no item has, or one only texts have on an image search, is an error that says
    so, where the filter would quietly match nothing."""
    key = f.field.removeprefix("meta.")
    if not re.fullmatch(r"[\w-]+", key):
        raise QueryError(f"filter '{f}': metadata keys are letters, digits, _ and -")
    if key == f.field and key not in keys.all():
        suggestion = difflib.get_close_matches(key, [*FIELDS, *keys.all()], n=1)
        hint = f"; did you mean {suggestion[0]}?" if suggestion else ""
        extra = f"; metadata fields: {', '.join(sorted(keys.all()))}" if keys.all() else ""
        raise QueryError(f"unknown filter field {key!r}{hint} (known: {', '.join(FIELDS)}, "
                         f"meta.KEY{extra})")
    if kind == IMAGE and key not in keys.images():
        if key in keys.all():
            raise QueryError(f"filter '{f}': {key} is a field of texts, not of images; "
                             "search texts with --target text")
        raise QueryError(f"filter '{f}': images have no field {key} (their fields: "
                         f"{', '.join(FIELDS)})")
    return f"meta.{key}"


def _condition(f: Filter, kind: str) -> Condition:
    if f.field in DATES:
        return _date(f, kind)
    if f.field in NUMERIC:
        return _number(f, kind)
    if f.field.startswith("meta."):
        return _metadata(f, kind)
    return {"path": _path, "orientation": _orientation, "camera": _camera, "tag": _tag,
            "caption": _caption, "ocr": _caption}[f.field](f, kind)


def _path(f: Filter, kind: str) -> Condition:
    if f.op in ("~", "under"):
        return Condition("path", f.op, f.value, kind)
    if f.op in ("=", "!="):
        return Condition("path", f.op, os.path.abspath(os.path.expanduser(f.value)), kind)
    raise QueryError(f"filter '{f}': path takes = != or ~ (a glob)")


def _date(f: Filter, kind: str) -> Condition:
    when = parse_date(f.value, f"filter '{f}'")
    if f.op == "~":
        raise QueryError(f"filter '{f}': dates compare with = != < <= > >=")
    if f.op in ("=", "!="):  # the whole period the value names: a day, a month, a year
        return Condition(f.field, f.op, when, kind, until=_period_end(f.value))
    return Condition(f.field, f.op, when, kind)


def _number(f: Filter, kind: str) -> Condition:
    try:
        number = float(f.value)
    except ValueError:
        raise QueryError(f"filter '{f}': {f.field} needs a number, got {f.value!r}") from None
    if f.op == "~":
        raise QueryError(f"filter '{f}': numbers compare with = != < <= > >=")
    return Condition(f.field, f.op, number, kind)


def _orientation(f: Filter, kind: str) -> Condition:
    if f.value.lower() not in ("landscape", "portrait", "square") or f.op not in ("=", "!="):
        raise QueryError(f"filter '{f}': orientation = landscape, portrait or square")
    return Condition("orientation", f.op, f.value.lower(), kind)


def _camera(f: Filter, kind: str) -> Condition:
    if f.op in ("~", "=", "!="):
        return Condition("camera", f.op, f.value.lower(), kind)
    raise QueryError(f"filter '{f}': camera takes = != or ~ (a glob)")


def _tag(f: Filter, kind: str) -> Condition:
    if f.op not in ("=", "!="):
        raise QueryError(f"filter '{f}': tag takes = or !=")
    return Condition("tag", f.op, f.value, kind)


def _caption(f: Filter, kind: str) -> Condition:
    """An image's texts: ``caption`` (sidecar and generated captions alike) or ``ocr`` (its
    recognised text); ``~`` globs the text (case-insensitive), ``=`` says whether there is
    one."""
    if f.op == "~":
        return Condition(f.field, "~", f.value.lower(), kind)
    truth = f.value.lower() in ("true", "yes", "1")
    if f.value.lower() not in ("true", "yes", "1", "false", "no", "0") or f.op not in ("=", "!="):
        raise QueryError(f"filter '{f}': {f.field} = true or false, or {f.field} ~ a glob")
    return Condition(f.field, f.op, truth, kind)


def _metadata(f: Filter, kind: str) -> Condition:
    """A metadata value may be stored as text or as a number: one that reads as a number
    compares as either."""
    if f.op == "~":
        return Condition(f.field, "~", f.value, kind)
    try:
        number: float | None = float(f.value)
    except ValueError:
        number = None
    return Condition(f.field, f.op, f.value, kind, number=number)


def _period_end(text: str) -> dt.datetime:
    """The end of the period a date names: the next year, month, day, minute or second."""
    start, unit = _parse_period(text)
    if unit == "year":
        return start.replace(year=start.year + 1)
    if unit == "month":
        return (start.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
    step = {"day": dt.timedelta(days=1), "minute": dt.timedelta(minutes=1)}
    return start + step.get(unit, dt.timedelta(seconds=1))
