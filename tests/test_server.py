"""Tests of the HTTP service (``retrieval.interfaces.server.create_app``) and its Python client.

Most tests run in-process with FastAPI's ``TestClient`` on one collection (``served``) built
with the tiny test model: generated JPEGs in a folder and a subfolder, a large image for
thumbnails, an EXIF-rotated photo, a PNG with transparency, an exact copy, sidecar captions,
JSONL texts with metadata, and symbolic links pointing inside and outside the indexed folder.
Expected results come from the files the fixture wrote (sizes, names, captions), from the stored
vectors, or from the library (``Collection.search``) that the service wraps.

Tests that change the catalog or the files use their own small collection (``small``). The last
test starts ``retrieval serve`` as a real process and talks to it over TCP (marked slow).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import make_image, make_images, retrieval_exe
from fastapi.testclient import TestClient
from PIL import Image, ImageOps
from servers import ServerProcess

from retrieval import Collection
from retrieval.errors import QueryError
from retrieval.interfaces.client import Client, ServiceError
from retrieval.interfaces.server import create_app

HIT_KEYS = {"id", "score", "kind", "path", "text", "metadata"}
IMAGE_META_KEYS = {"width", "height", "taken_at", "camera_make", "camera_model", "size", "mtime"}
API_PATHS = {"/health", "/info", "/search", "/search/upload", "/items/{item_id}",
             "/items/{item_id}/image", "/items/{item_id}/thumbnail", "/session"}
RARE_CAPTION = "holiday snapshot zq7731 by the sea"
TOKEN = "s3cret"


# --- fixtures ----------------------------------------------------------------------------------

@dataclass
class Served:
    col: Collection
    base: Path
    root: Path  # the one indexed folder
    outside: Path  # real images outside it, reached through symbolic links
    ids: dict[str, int]  # image path relative to root -> item id
    texts: dict[str, int]  # external id of a JSONL text -> item id
    captions: dict[str, str]  # image path relative to root -> sidecar caption
    http: TestClient

    def file(self, name: str) -> Path:
        return self.root / name

    def name_of(self, item_id: int) -> str:
        return next(n for n, i in self.ids.items() if i == item_id)


def _rgba_png(path: Path) -> Path:
    img = Image.new("RGBA", (300, 300), (0, 0, 0, 0))
    img.paste((200, 30, 30, 255), (50, 50, 250, 250))
    img.save(path)
    return path


def _swap_for_link(path: Path, target: Path) -> None:
    """Replace a file or folder with a symbolic link to ``target``."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    os.symlink(target, path)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("server")
    root = base / "photos"
    make_images(root, 12)
    for i in range(4):
        make_image(root / "sub" / f"pic{i:03d}.jpg", seed=50 + i, size=(100, 50))
    make_image(root / "wide.jpg", seed=60, size=(600, 300))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    make_image(root / "rot.jpg", seed=61, size=(80, 40), exif=exif)
    _rgba_png(root / "alpha.png")
    shutil.copyfile(root / "img001.jpg", root / "copy.jpg")
    os.symlink(root / "img002.jpg", root / "inner_link.jpg")
    outside = base / "outside"
    make_image(outside / "secret.jpg", seed=99)
    make_image(outside / "dir" / "hidden.jpg", seed=98)
    # Indexed as a file and a folder inside, swapped for links leading outside afterwards
    # (indexing refuses such links; serving must refuse them too).
    make_image(root / "link.jpg", seed=97)
    make_image(root / "linkdir" / "hidden.jpg", seed=96)
    captions = {"img000.jpg": RARE_CAPTION, "img003.jpg": "a caption of the third picture"}
    for name, caption in captions.items():
        (root / name).with_suffix(".txt").write_text(caption + "\n")

    col = Collection(base / "col", encoder=encoder)
    summary = col.index([root], workers=0)
    assert (summary.added, summary.failed) == (23, 0), summary
    _swap_for_link(root / "link.jpg", outside / "secret.jpg")
    _swap_for_link(root / "linkdir", outside / "dir")
    records = [{"text": "a small wooden chair", "id": "sku-42", "brand": "acme", "price": 5},
               {"text": "catalogue entry brass lamp", "id": "prod-lamp", "brand": "zeta",
                "price": 30},
               "a plain sentence about the weather"]
    assert col.add_texts(records).added == 3

    items = col.catalog.get_items(col.catalog.vector_ids("image").tolist())
    ids = {os.path.relpath(it.path, root): i for i, it in items.items()}
    assert len(ids) == 23 and "linkdir/hidden.jpg" in ids and "link.jpg" in ids
    texts = col.catalog.get_items(col.catalog.vector_ids("text").tolist())
    by_ext = {it.external_id: i for i, it in texts.items() if it.external_id}
    yield Served(col, base, root, outside, ids, by_ext, captions,
                 TestClient(create_app(col), raise_server_exceptions=False))
    col.close()


@pytest.fixture
def small(tmp_path: Path, encoder: Any) -> Iterator[tuple[Collection, Path, TestClient]]:
    """A three-image collection of its own, for tests that change files or the catalog."""
    root = tmp_path / "photos"
    make_images(root, 3)
    col = Collection(tmp_path / "col", encoder=encoder)
    assert col.index([root], workers=0).added == 3
    yield col, root, TestClient(create_app(col), raise_server_exceptions=False)
    col.close()


