"""The one-declaration rule: a query's fields are declared once
(:data:`retrieval.search.fields.FIELDS`), and every surface that takes a query takes exactly
those fields, with the same names, order and defaults, and hands each one on to the builder.

The command line's options and the HTTP request models are generated from the declaration;
``build_query``, ``Collection.search`` and ``Client.search`` spell theirs out, and are checked
here. A field added to the declaration but not to a signature fails here, naming the surface.
"""

from __future__ import annotations

import base64
import inspect
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from retrieval import Collection, QueryError, Term
from retrieval.interfaces.cli import cli
from retrieval.interfaces.client import Client
from retrieval.search import builder
from retrieval.search.fields import FIELDS, NAMES, QueryField

TERM_SYNTAX = {"texts", "images", "likes", "adds", "subtracts"}  # the command line's terms
NOT_QUERY = {"deadline", "cancel"}  # a search's budget, not its query


def _declared(fields: tuple[QueryField, ...] = FIELDS) -> list[tuple[str, Any]]:
    return [(f.name, f.default) for f in fields]


def _parameters(fn: Callable[..., Any], leave_out: set[str]) -> list[tuple[str, Any]]:
    params = inspect.signature(fn).parameters.values()
    assert not any(p.kind is p.VAR_KEYWORD for p in params), f"{fn.__qualname__} takes **kwargs"
    return [(p.name, p.default) for p in params if p.name not in {"self", *leave_out}]


@pytest.mark.parametrize("fn", [builder.build_query, Collection.search, Client.search],
                         ids=["build_query", "Collection.search", "Client.search"])
def test_signatures_are_the_declared_fields(fn: Callable[..., Any]) -> None:
    """Names, order and defaults; ``text`` alone may be given by position."""
    assert _parameters(fn, NOT_QUERY) == _declared(), fn.__qualname__
    positional = [p.name for p in inspect.signature(fn).parameters.values()
                  if p.kind is p.POSITIONAL_OR_KEYWORD and p.name != "self"]
    assert positional == ["text"], fn.__qualname__


def test_cli_options_are_the_declared_fields() -> None:
    """Every field with a flag is an option of ``retrieval search``, in the declaration's
    order, under the field's name, with its default and help; the others are the command's
    term syntax, its output and its model."""
    command = cli.commands["search"]
    options = [p for p in command.params if p.name in NAMES]
    flagged = [f for f in FIELDS if f.flags]
    assert [p.name for p in options] == [f.name for f in flagged]
    for p, f in zip(options, flagged, strict=True):
        assert tuple(p.opts) == f.flags, f.name
        assert p.default == f.default and p.help == f.help, f.name
    others = {p.name for p in command.params} - set(NAMES)
    assert others == TERM_SYNTAX | {"as_json", "paths_only", "model", "pretrained", "device"}
    assert {f.name for f in FIELDS if not f.flags} == {"text", "image", "like", "vector",
                                                        "terms"}


def test_http_models_are_the_declared_fields() -> None:
    from retrieval.interfaces.server import SearchForm, SearchIn

    fields = SearchIn.model_fields
    assert list(fields) == list(NAMES)
    for f in FIELDS:
        default = fields[f.name].get_default(call_default_factory=True)
        assert default == (list(f.default) if f.repeatable else f.default), f.name
        assert fields[f.name].description == f.description, f.name
    # The form lacks the image (its file part is the image), the vector and the terms (a form
    # field is a string: hundreds of numbers, or objects, have no form spelling), and keywords
    # (an upload is an image search, and a keyword search takes no image).
    assert list(SearchForm.model_fields) == [f.name for f in FIELDS if f.form]
    assert set(NAMES) - set(SearchForm.model_fields) == {"image", "vector", "terms", "keywords"}


# --- every surface hands every field on -----------------------------------------------------

