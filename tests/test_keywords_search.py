"""Finding images by the text recognised in them (issue 24): keyword-only search
(``keywords``) and the ``ocr`` filter, from the Python API, the command line and HTTP, on
both catalogs (SQLite and PostgreSQL).

Recognised text is written as an OCR run writes it (``Catalog.write_derived`` of source
``ocr``, one text per image, its vector from the collection's text tower), so these tests need
no OCR engine. Expected results follow from the texts the fixture wrote.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_error_line, json_lines, make_image, run_cli
from fastapi.testclient import TestClient

from retrieval import Collection, QueryError
from retrieval.interfaces.server import create_app
from retrieval.items import RECOGNISED
from retrieval.media import hash_text
from retrieval.search import build_query
from retrieval.storage.records import TextRecord

RECOGNISED_TEXTS = {  # image file name -> the text "recognised" in it
    "receipt.jpg": "HOTEL LINDNER\nINVOICE No. 4711\nTotal 120.00 EUR",
    "sign.jpg": "紧急出口请勿堵塞",
    "screenshot.jpg": "Error: connection refused (port 5432)",
    "menu.jpg": "Soup of the day  Bread  Coffee",
}
OTHERS = ["hotel-front.jpg", "beach.jpg", "plain.jpg"]  # no recognised text
SIDECARS = {"beach.jpg": "a sandy beach with palm trees"}
ADDED = [{"text": "booking confirmation for the hotel", "id": "booking"}]


@dataclass
class Setup:
    col: Collection
    path: Path  # the collection's folder
    ids: dict[str, int]  # image file name -> id; "ocr:NAME" -> its recognised text's id
    catalog: str


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          encoder: Any) -> Iterator[Setup]:
    url = None if request.param == "sqlite" else str(
        request.getfixturevalue("postgres").create_database())
    root = tmp_path_factory.mktemp(f"keywords-{request.param}")
    pics = root / "pics"
    for n, name in enumerate([*RECOGNISED_TEXTS, *OTHERS]):
        make_image(pics / name, seed=n)
    for name, caption in SIDECARS.items():
        (pics / name).with_suffix(".txt").write_text(caption + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRIEVAL_HOME", str(root / "home"))
        col = Collection(root / "col", encoder=encoder, catalog=url)
        col.index([pics], workers=0)
        ids = {Path(it.path).name: i for i, it in col._catalog.get_items(
            col._catalog.vector_ids("image").tolist()).items()}
        texts = list(RECOGNISED_TEXTS.values())
        records = [TextRecord(text=t, vector=v, content_hash=hash_text(t), source=RECOGNISED,
                              parent_id=ids[name], metadata={"lines": t.splitlines()})
                   for (name, t), v in zip(RECOGNISED_TEXTS.items(),
                                           encoder.embed_texts(texts), strict=True)]
        written = col._catalog.write_derived(RECOGNISED, records,
                                             runs={ids[n]: "test" for n in RECOGNISED_TEXTS})
        ids.update({f"ocr:{name}": i for name, i in zip(RECOGNISED_TEXTS, written,
                                                         strict=True)})
        col.add_texts(ADDED)
        yield Setup(col, root / "col", ids, request.param)
        col.close()


def _names(setup: Setup, hits: list[Any]) -> list[str]:
    by_id = {i: n for n, i in setup.ids.items()}
    return [by_id.get(h.id, h.text) for h in hits]


# --- the Python API ------------------------------------------------------------------------------

def test_a_word_printed_in_one_image_finds_it_alone(setup: Setup) -> None:
    hits = setup.col.search("Lindner", keywords=True)
    assert _names(setup, hits) == ["receipt.jpg"]
    hit = hits[0]
    assert hit.score == 1.0
    assert hit.metadata["score_kind"] == "keywords"
    assert hit.metadata["scores"]["keyword"] > 0
    assert hit.metadata["ocr_text"] == RECOGNISED_TEXTS["receipt.jpg"]
    assert hit.metadata["match"] == {"source": "ocr", "text": RECOGNISED_TEXTS["receipt.jpg"],
                                     "words": ["LINDNER"]}


def test_a_chinese_word_inside_longer_text(setup: Setup) -> None:
    hits = setup.col.search("出口", keywords=True)
    assert _names(setup, hits) == ["sign.jpg"]
    assert hits[0].metadata["match"]["words"] == ["出口"]
    # the characters of the word, but not side by side, are no match
    assert setup.col.search("出塞", keywords=True) == []


def test_a_keyword_search_loads_no_model(setup: Setup) -> None:
    """Ranking by keywords embeds nothing: a collection opened from its folder searches by
    keywords without loading its model."""
    with Collection(setup.path) as col:
        assert _names(setup, col.search("invoice", keywords=True)) == ["receipt.jpg"]
        assert col._binding._encoder is None
        col.search("invoice", k=1)  # a vector search loads it
        assert col._binding._encoder is not None


def test_no_keyword_match_is_no_hits(setup: Setup) -> None:
    assert setup.col.search("zebra", keywords=True) == []
    assert setup.col.search("!!!", keywords=True) == []


def test_names_captions_and_recognised_text_rank_together(setup: Setup) -> None:
    """An image is found by its file name, its caption and its recognised text; scores are
    shares of the first result's relevance, in order, ties by id."""
    hits = setup.col.search("hotel", keywords=True, k=10)
    assert sorted(_names(setup, hits)) == ["hotel-front.jpg", "receipt.jpg"]
    scores = [h.score for h in hits]
    assert scores[0] == 1.0 and 0 < scores[1] <= 1.0
    assert {h.metadata["match"]["source"] for h in hits} == {"name", "ocr"}
    assert _names(setup, setup.col.search("palm", keywords=True)) == ["beach.jpg"]
    assert _names(setup, setup.col.search("plain", keywords=True)) == ["plain.jpg"]


