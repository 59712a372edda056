"""Tests of the query layer: weighted terms, filters and filter planning, keyword fusion,
re-ranking stages, paging, and the image-to-text / tagging / duplicate helpers.

Most tests share one collection (``data``) of generated images in two folders with different
sizes, sidecar captions, an EXIF-dated photo, an exact copy of an image, JSONL texts with
metadata and zero-shot tags. Expected results are computed independently in Python from what
the fixture generated (sizes, folders, captions, file times) and from the stored vectors.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import make_image
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from models import write_tiny_model
from PIL import Image

from indexers import build_index
from retrieval import Collection, QueryError
from retrieval.search import embedding
from retrieval.search.builder import validate
from retrieval.search.embedding import embed_image
from retrieval.search.filters import (
    FIELDS,
    Filter,
    compile_filters,
    parse_date,
    parse_where,
    path_filter,
)
from retrieval.search.planning import filtered_search, fuse
from retrieval.search.query import Hybrid, Query, Term, combine, parse_weighted
from retrieval.search.rerank import (
    MMR,
    Candidate,
    Dedup,
    Exact,
    ModelRerank,
    RerankContext,
    parse_pipeline,
)

PROPERTY = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def unit(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


# --- parse_weighted and combine ----------------------------------------------------------------

@pytest.mark.parametrize("arg, expected", [
    ("2:red car", (2.0, "red car")),
    ("-0.5:x", (-0.5, "x")),
    ("+1.5: spaced ", (1.5, "spaced")),
    (".25:y", (0.25, "y")),
    ("note: hi", (1.0, "note: hi")),
    ("3:", (1.0, "3:")),
    ("3:   ", (1.0, "3:   ")),
    ("plain words", (1.0, "plain words")),
    ("12:30 meeting", (12.0, "30 meeting")),
])
def test_parse_weighted(arg: str, expected: tuple[float, str]) -> None:
    assert parse_weighted(arg) == expected


@given(st.integers(-9999, 9999), st.text(min_size=1, max_size=20).filter(lambda s: s.strip()))
@settings(max_examples=60, deadline=None, database=None)
def test_parse_weighted_roundtrip(hundredths: int, text: str) -> None:
    weight = hundredths / 100
    assert parse_weighted(f"{weight:.2f}:{text}") == (pytest.approx(weight), text.strip())


def _vectors(seed: int, n: int, dim: int = 8) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=dim).astype(np.float32) * rng.uniform(0.1, 10) for _ in range(n)]


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 5),
       weights=st.lists(st.floats(0.05, 10), min_size=5, max_size=5),
       scale=st.floats(0.01, 100))
@settings(max_examples=60, deadline=None, database=None)
def test_combine_unit_norm_and_relative_weights(seed: int, n: int, weights: list[float],
                                                scale: float) -> None:
    vecs, w = _vectors(seed, n), weights[:n]
    q = combine(vecs, w)
    assert q.dtype == np.float32
    assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)
    scaled = combine(vecs, [scale * x for x in w])
    np.testing.assert_allclose(scaled, q, atol=1e-5)
    # each term is normalised first: the embeddings' lengths do not matter either
    rescaled = combine([v * (i + 3.7) for i, v in enumerate(vecs)], w)
    np.testing.assert_allclose(rescaled, q, atol=1e-5)


@given(seed=st.integers(0, 2**32 - 1), w=st.floats(0.05, 5))
@settings(max_examples=60, deadline=None, database=None)
def test_negative_weight_moves_away(seed: int, w: float) -> None:
    a, b = _vectors(seed, 2)
    ua, ub = unit(a), unit(b)
    assume(abs(float(ua @ ub)) < 0.98)
    alone = combine([a], [1.0])
    pushed = combine([a, b], [1.0, -w])
    assert float(pushed @ ub) < float(alone @ ub) - 1e-4
    pulled = combine([a, b], [1.0, w])
    assert float(pulled @ ub) > float(alone @ ub) + 1e-4


def test_combine_errors() -> None:
    v = np.array([1.0, 2.0, 3.0], np.float32)
    with pytest.raises(QueryError, match="cancel"):
        combine([v, v], [1.0, -1.0])
    with pytest.raises(QueryError, match="cancel"):
        combine([v, 5 * v], [2.0, -2.0])  # normalised first: cancels despite the lengths
    with pytest.raises(QueryError, match="zero or invalid"):
        combine([v, np.zeros(3, np.float32)], [1.0, 1.0])
    with pytest.raises(QueryError, match="zero or invalid"):
        combine([np.array([np.nan, 1, 1], np.float32)], [1.0])
    np.testing.assert_allclose(combine([v], [1.0]), unit(v), atol=1e-6)


@pytest.mark.parametrize("query, message", [
    (Query([]), "nothing to search for"),
    (Query([Term("text", "x")], k=0), "k must be"),
    (Query([Term("text", "x")], k=-3), "k must be"),
    (Query([Term("text", "x")], k=10_001), "k must be"),
    (Query([Term("text", "x")], k=True), "k must be"),
    (Query([Term("text", "x")], target="videos"), "unknown target"),
    (Query([Term("text", "x")], offset=-1), "offset"),
    (Query([Term("text", "x", float("nan"))]), "finite"),
    (Query([Term("text", "   ")]), "empty text"),
])
def test_query_validate_errors(query: Query, message: str) -> None:
    with pytest.raises(QueryError, match=message):
        validate(query)


def test_query_validate_accepts_and_keyword_text() -> None:
    q = Query([Term("text", "red car", 2.0), Term("text", "people", -1.0),
               Term("vector", [1.0, 0.0])], target="texts", k=10_000, offset=5)
    validate(q)
    assert q.target == "text"  # the plural is accepted and normalised
    assert q.keyword_text() == "red car"  # only positive text terms are keywords


# --- filters: parsing -------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("width >= 1024", Filter("width", ">=", "1024")),
    ("width>=1024", Filter("width", ">=", "1024")),
    ("  Height < 5 ", Filter("height", "<", "5")),
    ("meta.brand = 'acme'", Filter("meta.brand", "=", "acme")),
    ('meta.Brand != "two words"', Filter("meta.Brand", "!=", "two words")),
    ("path ~ */2021/*.jpg", Filter("path", "~", "*/2021/*.jpg")),
    ("camera ~ *canon*", Filter("camera", "~", "*canon*")),
    ("widht > 3", Filter("widht", ">", "3")),
    ("tag = a=b", Filter("tag", "=", "a=b")),
    ("width == 3", Filter("width", "=", "3")),
])
def test_parse_where(text: str, expected: Filter) -> None:
    assert parse_where(text) == expected


@pytest.mark.parametrize("text", ["garbage", "width >=", "width >=   ", "= 3", "1width = 3",
                                  "", "width 1024"])
def test_parse_where_malformed(text: str) -> None:
    with pytest.raises(QueryError, match="expected FIELD OP VALUE"):
        parse_where(text)


@pytest.mark.parametrize("text, hint", [("width <> 3", "'<>'"), ("width => 3", "'=>'"),
                                        ("width =< 3", "'=<'")])
def test_parse_where_unknown_operator(text: str, hint: str) -> None:
    """Issue 11.9: 'width <> 3' said "width needs a number, got '> 3'"."""
    with pytest.raises(QueryError, match=f"unknown operator {hint}") as err:
        parse_where(text)
    if "<>" in text:
        assert "!= means not equal" in str(err.value)


def _fake_catalog(keys: set[str]) -> Any:
    return SimpleNamespace(metadata_keys=lambda: keys)


def test_compile_filters_unknown_field_names_known_fields() -> None:
    with pytest.raises(QueryError) as err:
        compile_filters([parse_where("widht > 3")], _fake_catalog({"brand", "price"}), "image")
    msg = str(err.value)
    assert "'widht'" in msg
    for name in (*FIELDS, "meta.KEY", "brand", "price"):
        assert name in msg, (name, msg)
    # a bare metadata key that exists is accepted, as is any meta.KEY
    assert len(compile_filters([parse_where("brand = acme"), parse_where("meta.other = 1"),
                                parse_where("width >= 3")], _fake_catalog({"brand"}), "text")) == 3


@pytest.mark.parametrize("text, message", [
    ("width >= abc", "needs a number"),
    ("width ~ 3", "numbers compare"),
    ("orientation = round", "orientation = landscape"),
    ("orientation < landscape", "orientation = landscape"),
    ("tag ~ x*", "tag takes"),
    ("caption = maybe", "caption = true or false"),
    ("caption < true", "caption = true or false"),
    ("date ~ 2020", "dates compare"),
    ("date >= 2021-13-01", "malformed date"),
    ("path < /x", "path takes"),
    ("camera > x", "camera takes"),
    (Filter("meta.a$b", "=", "1"), "metadata keys"),
    (Filter("width", "<>", "1"), "unknown operator"),
])
def test_compile_filters_bad_values(text: str | Filter, message: str) -> None:
    f = parse_where(text) if isinstance(text, str) else text
    with pytest.raises(QueryError, match=message):
        compile_filters([f], _fake_catalog(set()), "image")


@pytest.mark.parametrize("text, expected", [
    ("2021", dt.datetime(2021, 1, 1)),
    ("2021-03", dt.datetime(2021, 3, 1)),
    ("2021-03-04", dt.datetime(2021, 3, 4)),
    (" 2021-03-04T05:06 ", dt.datetime(2021, 3, 4, 5, 6)),
    ("2021-03-04 05:06", dt.datetime(2021, 3, 4, 5, 6)),
    ("2021-03-04T05:06:07", dt.datetime(2021, 3, 4, 5, 6, 7)),
    ("2021-03-04 05:06:07", dt.datetime(2021, 3, 4, 5, 6, 7)),
])
def test_parse_date(text: str, expected: dt.datetime) -> None:
    assert parse_date(text) == expected


@pytest.mark.parametrize("text", ["2021-13-01", "2021-02-30", "yesterday", "21-01-01", ""])
def test_parse_date_malformed_names_option(text: str) -> None:
    with pytest.raises(QueryError) as err:
        parse_date(text, "--after")
    assert "--after" in str(err.value) and "malformed date" in str(err.value)


def test_path_filter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert path_filter("*/sub/*") == Filter("path", "~", "*/sub/*")
    assert path_filter("/abs/*.jpg") == Filter("path", "~", "/abs/*.jpg")
    rel = path_filter("sub/*.jpg")
    assert rel == Filter("path", "~", str(tmp_path / "sub") + "/*.jpg")
    plain = path_filter("sub/")  # no wildcards: that file, or everything under that folder
    assert plain == Filter("path", "under", str(tmp_path / "sub"))


# --- the shared collection ---------------------------------------------------------------------

TAG_LABELS = ["red", "green", "blue", "dog", "tree"]
CAPTION_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
TEXT_WORDS = ["kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo",
              "sierra", "tango", "uniform"]


@dataclass
class Img:
    path: Path
    folder: str
    width: int
    height: int
    caption: str | None = None
    taken: dt.datetime | None = None
    camera: str | None = None
    id: int = 0
    size: int = 0
    mtime: dt.datetime = dt.datetime(1970, 1, 1)
    tags: set[str] = field(default_factory=set)

    @property
    def date(self) -> dt.datetime:
        return self.taken or self.mtime

    @property
    def orientation(self) -> str:
        return ("landscape" if self.width > self.height else
                "portrait" if self.width < self.height else "square")


@dataclass
class Data:
    col: Collection
    root: Path
    images: list[Img]
    by_name: dict[str, Img]
    texts: dict[str, dict[str, Any]]  # external id -> the JSONL record (with "item")
    tag_result: dict[str, int]

    def vector_of(self, item_id: int) -> np.ndarray:
        ids, vecs = self.col.catalog.vectors([item_id], self.col.dim)
        assert list(ids) == [item_id]
        return vecs[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Any:
    root = tmp_path_factory.mktemp("query") / "photos"
    images: list[Img] = []
    for i in range(30):
        w, h = (80, 40) if i % 2 == 0 else (100, 50)
        images.append(Img(make_image(root / "wide" / f"img{i:03d}.jpg", seed=i, size=(w, h)),
                          "wide", w, h))
    for i in range(30):
        w, h = (48, 48) if i % 3 == 0 else (40, 72)
        images.append(Img(make_image(root / "tall" / f"img{i:03d}.jpg", seed=100 + i,
                                     size=(w, h)), "tall", w, h))
    images.append(Img(make_image(root / "tall" / "IMG_2041.jpg", seed=500), "tall", 64, 48))
    exif = Image.Exif()
    exif[0x010F] = "Acme"
    exif[0x0110] = "Snap 3000"
    exif.get_ifd(0x8769)[0x9003] = "2021:05:04 10:11:12"
    photo = make_image(root / "tall" / "exif_photo.jpg", seed=501, size=(60, 40), exif=exif)
    images.append(Img(photo, "tall", 60, 40, taken=dt.datetime(2021, 5, 4, 10, 11, 12),
                      camera="acme snap 3000"))
    copy = root / "tall" / "copy_of_img000.jpg"
    shutil.copyfile(root / "wide" / "img000.jpg", copy)
    images.append(Img(copy, "tall", 80, 40))
    # sidecar captions on every fourth image, and one with a rare token
    for n, img in enumerate(images[:60:4]):
        img.caption = f"caption for the {img.folder} picture {CAPTION_WORDS[n % 8]}"
    images[4].caption = "holiday snapshot zq7731 by the sea"
    for img in images:
        if img.caption:
            img.path.with_suffix(".txt").write_text(img.caption + "\n")

    col = Collection(root.parent / "col", encoder=encoder)
    summary = col.index([root], workers=0)
    assert (summary.added, summary.failed) == (len(images), 0)
    records = [{"text": "a small wooden chair", "id": "sku-42", "brand": "acme", "price": 5}]
    brands = ["acme", "zeta", "omni"]
    for i, word in enumerate(TEXT_WORDS):
        records.append({"text": f"catalogue entry {word} lamp", "id": f"prod-{word}",
                        "brand": brands[i % 3], "price": 10 * (i + 1)})
    assert col.add_texts(records).added == len(records)
    tag_result = col.tag(TAG_LABELS)

    by_path = {str(img.path): img for img in images}
    items = col.catalog.get_items(col.catalog.vector_ids("image").tolist())
    assert len(items) == len(images)
    for item_id, item in items.items():
        img = by_path[item.path]
        img.id = item_id
        st_ = os.stat(img.path)
        img.size = st_.st_size
        img.mtime = dt.datetime.fromtimestamp(st_.st_mtime_ns / 1e9, dt.timezone.utc).replace(
            tzinfo=None)
    tags = col.catalog.tags_of(items)
    for img in images:
        img.tags = {t for t, _ in tags.get(img.id, [])}
    text_items = col.catalog.get_items(col.catalog.vector_ids("text").tolist())
    by_ext = {it.external_id: i for i, it in text_items.items() if it.external_id}
    texts = {r["id"]: dict(r, item=by_ext[r["id"]]) for r in records}
    by_name = {f"{img.folder}/{img.path.name}": img for img in images}
    yield Data(col, root, images, by_name, texts, tag_result)
    col.close()


def test_fixture_catalog_matches_generated(data: Data) -> None:
    """The independent bookkeeping agrees with what the catalog stored."""
    items = data.col.catalog.get_items(img.id for img in data.images)
    for img in data.images:
        it = items[img.id]
        assert (it.width, it.height, it.size) == (img.width, img.height, img.size), img.path
        assert it.taken_at == img.taken
    assert sum(img.caption is not None for img in data.images) == 15
    assert data.col.catalog.counts() == {"image": 63, "text": 15 + 12}
    assert any(img.tags for img in data.images)


def _image_candidates(data: Data) -> list[tuple[str, Callable[[Img], bool]]]:
    root = data.root
    day = min(img.mtime for img in data.images).strftime("%Y-%m-%d")
    start = dt.datetime.strptime(day, "%Y-%m-%d")
    sizes = sorted(img.size for img in data.images)
    median = sizes[len(sizes) // 2]
    present = sorted({t for img in data.images for t in img.tags})
    cands: list[tuple[str, Callable[[Img], bool]]] = [
        ("width >= 80", lambda i: i.width >= 80),
        ("width < 60", lambda i: i.width < 60),
        ("width = 100", lambda i: i.width == 100),
        ("width != 80", lambda i: i.width != 80),
        ("height > 45", lambda i: i.height > 45),
        ("height <= 48", lambda i: i.height <= 48),
        (f"size >= {median}", lambda i: i.size >= median),
        (f"size < {median}", lambda i: i.size < median),
        (f"path ~ {root}/wide/*", lambda i: i.folder == "wide"),
        ("path ~ */tall/*", lambda i: i.folder == "tall"),
        ("path ~ */tall/img0[0-1]?.jpg", lambda i: i.folder == "tall" and
         i.path.name[:5] in ("img00", "img01")),
        ("path ~ *IMG_*", lambda i: "IMG_" in i.path.name),
        (f"path = {root}/wide/img004.jpg", lambda i: i.path == root / "wide" / "img004.jpg"),
        ("caption = true", lambda i: i.caption is not None),
        ("caption = false", lambda i: i.caption is None),
        ("caption != true", lambda i: i.caption is None),
        ("orientation = landscape", lambda i: i.orientation == "landscape"),
        ("orientation = portrait", lambda i: i.orientation == "portrait"),
        ("orientation = square", lambda i: i.orientation == "square"),
        ("orientation != square", lambda i: i.orientation != "square"),
        ("date >= 2000-01-01", lambda i: i.date >= dt.datetime(2000, 1, 1)),
        ("date < 2000-01-01", lambda i: i.date < dt.datetime(2000, 1, 1)),
        ("date < 2022", lambda i: i.date < dt.datetime(2022, 1, 1)),
        ("date = 2021-05", lambda i: i.date.strftime("%Y-%m") == "2021-05"),
        (f"date = {day}", lambda i: i.date.strftime("%Y-%m-%d") == day),
        (f"mtime >= {day}", lambda i: i.mtime >= start),
        ("taken >= 2021", lambda i: i.taken is not None),
        ("camera ~ *acme*", lambda i: i.camera is not None),
        ("camera = snap 3000", lambda i: i.camera is not None),
    ]
    for t in present[:3]:
        cands.append((f"tag = {t}", lambda i, t=t: t in i.tags))
        cands.append((f"tag != {t}", lambda i, t=t: t not in i.tags))
    return cands


def _assert_ranking(hits: list[Any], expected: list[tuple[int, float]], k: int) -> None:
    """``hits`` are the exact top k of ``expected`` (all (id, score) pairs that match), ties
    aside: same length, same scores, and each id is one of those with its score."""
    expected = sorted(expected, key=lambda p: -p[1])
    assert len(hits) == min(k, len(expected)), (len(hits), k, len(expected))
    got_ids = [h.id for h in hits]
    assert len(set(got_ids)) == len(got_ids), "duplicate ids in results"
    score_of = dict(expected)
    for h, (_, want) in zip(hits, expected, strict=False):
        assert h.id in score_of, f"{h.id} does not match the filters"
        assert h.score == pytest.approx(want, abs=1e-4)
        assert score_of[h.id] == pytest.approx(want, abs=1e-4), "wrong item at this rank"


@given(picks=st.lists(st.integers(0, 200), min_size=0, max_size=3, unique=True),
       k=st.integers(1, 70), seed=st.integers(0, 2**32 - 1))
@PROPERTY
def test_filtered_search_equals_brute_force(data: Data, picks: list[int], k: int,
                                            seed: int) -> None:
    cands = _image_candidates(data)
    chosen = list({cands[p % len(cands)][0]: cands[p % len(cands)] for p in picks}.values())
    q = unit(np.random.default_rng(seed).normal(size=data.col.dim))
    hits = data.col.search(vector=q, k=k, filters=[f for f, _ in chosen])
    match = [img for img in data.images if all(pred(img) for _, pred in chosen)]
    ids, vecs = data.col.catalog.vectors([img.id for img in match], data.col.dim)
    expected = list(zip(ids.tolist(), (vecs @ q).tolist(), strict=True))
    _assert_ranking(hits, expected, k)
    assert all(h.kind == "image" for h in hits)


def test_each_filter_alone_equals_brute_force(data: Data) -> None:
    """Every candidate filter on its own, with a k above and below its match count."""
    q = unit(np.random.default_rng(11).normal(size=data.col.dim))
    for f, pred in _image_candidates(data):
        match = [img for img in data.images if pred(img)]
        ids, vecs = data.col.catalog.vectors([img.id for img in match], data.col.dim)
        expected = list(zip(ids.tolist(), (vecs @ q).tolist(), strict=True))
        for k in (3, 100):
            _assert_ranking(data.col.search(vector=q, k=k, filters=[f]), expected, k)


def test_filters_select_expected_counts(data: Data) -> None:
    """Spot checks with known sizes, so the property test's oracle is not trivially empty."""
    q = unit(np.ones(data.col.dim))
    counts = {f: len(data.col.search(vector=q, k=100, filters=[f])) for f in (
        "width >= 80", "orientation = portrait", "orientation = square", "caption = true",
        "taken >= 2021", "date < 2000", "path ~ */wide/*")}
    assert counts == {"width >= 80": 31, "orientation = portrait": 20,
                      "orientation = square": 10, "caption = true": 15, "taken >= 2021": 1,
                      "date < 2000": 0, "path ~ */wide/*": 30}


