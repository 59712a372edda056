"""The HTTP service's fixed endpoints and its schema: health, info, the OpenAPI document, the
page.
"""

from __future__ import annotations

from server_fixtures import HIT_KEYS, Served

API_PATHS = {"/health", "/info", "/search", "/search/upload", "/items/{item_id}",
             "/items/{item_id}/image", "/items/{item_id}/video", "/items/{item_id}/thumbnail",
             "/session"}


def test_fixture_indexed_what_it_wrote(served: Served) -> None:
    assert served.col._catalog.counts() == {"image": 23, "text": 5}
    assert served.col.roots() == [str(served.root)]


def test_health(served: Served) -> None:
    r = served.http.get("/health")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "collection": str(served.col.path)}


def test_info(served: Served, tiny_spec: str) -> None:
    r = served.http.get("/info")
    assert r.status_code == 200
    info = r.json()
    assert info["path"] == str(served.col.path)
    assert info["model"]["name"] == tiny_spec
    assert info["dim"] == 32
    assert info["counts"] == {"image": 23, "text": 5}
    assert info["index"]["image"]["ntotal"] == 23 and info["index"]["text"]["ntotal"] == 5
    assert info["disk_bytes"] > 0


def test_openapi_lists_every_endpoint(served: Served) -> None:
    r = served.http.get("/openapi.json")
    assert r.status_code == 200
    schema = r.json()
    assert set(schema["paths"]) >= API_PATHS, sorted(schema["paths"])
    assert not {"/", "/app.js", "/app.css"} & set(schema["paths"])
    assert set(schema["paths"]["/session"]) == {"get", "post", "delete"}
    assert set(schema["paths"]["/search"]) == {"post"}
    assert set(schema["paths"]["/search/upload"]) == {"post"}
    for p in API_PATHS - {"/search", "/search/upload"}:
        assert "get" in schema["paths"][p], p
    props = schema["components"]["schemas"]["SearchIn"]["properties"]
    assert {"text", "image", "like", "vector", "terms", "k", "offset", "target", "filters",
            "hybrid", "keyword_weight", "rerank"} <= set(props)
    # video, start and end: on video hits only
    assert set(schema["components"]["schemas"]["HitOut"]["properties"]) == HIT_KEYS | {
        "video", "start", "end"}
    assert served.http.get("/docs").status_code == 200


def test_page_is_served(served: Served) -> None:
    r = served.http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'name="q"' in r.text and 'name="file"' in r.text
