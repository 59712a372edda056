"""The collection the HTTP service tests share, and their helpers (a pytest plugin, loaded
by ``conftest.py``).

``served`` is one collection built with the tiny test model, for the whole run: generated JPEGs
in a folder and a subfolder, a large image for thumbnails, an EXIF-rotated photo, a PNG with
transparency, an exact copy, sidecar captions, JSONL texts with metadata, and symbolic links
pointing inside and outside the indexed folder, served in-process with FastAPI's
``TestClient``. Expected results come from the files the fixture wrote (sizes, names,
captions), from the stored vectors, or from the library (``Collection.search``) that the
service wraps. Tests that change the catalog or the files use their own small collection
(``small``).
"""

from __future__ import annotations

import base64
import io
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from conftest import make_image, make_images
from fastapi.testclient import TestClient
from PIL import Image

from retrieval import Collection
from retrieval.interfaces.server import create_app

HIT_KEYS = {"id", "score", "kind", "path", "text", "metadata"}
IMAGE_META_KEYS = {"width", "height", "taken_at", "camera_make", "camera_model", "size", "mtime"}
RARE_CAPTION = "holiday snapshot zq7731 by the sea"
TOKEN = "s3cret"
JSON = {"content-type": "application/json"}


# --- fixtures -------------------------------------------------------------------------------------

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


@pytest.fixture(scope="session")
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

    items = col._catalog.get_items(col._catalog.vector_ids("image").tolist())
    ids = {os.path.relpath(it.path, root): i for i, it in items.items()}
    assert len(ids) == 23 and "linkdir/hidden.jpg" in ids and "link.jpg" in ids
    texts = col._catalog.get_items(col._catalog.vector_ids("text").tolist())
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
    items = col._catalog.get_items(col._catalog.vector_ids("image").tolist())
    return {os.path.relpath(it.path, root): i for i, it in items.items()}


# --- helpers --------------------------------------------------------------------------------------

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
    assert set(body) == {"hits", "took_ms", "total", "threshold", "notice"}, body
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
