"""Searching inside videos (issue 25), from the Python API, the command line and HTTP, on both
catalogs: videos generated in the test (shapes of known colours shown at known times, cuts at
known frames, several codecs and containers) indexed with the shipped demo model beside a few
images; a query must find the right video and the right shot.

The demo model was trained on the synthetic scenes the clips show, so "a red circle" finds
the clip that shows one. Times are checked against the cuts the videos were written with.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from fastapi.testclient import TestClient
from videos import (
    BLUE_SQUARE,
    GREEN_STAR,
    PURPLE_TRIANGLE,
    RED_CIRCLE,
    YELLOW_CROSS,
    Clip,
    write_audio_only,
    write_truncated,
    write_video,
)

from retrieval import Collection, QueryError
from retrieval.interfaces.server import create_app
from retrieval.training.synthetic import Scene, Thing, render

FPS = 12
SIZE = (128, 96)
# video file -> its clips; every scene appears in one video only
VIDEOS: dict[str, list[Clip]] = {
    "holiday.mp4": [Clip(RED_CIRCLE, 2.0), Clip(BLUE_SQUARE, 2.0), Clip(GREEN_STAR, 2.0)],
    "garden.mkv": [Clip(YELLOW_CROSS, 3.0), Clip(PURPLE_TRIANGLE, 3.0)],
}
CODECS = {"garden.mkv": "libx265"}  # HEVC in Matroska; the mp4 is H.264
# which video and clip each query should find
EXPECTED = {"a red circle": ("holiday.mp4", 0), "a blue square": ("holiday.mp4", 1),
            "a green star": ("holiday.mp4", 2), "a yellow cross": ("garden.mkv", 0),
            "a purple triangle": ("garden.mkv", 1)}
IMAGES = {"photo-orange.png": Scene((Thing("circle", "orange", "large", "center"),), "gray")}


@dataclass
class Setup:
    col: Collection
    path: Path
    folder: Path
    cuts: dict[str, list[float]]  # video -> the start of each clip, 0 first


def _write_folder(folder: Path) -> dict[str, list[float]]:
    folder.mkdir(parents=True)
    cuts = {}
    for name, clips in VIDEOS.items():
        found = write_video(folder / name, clips, fps=FPS, size=SIZE, codec=CODECS.get(name))
        cuts[name] = [0.0, *found]
    for name, scene in IMAGES.items():
        render(scene, 64).save(folder / name)
    return cuts


@pytest.fixture(scope="module")
def demo_encoder() -> Any:
    from retrieval import ModelSpec, load_encoder

    return load_encoder(ModelSpec.parse("demo"), "cpu")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def setup(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
          demo_encoder: Any) -> Iterator[Setup]:
    url = None if request.param == "sqlite" else str(
        request.getfixturevalue("postgres").create_database())
    root = tmp_path_factory.mktemp(f"videos-{request.param}")
    cuts = _write_folder(root / "media")
    col = Collection(root / "col", encoder=demo_encoder, catalog=url)
    summary = col.index([root / "media"], workers=0)
    assert (summary.added, summary.failed) == (len(VIDEOS) + len(IMAGES), 0), summary
    yield Setup(col, root / "col", root / "media", cuts)
    col.close()


def _clip_of(setup: Setup, name: str, start: float, end: float) -> int:
    """Which clip of video ``name`` a hit from ``start`` to ``end`` lies in (the clip that
    holds most of it)."""
    bounds = [*setup.cuts[name], sum(c.seconds for c in VIDEOS[name])]
    overlap = [max(0.0, min(end, b) - max(start, a)) for a, b in pairwise(bounds)]
    return overlap.index(max(overlap))


def test_a_text_query_finds_the_video_and_the_shot(setup: Setup) -> None:
    for query, (name, clip) in EXPECTED.items():
        hits = setup.col.search(query, target="video", k=3)
        best = hits[0]
        assert best.kind == "video" and Path(best.path or "").name == name, (query, hits)
        assert best.start is not None and best.end is not None and best.start < best.end
        assert _clip_of(setup, name, best.start, best.end) == clip, (query, best)
        assert best.video is not None and best.video != best.id
        assert best.metadata["duration"] == pytest.approx(
            sum(c.seconds for c in VIDEOS[name]), abs=0.2)


def test_shots_start_at_the_cuts(setup: Setup) -> None:
    """Every shot of a video, in time order, starts at a cut the video was written with
    (to a frame), and together the shots cover the video."""
    for name in VIDEOS:
        hits = setup.col.search(f"a video {name}", target="video", segments=True, k=50,
                                path=str(setup.folder / name))
        spans = sorted((h.start, h.end) for h in hits)
        assert spans and all(s is not None and e is not None for s, e in spans)
        starts = [s for s, _ in spans]
        for cut in setup.cuts[name]:  # each cut begins a shot (long shots add parts)
            assert min(abs(s - cut) for s in starts) <= 1.0 / FPS + 1e-6, (name, cut, spans)
        assert spans[0][0] == pytest.approx(0.0, abs=1e-6)
        assert all(abs(a[1] - b[0]) < 1e-6 for a, b in pairwise(spans)), spans


def test_one_hit_per_video_unless_segments(setup: Setup) -> None:
    hits = setup.col.search("a shape", target="video", k=10)
    assert len({h.video for h in hits}) == len(hits) == len(VIDEOS)
    every = setup.col.search("a shape", target="video", segments=True, k=10)
    assert len(every) > len(hits) and len({h.id for h in every}) == len(every)
    # each video's hit is its best shot: the first of its shots in the full ranking
    firsts: dict[int | None, int] = {}
    for h in every:
        firsts.setdefault(h.video, h.id)
    assert [h.id for h in hits] == [firsts[h.video] for h in hits]
    # pages are slices of one ranking
    page = setup.col.search("a shape", target="video", k=1, offset=1)
    assert [h.id for h in page] == [hits[1].id]


def test_image_queries_and_more_like_this_find_moments(setup: Setup, tmp_path: Path) -> None:
    probe = tmp_path / "star.png"
    render(GREEN_STAR, 64, seed=9).save(probe)
    best = setup.col.search(image=str(probe), target="video")[0]
    assert Path(best.path or "").name == "holiday.mp4"
    assert _clip_of(setup, "holiday.mp4", best.start or 0, best.end or 0) == 2
    # more like a shot: the shot itself first, then the same scene's image elsewhere
    again = setup.col.search(like=best.id, target="video", segments=True, k=1)[0]
    assert again.id == best.id
    # images are not mixed into a video search, nor videos into an image search
    assert all(h.kind == "video" for h in setup.col.search("a circle", target="video"))
    assert all(h.kind == "image" for h in setup.col.search("a circle", k=20))


def test_filters_work_on_videos(setup: Setup) -> None:
    long_ones = setup.col.search("a shape", target="video", filters=["duration > 6.5"])
    assert {Path(h.path or "").name for h in long_ones} == set()
    six = setup.col.search("a shape", target="video", filters=["duration >= 5.9"])
    assert {Path(h.path or "").name for h in six} == set(VIDEOS)
    mkv = setup.col.search("a shape", target="video", path="*.mkv")
    assert {Path(h.path or "").name for h in mkv} == {"garden.mkv"}
    hevc = setup.col.search("a shape", target="video", filters=["codec = hevc"])
    assert {Path(h.path or "").name for h in hevc} == {"garden.mkv"}
    with pytest.raises(QueryError, match="duration needs a number"):
        setup.col.search("a shape", target="video", filters=["duration > long"])


def test_a_video_looked_up_by_id(setup: Setup) -> None:
    shot = setup.col.search("a yellow cross", target="video")[0]
    assert shot.video is not None
    video = setup.col.get(shot.video)
    assert video.kind == "video" and video.video == video.id and video.start == 0.0
    assert video.end == pytest.approx(6.0, abs=0.2)
    assert video.metadata["codec"] == "hevc"
    assert setup.col.get(shot.id).to_dict()["start"] == shot.start


def test_cli_shows_where_in_the_video(setup: Setup) -> None:
    out = run_cli("search", "a blue square", "--target", "video", "-k", "1",
                  collection=setup.path).stdout
    line = next(ln for ln in out.splitlines() if "holiday.mp4" in ln)
    assert "holiday.mp4 @ 00:02-00:04" in line, out
    data = json.loads(run_cli("search", "a blue square", "--target", "video", "-k", "1",
                              "--json", collection=setup.path).stdout.splitlines()[0])
    assert data["kind"] == "video" and data["start"] == pytest.approx(2.0, abs=1 / FPS)
    assert {"video", "start", "end"} <= set(data)
    every = run_cli("search", "a blue square", "--target", "video", "--segments", "-k", "5",
                    "--json", collection=setup.path).stdout.splitlines()
    assert len(every) == 5


def test_http_carries_video_start_and_end(setup: Setup) -> None:
    client = TestClient(create_app(setup.col))
    res = client.post("/search", json={"text": "a purple triangle", "target": "videos", "k": 2})
    assert res.status_code == 200, res.text
    hit = res.json()["hits"][0]
    assert hit["kind"] == "video" and Path(hit["path"]).name == "garden.mkv"
    assert hit["start"] == pytest.approx(3.0, abs=1 / FPS) and hit["end"] > hit["start"]
    seg = client.post("/search", json={"text": "a shape", "target": "video", "segments": True,
                                       "k": 10}).json()["hits"]
    assert len(seg) > 2


def test_keywords_find_videos_by_name(setup: Setup) -> None:
    hits = setup.col.search("garden", target="video", keywords=True)
    assert hits and all(Path(h.path or "").name == "garden.mkv" for h in hits)
    assert len(hits) == 1  # one hit per video


@pytest.fixture
def fresh(tmp_path: Path, demo_encoder: Any) -> Iterator[tuple[Collection, Path]]:
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "a.mp4", [Clip(RED_CIRCLE, 1.5), Clip(BLUE_SQUARE, 1.5)], fps=FPS,
                size=SIZE)
    col = Collection(tmp_path / "col", encoder=demo_encoder)
    assert col.index([folder], workers=0).added == 1
    yield col, folder
    col.close()


def test_incremental_videos(fresh: tuple[Collection, Path]) -> None:
    col, folder = fresh
    again = col.index([folder], workers=0)
    assert (again.unchanged, again.added, again.shots) == (1, 0, 0)
    shots = col._catalog.counts()["shot"]
    # a rename keeps the shots' vectors: nothing is decoded or embedded
    os.rename(folder / "a.mp4", folder / "b.mov")
    moved = col.index([folder], workers=0)
    assert (moved.added, moved.removed, moved.shots) == (1, 1, 0), moved
    assert col._catalog.counts()["shot"] == shots
    best = col.search("a blue square", target="video")[0]
    assert Path(best.path or "").name == "b.mov"
    # a changed video is decoded again and its old shots go
    write_video(folder / "b.mov", [Clip(YELLOW_CROSS, 2.0)], fps=FPS, size=SIZE)
    changed = col.index([folder], workers=0)
    assert changed.updated == 1 and changed.shots >= 1
    assert Path(col.search("a yellow cross", target="video")[0].path or "").name == "b.mov"
    assert col._catalog.counts()["shot"] < shots + 1
    # a deleted one is removed, with its shots
    (folder / "b.mov").unlink()
    gone = col.index([folder], workers=0)
    assert gone.removed == 1 and col._catalog.counts().get("shot", 0) == 0
    assert col.search("a yellow cross", target="video") == []


def test_bad_videos_are_one_line_each(fresh: tuple[Collection, Path]) -> None:
    col, folder = fresh
    write_audio_only(folder / "voice.m4v")
    write_truncated(folder / "cut.mp4", folder / "a.mp4")
    write_video(tmp := folder.parent / "whole.mkv", [Clip(RED_CIRCLE, 1.5),
                                                     Clip(BLUE_SQUARE, 1.5)], fps=FPS, size=SIZE)
    write_truncated(folder / "cut.mkv", tmp)
    (folder / "noise.webm").write_bytes(os.urandom(5000))
    (folder / "empty.avi").write_bytes(b"")
    shutil.copy(folder / "a.mp4", folder / "copy.mkv")  # an mp4 named .mkv: FFmpeg reads it
    summary = col.index([folder], workers=0)
    reasons = {Path(e.path).name: e.reason for e in summary.errors}
    assert {"voice.m4v", "noise.webm", "empty.avi"} <= set(reasons), reasons
    assert all("\n" not in r and r for r in reasons.values())
    assert "copy.mkv" not in reasons  # the same content as a.mp4: its shots are reused
    # an MP4 cut off before its index (moov box, at the end) cannot be read: one line
    assert "truncated" in reasons["cut.mp4"], reasons
    # a Matroska file cut off keeps the shots it holds, and says so in one line
    partial = {Path(e.path).name: e.reason for e in summary.partial}
    assert set(partial) == {"cut.mkv"} and "\n" not in partial["cut.mkv"], partial
    assert col.search("a red circle", target="video", path="*cut.mkv")
    assert Path(col.search("a blue square", target="video", k=5)[0].path or "").name in {
        "a.mp4", "copy.mkv"}


def test_a_catalog_from_before_videos_is_migrated(catalog_url: str | None, tmp_path: Path,
                                                  demo_encoder: Any) -> None:
    """A catalog written before videos existed (schema 6: no duration or shot times, no
    keyframes table) gets them on its next open, keeps its images, and indexes videos."""
    from sqlalchemy import delete, inspect

    from retrieval.storage.catalog import Catalog
    from retrieval.storage.schema import schema_version

    folder = tmp_path / "media"
    folder.mkdir()
    render(GREEN_STAR, 64).save(folder / "star.png")
    with Collection(tmp_path / "col", encoder=demo_encoder, catalog=catalog_url) as col:
        col.index([folder], workers=0)
        where = catalog_url or str(col._catalog.file)
    cat = Catalog(where)
    with cat.engine.begin() as conn:  # back to version 6
        conn.execute(delete(schema_version).where(schema_version.c.version == 7))
        conn.exec_driver_sql("DROP TABLE keyframes")
        conn.exec_driver_sql("DROP INDEX ux_items_video_path")
        for column in ("duration", "start_time", "end_time"):
            conn.exec_driver_sql(f"ALTER TABLE items DROP COLUMN {column}")
    cat.close()
    write_video(folder / "clip.mp4", [Clip(RED_CIRCLE, 1.0), Clip(BLUE_SQUARE, 1.0)], fps=FPS,
                size=SIZE)
    with Collection(tmp_path / "col", encoder=demo_encoder, catalog=catalog_url) as col:
        with col._catalog.engine.connect() as conn:
            assert {"duration", "start_time", "end_time"} <= {
                c["name"] for c in inspect(conn).get_columns("items")}
        summary = col.index([folder], workers=0)
        assert (summary.added, summary.unchanged, summary.failed) == (1, 1, 0)
        assert Path(col.search("a blue square", target="video")[0].path or "").name == "clip.mp4"
        assert Path(col.search("a green star")[0].path or "").name == "star.png"


def test_a_video_named_on_the_command_line_and_removed(tmp_path: Path) -> None:
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "one.webm", [Clip(GREEN_STAR, 1.0)], fps=FPS, size=SIZE)
    col = tmp_path / "col"
    out = json.loads(run_cli("index", folder / "one.webm", "--model", "demo", "--json",
                             collection=col).stdout.splitlines()[-1])
    assert (out["added"], out["failed"], out["shots"], out["embedded"]) == (1, 0, 1, 0), out
    info = json.loads(run_cli("info", "--json", collection=col).stdout)
    assert info["counts"]["video"] == 1 and info["counts"]["shot"] == 1, info
    assert "1 video (1 shot)" in run_cli("info", collection=col).stdout
    # an image search of a collection of videos says where they are
    missed = run_cli("search", "a green star", collection=col)
    assert "holds 1 video: search it with --target video" in missed.stderr, missed.stderr
    assert run_cli("remove", folder / "one.webm", collection=col).stdout.strip() == "1 removed"
    skipped = json.loads(run_cli("index", folder, "--no-videos", "--model", "demo", "--json",
                                 collection=col).stdout.splitlines()[-1])
    assert (skipped["added"], skipped["failed"]) == (0, 0), skipped


def test_progress_counts_seconds_of_video(tmp_path: Path, demo_encoder: Any) -> None:
    """The video phase's progress is in seconds of video (its rate is the real-time factor),
    out of the durations the headers give, and ends at the total."""
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "a.mp4", [Clip(RED_CIRCLE, 2.0), Clip(BLUE_SQUARE, 2.0)], fps=FPS,
                size=SIZE)
    write_video(folder / "b.mkv", [Clip(GREEN_STAR, 3.0)], fps=FPS, size=SIZE)
    events: list[Any] = []
    with Collection(tmp_path / "col", encoder=demo_encoder) as col:
        col.index([folder], workers=0, batch_size=1, progress=events.append)
    seen = [(e.done, e.total) for e in events if e.phase == "video"]
    assert seen[0] == (0, 7) and seen[-1] == (7, 7), seen
    assert [d for d, _ in seen] == sorted(d for d, _ in seen) and len(seen) > 3, seen


def _text_video(path: Path, lines: list[str], seconds: float = 1.5) -> None:
    """A video of a page of text (black on white) after a shot of shapes: OCR's test."""
    import av
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("RGB", (640, 360), (245, 245, 240))
    draw = ImageDraw.Draw(page)
    for n, line in enumerate(lines):
        draw.text((40, 60 + 90 * n), line, fill=(20, 20, 20),
                  font=ImageFont.load_default(size=48))
    shapes = render(RED_CIRCLE, 256).resize((640, 360))
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for picture in (shapes, page):
            for _ in range(round(seconds * FPS)):
                frame = av.VideoFrame.from_ndarray(np.asarray(picture), format="rgb24")
                out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def test_tags_captions_and_text_of_keyframes(tmp_path: Path, demo_encoder: Any) -> None:
    """Zero-shot tags, generated captions and recognised text apply to shots' keyframes, so
    a video search can filter on them and keywords find them."""
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "shapes.mp4", [Clip(RED_CIRCLE, 1.5), Clip(BLUE_SQUARE, 1.5)],
                fps=FPS, size=SIZE)
    with Collection(tmp_path / "col", encoder=demo_encoder) as col:
        col.index([folder], workers=0)
        col.tag(["circle", "square", "star"], top=1, min_score=0.0)
        squares = col.search("a shape", target="video", segments=True, tags=["square"])
        assert squares and all(_clip_of_shapes(h) == 1 for h in squares), squares
        made = col.generate_captions("demo-captioner")
        assert made.generated == 2, made
        # the demo captioner names colours surely, shapes less so
        for query, colour in (("a red circle", "red"), ("a blue square", "blue")):
            hit = col.search(query, target="video", segments=True)[0]
            assert colour in hit.metadata["generated_caption"], hit.metadata
        assert col.search("a shape", target="video", filters=["caption ~ *blue*"])