def _ids_by_name(col: Collection, root: Path) -> dict[str, int]:
    items = col.catalog.get_items(col.catalog.vector_ids("image").tolist())
    return {os.path.relpath(it.path, root): i for i, it in items.items()}


# --- helpers -----------------------------------------------------------------------------------

def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def check_hit(h: dict[str, Any], scored: bool = True) -> None:
    assert set(h) == HIT_KEYS, h
    assert type(h["id"]) is int and h["id"] > 0
    assert h["kind"] in ("image", "text")
    assert isinstance(h["metadata"], dict)
    if scored:
        assert isinstance(h["score"], float) and np.isfinite(h["score"]), h
    else:
        assert h["score"] is None
    if h["kind"] == "image":
        assert isinstance(h["path"], str) and os.path.isabs(h["path"])
        assert set(h["metadata"]) >= IMAGE_META_KEYS
        assert h["text"] is None or isinstance(h["text"], str)
    else:
        assert isinstance(h["text"], str) and h["text"]


def hits_of(resp: httpx.Response, k: int | None = None) -> list[dict[str, Any]]:
    """The hits of a successful search response, after checking the response schema."""
    assert resp.status_code == 200, (resp.status_code, resp.text)
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"hits", "took_ms"}, body
    assert isinstance(body["took_ms"], float) and body["took_ms"] >= 0
    for h in body["hits"]:
        check_hit(h)
    if k is not None:
        assert len(body["hits"]) == k, body["hits"]
    return list(body["hits"])


def ids(hits: list[dict[str, Any]]) -> list[int]:
    return [h["id"] for h in hits]


def assert_error(resp: httpx.Response, *statuses: int, needle: str = "") -> str:
    """A 4xx (one of ``statuses``) with a one-line ``detail`` string; never a 500."""
    assert resp.status_code in statuses, (resp.status_code, resp.text)
    assert 400 <= resp.status_code < 500
    detail = resp.json()["detail"]
    assert isinstance(detail, str) and detail.strip() and "\n" not in detail, detail
    assert "Traceback" not in resp.text
    assert needle.lower() in detail.lower(), (needle, detail)
    return detail


def jpeg_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    img.load()
    return img.size


def thumb_files(col: Collection) -> dict[str, tuple[int, int]]:
    """Cached thumbnails: name -> (inode, mtime_ns)."""
    folder = col.path / "thumbnails"
    if not folder.exists():
        return {}
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir()}


# --- service endpoints and schema ----------------------------------------------------------------

def test_fixture_indexed_what_it_wrote(served: Served) -> None:
    assert served.col.catalog.counts() == {"image": 23, "text": 5}
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
    assert set(schema["components"]["schemas"]["HitOut"]["properties"]) == HIT_KEYS
    assert served.http.get("/docs").status_code == 200


def test_page_is_served(served: Served) -> None:
    r = served.http.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'name="q"' in r.text and 'name="file"' in r.text


# --- search ------------------------------------------------------------------------------------

def test_text_search_matches_the_library(served: Served) -> None:
    hits = hits_of(served.http.post("/search", json={"text": "a red circle", "k": 7}), k=7)
    assert all(h["kind"] == "image" for h in hits)
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    expected = served.col.search("a red circle", k=7)
    assert ids(hits) == [h.id for h in expected]
    assert scores == pytest.approx([h.score for h in expected], abs=1e-5)
    for h in hits:
        name = os.path.relpath(h["path"], served.root)
        assert served.ids[name] == h["id"]
        assert h["text"] == served.captions.get(name)


def test_default_k_is_ten(served: Served) -> None:
    hits_of(served.http.post("/search", json={"text": "anything"}), k=10)


def test_captions_come_with_image_hits(served: Served) -> None:
    i = served.ids["img000.jpg"]
    r = served.http.get(f"/items/{i}")
    assert r.status_code == 200
    h = r.json()
    check_hit(h, scored=False)
    assert h == {"id": i, "score": None, "kind": "image", "path": str(served.file("img000.jpg")),
                 "text": RARE_CAPTION, "metadata": h["metadata"]}
    assert (h["metadata"]["width"], h["metadata"]["height"]) == (64, 48)
    assert h["metadata"]["size"] == served.file("img000.jpg").stat().st_size


def test_item_metadata_after_exif_orientation(served: Served) -> None:
    h = served.http.get(f"/items/{served.ids['rot.jpg']}").json()
    assert (h["metadata"]["width"], h["metadata"]["height"]) == (40, 80)


def test_search_texts_target(served: Served) -> None:
    hits = hits_of(served.http.post("/search", json={"text": "lamp", "target": "texts",
                                                     "k": 10}), k=5)
    assert all(h["kind"] == "text" for h in hits)
    by_id = {h["id"]: h for h in hits}
    lamp = by_id[served.texts["prod-lamp"]]
    assert lamp["text"] == "catalogue entry brass lamp" and lamp["path"] is None
    assert lamp["metadata"] == {"brand": "zeta", "price": 30, "source": "texts",
                                "external_id": "prod-lamp", "score_kind": "similarity",
                                "match": {"source": "text", "text": lamp["text"], "words": []}}
    caption = next(h for h in hits if h["text"] == RARE_CAPTION)
    assert caption["metadata"]["caption_of"] == served.ids["img000.jpg"]
    assert caption["path"] == str(served.file("img000.jpg"))


