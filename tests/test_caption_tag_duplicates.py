"""The helpers beside search, on the shared collection: nearest texts of an image
(``Collection.caption``), zero-shot tags (``Collection.tag``) and duplicate clusters
(``Collection.duplicates``).
"""

from __future__ import annotations

import math

import pytest
from query_fixtures import TAG_LABELS, Data, _assert_ranking, _img, unit

from retrieval import QueryError


def test_caption(data: Data) -> None:
    img = _img(data, "wide/img003.jpg")
    by_file = data.col.caption(img.path, k=4)
    by_id = data.col.caption(img.id, k=4)
    assert len(by_file) == 4 and all(h.kind == "text" and h.text for h in by_file)
    assert [h.id for h in by_file] == [h.id for h in by_id]
    v = data.vector_of(img.id)
    ids, vecs = data.col._catalog.vectors(data.col._catalog.vector_ids("text").tolist(),
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