def test_pages_are_slices_of_one_ranking(setup: Setup) -> None:
    whole = setup.col.search("hotel invoice coffee beach", keywords=True, k=10)
    assert len(whole) == 4
    pages = [h for offset in range(0, 4) for h in setup.col.search(
        "hotel invoice coffee beach", keywords=True, k=1, offset=offset)]
    assert [(h.id, h.score) for h in pages] == [(h.id, h.score) for h in whole]
    assert setup.col.search("hotel invoice coffee beach", keywords=True, k=5, offset=4) == []


def test_filters_apply_to_a_keyword_search(setup: Setup) -> None:
    search = setup.col.search
    assert _names(setup, search("hotel", keywords=True, filters=["ocr = true"])) == [
        "receipt.jpg"]
    assert _names(setup, search("hotel", keywords=True, filters=["ocr = false"])) == [
        "hotel-front.jpg"]
    assert _names(setup, search("hotel", keywords=True, filters=["ocr ~ *4711*"])) == [
        "receipt.jpg"]
    assert search("hotel", keywords=True, path="*/beach.jpg") == []
    # the first result that passes the filters scores 1
    assert search("hotel", keywords=True, filters=["ocr = false"])[0].score == 1.0


def test_keyword_search_of_texts_finds_recognised_texts(setup: Setup) -> None:
    hits = setup.col.search("refused", keywords=True, target="text")
    assert [h.id for h in hits] == [setup.ids["ocr:screenshot.jpg"]]
    hit = hits[0]
    assert hit.metadata["source"] == "ocr" and hit.path and hit.path.endswith("screenshot.jpg")
    assert hit.metadata["match"]["source"] == "ocr"
    assert hit.metadata["match"]["words"] == ["refused"]
    both = setup.col.search("hotel", keywords=True, target="text")
    assert {h.id for h in both} == {setup.ids["ocr:receipt.jpg"], *[
        h.id for h in both if h.metadata["source"] == "texts"]}
    assert len(both) == 2