def _clip_of_shapes(hit: Any) -> int:
    return 0 if (hit.start or 0) < 1.4 else 1


def test_text_in_a_video_is_found_by_keywords(tmp_path: Path, demo_encoder: Any) -> None:
    if os.environ.get("RETRIEVAL_REQUIRE_OCR") != "1":  # CI: a missing package fails below
        pytest.importorskip("rapidocr", reason="the ocr extra is not installed")
    folder = tmp_path / "media"
    folder.mkdir()
    _text_video(folder / "slides.mp4", ["HOTEL LINDNER", "INVOICE 4711"])
    with Collection(tmp_path / "col", encoder=demo_encoder) as col:
        summary = col.index([folder], workers=0, ocr=True)
        assert summary.recognised >= 1 and not summary.errors, summary
        hits = col.search("invoice", target="video", keywords=True, segments=True)
        assert len(hits) == 1 and (hits[0].start or 0) >= 1.4, hits
        assert "INVOICE" in hits[0].metadata["ocr_text"]
        assert col.search("a shape", target="video", filters=["ocr ~ *lindner*"])


def test_without_pyav_videos_are_one_line_each(tmp_path: Path, demo_encoder: Any,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """An install without PyAV (the smallest one, without torch) still indexes images; each
    video is one line saying what to install."""
    folder = tmp_path / "media"
    folder.mkdir()
    write_video(folder / "a.mp4", [Clip(RED_CIRCLE, 1.0)], fps=FPS, size=SIZE)
    render(GREEN_STAR, 64).save(folder / "star.png")
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with Collection(tmp_path / "col", encoder=demo_encoder) as col:
        summary = col.index([folder], workers=0)
    assert (summary.added, summary.failed) == (1, 1), summary
    assert [e.reason for e in summary.errors] == [
        "PyAV is not installed (pip install av): videos are not indexed"]
