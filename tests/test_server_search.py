"""Searches over HTTP (``POST /search`` and ``/search/upload``): text, images as base64 or
multipart uploads, items and vectors, weighted terms, paging, filters, hybrid and re-ranking,
each checked against the library (``Collection.search``) or the stored vectors.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps
from server_fixtures import RARE_CAPTION, Served, b64, hits_of, ids


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
    _, vecs = served.col._catalog.vectors([i], served.col.dim)
    by_vec = hits_of(served.http.post("/search", json={"vector": vecs[0].tolist(), "k": 5}))
    assert ids(by_vec) == ids(hits)
    # scores are the cosine with the stored vectors
    _, all_vecs = served.col._catalog.vectors(ids(hits), served.col.dim)
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
    found, vecs = served.col._catalog.vectors(ids(away), served.col.dim)
    assert found.tolist() == ids(away)
    _, va = served.col._catalog.vectors([a], served.col.dim)
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


def test_json_dumps_of_hits_roundtrip(served: Served) -> None:
    """What the API returns parses back into the library's Hit type unchanged."""
    from retrieval import Hit

    hits = hits_of(served.http.post("/search", json={"text": "x", "target": "texts", "k": 5}))
    for h in hits:
        assert Hit(**json.loads(json.dumps(h))).to_dict() == h
