"""Items over HTTP (``/items/{id}``, its original image and its thumbnails): metadata, bytes,
sizes, EXIF orientation, the thumbnail cache, and files that changed, went or were replaced
after indexing.
"""

from __future__ import annotations

import io
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import make_image
from fastapi.testclient import TestClient
from PIL import Image
from server_fixtures import (
    RARE_CAPTION,
    Served,
    _ids_by_name,
    assert_error,
    check_hit,
    jpeg_size,
    thumb_files,
)

from retrieval import Collection


def test_captions_come_with_image_hits(served: Served) -> None:
    i = served.ids["img000.jpg"]
    r = served.http.get(f"/items/{i}")
    assert r.status_code == 200
    h = r.json()
    check_hit(h, scored=False)
    assert h == {"id": i, "score": None, "kind": "image", "path": str(served.file("img000.jpg")),
                 "text": RARE_CAPTION, "metadata": h["metadata"]}
    assert (h["metadata"]["width"], h["metadata"]["height"]) == (64, 48)
    assert h["metadata"]["size"] == served.file("img000.jpg").stat().st_size


def test_item_metadata_after_exif_orientation(served: Served) -> None:
    h = served.http.get(f"/items/{served.ids['rot.jpg']}").json()
    assert (h["metadata"]["width"], h["metadata"]["height"]) == (40, 80)


def test_original_image_bytes(served: Served) -> None:
    for name in ("img004.jpg", "alpha.png", "rot.jpg", "inner_link.jpg"):
        r = served.http.get(f"/items/{served.ids[name]}/image")
        assert r.status_code == 200, (name, r.text)
        assert r.content == served.file(name).read_bytes()
        assert r.headers["content-type"] == ("image/png" if name.endswith(".png")
                                             else "image/jpeg")


@pytest.mark.parametrize("size", [128, 256, 512])
def test_thumbnail_sizes(served: Served, size: int) -> None:
    r = served.http.get(f"/items/{served.ids['wide.jpg']}/thumbnail", params={"size": size})
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    w, h = jpeg_size(r.content)
    assert max(w, h) == size  # the original is 600 x 300
    assert abs(w / h - 2) < 0.05


def test_thumbnail_default_and_bucketed_sizes(served: Served) -> None:
    """Sizes are rounded up to 128/256/512/1024 (so that few files are cached); never above
    1024 and never upscaled."""
    wide = served.ids["wide.jpg"]
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail").content)) == 256
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail?size=100").content)) == 128
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail?size=513").content)) == 600
    assert max(jpeg_size(served.http.get(f"/items/{wide}/thumbnail?size=1024").content)) == 600
    small = served.ids["img006.jpg"]
    assert jpeg_size(served.http.get(f"/items/{small}/thumbnail?size=128").content) == (64, 48)


def test_thumbnail_applies_exif_orientation(served: Served) -> None:
    with Image.open(served.file("rot.jpg")) as img:
        assert img.size == (80, 40) and img.getexif()[0x0112] == 6
    r = served.http.get(f"/items/{served.ids['rot.jpg']}/thumbnail", params={"size": 128})
    w, h = jpeg_size(r.content)
    assert h > w and (w, h) == (40, 80)


def test_thumbnail_of_transparent_png(served: Served) -> None:
    r = served.http.get(f"/items/{served.ids['alpha.png']}/thumbnail", params={"size": 128})
    assert jpeg_size(r.content) == (128, 128)
    img = Image.open(io.BytesIO(r.content)).convert("RGB")
    assert img.getpixel((64, 64))[0] > 150  # the red square survived the RGBA -> RGB step


def test_thumbnail_is_cached_on_disk(served: Served) -> None:
    col, http = served.col, served.http
    shutil.rmtree(col.path / "thumbnails", ignore_errors=True)
    i = served.ids["img008.jpg"]
    first = http.get(f"/items/{i}/thumbnail", params={"size": 256})
    assert first.status_code == 200
    files = thumb_files(col)
    assert len(files) == 1 and next(iter(files)).startswith(f"{i}-")
    assert next(iter(files)).endswith(".jpg")
    time.sleep(0.05)
    second = http.get(f"/items/{i}/thumbnail", params={"size": 256})
    assert second.content == first.content
    assert thumb_files(col) == files  # same file: neither re-created nor touched
    assert "max-age" in second.headers.get("cache-control", "")
    # another size is another file; the first is kept
    http.get(f"/items/{i}/thumbnail", params={"size": 128})
    after = thumb_files(col)
    assert len(after) == 2 and set(files) <= set(after)


