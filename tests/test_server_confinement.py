"""The HTTP service serves files under the indexed folders only: links leading outside,
traversal in the URL, and catalog paths moved outside are refused without leaking a byte.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import make_image, make_images
from fastapi.testclient import TestClient
from server_fixtures import Served, _ids_by_name, assert_error, thumb_files

from retrieval import Collection
from retrieval.interfaces.server import create_app


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

    with col._catalog.engine.begin() as conn:
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
        names = {Path(it.path).name: i for i, it in col._catalog.get_items(
            col._catalog.vector_ids("image").tolist()).items()}
        assert http.get(f"/items/{names['lone.jpg']}/image").content == lone.read_bytes()
        # a file next to an indexed single file is not under a root
        _set_path(col, names["lone.jpg"], str(neighbour))
        assert_error(http.get(f"/items/{names['lone.jpg']}/image"), 403)
        assert http.get(f"/items/{names['img000.jpg']}/image").status_code == 200
    finally:
        col.close()