def test_text_filters_on_metadata(data: Data) -> None:
    q = unit(np.ones(data.col.dim))
    cases: list[tuple[list[str], Callable[[dict[str, Any]], bool]]] = [
        (["meta.brand = acme"], lambda r: r["brand"] == "acme"),
        (["brand = acme"], lambda r: r["brand"] == "acme"),
        (["price > 50"], lambda r: r["price"] > 50),
        (["meta.price <= 30", "brand = zeta"], lambda r: r["price"] <= 30 and r["brand"] == "zeta"),
        (["price = 5"], lambda r: r["price"] == 5),
        (["meta.brand ~ *e*"], lambda r: "e" in r["brand"]),
        (["meta.brand != acme"], lambda r: r["brand"] != "acme"),
    ]
    for filters, pred in cases:
        hits = data.col.search(vector=q, k=100, target="texts", filters=filters)
        want = {r["item"] for r in data.texts.values() if pred(r)}
        assert want, filters
        assert {h.id for h in hits} == want, filters
    # captions are found by their image's path
    hits = data.col.search(vector=q, k=100, target="texts", filters=["path ~ */wide/*"])
    assert {h.text for h in hits} == {img.caption for img in data.images
                                      if img.folder == "wide" and img.caption}


def test_meta_numeric_not_equal(data: Data) -> None:
    q = unit(np.ones(data.col.dim))
    hits = data.col.search(vector=q, k=100, target="texts", filters=["meta.price != 5"])
    assert data.texts["sku-42"]["item"] not in {h.id for h in hits}