@pytest.mark.parametrize("name", ["img005.jpg", "sub/pic002.jpg", "wide.jpg", "alpha.png"])
def test_base64_image_search_finds_the_image_itself(served: Served, name: str) -> None:
    hits = hits_of(served.http.post("/search", json={"image": b64(served.file(name)), "k": 3}))
    assert hits[0]["id"] == served.ids[name]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_base64_data_url(served: Served) -> None:
    url = "data:image/jpeg;base64," + b64(served.file("img007.jpg"))
    hits = hits_of(served.http.post("/search", json={"image": url, "k": 1}), k=1)
    assert hits[0]["id"] == served.ids["img007.jpg"]


def test_multipart_upload_search(served: Served) -> None:
    data = served.file("img005.jpg").read_bytes()
    r = served.http.post("/search/upload", data={"k": "4"},
                         files={"image": ("query.jpg", data, "image/jpeg")})
    hits = hits_of(r, k=4)
    assert hits[0]["id"] == served.ids["img005.jpg"]
    assert hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    # the same as the JSON base64 search
    same = hits_of(served.http.post("/search", json={"image": b64(served.file("img005.jpg")),
                                                     "k": 4}))
    assert ids(same) == ids(hits)


def test_multipart_upload_with_paging_filters_and_texts(served: Served) -> None:
    data = served.file("sub/pic001.jpg").read_bytes()
    files = {"image": ("q.jpg", data, "image/jpeg")}
    first = hits_of(served.http.post("/search/upload", data={"k": "2"}, files=files), k=2)
    second = hits_of(served.http.post("/search/upload", data={"k": "2", "offset": "2"},
                                      files=files), k=2)
    both = hits_of(served.http.post("/search/upload", data={"k": "4"}, files=files), k=4)
    assert ids(first) + ids(second) == ids(both)
    sub = hits_of(served.http.post("/search/upload",
                                   data={"k": "10", "filters": ["path ~ */sub/*", "width = 100"]},
                                   files=files))
    assert sorted(ids(sub)) == sorted(served.ids[f"sub/pic{i:03d}.jpg"] for i in range(4))
    assert sub[0]["id"] == served.ids["sub/pic001.jpg"]
    texts = hits_of(served.http.post("/search/upload", data={"k": "3", "target": "texts"},
                                     files=files), k=3)
    assert all(h["kind"] == "text" for h in texts)


def test_like_and_vector(served: Served) -> None:
    i = served.ids["img009.jpg"]
    hits = hits_of(served.http.post("/search", json={"like": i, "k": 5}), k=5)
    assert hits[0]["id"] == i and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    _, vecs = served.col.catalog.vectors([i], served.col.dim)
    by_vec = hits_of(served.http.post("/search", json={"vector": vecs[0].tolist(), "k": 5}))
    assert ids(by_vec) == ids(hits)
    # scores are the cosine with the stored vectors
    _, all_vecs = served.col.catalog.vectors(ids(hits), served.col.dim)
    assert [h["score"] for h in hits] == pytest.approx((all_vecs @ vecs[0]).tolist(), abs=1e-4)


def test_terms_are_the_same_as_shorthands(served: Served) -> None:
    http = served.http
    a, b = served.ids["img004.jpg"], served.ids["sub/pic003.jpg"]
    short = hits_of(http.post("/search", json={"text": "a blue square", "k": 6}))
    long = hits_of(http.post("/search", json={"terms": [{"kind": "text",
                                                        "value": "a blue square"}], "k": 6}))
    assert ids(short) == ids(long)
    img = hits_of(http.post("/search", json={"terms": [{"kind": "image",
                                                        "value": b64(served.file("img004.jpg"))}],
                                             "k": 3}))
    assert img[0]["id"] == a
    mixed = hits_of(http.post("/search", json={
        "terms": [{"kind": "like", "value": a}, {"kind": "like", "value": b, "weight": 2.0}],
        "k": 8}))
    from retrieval.search.query import Term

    expected = served.col.search(terms=[Term("like", a), Term("like", b, 2.0)], k=8)
    assert ids(mixed) == [h.id for h in expected]
    # a negative weight: scores are cosines with (text/|text| - 3 a/|a|), normalised
    away = hits_of(http.post("/search", json={
        "text": "a blue square", "terms": [{"kind": "like", "value": a, "weight": -3}],
        "k": 23}), k=23)
    t = served.col.encoder.embed_texts(["a blue square"])[0]
    found, vecs = served.col.catalog.vectors(ids(away), served.col.dim)
    assert found.tolist() == ids(away)
    _, va = served.col.catalog.vectors([a], served.col.dim)
    q = t / np.linalg.norm(t) - 3 * va[0] / np.linalg.norm(va[0])
    q /= np.linalg.norm(q)
    expected_scores = vecs @ q
    assert [h["score"] for h in away] == pytest.approx(expected_scores.tolist(), abs=1e-4)
    assert away[ids(away).index(a)]["score"] == pytest.approx(float(expected_scores.min()),
                                                               abs=1e-4)