def test_ocr_filter_on_a_vector_search(setup: Setup) -> None:
    q = np.ones(setup.col.dim, dtype=np.float32)
    ids = setup.ids

    def found(*filters: str, target: str = "image") -> set[int]:
        return {h.id for h in setup.col.search(vector=q, k=50, target=target,
                                               filters=list(filters))}

    with_text = {ids[n] for n in RECOGNISED_TEXTS}
    assert found("ocr = true") == with_text
    assert found("ocr != false") == with_text
    assert found("ocr = false") == {ids[n] for n in OTHERS}
    assert found("ocr ~ *invoice*") == {ids["receipt.jpg"]}  # case-insensitive
    assert found("OCR ~ *INVOICE*") == {ids["receipt.jpg"]}
    assert found("ocr ~ *出口*") == {ids["sign.jpg"]}
    assert found("ocr ~ *zebra*") == set()
    assert found("ocr = true", "caption = true") == set()
    # on texts: recognised texts themselves, globbed by their own text
    ocr_texts = {ids[f"ocr:{n}"] for n in RECOGNISED_TEXTS}
    assert found("ocr = true", target="text") == ocr_texts
    assert found("ocr = false", target="text") & ocr_texts == set()
    assert found("ocr = false", target="text")
    assert found("ocr ~ *port 5432*", target="text") == {ids["ocr:screenshot.jpg"]}


@pytest.mark.parametrize("filters, message", [
    (["ocr = maybe"], "ocr = true or false"),
    (["ocr > 3"], "ocr = true or false"),
    (["ocr = *invoice*"], "for a glob use ~"),
])
def test_ocr_filter_mistakes(setup: Setup, filters: list[str], message: str) -> None:
    with pytest.raises(QueryError, match=message):
        setup.col.search("x", keywords=True, filters=filters)


@pytest.mark.parametrize("given, needle", [
    ({"hybrid": True}, "hybrid"),
    ({"image": b"\x89PNG"}, "an image term"),
    ({"like": 1}, "a like term"),
    ({"vector": [1.0, 0.0]}, "a vector term"),
    ({"terms": [{"kind": "text", "value": "people", "weight": -1}]}, "negative text term"),
    ({"min_score": 0.2}, "min score"),
    ({"cutoff": "auto"}, "cutoff"),
    ({"rerank": "model:ViT-B-32@openai"}, "rerank"),
    ({"rerank": "mmr:0.7"}, "rerank"),
])
def test_keywords_conflicts_are_one_clear_error(given: dict[str, Any], needle: str) -> None:
    with pytest.raises(QueryError) as err:
        build_query("invoice", keywords=True, **given)
    message = str(err.value)
    assert "keyword" in message and needle in message and "\n" not in message
    build_query("invoice", **given)  # each is fine without keywords


def test_keywords_is_a_boolean() -> None:
    with pytest.raises(QueryError, match="keywords is true or false"):
        build_query("invoice", keywords="yes")  # type: ignore[arg-type]
    assert build_query("invoice", keywords=True).keywords is True


# --- the command line ----------------------------------------------------------------------------

def test_cli_keywords_table_and_json(setup: Setup) -> None:
    out = run_cli("search", "Lindner", "--keywords", collection=setup.path).stdout
    lines = out.splitlines()
    assert "keyword score" in lines[0]
    assert "receipt.jpg" in lines[1] and "1.000" in lines[1]
    assert 'recognised text: "HOTEL [LINDNER] INVOICE No. 4711 Total 120.00 EUR"' in out
    rows = json_lines(run_cli("search", "出口", "--keywords", "--json",
                              collection=setup.path).stdout)
    assert [r["path"].rsplit("/", 1)[-1] for r in rows] == ["sign.jpg"]
    assert rows[0]["metadata"]["ocr_text"] == "紧急出口请勿堵塞"
    assert rows[0]["metadata"]["match"]["words"] == ["出口"]
    assert "no results" in run_cli("search", "zebra", "--keywords",
                                   collection=setup.path).stderr