def test_path_filter_on_collection(data: Data) -> None:
    q = unit(np.ones(data.col.dim))
    wide = {img.id for img in data.images if img.folder == "wide"}
    for f in (path_filter(str(data.root / "wide")), path_filter(str(data.root / "wide") + "/"),
              path_filter(f"{data.root}/wide/*"), path_filter("*/wide/*")):
        assert {h.id for h in data.col.search(vector=q, k=100, filters=[f])} == wide, f


def test_path_filter_folder_excludes_sibling_prefix(tmp_path: Path, encoder: Any) -> None:
    make_image(tmp_path / "pics" / "sub" / "a.jpg", seed=1)
    make_image(tmp_path / "pics" / "subway" / "b.jpg", seed=2)
    with Collection(tmp_path / "col", encoder=encoder) as col:
        col.index([tmp_path / "pics"], workers=0)
        hits = col.search(vector=unit(np.ones(col.dim)), k=10,
                          filters=[path_filter(str(tmp_path / "pics" / "sub"))])
        assert [h.path for h in hits] == [str(tmp_path / "pics" / "sub" / "a.jpg")]


def test_unknown_field_on_collection(data: Data) -> None:
    with pytest.raises(QueryError, match=r"unknown filter field 'widht'.*width.*brand, price"):
        data.col.search("x", filters=["widht > 3"])