def test_a_changed_file_is_not_served_until_indexed_again(
        small: tuple[Collection, Path, TestClient]) -> None:
    col, root, http = small
    i = _ids_by_name(col, root)["img001.jpg"]
    before = http.get(f"/items/{i}/thumbnail?size=128")
    assert jpeg_size(before.content) == (64, 48)
    make_image(root / "img001.jpg", seed=77, size=(30, 60))  # replaced on disk, not re-indexed
    for url in (f"/items/{i}/thumbnail?size=128", f"/items/{i}/image"):
        assert_error(http.get(url), 409, needle="changed since it was indexed")
    col.index([root])
    after = http.get(f"/items/{i}/thumbnail?size=128")
    assert after.status_code == 200 and jpeg_size(after.content) == (30, 60)
    assert len(thumb_files(col)) == 2


def test_a_hard_link_to_another_file_is_not_served(
        small: tuple[Collection, Path, TestClient], tmp_path: Path) -> None:
    """Issue 11.2: an indexed image replaced by a hard link to any other file of the file
    system (here a secret beside the collection) passed the real-path check and was served."""
    col, root, http = small
    i = _ids_by_name(col, root)["img001.jpg"]
    secret = tmp_path / "secret.txt"
    secret.write_text("password: hunter2\n")
    (root / "img001.jpg").unlink()
    os.link(secret, root / "img001.jpg")
    r = http.get(f"/items/{i}/image")
    assert_error(r, 409, needle="changed since it was indexed")
    assert b"hunter2" not in r.content
    # Even with the indexed size and time copied onto it, a file that is no image is refused.
    item = col._catalog.get_items([i])[i]
    secret.write_bytes(b"x" * item.size)
    os.utime(secret, ns=(item.mtime_ns, item.mtime_ns))
    r = http.get(f"/items/{i}/image")
    assert_error(r, 409, needle="no longer a readable image")
    assert_error(http.get(f"/items/{i}/thumbnail"), 409, needle="no longer a readable image")


def test_missing_and_unreadable_files(small: tuple[Collection, Path, TestClient]) -> None:
    col, root, http = small
    names = _ids_by_name(col, root)
    (root / "img000.jpg").unlink()
    assert_error(http.get(f"/items/{names['img000.jpg']}/image"), 404, needle="gone")
    assert_error(http.get(f"/items/{names['img000.jpg']}/thumbnail"), 404, needle="gone")
    os.mkfifo(root / "img000.jpg")  # a named pipe in its place must not hang the server
    assert_error(http.get(f"/items/{names['img000.jpg']}/image"), 409, needle="regular file")
    img = http.get(f"/items/{names['img001.jpg']}/image")
    assert img.status_code == 200 and img.headers["content-type"] == "image/jpeg"
    assert img.content == (root / "img001.jpg").read_bytes()
    assert http.get(f"/items/{names['img001.jpg']}/thumbnail").status_code == 200


def test_concurrent_requests_for_one_thumbnail(small: tuple[Collection, Path, TestClient],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    col, root, http = small
    i = _ids_by_name(col, root)["img001.jpg"]
    replace = os.replace

    def slow_replace(src: Any, dst: Any) -> None:  # widens the window the race needs
        time.sleep(1.0)
        replace(src, dst)

    monkeypatch.setattr(os, "replace", slow_replace)
    statuses: list[int] = []
    bodies: list[bytes] = []
    start = threading.Barrier(4)

    def fetch() -> None:
        start.wait(30)
        r = http.get(f"/items/{i}/thumbnail?size=128")
        statuses.append(r.status_code)
        bodies.append(r.content)

    threads = [threading.Thread(target=fetch) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert statuses == [200] * 4, statuses
    for body in bodies:
        assert jpeg_size(body) == (64, 48)
