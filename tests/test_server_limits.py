"""The HTTP service's limits: upload sizes, request bodies, decoded pixels, and searches that
run at once on several threads.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image
from fastapi.testclient import TestClient
from server_fixtures import Served, assert_error, hits_of

from retrieval.interfaces.server import create_app


def test_upload_size_limit(served: Served) -> None:
    http = TestClient(create_app(served.col, max_upload_bytes=1000),
                      raise_server_exceptions=False)
    big = served.file("wide.jpg").read_bytes()
    small = served.file("img000.jpg").read_bytes()
    assert len(big) > 1000 >= len(small)
    assert_error(http.post("/search/upload", files={"image": ("big.jpg", big, "image/jpeg")}),
                 400, 413, needle="larger")
    assert_error(http.post("/search", json={"image": base64.b64encode(big).decode()}),
                 400, 413, needle="larger")
    assert_error(http.post("/search", json={"terms": [
        {"kind": "image", "value": base64.b64encode(big).decode()}]}), 400, 413, needle="larger")
    ok = hits_of(http.post("/search/upload",
                           files={"image": ("small.jpg", small, "image/jpeg")}))
    assert ok[0]["id"] == served.ids["img000.jpg"]


def test_upload_size_limit_message_names_the_limit(served: Served) -> None:
    http = TestClient(create_app(served.col, max_upload_bytes=1000),
                      raise_server_exceptions=False)
    big = served.file("wide.jpg").read_bytes()
    detail = assert_error(http.post("/search/upload",
                                    files={"image": ("big.jpg", big, "image/jpeg")}), 400, 413)
    assert " 0 MB" not in detail, detail


def test_request_bodies_are_bounded(served: Served) -> None:
    """Issue 11.6: a 100 MB JSON body was read whole before being refused."""
    http = TestClient(create_app(served.col, max_body_bytes=50_000),
                      raise_server_exceptions=False)
    big = b'{"text": "' + b"x" * 60_000 + b'"}'
    assert_error(http.post("/search", content=big,
                           headers={"Content-Type": "application/json"}),
                 413, needle="larger than the limit of 48.8 KB")
    sent = []

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams in
        for i in range(10):
            sent.append(i)
            yield (b'{"text": "' if i == 0 else b"") + b"y" * 9_000
    assert_error(http.post("/search", content=chunks(),
                           headers={"Content-Type": "application/json"}), 413)
    upload = b"\xff" * 60_000
    assert_error(http.post("/search/upload", files={"image": ("a.jpg", upload, "image/jpeg")}),
                 413)
    assert hits_of(http.post("/search", json={"text": "a red circle"}))
    # the default leaves room for the largest upload, base64-encoded inside JSON
    default = TestClient(create_app(served.col, max_upload_bytes=1000),
                         raise_server_exceptions=False)
    assert default.post("/search", content=big, headers={
        "Content-Type": "application/json"}).status_code == 400  # too long a text, not 413


def test_pixel_limit(served: Served, tmp_path: Path) -> None:
    http = TestClient(create_app(served.col, max_pixels=1000), raise_server_exceptions=False)
    big = served.file("img000.jpg").read_bytes()  # 64 x 48 = 3072 pixels
    assert_error(http.post("/search/upload", files={"image": ("a.jpg", big, "image/jpeg")}),
                 400, 413, needle="limit")
    assert_error(http.post("/search", json={"image": base64.b64encode(big).decode()}),
                 400, 413, needle="limit")
    tiny = make_image(tmp_path / "tiny.png", seed=3, size=(30, 30))  # 900 pixels
    hits_of(http.post("/search/upload", files={"image": ("t.png", tiny.read_bytes(),
                                                         "image/png")}))


def test_searches_run_concurrently(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11.6: searches queued on one engine thread, so throughput could not grow with
    clients. Two searches that each wait for the other finish only if both run at once."""
    http = TestClient(create_app(served.col, search_threads=2), raise_server_exceptions=False)
    meet = threading.Barrier(2, timeout=20)
    run = served.col.run

    def rendezvous(query: Any, **budget: Any) -> Any:
        meet.wait()
        return run(query, **budget)

    monkeypatch.setattr(served.col, "run", rendezvous)
    answers: list[int] = []

    def search(text: str) -> None:
        answers.append(http.post("/search", json={"text": text}).status_code)

    threads = [threading.Thread(target=search, args=(t,)) for t in ("a red circle", "a cat")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [200, 200]