# --- filter planning ---------------------------------------------------------------------------

def _planner_index(n: int, dim: int, seed: int = 0) -> tuple[Any, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = 1000 + 3 * np.arange(n, dtype=np.int64)  # ids are not row numbers
    index = build_index(dim, "flat")
    index.add(ids, vecs)
    return index, ids, vecs


def _exact(ids: np.ndarray, vecs: np.ndarray, q: np.ndarray, allow: np.ndarray, k: int
           ) -> list[tuple[int, float]]:
    mask = np.isin(ids, allow)
    scores = vecs[mask] @ q
    order = np.argsort(-scores, kind="stable")[:k]
    return [(int(ids[mask][i]), float(scores[i])) for i in order]


def _same(pairs: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in pairs] == [i for i, _ in want]
    np.testing.assert_allclose([s for _, s in pairs], [s for _, s in want], atol=1e-5)


def test_planner_branches() -> None:
    index, ids, vecs = _planner_index(400, 16)
    rng = np.random.default_rng(1)
    q = unit(rng.normal(size=16))
    selective = rng.choice(ids, 20, replace=False)
    pairs, plan = filtered_search(index, q, 10, selective)
    assert plan == "selector"
    _same(pairs, _exact(ids, vecs, q, selective, 10))

    broad = rng.choice(ids, 300, replace=False)
    pairs, plan = filtered_search(index, q, 10, broad)
    assert plan == "overfetch"
    _same(pairs, _exact(ids, vecs, q, broad, 10))

    # broad, but the best unfiltered results are all excluded: the pool must grow
    order = np.argsort(-(vecs @ q))
    allow = ids[order[80:]]
    pairs, plan = filtered_search(index, q, 10, allow)
    assert plan == "overfetch"
    _same(pairs, _exact(ids, vecs, q, allow, 10))
    # fewer matches than k: all of them
    few_but_broad = ids[order[-120:]]
    pairs, plan = filtered_search(index, q, 200, few_but_broad)
    assert plan == "overfetch" and len(pairs) == 120
    _same(pairs, _exact(ids, vecs, q, few_but_broad, 200))

    pairs, plan = filtered_search(index, q, 5, None)
    assert plan == "plain"
    _same(pairs, _exact(ids, vecs, q, ids, 5))
    assert filtered_search(index, q, 5, np.array([], np.int64)) == ([], "empty")


def test_planner_selector_inside_faiss() -> None:
    """An allow-list too long for the exact shortcut goes through FAISS's id selector."""
    index, ids, vecs = _planner_index(20_000, 8, seed=3)
    rng = np.random.default_rng(4)
    allow = rng.choice(ids, 4500, replace=False)  # 22.5%: selective, but > 4096 ids
    for _ in range(3):
        q = unit(rng.normal(size=8))
        pairs, plan = filtered_search(index, q, 25, allow)
        assert plan == "selector"
        _same(pairs, _exact(ids, vecs, q, allow, 25))


@given(share=st.floats(0.01, 1.0), k=st.integers(1, 60), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=40, deadline=None, database=None)
def test_planner_property(share: float, k: int, seed: int) -> None:
    index, ids, vecs = _planner_index(300, 8)
    rng = np.random.default_rng(seed)
    allow = rng.choice(ids, max(1, int(share * len(ids))), replace=False)
    q = unit(rng.normal(size=8))
    pairs, plan = filtered_search(index, q, k, allow)
    assert plan == ("selector" if len(allow) / len(ids) <= 0.25 else "overfetch")
    _same(pairs, _exact(ids, vecs, q, allow, k))


# --- fusion ------------------------------------------------------------------------------------

def test_fuse_rrf_math() -> None:
    vector = [(1, 0.9), (2, 0.8), (3, 0.7)]
    keyword = [(2, 7.0), (4, 3.0)]
    out = fuse(vector, keyword, Hybrid())
    fused = {i: f for i, f, _ in out}
    assert fused[1] == pytest.approx(1 / 61)
    assert fused[2] == pytest.approx(1 / 62 + 1 / 61)
    assert fused[3] == pytest.approx(1 / 63)
    assert fused[4] == pytest.approx(1 / 62)  # only in the keyword list, still there
    assert [i for i, _, _ in out] == [2, 1, 4, 3]
    parts = {i: p for i, _, p in out}
    assert parts[2] == {"vector": 0.8, "keyword": 7.0}
    assert parts[4] == {"keyword": 3.0}
    assert parts[1] == {"vector": 0.9}


def test_fuse_weights_and_k0() -> None:
    vector = [(1, 0.9), (2, 0.8)]
    keyword = [(2, 1.0)]
    out = fuse(vector, keyword, Hybrid(vector_weight=2.0, keyword_weight=0.5, k0=0))
    fused = {i: f for i, f, _ in out}
    assert fused == {1: pytest.approx(2.0), 2: pytest.approx(2.0 / 2 + 0.5 / 1)}
    assert [i for i, _, _ in out] == [1, 2]
    heavy = fuse(vector, keyword, Hybrid(keyword_weight=5.0))
    assert heavy[0][0] == 2
    assert fuse([], [], Hybrid()) == []


# --- re-ranking stages on their narrow context ------------------------------------------------

def _fake_ctx(vectors: dict[int, np.ndarray], q: np.ndarray, k: int) -> RerankContext:
    def stored(ids: list[int]) -> np.ndarray:
        return np.stack([vectors[i] for i in ids])

    def no_second_model(_spec: Any) -> Any:
        raise AssertionError("these stages need no second model")

    return RerankContext(Query([Term("vector", q)], k=k), unit(q), k, stored, no_second_model)


def _near_dup_vectors() -> tuple[dict[int, np.ndarray], np.ndarray]:
    q = np.array([1.0, 0, 0, 0], np.float32)
    vectors = {
        1: unit([1, 0.1, 0, 0]),
        2: unit([1, 0.1, 0.002, 0]),    # nearly the same as 1
        3: unit([1, 0, 0.5, 0]),        # less relevant, different direction
        4: unit([1, -0.3, -0.4, 0.6]),  # least relevant, most different from 1
    }
    return vectors, q


def test_exact_resorts_by_true_score() -> None:
    vectors, q = _near_dup_vectors()
    cands = [Candidate(4, 0.99), Candidate(3, 0.98), Candidate(2, 0.5), Candidate(1, 0.1)]
    out = Exact().apply(_fake_ctx(vectors, q, 4), cands)
    true = {i: float(v @ unit(q)) for i, v in vectors.items()}
    assert [c.id for c in out] == sorted(true, key=lambda i: -true[i])
    for c in out:
        assert c.score == pytest.approx(true[c.id]) and c.scores["exact"] == c.score
    assert Exact().apply(_fake_ctx(vectors, q, 4), []) == []


def test_mmr_lambda_extremes() -> None:
    vectors, q = _near_dup_vectors()
    rel = {i: float(v @ unit(q)) for i, v in vectors.items()}
    order = sorted(rel, key=lambda i: -rel[i])
    assert order[:2] == [1, 2]  # the two near-identical items are the top two
    cands = [Candidate(i, rel[i]) for i in order]
    out = MMR(1.0).apply(_fake_ctx(vectors, q, 4), [Candidate(i, rel[i]) for i in order])
    assert [c.id for c in out] == order
    out = MMR(0.0).apply(_fake_ctx(vectors, q, 4), cands)
    assert out[0].id == 1
    least_similar = min((2, 3, 4), key=lambda i: float(vectors[i] @ vectors[1]))
    assert out[1].id == least_similar == 4
    assert out[0].scores["mmr_relevance"] == pytest.approx(rel[1])


def test_mmr_moderate_lambda_demotes_near_duplicate() -> None:
    vectors, q = _near_dup_vectors()
    rel = {i: float(v @ unit(q)) for i, v in vectors.items()}
    order = sorted(rel, key=lambda i: -rel[i])
    out = MMR(0.3).apply(_fake_ctx(vectors, q, 2), [Candidate(i, rel[i]) for i in order])
    assert out[0].id == 1 and out[1].id != 2
    assert sorted(c.id for c in out) == [1, 2, 3, 4]  # nothing is dropped


def test_dedup_collapses_identical() -> None:
    vectors, q = _near_dup_vectors()
    vectors[5] = vectors[3].copy()
    cands = [Candidate(i, float(vectors[i] @ unit(q))) for i in (1, 2, 3, 5, 4)]
    out = Dedup(0.999).apply(_fake_ctx(vectors, q, 3), cands)
    assert [c.id for c in out] == [1, 3, 4]
    assert out[0].duplicates == [2] and out[1].duplicates == [5] and out[2].duplicates == []
    strict = Dedup(1.0 - 1e-6).apply(
        _fake_ctx(vectors, q, 3), [Candidate(i, 0.0) for i in (1, 2, 3, 5, 4)])
    assert [c.id for c in strict] == [1, 2, 3, 4]  # only the exact copy goes


@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 40), k=st.integers(1, 12))
@settings(max_examples=30, deadline=None, database=None)
def test_stages_keep_k(seed: int, n: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    q = unit(rng.normal(size=16))
    vectors = {i: unit(rng.normal(size=16)) for i in range(n)}
    assume(max(float(vectors[a] @ vectors[b]) for a in range(n) for b in range(a)) < 0.95)
    rel = sorted(vectors, key=lambda i: -float(vectors[i] @ q))
    for stage in (Exact(), MMR(0.0), MMR(0.7), MMR(1.0), Dedup(0.95)):
        out = stage.apply(_fake_ctx(vectors, q, k), [Candidate(i, 0.0) for i in rel])
        assert len(out) >= k, stage
        assert len({c.id for c in out}) == len(out) and {c.id for c in out} <= set(vectors)


def test_parse_pipeline() -> None:
    stages = parse_pipeline("exact, mmr:0.7 ,dedup:0.95")
    assert [type(s) for s in stages] == [Exact, MMR, Dedup]
    assert stages[1].lam == pytest.approx(0.7) and stages[2].threshold == pytest.approx(0.95)
    assert [repr(s) for s in stages] == ["exact", "mmr:0.7", "dedup:0.95"]
    defaults = parse_pipeline("mmr,dedup")
    assert defaults[0].lam == pytest.approx(0.7) and defaults[1].threshold == pytest.approx(0.95)
    model = parse_pipeline("model:local-dir:/x:30")
    assert len(model) == 1 and isinstance(model[0], ModelRerank)
    assert model[0].top_n == 30 and model[0].spec.name == "local-dir:/x"
    default_top = parse_pipeline("model:local-dir:/x")[0]
    assert isinstance(default_top, ModelRerank) and default_top.top_n == 50
    assert default_top.spec.name == "local-dir:/x"
    assert parse_pipeline(None) == [] and parse_pipeline("") == []
    assert parse_pipeline(stages) == stages


@pytest.mark.parametrize("spec", ["bogus", "mmr:abc", "exact:1", "dedup:x", "model", "model:",
                                  "mmr:1.5", "dedup:2", "model:ViT-B-32"])
def test_parse_pipeline_rejects(spec: str) -> None:
    with pytest.raises(QueryError):
        parse_pipeline(spec)


def test_parse_pipeline_unknown_message() -> None:
    with pytest.raises(QueryError, match="unknown rerank stage 'bogus'"):
        parse_pipeline("exact,bogus")
    with pytest.raises(QueryError, match="unknown rerank stage 'mmr:abc'"):
        parse_pipeline("mmr:abc")


def test_rerank_bounds_in_builder() -> None:
    from retrieval.search.builder import MAX_FILTERS, MAX_RERANK_DEPTH, MAX_STAGES, build_query
    from retrieval.search.rerank import MAX_TOP_N

    full = build_query("x", k=MAX_RERANK_DEPTH, rerank="exact,mmr:0.7,dedup:0.95,model:demo:5")
    assert [s.kind for s in full.rerank] == ["exact", "mmr", "dedup", "model"]
    assert len(full.rerank) == MAX_STAGES
    with pytest.raises(QueryError, match=f"^at most {MAX_STAGES} rerank stages, got 5$"):
        build_query("x", rerank="exact,mmr,dedup,model:demo,mmr:0.1")
    with pytest.raises(QueryError, match=r"^rerank stage 'dedup' is given twice"):
        build_query("x", rerank="dedup:0.9,dedup:0.8")
    with pytest.raises(QueryError, match=rf"offset \+ k is at most {MAX_RERANK_DEPTH}"):
        build_query("x", k=MAX_RERANK_DEPTH - 9, offset=10, rerank="exact")
    for top in (0, MAX_TOP_N + 1):
        with pytest.raises(QueryError, match="top N is between 1 and"):
            parse_pipeline(f"model:demo:{top}")
    build_query("x", filters=["width > 1"] * MAX_FILTERS)
    with pytest.raises(QueryError, match=f"^at most {MAX_FILTERS} filters, got"):
        build_query("x", filters=["width > 1"] * MAX_FILTERS, tags=["a"])


def test_image_terms_bounded() -> None:
    from retrieval.search.builder import MAX_IMAGE_TERMS, build_query

    image = {"kind": "image", "value": b"\x89PNG not decoded by the builder"}
    assert len(build_query("x", terms=[image] * MAX_IMAGE_TERMS).terms) == MAX_IMAGE_TERMS + 1
    message = f"^at most {MAX_IMAGE_TERMS} image terms, got {MAX_IMAGE_TERMS + 1}$"
    with pytest.raises(QueryError, match=message):
        build_query(terms=[image] * (MAX_IMAGE_TERMS + 1))


@pytest.mark.parametrize(("k", "offset", "extra", "pool"), [
    (10, 0, {}, 10), (10, 5, {"hybrid": True}, 500), (10, 0, {"rerank": "mmr"}, 500),
    (400, 100, {"rerank": "mmr"}, 500), (500, 0, {"rerank": "exact"}, 500),
    (490, 10, {"hybrid": True}, 500), (10_000, 0, {}, 10_000), (10_000, 10_000, {}, 20_000),
])
def test_candidate_pool(k: int, offset: int, extra: dict[str, Any], pool: int) -> None:
    from retrieval.search.builder import build_query
    from retrieval.search.searcher import candidate_pool

    assert candidate_pool(build_query("x", k=k, offset=offset, **extra)) == pool


# --- re-ranking on the collection -------------------------------------------------------------

def _img(data: Data, name: str) -> Img:
    return data.by_name[name]


def test_exact_on_collection(data: Data) -> None:
    q = unit(np.random.default_rng(7).normal(size=data.col.dim))
    hits = data.col.search(vector=q, k=10, rerank="exact")
    ids, vecs = data.col.catalog.vectors([img.id for img in data.images], data.col.dim)
    _assert_ranking(hits, list(zip(ids.tolist(), (vecs @ q).tolist(), strict=True)), 10)
    assert all(h.metadata["scores"]["exact"] == pytest.approx(h.score) for h in hits)


def test_pipeline_on_collection_keeps_k(data: Data) -> None:
    for spec in ("exact", "mmr:0", "mmr:0.7", "dedup:0.95", "exact,mmr:0.7,dedup:0.95"):
        for k in (1, 5, 12):
            hits = data.col.search("a photo", k=k, rerank=spec)
            assert len(hits) == k, (spec, k)
            assert len({h.id for h in hits}) == k


def test_dedup_on_collection_lists_copy(data: Data) -> None:
    orig, copy = _img(data, "wide/img000.jpg"), _img(data, "tall/copy_of_img000.jpg")
    assert np.array_equal(data.vector_of(orig.id), data.vector_of(copy.id))
    plain = data.col.search(image=orig.path, k=5)
    assert {h.id for h in plain[:2]} == {orig.id, copy.id}
    hits = data.col.search(image=orig.path, k=5, rerank="dedup:0.999")
    assert len(hits) == 5
    ids = [h.id for h in hits]
    assert ids[0] in (orig.id, copy.id)
    other = copy.id if ids[0] == orig.id else orig.id
    assert other not in ids
    assert hits[0].metadata["duplicates"] == [other]
    assert all("duplicates" not in h.metadata for h in hits[1:])


@pytest.fixture(scope="module")
def second_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_model(tmp_path_factory.mktemp("second") / "tiny1", seed=1)


def test_model_rerank(data: Data, second_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval import ModelSpec, load_encoder

    col = data.col
    spec = f"local-dir:{second_model}"
    key = str(ModelSpec.parse(spec))
    text, k = "a colourful picture", 8
    pool = col.search(text, k=50)  # the candidates the stage re-scores: its default top N
    assert len(pool) == 50
    pool_ids = [h.id for h in pool]
    assert col.catalog.aux_vectors(key, pool_ids) == {}

    aux = load_encoder(ModelSpec.parse(spec), "cpu")
    qv = combine([aux.embed_texts([text])[0]], [1.0])
    paths = {img.id: img.path for img in data.images}
    expected = [(i, float(embed_image(aux, paths[i]) @ qv)) for i in pool_ids]

    calls: list[list[int]] = []
    real = embedding.embed_stored

    def counting(catalog: Any, ids: Any, encoder: Any) -> Any:
        calls.append(list(ids))
        return real(catalog, ids, encoder)

    monkeypatch.setattr(embedding, "embed_stored", counting)
    hits = col.search(text, k=k, rerank=f"model:{spec}")
    _assert_ranking(hits, expected, k)
    assert [h.id for h in hits] != pool_ids[:k], "the second model did not re-order anything"
    assert all(h.metadata["scores"]["model"] == pytest.approx(h.score) for h in hits)
    assert len(calls) == 1 and sorted(calls[0]) == sorted(pool_ids)
    cached = col.catalog.aux_vectors(key, pool_ids)
    assert set(cached) == set(pool_ids)
    for i, s in expected[:5]:
        assert float(cached[i] @ qv) == pytest.approx(s, abs=1e-4)

    again = col.search(text, k=k, rerank=f"model:{spec}")
    assert len(calls) == 1, "cached vectors were embedded again"
    assert [h.id for h in again] == [h.id for h in hits]

    # top_n: only the head is re-scored; the tail keeps the first model's order
    head = col.search(text, k=k, rerank=f"model:{spec}:3")
    assert len(head) == k
    top3 = sorted(pool_ids[:3], key=lambda i: -dict(expected)[i])
    assert [h.id for h in head][:3] == top3
    assert [h.id for h in head][3:] == pool_ids[3:k]


# --- hybrid search ----------------------------------------------------------------------------

def test_hybrid_finds_file_name_token(data: Data) -> None:
    target = _img(data, "tall/IMG_2041.jpg")
    hits = data.col.search("IMG_2041", hybrid=True, k=20)
    assert hits[0].id == target.id
    assert "keyword" in hits[0].metadata["scores"]
    assert all("keyword" not in h.metadata["scores"] for h in hits[1:])


@pytest.mark.parametrize("k", [1, 10])
def test_hybrid_file_name_token_small_k(data: Data, k: int) -> None:
    """The default and a minimal k (smaller vector pools) still put the named file first."""
    target = _img(data, "tall/IMG_2041.jpg")
    hits = data.col.search("IMG_2041", hybrid=True, k=k)
    assert len(hits) == k
    assert hits[0].id == target.id, [h.path for h in hits[:3]]


def test_hybrid_finds_caption_token(data: Data) -> None:
    target = data.images[4]
    assert "zq7731" in (target.caption or "")
    hits = data.col.search("zq7731", hybrid=True, k=20)
    assert hits[0].id == target.id and hits[0].text == target.caption


def test_hybrid_texts_by_external_id(data: Data) -> None:
    hits = data.col.search("sku-42", target="texts", hybrid=True, k=20)
    assert hits[0].id == data.texts["sku-42"]["item"]
    assert hits[0].metadata["external_id"] == "sku-42" and hits[0].metadata["brand"] == "acme"
    assert "keyword" in hits[0].metadata["scores"]
    assert all("keyword" not in h.metadata["scores"] for h in hits[1:])


def test_hybrid_respects_filters(data: Data) -> None:
    target = _img(data, "tall/IMG_2041.jpg")
    wide = {img.id for img in data.images if img.folder == "wide"}
    hits = data.col.search("IMG_2041", hybrid=True, k=40, filters=["path ~ */wide/*"])
    assert len(hits) == 30
    assert {h.id for h in hits} == wide and target.id not in {h.id for h in hits}
    texts = data.col.search("sku-42", target="texts", hybrid=True, k=40,
                            filters=["brand = zeta"])
    assert {h.id for h in texts} == {r["item"] for r in data.texts.values()
                                     if r["brand"] == "zeta"}


# --- paging ------------------------------------------------------------------------------------

@pytest.mark.parametrize("extra", [
    {}, {"filters": ["orientation != square"]}, {"hybrid": True}, {"rerank": "exact,mmr:0.5"},
    {"target": "texts"},
])
def test_paging(data: Data, extra: dict[str, Any]) -> None:
    full = data.col.search("a picture", k=10, **extra)
    second = data.col.search("a picture", k=5, offset=5, **extra)
    assert len(full) == 10
    assert [h.id for h in second] == [h.id for h in full[5:]]
    assert [h.score for h in second] == pytest.approx([h.score for h in full[5:]])
    beyond = data.col.search("a picture", k=5, offset=490, **extra)  # within every pool
    assert beyond == []


# --- caption, tag, duplicates -----------------------------------------------------------------

def test_caption(data: Data) -> None:
    img = _img(data, "wide/img003.jpg")
    by_file = data.col.caption(img.path, k=4)
    by_id = data.col.caption(img.id, k=4)
    assert len(by_file) == 4 and all(h.kind == "text" and h.text for h in by_file)
    assert [h.id for h in by_file] == [h.id for h in by_id]
    v = data.vector_of(img.id)
    ids, vecs = data.col.catalog.vectors(data.col.catalog.vector_ids("text").tolist(),
                                         data.col.dim)
    _assert_ranking(by_id, list(zip(ids.tolist(), (vecs @ unit(v)).tolist(), strict=True)), 4)
    assert len(data.col.caption(img.id, k=100)) == 27
    with pytest.raises(QueryError, match="file not found"):
        data.col.caption(data.root / "missing.jpg")
    with pytest.raises(QueryError, match="no item with id"):
        data.col.caption(10**9)


def test_tag_incremental_and_visible(data: Data) -> None:
    assert data.tag_result == {"tagged": 63, "unchanged": 0, "labels": len(TAG_LABELS)}
    again = data.col.tag(TAG_LABELS)
    assert again == {"tagged": 0, "unchanged": 63, "labels": len(TAG_LABELS)}
    tagged = [img for img in data.images if img.tags]
    assert tagged and all(len(img.tags) <= 3 and img.tags <= set(TAG_LABELS) for img in tagged)
    hits = data.col.search("anything", k=100)
    assert len(hits) == 63
    for h in hits:
        img = next(i for i in data.images if i.id == h.id)
        assert set(h.metadata.get("tags", {})) == img.tags
        assert all(0.1 <= s <= 1 for s in h.metadata.get("tags", {}).values())
    label = max(TAG_LABELS, key=lambda t: sum(t in i.tags for i in data.images))
    filtered = data.col.search("anything", k=100, filters=[f"tag = {label}"])
    assert {h.id for h in filtered} == {i.id for i in data.images if label in i.tags}
    # tags are keywords too: exactly the images with that tag match the keyword half
    fused = data.col.search(label, k=100, hybrid=True)
    assert {h.id for h in fused if "keyword" in h.metadata["scores"]} == {
        i.id for i in data.images if label in i.tags}


def test_tag_input_errors(data: Data) -> None:
    from retrieval import InputError

    with pytest.raises(InputError):
        data.col.tag(["  ", ""])
    with pytest.raises(InputError):
        data.col.tag(["red"], templates=["no placeholder"])


def test_duplicates(data: Data) -> None:
    orig, copy = _img(data, "wide/img000.jpg"), _img(data, "tall/copy_of_img000.jpg")
    clusters = data.col.duplicates()
    assert clusters, "the exact copy was not found"
    mine = [c for c in clusters if orig.id in c["ids"]]
    assert len(mine) == 1
    assert set(mine[0]["ids"]) >= {orig.id, copy.id}
    assert set(mine[0]["paths"]) >= {str(orig.path), str(copy.path)}
    assert len(mine[0]["paths"]) == len(mine[0]["ids"])
    everything = data.col.duplicates(threshold=-1, neighbours=100)
    assert len(everything) == 1 and len(everything[0]["ids"]) == 63
    for bad in (1.5, -1.01, math.nan):
        with pytest.raises(QueryError, match="threshold"):
            data.col.duplicates(threshold=bad)


def test_model_rerank_uses_cached_vectors(data: Data, second_model: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The read side of the second-model cache, with the cache filled directly (the write side
    fails, see test_model_rerank): no item is embedded, the order follows the cached vectors."""
    from sqlalchemy import delete, insert

    from retrieval import ModelSpec, load_encoder
    from retrieval.storage.records import encode_vector
    from retrieval.storage.schema import aux_vectors

    col = data.col
    spec = f"local-dir:{second_model}"
    key = str(ModelSpec.parse(spec))
    text, k = "a bright scene", 6
    pool_ids = [h.id for h in col.search(text, k=50)]  # the stage's default top N
    aux = load_encoder(ModelSpec.parse(spec), "cpu")
    qv = combine([aux.embed_texts([text])[0]], [1.0])
    items = col.catalog.get_items(pool_ids)
    vecs = {i: embed_image(aux, items[i].path) for i in pool_ids}
    expected = [(i, float(v @ qv)) for i, v in vecs.items()]

    def clear() -> None:
        with col.catalog.engine.begin() as conn:
            conn.execute(delete(aux_vectors).where(aux_vectors.c.model == key))

    clear()
    try:
        with col.catalog.engine.begin() as conn:
            conn.execute(insert(aux_vectors), [
                {"model": key, "item_id": i, "content_hash": items[i].content_hash,
                 "data": encode_vector(v)} for i, v in vecs.items()])
        assert set(col.catalog.aux_vectors(key, pool_ids)) == set(pool_ids)

        def no_embedding(*_: Any) -> Any:
            raise AssertionError("a cached item was embedded again")

        monkeypatch.setattr(embedding, "embed_stored", no_embedding)
        hits = col.search(text, k=k, rerank=f"model:{spec}")
        _assert_ranking(hits, expected, k)
        assert [h.id for h in hits] != pool_ids[:k], "the second model did not re-order"
        assert all(h.metadata["scores"]["model"] == pytest.approx(h.score) for h in hits)
    finally:
        clear()