@pytest.mark.parametrize("body", [
    {"text": "a photo"},
    {"like": 1},
    {"text": "pictures", "filters": ["width < 100"]},
    {"text": "entry", "target": "texts"},
    {"text": "holiday picture", "hybrid": True},
], ids=["text", "like", "filtered", "texts", "hybrid"])
def test_paging_is_consistent(served: Served, body: dict[str, Any]) -> None:
    http = served.http
    full = hits_of(http.post("/search", json={**body, "k": 12}))
    pages: list[dict[str, Any]] = []
    for offset in range(0, 12, 3):
        pages += hits_of(http.post("/search", json={**body, "k": 3, "offset": offset}))
    assert ids(pages) == ids(full)
    assert [h["score"] for h in pages] == pytest.approx([h["score"] for h in full], abs=1e-5)
    assert len(set(ids(full))) == len(full)
    # past the end, within the pool that hybrid pages come from (offset + k at most 500)
    assert hits_of(http.post("/search", json={**body, "k": 5, "offset": 495})) == []


def test_paging_past_the_end_gives_a_short_page(served: Served) -> None:
    hits = hits_of(served.http.post("/search", json={"text": "x", "k": 10, "offset": 20}))
    assert len(hits) == 3  # 23 images
    everything = hits_of(served.http.post("/search", json={"text": "x", "k": 1000}))
    assert len(everything) == 23 and ids(everything)[20:] == ids(hits)


def _widths(served: Served) -> dict[int, int]:
    """Displayed widths of the indexed images, computed with PIL from the files."""
    out = {}
    for name, i in served.ids.items():
        with Image.open(served.file(name)) as img:
            out[i] = ImageOps.exif_transpose(img).width
    return out


@pytest.mark.parametrize("filters, keep", [
    (["width >= 100"], lambda n, w: w >= 100),
    (["width < 64"], lambda n, w: w < 64),
    (["path ~ */sub/*"], lambda n, w: n.startswith("sub/")),
    (["path ~ *img00[0-4].jpg", "width = 64"], lambda n, w: n in {f"img00{i}.jpg"
                                                                  for i in range(5)}),
    (["caption = true"], lambda n, w: n in ("img000.jpg", "img003.jpg")),
    (["orientation = portrait"], lambda n, w: n == "rot.jpg"),
])
def test_filters(served: Served, filters: list[str], keep: Any) -> None:
    widths = _widths(served)
    expected = {i for n, i in served.ids.items() if keep(n, widths[i])}
    assert expected, "the filter should keep something"
    hits = hits_of(served.http.post("/search", json={"text": "a shape", "filters": filters,
                                                     "k": 100}))
    assert set(ids(hits)) == expected


def test_filters_on_text_metadata(served: Served) -> None:
    http = served.http
    cheap = hits_of(http.post("/search", json={"text": "item", "target": "texts",
                                               "filters": ["meta.price < 10"]}))
    assert ids(cheap) == [served.texts["sku-42"]]
    zeta = hits_of(http.post("/search", json={"text": "item", "target": "texts",
                                              "filters": ["brand = zeta"]}))
    assert ids(zeta) == [served.texts["prod-lamp"]]


def test_hybrid_finds_a_rare_caption_word(served: Served) -> None:
    hits = hits_of(served.http.post("/search", json={"text": "zq7731", "hybrid": True, "k": 3}))
    assert hits[0]["id"] == served.ids["img000.jpg"]
    assert hits[0]["metadata"]["scores"]["keyword"] > 0
    assert "vector" in hits[0]["metadata"]["scores"]
    texts = hits_of(served.http.post("/search", json={"text": "brass", "hybrid": True,
                                                      "keyword_weight": 5, "target": "texts"}))
    assert texts[0]["id"] == served.texts["prod-lamp"]


def test_rerank_dedup_folds_exact_copies(served: Served) -> None:
    original, copy = served.ids["img001.jpg"], served.ids["copy.jpg"]
    plain = hits_of(served.http.post("/search", json={"like": original, "k": 3}))
    assert set(ids(plain)[:2]) == {original, copy}
    hits = hits_of(served.http.post("/search", json={"like": original, "k": 3,
                                                     "rerank": "dedup:0.99"}), k=3)
    assert hits[0]["id"] in (original, copy)
    other = copy if hits[0]["id"] == original else original
    assert other not in ids(hits)
    assert other in hits[0]["metadata"]["duplicates"]
    assert "scores" in hits[0]["metadata"]


def test_rerank_exact_and_mmr(served: Served) -> None:
    body = {"text": "a green triangle", "k": 8}
    plain = hits_of(served.http.post("/search", json=body))
    exact = hits_of(served.http.post("/search", json={**body, "rerank": "exact"}))
    assert ids(exact) == ids(plain)  # a flat index is already exact
    mmr = hits_of(served.http.post("/search", json={**body, "rerank": "exact,mmr:0.5"}), k=8)
    assert mmr[0]["id"] == plain[0]["id"]
    assert all("scores" in h["metadata"] for h in mmr)


