"""Filters (``retrieval.search.filters``): parsing and compiling them, then filtered searches on
the shared collection (``data``) compared with a brute-force oracle over what the fixture
generated.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import make_image
from hypothesis import given
from hypothesis import strategies as st
from query_fixtures import PROPERTY, Data, Img, _assert_ranking, unit

from retrieval import Collection, QueryError
from retrieval.search.filters import (
    FIELDS,
    Filter,
    compile_filters,
    parse_date,
    parse_where,
    path_filter,
)


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


# --- on the shared collection ---------------------------------------------------------------------

def test_fixture_catalog_matches_generated(data: Data) -> None:
    """The independent bookkeeping agrees with what the catalog stored."""
    items = data.col._catalog.get_items(img.id for img in data.images)
    for img in data.images:
        it = items[img.id]
        assert (it.width, it.height, it.size) == (img.width, img.height, img.size), img.path
        assert it.taken_at == img.taken
    assert sum(img.caption is not None for img in data.images) == 15
    assert data.col._catalog.counts() == {"image": 63, "text": 15 + 12}
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
    ids, vecs = data.col._catalog.vectors([img.id for img in match], data.col.dim)
    expected = list(zip(ids.tolist(), (vecs @ q).tolist(), strict=True))
    _assert_ranking(hits, expected, k)
    assert all(h.kind == "image" for h in hits)


def test_each_filter_alone_equals_brute_force(data: Data) -> None:
    """Every candidate filter on its own, with a k above and below its match count."""
    q = unit(np.random.default_rng(11).normal(size=data.col.dim))
    for f, pred in _image_candidates(data):
        match = [img for img in data.images if pred(img)]
        ids, vecs = data.col._catalog.vectors([img.id for img in match], data.col.dim)
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
