"""Each search hit says what its score is and which text made it match (issue 20, item 3).

``metadata["score_kind"]`` is ``similarity``, ``fused`` or ``reranked``; ``metadata["match"]``
is ``{"source", "text", "words"}``: an image's sidecar caption, generated caption or file name,
or a text hit's own text, with the query words found in it when keywords took part. The
words are found as the keyword index finds them (case and accents folded, Chinese by
characters and pairs), so what is marked is what matched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image

from retrieval import Collection
from retrieval.items import GENERATED
from retrieval.media import hash_text
from retrieval.storage.keywords import matched_words
from retrieval.storage.records import TextRecord

SIDECARS = {"a.jpg": "a sandy beach with palm trees", "c.jpg": "red circle",
            "e.jpg": "Café au lait"}
GENERATED_CAPTIONS = {"a.jpg": "a photo of the sea", "b.jpg": "a dog on the beach",
                      "e.jpg": "a coffee cup"}
TEXTS = [{"text": "Ein Café am Strand", "id": "cafe"},
         {"text": "街道上的一只船和自行车", "id": "street"},
         {"text": "a beach hut for rent", "id": "hut"}]


@dataclass
class Setup:
    col: Collection
    ids: dict[str, int]  # image file name or text id -> item id


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[Setup]:
    root = tmp_path_factory.mktemp("match")
    pics = root / "pics"
    for n, name in enumerate(["a.jpg", "b.jpg", "c.jpg", "lighthouse.jpg", "e.jpg"]):
        make_image(pics / name, seed=n)
    for name, caption in SIDECARS.items():
        (pics / name).with_suffix(".txt").write_text(caption + "\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RETRIEVAL_HOME", str(root / "home"))
        col = Collection(root / "col", encoder=encoder)
        col.index([pics], workers=0)
        ids = {Path(it.path).name: i for i, it in col._catalog.get_items(
            col._catalog.vector_ids("image").tolist()).items()}
        # generated captions written as ``generate-captions`` writes them
        texts = list(GENERATED_CAPTIONS.values())
        records = [TextRecord(text=t, vector=v, content_hash=hash_text(t), source=GENERATED,
                              parent_id=ids[name], metadata={"captioner": "scripted"})
                   for (name, t), v in zip(GENERATED_CAPTIONS.items(),
                                           encoder.embed_texts(texts), strict=True)]
        col._catalog.write_derived(GENERATED, records)
        col.add_texts(TEXTS)
        for it in col._catalog.get_items(col._catalog.vector_ids("text").tolist()).values():
            if it.external_id:
                ids[it.external_id] = it.id
        yield Setup(col, ids)
        col.close()


def _by_id(hits: list[Any]) -> dict[int, Any]:
    return {h.id: h for h in hits}


def test_plain_search_shows_the_caption_and_says_similarity(setup: Setup) -> None:
    hits = _by_id(setup.col.search("a red circle", k=10))
    assert len(hits) == 5
    assert {h.metadata["score_kind"] for h in hits.values()} == {"similarity"}
    ids = setup.ids
    assert hits[ids["c.jpg"]].metadata["match"] == {
        "source": "caption", "text": "red circle", "words": []}
    # the sidecar caption before the generated one; the generated one when alone
    assert hits[ids["a.jpg"]].metadata["match"] == {
        "source": "caption", "text": SIDECARS["a.jpg"], "words": []}
    assert hits[ids["b.jpg"]].metadata["match"] == {
        "source": "generated", "text": GENERATED_CAPTIONS["b.jpg"], "words": []}
    assert "match" not in hits[ids["lighthouse.jpg"]].metadata  # nothing to show
    # what the web page and clients read is unchanged
    a = hits[ids["a.jpg"]]
    assert a.text == SIDECARS["a.jpg"]
    assert a.metadata["generated_caption"] == GENERATED_CAPTIONS["a.jpg"]


def test_hybrid_shows_the_caption_the_words_matched(setup: Setup) -> None:
    """The issue's example: after describe, ``search beach --hybrid`` showed the generated
    caption although "beach" matched the sidecar caption."""
    hits = _by_id(setup.col.search("beach", hybrid=True, k=5))
    ids = setup.ids
    assert {h.metadata["score_kind"] for h in hits.values()} == {"fused"}
    assert hits[ids["a.jpg"]].metadata["match"] == {
        "source": "caption", "text": SIDECARS["a.jpg"], "words": ["beach"]}
    assert hits[ids["b.jpg"]].metadata["match"] == {
        "source": "generated", "text": GENERATED_CAPTIONS["b.jpg"], "words": ["beach"]}
    # not found by keyword: the sidecar caption, no words
    assert hits[ids["c.jpg"]].metadata["match"] == {
        "source": "caption", "text": "red circle", "words": []}


def test_hybrid_prefers_the_text_with_most_query_words(setup: Setup) -> None:
    hits = _by_id(setup.col.search("sea photo", hybrid=True, k=5))
    assert hits[setup.ids["a.jpg"]].metadata["match"] == {
        "source": "generated", "text": GENERATED_CAPTIONS["a.jpg"], "words": ["photo", "sea"]}
    name = _by_id(setup.col.search("Lighthouse", hybrid=True, k=5))[setup.ids["lighthouse.jpg"]]
    assert name.metadata["match"] == {
        "source": "name", "text": "pics/lighthouse.jpg", "words": ["lighthouse"]}


def test_text_hits_show_themselves_with_the_words_as_written(setup: Setup) -> None:
    ids = setup.ids
    cafe = _by_id(setup.col.search("cafe", target="text", hybrid=True, k=8))
    assert cafe[ids["cafe"]].metadata["match"] == {
        "source": "text", "text": "Ein Café am Strand", "words": ["Café"]}
    sidecar = next(h for h in cafe.values() if h.text == "Café au lait")
    assert sidecar.metadata["match"] == {"source": "caption", "text": "Café au lait",
                                         "words": ["Café"]}
    street = _by_id(setup.col.search("自行车", target="text", hybrid=True, k=8))
    assert street[ids["street"]].metadata["match"]["words"] == ["自行车"]
    plain = _by_id(setup.col.search("beach", target="text", k=20))
    generated = next(h for h in plain.values() if h.text == GENERATED_CAPTIONS["b.jpg"])
    assert generated.metadata["match"] == {
        "source": "generated", "text": GENERATED_CAPTIONS["b.jpg"], "words": []}
    assert plain[ids["hut"]].metadata["match"]["source"] == "text"


def test_reranked_hits_say_so(setup: Setup) -> None:
    hits = setup.col.search("beach", hybrid=True, rerank="exact,mmr:0.5", k=5)
    assert {h.metadata["score_kind"] for h in hits} == {"reranked"}
    a = _by_id(hits)[setup.ids["a.jpg"]]
    assert a.metadata["match"]["words"] == ["beach"]  # keywords took part
    plain = setup.col.search("beach", rerank="exact", k=3)
    assert {h.metadata["score_kind"] for h in plain} == {"reranked"}
    assert all(h.metadata.get("match", {}).get("words", []) == [] for h in plain)


def test_an_item_lookup_has_neither(setup: Setup) -> None:
    hit = setup.col.get(setup.ids["a.jpg"])
    assert "score_kind" not in hit.metadata and "match" not in hit.metadata


# --- matched_words: the keyword index's own normalisation -----------------------------------

@pytest.mark.parametrize(("query", "text", "words"), [
    ("beach", "A Beach at sunset, beach house", ["Beach", "beach"]),
    ("cafe", "Café and CAFE and cafés", ["Café", "CAFE"]),
    ("IMG_2041", "tall/IMG_2041.jpg", ["IMG", "2041"]),
    ("自行车", "街道上的一只船和自行车", ["自行车"]),
    ("自行车 船", "街道上的一只船和自行车", ["船", "自行车"]),
    ("自车", "自行车", []),  # its one pair is not in the text
    ("車", "自転車に乗る", ["車"]),
    ("red", "bored, redder", []),  # whole words only
    ("", "anything", []),
])
def test_matched_words(query: str, text: str, words: list[str]) -> None:
    assert matched_words(query, text) == words


def test_marked_words_are_what_the_keyword_index_matched(tmp_path: Path, encoder: Any) -> None:
    """For each query, the texts the keyword search returns are those in which words are
    marked."""
    texts = ["Crème brûlée for two", "creme brulee", "a red bicycle", "自行车 和 船",
             "街道上的一只船和自行车", "Straße am Meer", "IMG_2041 copy", "nothing here"]
    col = Collection(tmp_path / "col", encoder=encoder)
    try:
        col.add_texts(texts)
        items = col._catalog.get_items(col._catalog.vector_ids("text").tolist())
        for query in ("creme", "BRÛLÉE", "bicycle red", "自行车", "船", "straße", "2041",
                      "meer am", "absent"):
            found = {i for i, _ in col._catalog.keyword_search(query, "text", 50)}
            marked = {i for i, it in items.items() if matched_words(query, it.text or "")}
            assert found == marked, query
    finally:
        col.close()