# --- errors ------------------------------------------------------------------------------------

JSON = {"content-type": "application/json"}

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
    ("bad target", "POST", "/search", {"json": {"text": "a", "target": "videos"}}, (422,),
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


# --- thumbnails and originals --------------------------------------------------------------------

def test_original_image_bytes(served: Served) -> None:
    for name in ("img004.jpg", "alpha.png", "rot.jpg", "inner_link.jpg"):
        r = served.http.get(f"/items/{served.ids[name]}/image")
        assert r.status_code == 200, (name, r.text)
        assert r.content == served.file(name).read_bytes()
        assert r.headers["content-type"] == ("image/png" if name.endswith(".png")
                                             else "image/jpeg")


@pytest.mark.parametrize("size", [128, 256, 512])
def test_thumbnail_sizes(served: Served, size: int) -> None:
    r = served.http.get(f"/items/{served.ids['wide.jpg']}/thumbnail", params={"size": size})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    w, h = jpeg_size(r.content)
    assert max(w, h) == size  # the original is 600 x 300
    assert abs(w / h - 2) < 0.05


def test_thumbnail_default_and_bucketed_sizes(served: Served) -> None:
    """Sizes are rounded up to 128/256/512 (so that few files are cached); never above 512
    and never upscaled."""
    wide = served.ids["wide.jpg"]
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail").content)) == 256
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail?size=100").content)) == 128
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail?size=1024").content)) == 512
    small = served.ids["img006.jpg"]
    assert jpeg_size(served.http.get(f"/items/{small}/thumbnail?size=128").content) == (64, 48)


def test_thumbnail_applies_exif_orientation(served: Served) -> None:
    with Image.open(served.file("rot.jpg")) as img:
        assert img.size == (80, 40) and img.getexif()[0x0112] == 6
    r = served.http.get(f"/items/{served.ids['rot.jpg']}/thumbnail", params={"size": 128})
    w, h = jpeg_size(r.content)
    assert h > w and (w, h) == (40, 80)


def test_thumbnail_of_transparent_png(served: Served) -> None:
    r = served.http.get(f"/items/{served.ids['alpha.png']}/thumbnail", params={"size": 128})
    assert jpeg_size(r.content) == (128, 128)
    img = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert img.getpixel((64, 64))[0] > 150  # the red square survived the RGBA -> RGB step


def test_thumbnail_is_cached_on_disk(served: Served) -> None:
    col, http = served.col, served.http
    shutil.rmtree(col.path / "thumbnails", ignore_errors=True)
    i = served.ids["img008.jpg"]
    first = http.get(f"/items/{i}/thumbnail", params={"size": 256})
    assert first.status_code == 200
    files = thumb_files(col)
    assert len(files) == 1 and next(iter(files)).startswith(f"{i}-")
    assert next(iter(files)).endswith(".jpg")
    time.sleep(0.05)
    second = http.get(f"/items/{i}/thumbnail", params={"size": 256})
    assert second.content == first.content
    assert thumb_files(col) == files  # same file: neither re-created nor touched
    assert "max-age" in second.headers.get("cache-control", "")
    # another size is another file; the first is kept
    http.get(f"/items/{i}/thumbnail", params={"size": 128})
    after = thumb_files(col)
    assert len(after) == 2 and set(files) <= set(after)


def test_a_changed_file_is_not_served_until_indexed_again(
        small: tuple[Collection, Path, TestClient]) -> None:
    col, root, http = small
    i = _ids_by_name(col, root)["img001.jpg"]
    before = http.get(f"/items/{i}/thumbnail?size=128")
    assert jpeg_size(before.content) == (64, 48)
    make_image(root / "img001.jpg", seed=77, size=(30, 60))  # replaced on disk, not re-indexed
    for url in (f"/items/{i}/thumbnail?size=128", f"/items/{i}/image"):
        assert_error(http.get(url), 409, needle="changed since it was indexed")
    col.index([root])
    after = http.get(f"/items/{i}/thumbnail?size=128")
    assert after.status_code == 200 and jpeg_size(after.content) == (30, 60)
    assert len(thumb_files(col)) == 2


def test_a_hard_link_to_another_file_is_not_served(
        small: tuple[Collection, Path, TestClient], tmp_path: Path) -> None:
    """Issue 11.2: an indexed image replaced by a hard link to any other file of the file
    system (here a secret beside the collection) passed the real-path check and was served."""
    col, root, http = small
    i = _ids_by_name(col, root)["img001.jpg"]
    secret = tmp_path / "secret.txt"
    secret.write_text("password: hunter2\n")
    (root / "img001.jpg").unlink()
    os.link(secret, root / "img001.jpg")
    r = http.get(f"/items/{i}/image")
    assert_error(r, 409, needle="changed since it was indexed")
    assert b"hunter2" not in r.content
    # Even with the indexed size and time copied onto it, a file that is no image is refused.
    item = col.catalog.get_items([i])[i]
    secret.write_bytes(b"x" * item.size)
    os.utime(secret, ns=(item.mtime_ns, item.mtime_ns))
    r = http.get(f"/items/{i}/image")
    assert_error(r, 409, needle="no longer a readable image")
    assert_error(http.get(f"/items/{i}/thumbnail"), 409, needle="no longer a readable image")


def test_missing_and_unreadable_files(small: tuple[Collection, Path, TestClient]) -> None:
    col, root, http = small
    names = _ids_by_name(col, root)
    (root / "img000.jpg").unlink()
    assert_error(http.get(f"/items/{names['img000.jpg']}/image"), 404, needle="gone")
    assert_error(http.get(f"/items/{names['img000.jpg']}/thumbnail"), 404, needle="gone")
    os.mkfifo(root / "img000.jpg")  # a named pipe in its place must not hang the server
    assert_error(http.get(f"/items/{names['img000.jpg']}/image"), 409, needle="regular file")
    img = http.get(f"/items/{names['img001.jpg']}/image")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content == (root / "img001.jpg").read_bytes()
    assert http.get(f"/items/{names['img001.jpg']}/thumbnail").status_code == 200


def test_concurrent_requests_for_one_thumbnail(small: tuple[Collection, Path, TestClient],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    col, root, http = small
    i = _ids_by_name(col, root)["img001.jpg"]
    replace = os.replace

    def slow_replace(src: Any, dst: Any) -> None:  # widens the window the race needs
        time.sleep(1.0)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    statuses: list[int] = []
    bodies: list[bytes] = []
    start = threading.Barrier(4)

    def fetch() -> None:
        start.wait(30)
        r = http.get(f"/items/{i}/thumbnail?size=128")
        statuses.append(r.status_code)
        bodies.append(r.content)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 4, statuses
    for body in bodies:
        assert jpeg_size(body) == (64, 48)


# --- authentication ----------------------------------------------------------------------------

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


# --- files outside the indexed folders ---------------------------------------------------------

def _no_leak(r: httpx.Response, *secrets: bytes) -> None:
    assert r.status_code != 200 or r.headers["content-type"].startswith("application/json"), r
    assert b"root:" not in r.content
    for s in secrets:
        assert s not in r.content


def test_a_link_leading_outside_is_not_served(served: Served) -> None:
    secret = (served.outside / "secret.jpg").read_bytes()
    for name in ("link.jpg", "linkdir/hidden.jpg"):
        i = served.ids[name]
        item = served.http.get(f"/items/{i}")
        assert item.status_code == 200 and item.json()["kind"] == "image"
        before = thumb_files(served.col)
        for url in (f"/items/{i}/image", f"/items/{i}/thumbnail",
                    f"/items/{i}/thumbnail?size=512"):
            r = served.http.get(url)
            assert_error(r, 403, needle="outside the indexed folders")
            _no_leak(r, secret[:200], (served.outside / "dir" / "hidden.jpg").read_bytes()[:200])
        assert thumb_files(served.col) == before  # no thumbnail made of the outside file
    # a link that stays inside the folder is served
    r = served.http.get(f"/items/{served.ids['inner_link.jpg']}/thumbnail")
    assert r.status_code == 200


@pytest.mark.parametrize("url", [
    "/items/..%2F..%2Fetc%2Fpasswd/image",
    "/items/1%2F..%2F2/image",
    "/items/%2e%2e/image",
    "/items/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/items/-1/image",
    "/items/1.5/image",
    "/items/1e3/image",
    "/items/0x1/image",
    "/items/%2Fetc%2Fpasswd/image",
    "/items/1/image%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "/items/1/thumbnail%2F..%2F..%2Fetc%2Fpasswd",
    "/items/1%00/image",
    "/items//etc/passwd",
    "/items/1/../../../../etc/passwd",
])
def test_traversal_in_the_url(served: Served, url: str) -> None:
    secret = (served.outside / "secret.jpg").read_bytes()
    r = served.http.get(url)
    assert r.status_code in (404, 422), (url, r.status_code, r.text[:200])
    _no_leak(r, secret[:200])
    assert isinstance(r.json()["detail"], str)


def _set_path(col: Collection, item_id: int, path: str) -> None:
    from sqlalchemy import update

    from retrieval.storage.schema import items

    with col.catalog.engine.begin() as conn:
        conn.execute(update(items).where(items.c.id == item_id).values(path=path))


def test_catalog_path_moved_outside(small: tuple[Collection, Path, TestClient],
                                    tmp_path: Path) -> None:
    col, root, http = small
    names = _ids_by_name(col, root)
    sibling = make_image(tmp_path / "photos-private" / "leak.jpg", seed=41)  # shares a prefix
    elsewhere = make_image(tmp_path / "elsewhere.jpg", seed=42)
    for target in ("/etc/passwd", str(sibling), str(elsewhere), str(root / ".." / "elsewhere.jpg"),
                   str(tmp_path / "col" / "catalog.sqlite")):
        _set_path(col, names["img001.jpg"], target)
        assert col.get(names["img001.jpg"]).path == target
        for url in (f"/items/{names['img001.jpg']}/image",
                    f"/items/{names['img001.jpg']}/thumbnail"):
            r = http.get(url)
            assert_error(r, 403, 404)
            _no_leak(r, sibling.read_bytes()[:200], elsewhere.read_bytes()[:200], b"SQLite")
    # a path under the folder that does not exist
    _set_path(col, names["img001.jpg"], str(root / "nope.jpg"))
    assert_error(http.get(f"/items/{names['img001.jpg']}/image"), 404)
    # the other items are unaffected
    assert http.get(f"/items/{names['img000.jpg']}/image").status_code == 200


def test_roots_are_only_what_was_indexed(encoder: Any, tmp_path: Path) -> None:
    folder = tmp_path / "a"
    make_images(folder, 2)
    lone = make_image(tmp_path / "b" / "lone.jpg", seed=7)
    neighbour = make_image(tmp_path / "b" / "neighbour.jpg", seed=8)
    col = Collection(tmp_path / "col", encoder=encoder)
    try:
        col.index([folder], workers=0)
        col.index([lone], workers=0)
        assert sorted(col.roots()) == sorted([str(folder), str(lone)])
        http = TestClient(create_app(col), raise_server_exceptions=False)
        names = {Path(it.path).name: i for i, it in col.catalog.get_items(
            col.catalog.vector_ids("image").tolist()).items()}
        assert http.get(f"/items/{names['lone.jpg']}/image").content == lone.read_bytes()
        # a file next to an indexed single file is not under a root
        _set_path(col, names["lone.jpg"], str(neighbour))
        assert_error(http.get(f"/items/{names['lone.jpg']}/image"), 403)
        assert http.get(f"/items/{names['img000.jpg']}/image").status_code == 200
    finally:
        col.close()


# --- the Python client -------------------------------------------------------------------------

def _client(app: Any, token: str | None = None) -> Client:
    """A :class:`Client` whose HTTP calls go to ``app`` in-process."""
    client = Client("http://testserver", token=token)
    headers = dict(client._http.headers)
    client._http.close()
    client._http = TestClient(app, base_url="http://testserver", headers=headers,
                              raise_server_exceptions=False)
    return client


def test_client_in_process(served: Served) -> None:
    with _client(create_app(served.col)) as client:
        assert client.health()["status"] == "ok"
        assert client.info()["counts"] == {"image": 23, "text": 5}
        hits = client.search("a red circle", k=5)
        assert [h.id for h in hits] == [h.id for h in served.col.search("a red circle", k=5)]
        assert hits[0].kind == "image" and hits[0].path and isinstance(hits[0].score, float)
        by_path = client.search(image=served.file("img005.jpg"), k=2)
        assert by_path[0].id == served.ids["img005.jpg"]
        by_bytes = client.search(image=served.file("img005.jpg").read_bytes(), k=2)
        assert [h.id for h in by_bytes] == [h.id for h in by_path]
        like = client.search(like=served.ids["img009.jpg"], k=1)
        assert like[0].id == served.ids["img009.jpg"]
        texts = client.search("lamp", target="texts", filters=["brand = zeta"])
        assert [h.id for h in texts] == [served.texts["prod-lamp"]]
        hybrid = client.search("zq7731", hybrid=True, k=1)
        assert hybrid[0].id == served.ids["img000.jpg"]
        deduped = client.search(like=served.ids["img001.jpg"], k=2, rerank="dedup:0.99")
        assert deduped[0].metadata["duplicates"]
        _, vec = served.col.catalog.vectors([served.ids["img009.jpg"]], served.col.dim)
        assert client.search(vector=np.asarray(vec[0]), k=1)[0].id == served.ids["img009.jpg"]
        page2 = client.search("a red circle", k=2, offset=2)
        assert [h.id for h in page2] == [h.id for h in hits[2:4]]
        item = client.item(served.ids["img000.jpg"])
        assert item.text == RARE_CAPTION and item.score is None
        assert jpeg_size(client.thumbnail(served.ids["wide.jpg"], size=128)) == (128, 64)
        with pytest.raises(ServiceError) as err:
            client.item(987654)
        assert err.value.status == 404 and "987654" in str(err.value)
        with pytest.raises(ServiceError) as err:
            client.search("x", filters=["colour = red"])
        assert err.value.status == 400 and "colour" in str(err.value)
        with pytest.raises(ServiceError) as err:
            client.thumbnail(served.ids["link.jpg"])
        assert err.value.status == 403
        with pytest.raises(QueryError, match=r"missing\.jpg"):
            client.search(image=served.base / "missing.jpg")


def test_client_token(served: Served) -> None:
    app = create_app(served.col, token=TOKEN)
    with _client(app) as anonymous, _client(app, token="wrong") as wrong, \
            _client(app, token=TOKEN) as right:
        for client in (anonymous, wrong):
            with pytest.raises(ServiceError) as err:
                client.search("x")
            assert err.value.status == 401
            with pytest.raises(ServiceError):
                client.health()
        assert right.health()["status"] == "ok"
        assert len(right.search("x", k=3)) == 3


# --- a real server process -----------------------------------------------------------------------

def raw_get(port: int, target: str, token: str) -> bytes:
    """Send a request line exactly as given (no client-side path normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}"
                  "\r\nConnection: close\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.slow
def test_real_server_process(encoder: Any, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_images(root, 6)
    make_image(root / "wide.jpg", seed=60, size=(600, 300))
    (root / "img002.txt").write_text("a caption with the word quokka\n")
    make_image(tmp_path / "outside" / "secret.jpg", seed=99)
    make_image(root / "link.jpg", seed=97)
    col_path = tmp_path / "col"
    with Collection(col_path, encoder=encoder) as col:
        assert col.index([root], workers=0).added == 8
        _swap_for_link(root / "link.jpg", tmp_path / "outside" / "secret.jpg")
        names = _ids_by_name(col, root)
        expected = [h.id for h in col.search("a red circle", k=4)]

    server = ServerProcess(col_path, tmp_path / "server.log", env={"RETRIEVAL_TOKEN": TOKEN})
    try:
        server.wait_ready()
        # a body declared larger than the limit is refused before it is read, token or not
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
            conn.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                         b"application/json\r\nContent-Length: 104857600\r\n\r\n{")
            assert conn.recv(4096).startswith(b"HTTP/1.1 413")
        # bound to 127.0.0.1: another Host name (a DNS rebinding page) gets a 400, token or not
        rebound = httpx.get(f"{server.url}/health", headers={
            "Host": f"evil.example:{server.port}", "Authorization": f"Bearer {TOKEN}"})
        assert rebound.status_code == 400 and "Host" in rebound.json()["detail"]
        assert rebound.headers["x-content-type-options"] == "nosniff"
        # without (or with a wrong) token: 401 everywhere but the page
        assert httpx.get(f"{server.url}/health").status_code == 401
        assert httpx.post(f"{server.url}/search", json={"text": "a"}).status_code == 401
        wrong = {"Authorization": "Bearer nope"}
        assert httpx.get(f"{server.url}/items/1/image", headers=wrong).status_code == 401
        page = httpx.get(f"{server.url}/")
        assert page.status_code == 200 and 'name="q"' in page.text
        with Client(server.url) as anonymous, pytest.raises(ServiceError) as err:
            anonymous.search("a red circle")
        assert err.value.status == 401

        with Client(server.url, token=TOKEN) as client:
            assert client.health() == {"status": "ok", "collection": str(col_path)}
            assert client.info()["counts"]["image"] == 8
            hits = client.search("a red circle", k=4)
            assert [h.id for h in hits] == expected
            first = client.search(image=root / "img004.jpg", k=3)
            assert first[0].id == names["img004.jpg"]
            assert first[0].score == pytest.approx(1.0, abs=1e-3)
            assert client.search("quokka", hybrid=True, k=1)[0].id == names["img002.jpg"]
            item = client.item(names["img002.jpg"])
            assert item.path == str(root / "img002.jpg")
            assert item.text == "a caption with the word quokka"
            assert jpeg_size(client.thumbnail(names["wide.jpg"], size=128)) == (128, 64)
            with pytest.raises(ServiceError) as err:
                client.thumbnail(names["link.jpg"])
            assert err.value.status == 403
            with pytest.raises(ServiceError) as err:
                client.item(987654)
            assert err.value.status == 404

        auth = {"Authorization": f"Bearer {TOKEN}"}
        upload = httpx.post(f"{server.url}/search/upload", headers=auth, data={"k": "2"},
                            files={"image": ("q.jpg", (root / "img003.jpg").read_bytes(),
                                             "image/jpeg")}, timeout=30)
        assert upload.status_code == 200
        assert upload.json()["hits"][0]["id"] == names["img003.jpg"]
        original = httpx.get(f"{server.url}/items/{names['img001.jpg']}/image", headers=auth)
        assert original.content == (root / "img001.jpg").read_bytes()
        # path tricks sent byte for byte, past any client-side normalisation
        secret = (tmp_path / "outside" / "secret.jpg").read_bytes()
        for target in ("/items/../../../../etc/passwd", "/items/1/../../../etc/passwd",
                       "/items/..%2F..%2F..%2Fetc%2Fpasswd/image", "/items/%2e%2e/image",
                       f"/items/{names['link.jpg']}/image", "/../../etc/passwd",
                       f"/items/{names['img001.jpg']}/image/../../../../etc/passwd"):
            response = raw_get(server.port, target, TOKEN)
            status = int(response.split(b" ", 2)[1])
            assert status in (400, 403, 404, 422), (target, response[:300])
            assert b"root:" not in response and secret[:200] not in response, target
        # a request the server cannot parse as JSON is a 422, and the process survives it
        bad = httpx.post(f"{server.url}/search", headers={**auth, **JSON}, content=b"{")
        assert bad.status_code == 422 and "JSON" in bad.json()["detail"]
        assert httpx.get(f"{server.url}/health", headers=auth).status_code == 200
        assert "Traceback" not in server.output()
    finally:
        server.stop()
    assert server.proc.returncode is not None


def test_server_command_help() -> None:
    out = subprocess.run([retrieval_exe(), "serve", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0
    for option in ("--host", "--port", "--token", "RETRIEVAL_TOKEN", "--max-upload",
                   "--allowed-hosts"):
        assert option in out.stdout, option


def test_json_dumps_of_hits_roundtrip(served: Served) -> None:
    """What the API returns parses back into the library's Hit type unchanged."""
    from retrieval import Hit

    hits = hits_of(served.http.post("/search", json={"text": "x", "target": "texts", "k": 5}))
    for h in hits:
        assert Hit(**json.loads(json.dumps(h))).to_dict() == h
