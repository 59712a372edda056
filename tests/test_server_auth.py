"""The bearer token (``create_app(token=...)``): every endpoint but the page needs it, and it is
checked before anything else is revealed or parsed.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from fastapi.testclient import TestClient
from server_fixtures import JSON, TOKEN, Served

from retrieval.interfaces.server import create_app


@pytest.fixture(scope="module")
def guarded(served: Served) -> TestClient:
    return TestClient(create_app(served.col, token=TOKEN), raise_server_exceptions=False)


def _requests(served: Served) -> list[tuple[str, str, dict[str, Any]]]:
    i = served.ids["img002.jpg"]
    upload = {"image": ("q.jpg", served.file("img002.jpg").read_bytes(), "image/jpeg")}
    return [
        ("GET", "/health", {}),
        ("GET", "/info", {}),
        ("POST", "/search", {"json": {"text": "a", "k": 2}}),
        ("POST", "/search", {"json": {"like": i}}),
        ("POST", "/search/upload", {"files": upload}),
        ("GET", f"/items/{i}", {}),
        ("GET", f"/items/{i}/image", {}),
        ("GET", f"/items/{i}/thumbnail", {}),
        ("GET", f"/items/{i}/thumbnail?size=128", {}),
    ]


WRONG_AUTH = [None, "", "Bearer", "Bearer ", "Bearer wrong", f"Bearer {TOKEN}x",
              f"Bearer {TOKEN[:-1]}", TOKEN, f"Token {TOKEN}", f"Basic {TOKEN}",
              "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()]


def test_every_endpoint_needs_the_token(served: Served, guarded: TestClient) -> None:
    for method, url, kwargs in _requests(served):
        for auth in WRONG_AUTH:
            headers = {} if auth is None else {"Authorization": auth}
            r = guarded.request(method, url, headers=headers, **kwargs)
            assert r.status_code == 401, (method, url, auth, r.status_code)
            assert r.headers.get("www-authenticate") == "Bearer"
            assert r.json() == {"detail": "missing or wrong bearer token"}
        r = guarded.request(method, url, params={"token": TOKEN}, **kwargs)
        assert r.status_code == 401, (method, url, "query parameter")
        ok = guarded.request(method, url, headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
        assert ok.status_code == 200, (method, url, ok.text)


def test_auth_comes_before_anything_else(served: Served, guarded: TestClient) -> None:
    """Without the token nothing is revealed: not whether an item exists, not a validation
    message."""
    for method, url, kwargs in [("GET", "/items/987654", {}), ("GET", "/items/abc", {}),
                                ("GET", "/items/987654/image", {}),
                                ("POST", "/search", {"json": {"bogus": 1}}),
                                ("POST", "/search", {"json": {"text": "a", "k": 0}}),
                                ("POST", "/search/upload", {"data": {"k": "3"}})]:
        r = guarded.request(method, url, **kwargs)
        assert r.status_code == 401, (url, r.status_code, r.text)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/items/987654", headers=auth).status_code == 404
    assert guarded.post("/search", json={"bogus": 1}, headers=auth).status_code == 422


def test_auth_comes_before_json_parsing(guarded: TestClient) -> None:
    r = guarded.post("/search", content=b"{", headers=JSON)
    assert r.status_code == 401, (r.status_code, r.text)


def test_page_loads_without_the_token(guarded: TestClient) -> None:
    r = guarded.get("/")
    assert r.status_code == 200 and 'name="q"' in r.text


def test_open_server_ignores_authorization_headers(served: Served) -> None:
    r = served.http.get("/health", headers={"Authorization": "Bearer anything"})
    assert r.status_code == 200