def test_cli_shows_recognised_text_of_image_and_text_hits(setup: Setup) -> None:
    """An image found by its name shows its recognised text too (cut to a line); a recognised
    text hit says whose it is."""
    out = run_cli("search", "receipt", "--keywords", collection=setup.path).stdout
    assert "file name: pics/[receipt].jpg" in out
    assert 'recognised text: "HOTEL LINDNER INVOICE No. 4711 Total 120.00 EUR"' in out
    out = run_cli("search", "refused", "--keywords", "--target", "text",
                  "--where", "ocr = true", collection=setup.path).stdout
    assert '"Error: connection [refused] (port 5432)"' in out
    assert "recognised text of " in out and "screenshot.jpg" in out


def test_cli_ocr_filter(setup: Setup) -> None:
    out = run_cli("search", "hotel", "--keywords", "--where", "ocr ~ *invoice*", "--paths",
                  collection=setup.path).stdout
    assert [Path(line).name for line in out.splitlines()] == ["receipt.jpg"]


@pytest.mark.parametrize("extra, needle", [(["--hybrid"], "hybrid"),
                                           (["--min-score", "0.3"], "min score"),
                                           (["--like", "1"], "like term"),
                                           (["--rerank", "exact"], "rerank")])
def test_cli_conflicts(setup: Setup, extra: list[str], needle: str) -> None:
    proc = run_cli("search", "invoice", "--keywords", *extra, collection=setup.path,
                   check=False)
    assert_one_error_line(proc, "keyword", needle)


# --- HTTP ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def http(setup: Setup) -> Iterator[TestClient]:
    with TestClient(create_app(setup.col), raise_server_exceptions=False) as client:
        yield client


def test_http_keywords(setup: Setup, http: TestClient) -> None:
    res = http.post("/search", json={"text": "出口", "keywords": True})
    assert res.status_code == 200, res.text
    hits = res.json()["hits"]
    assert [h["id"] for h in hits] == [setup.ids["sign.jpg"]]
    assert hits[0]["metadata"]["ocr_text"] == "紧急出口请勿堵塞"
    assert hits[0]["metadata"]["score_kind"] == "keywords"
    assert hits[0]["metadata"]["match"] == {"source": "ocr", "text": "紧急出口请勿堵塞",
                                            "words": ["出口"]}
    res = http.post("/search", json={"text": "hotel", "keywords": True,
                                     "filters": ["ocr = false"]})
    assert [h["id"] for h in res.json()["hits"]] == [setup.ids["hotel-front.jpg"]]
    res = http.post("/search", json={"text": "hotel", "keywords": True, "hybrid": True})
    assert res.status_code == 400 and "keyword" in res.json()["detail"]


def test_http_schema_documents_keywords_and_ocr_text(http: TestClient) -> None:
    schema = http.get("/openapi.json").json()["components"]["schemas"]
    assert "keywords alone" in schema["SearchIn"]["properties"]["keywords"]["description"]
    assert "keywords" not in schema["SearchForm"]["properties"]  # an upload is an image search
    assert "ocr_text" in schema["HitOut"]["properties"]["metadata"]["description"]


def test_client_keywords(setup: Setup) -> None:
    from test_client import _client

    with _client(create_app(setup.col)) as client:
        hits = client.search("lindner", keywords=True)
    assert [h.id for h in hits] == [setup.ids["receipt.jpg"]]
    assert hits[0].metadata["ocr_text"] == RECOGNISED_TEXTS["receipt.jpg"]
    assert hits[0].metadata["match"]["source"] == "ocr"


def test_long_recognised_text_is_cut_around_its_matched_word() -> None:
    from retrieval.interfaces.cli.table import OCR_SHOWN, shortened

    text = "Room service menu\n" + "line of small print " * 10 + "Hotel LINDNER" + " tail" * 30
    around = shortened(text, ["LINDNER"])
    assert around.startswith("...") and around.endswith("...") and "Hotel LINDNER" in around
    assert len(around) <= OCR_SHOWN
    start = shortened(text)
    assert start.startswith("Room service menu line") and start.endswith("...")
    assert "\n" not in start and len(start) <= OCR_SHOWN
    assert shortened("short\ntext", ["x"]) == "short text"
