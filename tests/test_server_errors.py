"""Requests the HTTP service refuses: a 4xx with a one-line ``detail``, never a 500 (a table
of malformed, out-of-range and unknown inputs, and a few cases of their own).
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from server_fixtures import JSON, Served, assert_error

ERROR_CASES: list[tuple[str, str, str, dict[str, Any], tuple[int, ...], str]] = [
    ("malformed json", "POST", "/search", {"content": b'{"text": "a', "headers": JSON},
     (422,), "not valid JSON"),
    ("json array", "POST", "/search", {"json": ["a"]}, (422,), ""),
    ("not json", "POST", "/search", {"content": b"text=a",
                                     "headers": {"content-type": "text/plain"}}, (422,), ""),
    ("unknown field", "POST", "/search", {"json": {"text": "a", "colour": "red"}}, (422,),
     "colour"),
    ("unknown term field", "POST", "/search",
     {"json": {"terms": [{"kind": "text", "value": "a", "wieght": 2}]}}, (422,), "wieght"),
    ("unknown term kind", "POST", "/search",
     {"json": {"terms": [{"kind": "audio", "value": "a"}]}}, (422,), "kind"),
    ("k zero", "POST", "/search", {"json": {"text": "a", "k": 0}}, (400,), "k must be"),
    ("k too big", "POST", "/search", {"json": {"text": "a", "k": 10_001}}, (400,), "k must be"),
    ("k not a number", "POST", "/search", {"json": {"text": "a", "k": "many"}}, (422,), "k"),
    ("negative offset", "POST", "/search", {"json": {"text": "a", "offset": -1}}, (400,),
     "offset must be"),
    ("offset too big", "POST", "/search", {"json": {"text": "a", "offset": 10_001}}, (400,),
     "offset must be"),
    ("bad target", "POST", "/search", {"json": {"text": "a", "target": "movies"}}, (422,),
     "target"),
    ("text too long", "POST", "/search", {"json": {"text": "a" * 2001}}, (400,),
     "at most 2000 characters"),
    ("keyword weight", "POST", "/search", {"json": {"text": "a", "keyword_weight": -1}},
     (400,), "keyword weight"),
    ("nothing to search", "POST", "/search", {"json": {}}, (400,), "nothing to search"),
    ("empty text", "POST", "/search", {"json": {"text": "  "}}, (400,), "empty"),
    ("bad base64", "POST", "/search", {"json": {"image": "not base64!!"}}, (400,), "base64"),
    ("base64 of text", "POST", "/search",
     {"json": {"image": base64.b64encode(b"just some text, not an image").decode()}}, (400,),
     "not a recognised image"),
    ("image term not a string", "POST", "/search",
     {"json": {"terms": [{"kind": "image", "value": 5}]}}, (400,), "base64"),
    ("item term not an int", "POST", "/search",
     {"json": {"terms": [{"kind": "like", "value": "one"}]}}, (400,), "integer"),
    ("unknown item", "POST", "/search", {"json": {"like": 987654}}, (404,), "987654"),
    ("vector of wrong size", "POST", "/search", {"json": {"vector": [1.0, 2.0]}}, (400,),
     "dimensions"),
    ("zero vector", "POST", "/search", {"json": {"vector": [0.0] * 32}}, (400,), ""),
    ("NaN vector", "POST", "/search",
     {"content": ('{"vector": [NaN' + ", 0.5" * 31 + "]}").encode(), "headers": JSON},
     (400, 422), ""),
    ("terms cancel out", "POST", "/search",
     {"json": {"terms": [{"kind": "text", "value": "a"},
                         {"kind": "text", "value": "a", "weight": -1}]}}, (400,), "cancel"),
    ("unknown filter field", "POST", "/search",
     {"json": {"text": "a", "filters": ["colour = red"]}}, (400,), "colour"),
    ("malformed filter", "POST", "/search", {"json": {"text": "a", "filters": ["width"]}},
     (400,), "FIELD OP VALUE"),
    ("bad filter operator", "POST", "/search",
     {"json": {"text": "a", "filters": ["width ~ 3"]}}, (400,), "width"),
    ("bad filter date", "POST", "/search",
     {"json": {"text": "a", "filters": ["date >= yesterday"]}}, (400,), "date"),
    ("rerank bogus", "POST", "/search", {"json": {"text": "a", "rerank": "bogus"}}, (400,),
     "bogus"),
    ("rerank mmr out of range", "POST", "/search", {"json": {"text": "a", "rerank": "mmr:2"}},
     (400,), "mmr"),
    ("rerank dedup not a number", "POST", "/search",
     {"json": {"text": "a", "rerank": "dedup:x"}}, (400,), "dedup"),
    ("upload text file", "POST", "/search/upload",
     {"files": {"image": ("notes.txt", b"hello, not an image", "text/plain")}}, (400,),
     "not a recognised image"),
    ("upload empty file", "POST", "/search/upload",
     {"files": {"image": ("empty.jpg", b"", "image/jpeg")}}, (400,), "empty"),
    ("upload svg", "POST", "/search/upload",
     {"files": {"image": ("x.svg", b'<svg xmlns="http://www.w3.org/2000/svg"/>',
                          "image/svg+xml")}}, (400,), "image"),
    ("upload without file", "POST", "/search/upload", {"data": {"k": "3"}}, (422,), "image"),
    ("upload as json", "POST", "/search/upload", {"json": {"k": 3}}, (422,), "image"),
    ("upload bad k", "POST", "/search/upload",
     {"data": {"k": "0"}, "files": {"image": ("a.jpg", b"x", "image/jpeg")}}, (400,),
     "k must be"),
    ("upload bad filter", "POST", "/search/upload",
     {"data": {"filters": ["colour = red"]}, "files": {"image": ("a.jpg", b"x", "image/jpeg")}},
     (400,), ""),
    ("unknown item", "GET", "/items/987654", {}, (404,), "987654"),
    ("unknown item image", "GET", "/items/987654/image", {}, (404,), "987654"),
    ("unknown item thumbnail", "GET", "/items/987654/thumbnail", {}, (404,), "987654"),
    ("item id not a number", "GET", "/items/abc", {}, (422,), "item_id"),
    ("thumbnail too small", "GET", "/items/1/thumbnail?size=8", {}, (422,), "size"),
    ("thumbnail too big", "GET", "/items/1/thumbnail?size=5000", {}, (422,), "size"),
    ("wrong method", "GET", "/search", {}, (405,), ""),
    ("unknown path", "GET", "/nothing/here", {}, (404,), ""),
]


@pytest.mark.parametrize("name, method, url, kwargs, statuses, needle", ERROR_CASES,
                         ids=[c[0] for c in ERROR_CASES])
def test_errors_are_4xx_with_a_detail(served: Served, name: str, method: str, url: str,
                                      kwargs: dict[str, Any], statuses: tuple[int, ...],
                                      needle: str) -> None:
    assert_error(served.http.request(method, url, **kwargs), *statuses, needle=needle)


def test_truncated_image_is_refused(served: Served) -> None:
    data = served.file("wide.jpg").read_bytes()[:400]
    assert_error(served.http.post("/search", json={"image": base64.b64encode(data).decode()}),
                 400, needle="uploaded image")
    assert_error(served.http.post("/search/upload",
                                  files={"image": ("cut.jpg", data, "image/jpeg")}), 400)


def test_text_item_has_no_image(served: Served) -> None:
    t = served.texts["prod-lamp"]
    assert served.http.get(f"/items/{t}").status_code == 200
    assert_error(served.http.get(f"/items/{t}/image"), 404, needle="not an image")
    assert_error(served.http.get(f"/items/{t}/thumbnail"), 404, needle="not an image")


def test_unknown_routes_and_methods_answer_json(served: Served) -> None:
    """A 404 route and a 405 method answer JSON with a detail, like every other error."""
    for r in (served.http.get("/nothing"), served.http.delete("/items/1")):
        assert r.headers["content-type"].startswith("application/json")
        assert isinstance(r.json()["detail"], str)


@pytest.mark.parametrize("method, url, kwargs", [
    ("GET", "/items/99999999999999999999", {}),
    ("GET", "/items/99999999999999999999/image", {}),
    ("GET", "/items/99999999999999999999/thumbnail", {}),
    ("POST", "/search", {"json": {"like": 2**70}}),
    ("POST", "/search", {"json": {"terms": [{"kind": "like", "value": 2**70}]}}),
], ids=["item", "image", "thumbnail", "like", "item-term"])
def test_huge_item_ids_are_4xx(served: Served, method: str, url: str,
                               kwargs: dict[str, Any]) -> None:
    assert_error(served.http.request(method, url, **kwargs), 404, 422, 400)


def test_vector_term_of_strings_is_4xx(served: Served) -> None:
    assert_error(served.http.post("/search", json={
        "terms": [{"kind": "vector", "value": ["a"] * 32}]}), 400, 422)