class Built(Exception):
    """Raised by the stand-in builder once it has recorded what it was given."""


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``build_query`` replaced, wherever a surface reaches it, by one that records its
    arguments by name and stops."""
    seen: dict[str, Any] = {}
    real = inspect.signature(builder.build_query)

    def record(*args: Any, **kwargs: Any) -> Any:
        seen.update(real.bind(*args, **kwargs).arguments)
        raise Built

    for where in ("retrieval.search.builder", "retrieval.search", "retrieval.collection",
                  "retrieval.interfaces.server"):
        monkeypatch.setattr(f"{where}.build_query", record)
    return seen


def _sample(f: QueryField) -> Any:
    """A JSON value for the field other than its default (by its declared JSON type)."""
    kind = f.json
    if kind is bool:
        return not f.default
    if get_origin(kind) is list:
        return {str: ["a b", "c"], float: [0.5, 0.25]}.get(get_args(kind)[0])
    if isinstance(kind, types.UnionType) or get_origin(kind) is Union:  # Literal[...] | None
        kind = next(a for a in get_args(kind) if a is not type(None))
        if get_origin(kind) is list:
            return [0.5, 0.25]
    if get_origin(kind) is Literal:
        return next(c for c in get_args(kind) if c != f.default)
    return {int: 7, float: 2.5, str: "x*"}[kind]


PASSED_ON = [f for f in FIELDS if f.name not in {"image", "terms"}]  # as they are


def test_collection_search_hands_every_field_on(recorded: dict[str, Any]) -> None:
    given = {f.name: object() for f in FIELDS}
    with pytest.raises(Built):
        Collection.search(object.__new__(Collection), **given)  # type: ignore[arg-type]
    assert recorded == given


def test_cli_hands_every_option_on(recorded: dict[str, Any]) -> None:
    args: list[str] = ["search", "a red circle"]
    expected: dict[str, Any] = {}
    for f in FIELDS:
        if not f.flags:
            continue
        value = _sample(f)
        if f.json is bool:
            args.append(f.flags[-1])
        elif isinstance(value, list):
            args += [part for v in value for part in (f.flags[-1], str(v))]
            value = tuple(value)
        else:
            args += [f.flags[-1], str(value)]
        expected[f.name] = value
    result = CliRunner().invoke(cli, args)
    assert isinstance(result.exception, Built), result.output
    assert {k: v for k, v in recorded.items() if k in expected} == expected
    assert [(t.kind, t.value) for t in recorded["terms"]] == [("text", "a red circle")]


def test_http_hands_every_field_on(recorded: dict[str, Any]) -> None:
    from retrieval.interfaces.server import create_app

    body = {f.name: _sample(f) for f in PASSED_ON}
    png = _png()
    body.update(image=base64.b64encode(png).decode(), terms=[{"kind": "text", "value": "t"}])
    http = TestClient(create_app(_NoCollection(), max_pixels=1234),  # type: ignore[arg-type]
                      raise_server_exceptions=False)
    http.post("/search", json=body)
    assert {f.name: recorded[f.name] for f in PASSED_ON} == {
        f.name: body[f.name] for f in PASSED_ON}
    text, image = recorded["terms"]
    assert text == {"kind": "text", "value": "t", "weight": 1.0}
    assert image == Term("image", png, 1.0, max_pixels=1234)  # decoded by the search, once

    recorded.clear()
    form = {f.name: _sample(f) for f in FIELDS if f.form}
    http.post("/search/upload", data=form, files={"image": ("a.png", png, "image/png")})
    assert {k: recorded[k] for k in form} == form
    assert recorded["terms"] == [Term("image", png, 1.0, max_pixels=1234)]


def test_client_sends_every_field(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: dict[str, Any] = {}

    def call(_self: Client, method: str, url: str, **kw: Any) -> Any:
        sent.update(kw["json"])
        raise Built

    monkeypatch.setattr(Client, "_call", call)
    given = {f.name: _sample(f) for f in PASSED_ON}
    png = _png()
    with Client() as client, pytest.raises(Built):
        client.search(image=png, terms=[Term("image", png, 2.0), {"kind": "like", "value": 3}],
                      **given)
    assert sent == {**given, "image": base64.b64encode(png).decode(), "terms": [
        {"kind": "image", "value": base64.b64encode(png).decode(), "weight": 2.0},
        {"kind": "like", "value": 3}]}


def test_term_pixel_limit_is_checked() -> None:
    assert builder.as_term(Term("image", b"x", max_pixels=10)).max_pixels == 10
    for bad in (0, -1, 2.5, True):
        with pytest.raises(QueryError, match="pixel limit is a positive integer"):
            builder.as_term(Term("image", b"x", max_pixels=bad))  # type: ignore[arg-type]


class _NoCollection:
    """What the app needs of a collection before a search reaches it."""

    path = Path("/nowhere")

    def set_search_threads(self, threads: int | None) -> None:
        pass


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (4, 3), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()
