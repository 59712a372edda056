"""Query images kept for a while (``/uploads``): what the web page's address refers to when a
search was by an uploaded image. Kept by the SHA-256 of their bytes, served back as the type
their content decodes as, in a sandbox; only images; bounded in bytes, in number and in time."""

from __future__ import annotations

import hashlib
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_fixtures import TOKEN, Served, assert_error

from retrieval.interfaces.server import create_app
from retrieval.interfaces.uploads import UploadStore


def _png(seed: int, size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (seed * 40 % 256, 90, 200)).save(out, "PNG")
    return out.getvalue()


def test_an_upload_is_kept_and_served_back(served: Served) -> None:
    data = served.file("img004.jpg").read_bytes()
    r = served.http.post("/uploads", files={"image": ("q.jpg", data, "image/jpeg")})
    assert r.status_code == 201, r.text
    out = r.json()
    assert out["id"] == hashlib.sha256(data).hexdigest()
    assert out["media_type"] == "image/jpeg" and out["expires_in"] > 0
    back = served.http.get(f"/uploads/{out['id']}")
    assert back.status_code == 200 and back.content == data
    assert back.headers["content-type"] == "image/jpeg"
    assert "sandbox" in back.headers["content-security-policy"]
    assert back.headers["x-content-type-options"] == "nosniff"
    # searching by the kept bytes is searching by the image
    by_kept = served.http.post("/search/upload", files={"image": ("k", back.content)})
    by_file = served.http.post("/search/upload", files={"image": ("q.jpg", data)})
    assert [h["id"] for h in by_kept.json()["hits"]] == [h["id"] for h in by_file.json()["hits"]]


def test_the_type_comes_from_the_content(served: Served) -> None:
    """A PNG sent as a JPEG named .jpg is served back as what it is."""
    data = _png(1)
    r = served.http.post("/uploads", files={"image": ("x.jpg", data, "image/jpeg")})
    assert r.status_code == 201 and r.json()["media_type"] == "image/png"
    assert served.http.get(f"/uploads/{r.json()['id']}").headers["content-type"] == "image/png"


@pytest.mark.parametrize("data, needle", [
    (b"<html><script>alert(1)</script></html>", "not a recognised image format"),
    (b"", "not a recognised image format"),
])
def test_only_images_are_kept(served: Served, data: bytes, needle: str) -> None:
    r = served.http.post("/uploads", files={"image": ("x.png", data, "image/png")})
    assert_error(r, 422, needle=needle)
    assert_error(served.http.get(f"/uploads/{hashlib.sha256(data).hexdigest()}"), 404)


def test_limits_of_a_kept_upload(served: Served) -> None:
    http = TestClient(create_app(served.col, max_upload_bytes=1000, max_pixels=100 * 100),
                      raise_server_exceptions=False)
    big = _png(2, (400, 400)) + b"\0" * 1000
    assert_error(http.post("/uploads", files={"image": ("b.png", big)}), 413, needle="limit")
    wide = _png(3, (200, 60))
    assert len(wide) < 1000
    assert_error(http.post("/uploads", files={"image": ("w.png", wide)}), 422, needle="MP")


@pytest.mark.parametrize("bad", ["../../etc/passwd", "ABC", "a" * 63, "A" * 64, "g" * 64,
                                 "%2e%2e%2fcatalog.sqlite"])
def test_ids_are_checked(served: Served, bad: str) -> None:
    assert_error(served.http.get(f"/uploads/{bad}"), 404, 422)


def test_an_unknown_id_says_to_upload_again(served: Served) -> None:
    detail = assert_error(served.http.get(f"/uploads/{'0' * 64}"), 404)
    assert "upload it again" in detail


def test_uploads_need_the_token(served: Served) -> None:
    http = TestClient(create_app(served.col, token=TOKEN), raise_server_exceptions=False)
    data = _png(4)
    assert http.post("/uploads", files={"image": ("a.png", data)}).status_code == 401
    auth = {"Authorization": f"Bearer {TOKEN}"}
    key = http.post("/uploads", files={"image": ("a.png", data)}, headers=auth).json()["id"]
    assert http.get(f"/uploads/{key}").status_code == 401
    assert http.get(f"/uploads/{key}", headers=auth).content == data


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_store_drops_the_least_recently_used_first() -> None:
    store = UploadStore(max_bytes=30, max_images=3, keep_seconds=100, clock=Clock())
    a, b, c = (store.put(bytes([n]) * 10, "image/png") for n in range(3))
    assert store.get(a) is not None  # a is now the most recently used
    d = store.put(b"d" * 10, "image/png")  # over 30 bytes: b goes
    assert store.get(b) is None
    assert all(store.get(k) is not None for k in (a, c, d))
    assert len(store) == 3
    tiny = [store.put(bytes([n]), "image/png") for n in range(10, 13)]  # over 3 images
    assert len(store) == 3 and all(store.get(k) is not None for k in tiny)
    assert store.put(b"x" * 31, "image/png") not in {a, c, d}  # too big: not kept at all
    assert len(store) == 3


def test_the_store_forgets_a_day_after_the_last_use() -> None:
    clock = Clock()
    store = UploadStore(keep_seconds=100, clock=clock)
    a = store.put(b"a", "image/png")
    b = store.put(b"b", "image/png")
    clock.now = 90
    kept: Any = store.get(a)
    assert kept is not None and kept.data == b"a"  # used: kept 100 s from now
    clock.now = 150
    assert store.get(b) is None and store.get(a) is not None
    assert store.put(b"a", "image/png") == a == hashlib.sha256(b"a").hexdigest()
    clock.now = 1000
    assert store.get(a) is None and len(store) == 0
