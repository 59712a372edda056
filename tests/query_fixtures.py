"""The collection the query-layer tests share, and their helpers (a pytest plugin, loaded by
``conftest.py``).

``data`` is one collection for the whole run: generated images in two folders with different
sizes, sidecar captions, an EXIF-dated photo, an exact copy of an image, JSONL texts with
metadata and zero-shot tags. Expected results are computed independently in Python from what
the fixture generated (sizes, folders, captions, file times) and from the stored vectors.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_image
from hypothesis import HealthCheck, settings
from PIL import Image

from retrieval import Collection

PROPERTY = settings(max_examples=40, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])


def unit(v: Any) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32)
    return v / np.linalg.norm(v)


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
        ids, vecs = self.col._catalog.vectors([item_id], self.col.dim)
        assert list(ids) == [item_id]
        return vecs[0]


@pytest.fixture(scope="session")
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
    items = col._catalog.get_items(col._catalog.vector_ids("image").tolist())
    assert len(items) == len(images)
    for item_id, item in items.items():
        img = by_path[item.path]
        img.id = item_id
        st_ = os.stat(img.path)
        img.size = st_.st_size
        img.mtime = dt.datetime.fromtimestamp(st_.st_mtime_ns / 1e9, dt.timezone.utc).replace(
            tzinfo=None)
    for img in images:
        img.tags = set(col.get(img.id).metadata.get("tags") or {})
    text_items = col._catalog.get_items(col._catalog.vector_ids("text").tolist())
    by_ext = {it.external_id: i for i, it in text_items.items() if it.external_id}
    texts = {r["id"]: dict(r, item=by_ext[r["id"]]) for r in records}
    by_name = {f"{img.folder}/{img.path.name}": img for img in images}
    yield Data(col, root, images, by_name, texts, tag_result)
    col.close()


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


def _img(data: Data, name: str) -> Img:
    return data.by_name[name]
