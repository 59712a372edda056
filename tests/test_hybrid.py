"""Hybrid search (vector and keyword results fused) on the shared collection: file-name,
caption and external-id tokens come first and filters still apply.
"""

from __future__ import annotations

import pytest
from query_fixtures import Data, _img


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
