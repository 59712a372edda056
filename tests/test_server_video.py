"""Videos over HTTP: video hits (``video``, ``start``, ``end``) from ``/search``,
``/search/upload`` and ``/items/{id}``; shot and video thumbnails from the stored keyframes;
``/items/{id}/video`` with byte ranges, a media type from the probed container (never the
name), and the same checks as images (under an indexed folder, the file that was indexed,
still a video).

Real videos written with PyAV (``tests/videos.py``: clips of the synthetic scenes the shipped
demo model was trained on), indexed with the demo model and served in-process with FastAPI's
``TestClient``. Tests that change files use a small collection of their own.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from server_fixtures import HIT_KEYS, assert_error, jpeg_size
from videos import BLUE_SQUARE, GREEN_STAR, PURPLE_TRIANGLE, RED_CIRCLE, YELLOW_CROSS, Clip
from videos import write_video as _write_video

from retrieval import Collection
from retrieval.interfaces.server import create_app
from retrieval.training.synthetic import render

FPS = 12
SIZE = (128, 96)
VIDEO_KEYS = HIT_KEYS | {"video", "start", "end"}
# file -> (clips, codec or None for the suffix's, the media type it is served as)
VIDEOS: dict[str, tuple[list[Clip], str | None, str]] = {
    "holiday.mp4": ([Clip(RED_CIRCLE, 2.0), Clip(BLUE_SQUARE, 2.0), Clip(GREEN_STAR, 2.0)],
                    None, "video/mp4"),
    "garden.webm": ([Clip(YELLOW_CROSS, 1.5), Clip(PURPLE_TRIANGLE, 1.5)], None, "video/webm"),
    "clip.mov": ([Clip(GREEN_STAR, 1.0)], None, "video/quicktime"),
    "clip.mkv": ([Clip(BLUE_SQUARE, 1.0)], None, "video/x-matroska"),
    # VP9 in Matroska, named .mkv: Matroska (the name only tells WebM from Matroska)
    "vp9.mkv": ([Clip(RED_CIRCLE, 1.0)], "libvpx-vp9", "video/x-matroska"),
    "clip.avi": ([Clip(PURPLE_TRIANGLE, 1.0)], None, "video/x-msvideo"),
}
# An MPEG transport stream named .mp4: FFmpeg reads it by its content; no video type for it
DISGUISED = "stream.mp4"


def write_video(path: Path, clips: list[Clip], codec: str | None = None) -> None:
    _write_video(path, clips, fps=FPS, size=SIZE, codec=codec)


@dataclass
class Site:
    col: Collection
    root: Path
    http: TestClient
    videos: dict[str, int]  # file name -> the video item's id
    image: int  # the id of an image beside the videos

    def shots(self, name: str) -> list[dict[str, Any]]:
        """The shots of one video, in time order, as the API lists them."""
        r = self.http.post("/search", json={"text": "a shape", "target": "video", "k": 50,
                                            "segments": True, "path": f"*/{name}"})
        assert r.status_code == 200, r.text
        return sorted(r.json()["hits"], key=lambda h: h["start"])


@pytest.fixture(scope="module")
def demo_encoder() -> Any:
    from retrieval import ModelSpec, load_encoder

    return load_encoder(ModelSpec.parse("demo"), "cpu")


def _video_ids(col: Collection) -> dict[str, int]:
    shots = col._catalog.get_items(col._catalog.vector_ids("shot").tolist()).values()
    return {Path(s.path or "").name: int(s.parent_id or 0) for s in shots}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo_encoder: Any) -> Iterator[Site]:
    base = tmp_path_factory.mktemp("video-server")
    root = base / "media"
    root.mkdir()
    for name, (clips, codec, _) in VIDEOS.items():
        write_video(root / name, clips, codec)
    write_video(base / "stream.ts", [Clip(YELLOW_CROSS, 1.0)], codec="libx264")
    shutil.move(base / "stream.ts", root / DISGUISED)
    render(GREEN_STAR, 64).save(root / "star.png")
    col = Collection(base / "col", encoder=demo_encoder)
    summary = col.index([root], workers=0)
    assert (summary.added, summary.failed) == (len(VIDEOS) + 2, 0), summary
    videos = _video_ids(col)
    assert set(videos) == {*VIDEOS, DISGUISED}, videos
    image = int(col._catalog.vector_ids("image")[0])
    yield Site(col, root, TestClient(create_app(col), raise_server_exceptions=False), videos,
               image)
    col.close()


def _check_video_hit(h: dict[str, Any], scored: bool = True) -> None:
    assert set(h) == VIDEO_KEYS, h
    assert h["kind"] == "video" and type(h["video"]) is int and os.path.isabs(h["path"])
    assert isinstance(h["start"], float) and isinstance(h["end"], float)
    assert 0 <= h["start"] < h["end"], h
    assert (h["score"] is not None) == scored
    assert h["metadata"]["duration"] >= h["end"] - 0.05  # Matroska counts in ms


# --- search and look-up ---------------------------------------------------------------------------

@pytest.mark.parametrize("target", ["video", "videos"])
def test_a_video_search_returns_shots_with_their_time(site: Site, target: str) -> None:
    r = site.http.post("/search", json={"text": "a blue square", "target": target, "k": 5})
    assert r.status_code == 200, r.text
    hits = r.json()["hits"]
    for h in hits:
        _check_video_hit(h)
    assert len({h["video"] for h in hits}) == len(hits)  # one hit per video
    names = [Path(h["path"]).name for h in hits]
    assert names[0] in ("holiday.mp4", "clip.mkv"), names
    best = hits[0]
    assert best["video"] == site.videos[names[0]] and best["id"] != best["video"]
    if names[0] == "holiday.mp4":  # the blue square is its second clip, from 2 s to 4 s
        assert best["start"] == pytest.approx(2.0, abs=1 / FPS)
        assert best["end"] == pytest.approx(4.0, abs=1 / FPS)
    # an image search is unchanged: no video fields on its hits
    images = site.http.post("/search", json={"text": "a green star"}).json()["hits"]
    assert images and all(set(h) == HIT_KEYS and h["kind"] == "image" for h in images)


def test_segments_list_every_shot_of_a_video(site: Site) -> None:
    shots = site.shots("holiday.mp4")
    assert len(shots) >= 3, shots
    assert {h["video"] for h in shots} == {site.videos["holiday.mp4"]}
    assert len({h["id"] for h in shots}) == len(shots)
    assert shots[0]["start"] == pytest.approx(0.0, abs=1e-6)
    for a, b in itertools.pairwise(shots):
        assert a["end"] == pytest.approx(b["start"], abs=1e-6)
    # without segments: one hit for the video
    one = site.http.post("/search", json={"text": "a shape", "target": "video", "k": 50,
                                          "path": "*/holiday.mp4"}).json()["hits"]
    assert len(one) == 1 and one[0]["id"] in {h["id"] for h in shots}


def test_the_upload_form_searches_videos_and_segments(site: Site) -> None:
    buf = io.BytesIO()
    render(GREEN_STAR, 64, seed=3).save(buf, "PNG")
    form = {"target": "videos", "k": "20", "path": "*/holiday.mp4"}
    files = {"image": ("star.png", buf.getvalue(), "image/png")}
    one = site.http.post("/search/upload", data=form, files=files)
    assert one.status_code == 200, one.text
    [best] = one.json()["hits"]
    _check_video_hit(best)
    assert best["start"] == pytest.approx(4.0, abs=1 / FPS)  # the green star: 4 s to 6 s
    every = site.http.post("/search/upload", data={**form, "segments": "true"}, files=files)
    assert every.status_code == 200, every.text
    hits = every.json()["hits"]
    assert len(hits) >= 3 and hits[0]["id"] == best["id"]
    for h in hits:
        _check_video_hit(h)


def test_items_of_shots_and_videos(site: Site) -> None:
    shot = site.shots("holiday.mp4")[1]
    r = site.http.get(f"/items/{shot['id']}")
    assert r.status_code == 200, r.text
    looked_up = r.json()
    _check_video_hit(looked_up, scored=False)
    assert {k: looked_up[k] for k in ("id", "video", "start", "end", "path")} == {
        k: shot[k] for k in ("id", "video", "start", "end", "path")}
    video = site.http.get(f"/items/{shot['video']}").json()
    _check_video_hit(video, scored=False)
    assert video["id"] == video["video"] == shot["video"] and video["start"] == 0.0
    assert video["end"] == pytest.approx(6.0, abs=0.2)
    assert video["metadata"]["codec"] == "h264" and video["metadata"]["container"] == "mp4"
    image = site.http.get(f"/items/{site.image}").json()
    assert set(image) == HIT_KEYS and image["kind"] == "image"


# --- thumbnails from keyframes --------------------------------------------------------------------

def _colour(data: bytes) -> tuple[int, ...]:
    """The mean colour of a JPEG."""
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64)
    return tuple(round(float(c)) for c in pixels.mean(axis=(0, 1)))


def test_thumbnails_of_shots_are_their_keyframes(site: Site) -> None:
    shots = site.shots("holiday.mp4")
    thumbs = []
    for h in shots:
        r = site.http.get(f"/items/{h['id']}/thumbnail", params={"size": 128})
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg", r.text
        assert "sandbox" in r.headers["content-security-policy"]
        assert max(jpeg_size(r.content)) == 128  # keyframes are 128 x 96 here: never upscaled
        thumbs.append(r.content)
    # the shots show different scenes (white, black and grey backgrounds)
    assert len({_colour(t) for t in thumbs}) == len(thumbs)
    # a video's thumbnail is its first shot's
    video = site.http.get(f"/items/{site.videos['holiday.mp4']}/thumbnail?size=128")
    assert video.status_code == 200 and video.content == thumbs[0]
    cached = sorted(p.name for p in (site.col.path / "thumbnails").iterdir())
    assert any(n.startswith(f"{shots[0]['id']}-") for n in cached), cached
    again = site.http.get(f"/items/{shots[0]['id']}/thumbnail", params={"size": 128})
    assert again.content == thumbs[0]


# --- the video file -------------------------------------------------------------------------------

def _headers_of_a_file(r: httpx.Response) -> None:
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["accept-ranges"] == "bytes"
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp, csp


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_the_video_file_by_its_content_type(site: Site, name: str) -> None:
    data = (site.root / name).read_bytes()
    shot = site.shots(name)[0]
    for item in (shot["id"], site.videos[name]):
        r = site.http.get(f"/items/{item}/video")
        assert r.status_code == 200, r.text
        assert r.content == data
        assert r.headers["content-type"] == VIDEOS[name][2]
        assert int(r.headers["content-length"]) == len(data)
        assert "content-disposition" not in r.headers
        _headers_of_a_file(r)


def test_a_container_without_a_video_type_is_a_download(site: Site) -> None:
    r = site.http.get(f"/items/{site.videos[DISGUISED]}/video")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"  # not video/mp4
    assert r.headers["content-disposition"].startswith("attachment")
    assert r.content == (site.root / DISGUISED).read_bytes()
    _headers_of_a_file(r)


def test_media_types_come_from_the_probed_container() -> None:
    from retrieval.search.files import video_media_type

    assert video_media_type("mp4", "h264") == video_media_type("m4v", "hevc") == "video/mp4"
    assert video_media_type("mov", "h264") == "video/quicktime"
    assert video_media_type("webm", "vp9") == video_media_type("webm", "av1") == "video/webm"
    # a WebM header over a codec WebM does not allow: the Matroska it is
    assert video_media_type("webm", "h264") == "video/x-matroska"
    assert video_media_type("matroska", "vp9") == "video/x-matroska"
    assert video_media_type("avi", "mpeg4") == "video/x-msvideo"
    for container in ("mpegts", "flv", "png_pipe", "gif", "html", ""):
        assert video_media_type(container, "h264") == "application/octet-stream", container


def _ranged(site: Site, item: int, header: str, **more: str) -> httpx.Response:
    return site.http.get(f"/items/{item}/video", headers={"Range": header, **more})


def test_byte_ranges(site: Site) -> None:
    data = (site.root / "holiday.mp4").read_bytes()
    size = len(data)
    item = site.videos["holiday.mp4"]
    for header, first, last in (("bytes=0-99", 0, 99), ("bytes=1000-1999", 1000, 1999),
                                (f"bytes={size - 10}-", size - 10, size - 1),
                                ("bytes=-300", size - 300, size - 1),
                                (f"bytes=-{size * 2}", 0, size - 1),
                                (f"bytes=5-{size * 3}", 5, size - 1),
                                (f"bytes={size - 1}-{size - 1}", size - 1, size - 1)):
        r = _ranged(site, item, header)
        assert r.status_code == 206, (header, r.status_code, r.text[:200])
        assert r.content == data[first:last + 1], header
        assert r.headers["content-range"] == f"bytes {first}-{last}/{size}", header
        assert int(r.headers["content-length"]) == last - first + 1
        assert r.headers["content-type"] == "video/mp4"
        _headers_of_a_file(r)


def test_unsatisfiable_and_ignored_ranges(site: Site) -> None:
    data = (site.root / "holiday.mp4").read_bytes()
    size = len(data)
    item = site.videos["holiday.mp4"]
    for header in (f"bytes={size}-", f"bytes={size + 100}-{size + 200}", "bytes=-0"):
        r = _ranged(site, item, header)
        assert_error(r, 416, needle="outside the file")
        assert r.headers["content-range"] == f"bytes */{size}", header
    # several ranges, another unit, a malformed or an invalid range: the whole file
    for header in ("bytes=0-10,20-30", "items=0-10", "bytes=abc", "bytes=10-5", "bytes=-",
                   "bytes=" + "9" * 40 + "-"):
        r = _ranged(site, item, header)
        assert r.status_code == 200 and r.content == data, header
    # If-Range: the file's current ETag keeps the range; another one asks for all of it
    etag = site.http.get(f"/items/{item}/video").headers["etag"]
    assert _ranged(site, item, "bytes=0-9", **{"If-Range": etag}).content == data[:10]
    stale = _ranged(site, item, "bytes=0-9", **{"If-Range": '"1-2"'})
    assert stale.status_code == 200 and stale.content == data


def test_images_and_videos_are_not_each_other(site: Site) -> None:
    video = site.videos["holiday.mp4"]
    shot = site.shots("holiday.mp4")[0]["id"]
    assert_error(site.http.get(f"/items/{site.image}/video"), 404, needle="not a video")
    for item in (video, shot):
        assert_error(site.http.get(f"/items/{item}/image"), 404, needle="not an image")
    assert_error(site.http.get("/items/999999/video"), 404)
    assert site.http.get(f"/items/{site.image}/image").headers["content-type"] == "image/png"


# --- files that changed or moved after indexing ---------------------------------------------------

@dataclass
class Small:
    col: Collection
    root: Path
    outside: Path
    http: TestClient
    video: int  # a.mp4's item id
    shot: int  # its first shot


@pytest.fixture
def small(tmp_path: Path, demo_encoder: Any) -> Iterator[Small]:
    root, outside = tmp_path / "media", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    write_video(root / "a.mp4", [Clip(RED_CIRCLE, 1.0), Clip(BLUE_SQUARE, 1.0)])
    write_video(outside / "secret.mp4", [Clip(GREEN_STAR, 2.0)])
    col = Collection(tmp_path / "col", encoder=demo_encoder)
    assert col.index([root], workers=0).added == 1
    video = _video_ids(col)["a.mp4"]
    shot = min(col._catalog.get_items(col._catalog.vector_ids("shot").tolist()).values(),
               key=lambda s: s.start_time or 0.0).id
    yield Small(col, root, outside, TestClient(create_app(col), raise_server_exceptions=False),
                video, shot)
    col.close()


def _no_leak(r: httpx.Response, secret: bytes) -> None:
    assert r.headers["content-type"].startswith("application/json"), r.headers
    assert secret[:4096] not in r.content and secret[-4096:] not in r.content


def test_a_link_leading_outside_is_not_served(small: Small) -> None:
    secret = (small.outside / "secret.mp4").read_bytes()
    (small.root / "a.mp4").unlink()
    os.symlink(small.outside / "secret.mp4", small.root / "a.mp4")
    for item in (small.video, small.shot):
        for headers in ({}, {"Range": "bytes=0-1023"}):
            r = small.http.get(f"/items/{item}/video", headers=headers)
            assert_error(r, 403, needle="outside the indexed folders")
            _no_leak(r, secret)


def test_a_changed_video_is_not_served_until_indexed_again(small: Small) -> None:
    write_video(small.root / "a.mp4", [Clip(YELLOW_CROSS, 2.5)])  # rewritten, not indexed
    for item in (small.video, small.shot):
        r = small.http.get(f"/items/{item}/video", headers={"Range": "bytes=0-99"})
        assert_error(r, 409, needle="changed since it was indexed")
    # the same size and time on bytes that are no video: still refused
    item = small.col._catalog.get_items([small.video])[small.video]
    (small.root / "a.mp4").write_bytes(b"\x00" * (item.size or 0))
    os.utime(small.root / "a.mp4", ns=(item.mtime_ns or 0, item.mtime_ns or 0))
    assert_error(small.http.get(f"/items/{small.video}/video"), 409,
                 needle="no longer a readable video")
    # indexed again: the new video is served
    write_video(small.root / "a.mp4", [Clip(YELLOW_CROSS, 2.5)])
    small.col.index([small.root], workers=0)
    video = _video_ids(small.col)["a.mp4"]
    r = small.http.get(f"/items/{video}/video")
    assert r.status_code == 200 and r.content == (small.root / "a.mp4").read_bytes()


def test_a_hard_link_to_another_file_is_not_served(small: Small, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("password: hunter2\n")
    (small.root / "a.mp4").unlink()
    os.link(secret, small.root / "a.mp4")
    r = small.http.get(f"/items/{small.video}/video")
    assert_error(r, 409, needle="changed since it was indexed")
    assert b"hunter2" not in r.content


def test_gone_and_special_files(small: Small) -> None:
    thumb = small.http.get(f"/items/{small.shot}/thumbnail")
    (small.root / "a.mp4").unlink()
    assert_error(small.http.get(f"/items/{small.video}/video"), 404, needle="gone")
    # the thumbnail comes from the catalog's keyframe: no file is read for it
    again = small.http.get(f"/items/{small.shot}/thumbnail")
    assert again.status_code == 200 and again.content == thumb.content
    os.mkfifo(small.root / "a.mp4")  # a named pipe in its place must not hang the server
    assert_error(small.http.get(f"/items/{small.video}/video"), 409, needle="regular file")


def test_the_page_may_play_videos_of_its_server(small: Small) -> None:
    csp = small.http.get("/").headers["content-security-policy"]
    assert "media-src 'self'" in csp, csp
