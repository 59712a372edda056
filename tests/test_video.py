"""The video engine on real files written by tests/videos.py: cuts where the clips change, for
several codecs and containers; parts and keyframes; what probe reads; bad files; bounded memory.

Videos are small (160x120, 24 fps, a few seconds) and written once per module.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from videos import (
    BLUE_SQUARE,
    GREEN_STAR,
    PURPLE_TRIANGLE,
    RED_CIRCLE,
    YELLOW_CROSS,
    Clip,
    random_clips,
    write_absurd_duration,
    write_audio_only,
    write_audio_with_cover,
    write_garbage,
    write_truncated,
    write_unknown_codec,
    write_video,
)

from retrieval.training.synthetic import BACKGROUNDS, COLOURS
from retrieval.video import (
    KEYFRAME_SIDE,
    VIDEO_EXTENSIONS,
    Shot,
    ShotStream,
    VideoError,
    cut_times,
    probe,
    shots,
)
from retrieval.video.cuts import THUMB, CutDetector
from retrieval.video.parts import Parts

SIZE = (160, 120)
CLIPS = [Clip(RED_CIRCLE, 1.5), Clip(BLUE_SQUARE, 1.0), Clip(GREEN_STAR, 2.0),
         Clip(YELLOW_CROSS, 0.75), Clip(PURPLE_TRIANGLE, 1.25)]
FORMATS = {  # name: (suffix, codec, codec as FFmpeg names it, container name)
    "h264-mp4": (".mp4", None, "h264", "mp4"),
    "h264-mov": (".mov", None, "h264", "mov"),
    "hevc-mkv": (".mkv", "libx265", "hevc", "matroska"),
    "vp9-webm": (".webm", None, "vp9", "webm"),
    "mpeg4-avi": (".avi", None, "mpeg4", "avi"),
    "av1-mkv": (".mkv", "libsvtav1", "av1", "matroska"),
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def written(folder: Path) -> dict[str, tuple[Path, list[float]]]:
    """One video per format, the same clips in each: (path, true cut times)."""
    out = {}
    for name, (suffix, codec, _, _) in FORMATS.items():
        path = folder / f"{name}{suffix}"
        out[name] = path, write_video(path, CLIPS, size=SIZE, codec=codec)
    return out


def _all(path: Path, **kw: object) -> tuple[list[Shot], ShotStream]:
    stream = shots(str(path), **kw)  # type: ignore[arg-type]
    return list(stream), stream


def _quadrant_of(picture: object, colour: str) -> tuple[int, int]:
    """(column, row), each 0 or 1, of the centroid of the pixels of a named colour."""
    pixels = np.asarray(picture, dtype=np.int16)
    near = np.abs(pixels - np.array(COLOURS[colour])).sum(axis=2) < 90
    ys, xs = np.nonzero(near)
    assert len(xs) > 20, f"no {colour} pixels"
    h, w = near.shape
    return int(xs.mean() > w / 2), int(ys.mean() > h / 2)


@pytest.mark.parametrize("name", FORMATS)
def test_hard_cuts_are_found_at_the_first_frame_of_each_clip(written, name) -> None:
    path, truth = written[name]
    assert cut_times(str(path)) == pytest.approx(truth, abs=1e-3)


@pytest.mark.parametrize("name", FORMATS)
def test_probe_reads_size_rate_codec_and_container(written, name) -> None:
    path, _ = written[name]
    _, _, codec, container = FORMATS[name]
    info = probe(str(path))
    assert (info.width, info.height, info.rotation) == (160, 120, 0)
    assert info.fps == pytest.approx(24)
    assert info.duration == pytest.approx(6.5, abs=0.05)
    assert (info.codec, info.container, info.has_audio) == (codec, container, False)
    assert json.loads(json.dumps(info.to_metadata())) == {
        "fps": 24.0, "codec": codec, "container": container, "rotation": 0, "has_audio": False}


@pytest.mark.parametrize(("size", "fps", "suffix"), [((160, 120), 24, ".mp4"),
                                                     ((64, 48), 12, ".webm")])
def test_cuts_between_random_scenes_are_all_found(folder, size, fps, suffix) -> None:
    path = folder / f"random{suffix}"
    truth = write_video(path, random_clips(20, seed=5), size=size, fps=fps, seed=5)
    assert cut_times(str(path)) == pytest.approx(truth, abs=1e-3)


def test_variable_frame_rate_cuts_are_frame_accurate(folder) -> None:
    path = folder / "vfr.mp4"
    truth = write_video(path, CLIPS, size=SIZE, vfr=True, seed=3)
    assert sum(abs(t - round(t * 24) / 24) > 1e-3 for t in truth) >= 3  # off the 24 fps grid
    assert cut_times(str(path)) == pytest.approx(truth, abs=1e-3)


def test_shots_cover_the_video_in_order(written) -> None:
    path, truth = written["h264-mp4"]
    found, stream = _all(path)
    assert [s.index for s in found] == [0, 1, 2, 3, 4]
    assert [s.start for s in found] == pytest.approx([0.0, *truth], abs=1e-3)
    assert all(a.end == b.start for a, b in itertools.pairwise(found))
    assert found[-1].end == pytest.approx(6.5, abs=1e-3)
    assert all(s.start <= s.keyframe_time < s.end for s in found)
    assert not stream.truncated and stream.warning is None
    assert stream.frames == 156 and stream.decoded == pytest.approx(6.5, abs=1e-3)


def test_each_keyframe_shows_its_shot(written) -> None:
    found, _ = _all(written["vp9-webm"][0])
    for shot, clip in zip(found, CLIPS, strict=True):
        pixels = np.asarray(shot.keyframe, dtype=np.int16)
        corner = pixels[:8, :8].reshape(-1, 3).mean(axis=0)
        assert np.abs(corner - BACKGROUNDS[clip.scene.background]).max() < 30
        _quadrant_of(shot.keyframe, clip.scene.things[0].colour)
        assert shot.keyframe.mode == "RGB" and shot.keyframe.size == SIZE


def test_keyframe_is_inside_the_part_not_its_first_frame(written) -> None:
    found, _ = _all(written["h264-mp4"][0])
    for shot in found:
        assert shot.keyframe_time >= shot.start + 0.2
        assert abs(shot.keyframe_time - (shot.start + shot.end) / 2) <= 0.5


def test_a_long_shot_is_split_into_parts_each_with_its_keyframe(folder) -> None:
    path = folder / "long.mp4"
    write_video(path, [Clip(RED_CIRCLE, 1.0), Clip(BLUE_SQUARE, 5.25), Clip(GREEN_STAR, 4.25)],
                size=SIZE)
    found, _ = _all(path, segment=2.0)
    assert [(s.index, s.part) for s in found] == [(0, 0), (1, 0), (1, 1), (1, 2), (2, 0),
                                                  (2, 1)]
    # 5.25 s: 2 + 2 + 1.25; 4.25 s: 2 + 2.25 (a quarter-second tail joins the part before)
    assert [round(s.end - s.start, 2) for s in found] == [1.0, 2.0, 2.0, 1.25, 2.0, 2.25]
    assert all(s.start < s.keyframe_time < s.end for s in found)
    assert len({id(s.keyframe) for s in found}) == len(found)


def test_default_segment_splits_a_shot_longer_than_eight_seconds(folder) -> None:
    path = folder / "take.mkv"
    write_video(path, [Clip(GREEN_STAR, 17.0)], size=(64, 48), fps=12)
    found, _ = _all(path)
    assert [s.part for s in found] == [0, 1]
    assert [round(s.start, 2) for s in found] == [0.0, 8.0]
    assert found[-1].end == pytest.approx(17.0, abs=0.01)  # Matroska counts milliseconds


@pytest.mark.parametrize(("rotate", "quadrant"), [(90, (1, 0)), (180, (1, 1)), (270, (0, 1))])
def test_rotation_is_read_and_applied_to_keyframes(folder, rotate, quadrant) -> None:
    path = folder / f"phone-{rotate}.mp4"
    write_video(path, [Clip(RED_CIRCLE, 1.0)], size=SIZE, rotate=rotate)
    info = probe(str(path))
    assert info.rotation == rotate
    assert (info.width, info.height) == (SIZE[::-1] if rotate != 180 else SIZE)
    [shot] = list(shots(str(path), info=info))
    assert shot.keyframe.size == (info.width, info.height)
    assert _quadrant_of(shot.keyframe, "red") == quadrant  # drawn at the top left


def test_keyframes_are_at_most_keyframe_side(folder) -> None:
    path = folder / "wide.mp4"
    write_video(path, [Clip(RED_CIRCLE, 0.5)], size=(1280, 544), fps=8)
    [shot] = list(shots(str(path)))
    assert shot.keyframe.size == (KEYFRAME_SIDE, round(544 * KEYFRAME_SIDE / 1280))


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_creation_time_is_read_as_naive_utc(folder, suffix) -> None:
    path = folder / f"dated{suffix}"
    write_video(path, [Clip(RED_CIRCLE, 0.5)], size=(64, 48), creation_time="2021-06-07T08:09:10Z")
    taken = probe(str(path)).taken_at
    assert taken is not None and taken.isoformat() == "2021-06-07T08:09:10"


@pytest.mark.parametrize("stamp", [None, "1970-01-01T00:00:00Z", "yesterday"])
def test_missing_epoch_or_unparsable_creation_time_is_none(folder, stamp) -> None:
    path = folder / f"undated-{stamp and stamp[:4]}.mp4"
    write_video(path, [Clip(RED_CIRCLE, 0.5)], size=(64, 48), creation_time=stamp)
    assert probe(str(path)).taken_at is None


@pytest.mark.parametrize("suffix", [".mp4", ".webm", ".mkv"])
def test_audio_is_noticed_and_not_in_the_way(folder, suffix) -> None:
    path = folder / f"sound{suffix}"
    truth = write_video(path, CLIPS[:3], size=SIZE, audio=True)
    assert probe(str(path)).has_audio
    assert cut_times(str(path)) == pytest.approx(truth, abs=1e-3)


def test_every_extension_is_known() -> None:
    assert {".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"} == VIDEO_EXTENSIONS


def _one_line_error(path: Path, call=probe) -> str:
    """The message of the VideoError that probing (or reading all shots of) a file raises."""
    with pytest.raises(VideoError) as caught:
        result = call(str(path))
        if isinstance(result, ShotStream):
            list(result)
    message = str(caught.value)
    assert "\n" not in message and str(path) not in message and path.name not in message
    return message


def test_garbage_and_empty_files_are_refused_in_one_line(folder) -> None:
    write_garbage(folder / "garbage.mp4")
    (folder / "empty.mkv").write_bytes(b"")
    (folder / "text.avi").write_text("not a video\n")
    assert "not a video file" in _one_line_error(folder / "garbage.mp4")
    assert _one_line_error(folder / "empty.mkv") == "the file is empty"
    assert "not a video file" in _one_line_error(folder / "text.avi", shots)


def test_audio_only_files_have_no_video_stream(folder) -> None:
    write_audio_only(folder / "song.m4a")
    write_audio_with_cover(folder / "song.mp3")  # the cover shows as a one-picture stream
    for name in ("song.m4a", "song.mp3"):
        assert _one_line_error(folder / name) == "no video stream: the file holds audio only"


def test_a_codec_ffmpeg_does_not_know_is_refused(folder) -> None:
    src = folder / "for-unknown.mkv"
    write_video(src, CLIPS[:2], size=(64, 48))
    write_unknown_codec(folder / "unknown.mkv", src)
    assert "codec" in _one_line_error(folder / "unknown.mkv", shots)


def test_an_mp4_cut_before_its_index_says_so(written, folder) -> None:
    write_truncated(folder / "cut.mp4", written["h264-mp4"][0])
    assert "moov" in _one_line_error(folder / "cut.mp4")


@pytest.mark.parametrize("suffix", [".mkv", ".webm", ".mp4"])
def test_a_truncated_file_yields_what_it_holds_and_says_so(folder, suffix) -> None:
    src = folder / f"whole{suffix}"
    truth = write_video(src, CLIPS, size=SIZE, faststart=True)
    write_truncated(folder / f"half{suffix}", src, fraction=0.6)
    found, stream = _all(folder / f"half{suffix}")
    assert stream.truncated and stream.warning is not None and "truncated" in stream.warning
    assert "\n" not in stream.warning
    assert 1 <= len(found) < len(CLIPS) + 1 and found[-1].end < 6.0
    assert [s.start for s in found[1:]] == pytest.approx(truth[:len(found) - 1], abs=1e-3)


def test_an_absurd_header_duration_is_ignored(folder) -> None:
    src = folder / "plain.mkv"
    truth = write_video(src, CLIPS[:3], size=(64, 48))
    for seconds in (1e12, float("nan"), -5.0):
        path = folder / f"absurd-{seconds}.mkv"
        write_absurd_duration(path, src, seconds)
        assert probe(str(path)).duration is None
        found, stream = _all(path)
        assert [s.start for s in found[1:]] == pytest.approx(truth, abs=1e-3)
        assert not stream.truncated


def test_a_picture_above_the_pixel_limit_is_refused(written) -> None:
    from retrieval.video.probe import open_input, video_stream

    with open_input(str(written["h264-mp4"][0])) as container:
        assert video_stream(container, max_pixels=160 * 120).width == 160
        with pytest.raises(VideoError, match=r"^the picture is 160x120, larger than the "
                                             r"0\.01 MP a video may have$"):
            video_stream(container, max_pixels=10_000)


def test_a_missing_file_is_an_os_error(folder) -> None:
    with pytest.raises(FileNotFoundError):
        probe(str(folder / "nowhere.mp4"))


def test_a_single_frame_video_is_one_shot_of_positive_length(folder) -> None:
    path = folder / "one.mp4"
    write_video(path, [Clip(RED_CIRCLE, 1 / 24)], size=(64, 48))
    [shot] = list(shots(str(path)))
    assert shot.start == 0 and shot.end == pytest.approx(1 / 24) and shot.keyframe_time == 0


def test_a_one_frame_clip_at_the_end_makes_no_empty_shot(folder) -> None:
    path = folder / "blip.mp4"
    write_video(path, [Clip(RED_CIRCLE, 1.0), Clip(BLUE_SQUARE, 1 / 24)], size=(64, 48))
    found, _ = _all(path)
    assert all(s.end > s.start for s in found)
    assert found[-1].end == pytest.approx(1 + 1 / 24)


def test_fades_flashes_and_pans_are_not_cuts(folder) -> None:
    cases = {
        "fade": ([Clip(RED_CIRCLE, 2, fade_out=1.0), Clip(BLUE_SQUARE, 2, fade_in=1.0)], 1),
        "fast-fade": ([Clip(RED_CIRCLE, 2, fade_out=0.25), Clip(GREEN_STAR, 2, fade_in=0.25)],
                      1),
        "flash": ([Clip(RED_CIRCLE, 2, flash=1.0), Clip(BLUE_SQUARE, 1)], 1),
        "pan": ([Clip(RED_CIRCLE, 2, pan=3), Clip(GREEN_STAR, 2, pan=8)], 1),
    }
    for name, (clips, most) in cases.items():
        path = folder / f"{name}.mp4"
        write_video(path, clips, size=SIZE)
        found = cut_times(str(path))
        assert 1 <= len(found) <= most, (name, found)
        assert 0.9 <= found[0] <= 2.05, (name, found)


def test_progress_is_reported_about_every_second(written) -> None:
    seen: list[float] = []
    list(shots(str(written["h264-mp4"][0]), on_progress=seen.append))
    assert seen == sorted(seen) and seen[0] == 0.0 and 6 <= len(seen) <= 8


def test_one_decoder_thread_finds_the_same_shots(written) -> None:
    path, truth = written["hevc-mkv"]
    assert cut_times(str(path), threads=1) == pytest.approx(truth, abs=1e-3)


def test_fast_decoding_finds_the_same_cuts(written) -> None:
    path, truth = written["h264-mp4"]
    assert cut_times(str(path), fast=True) == pytest.approx(truth, abs=1e-3)


def test_closing_early_releases_the_file(written) -> None:
    with shots(str(written["h264-mp4"][0])) as stream:
        first = next(stream)
    assert first.index == 0
    with pytest.raises(StopIteration):
        next(stream)


def test_memory_does_not_grow_with_the_video(folder) -> None:
    """The keyframe-sized pictures held at once (Pillow and FFmpeg allocate in C, out of
    tracemalloc's sight) and the Python allocations are the same for a video 3x longer."""
    paths = {seconds: folder / f"single-{seconds:.0f}.mkv" for seconds in (20.0, 60.0)}
    for seconds, path in paths.items():
        write_video(path, [Clip(GREEN_STAR, seconds)], size=(64, 48), fps=12)
    list(shots(str(paths[20.0])))  # first use: imports and caches, not the video's cost
    peaks, traced = [], []
    for seconds, path in paths.items():
        stream = shots(str(path))
        tracemalloc.start()
        found = list(stream)
        traced.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        peaks.append(stream.peak_pictures)
        assert len(found) == math.ceil(seconds / 8 - 0.25)
    assert peaks[0] == peaks[1] <= 11
    assert traced[1] < traced[0] + 50_000, traced


# The detector alone, on made-up thumbnails.

def _thumbs(levels: list[float], seed: int = 0, noise: float = 2.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    w, h = THUMB
    return [np.clip(level + rng.normal(0, noise, (h, w, 3)), 0, 255).astype(np.uint8)
            for level in levels]


def _detect(frames: list[np.ndarray], fps: float = 24) -> list[float]:
    detector = CutDetector()
    cuts = [detector.push(f, i / fps) for i, f in enumerate(frames)]
    return [c for c in cuts if c is not None]


def test_detector_cuts_a_step_at_its_first_frame() -> None:
    assert _detect(_thumbs([60] * 30 + [180] * 30)) == [30 / 24]


def test_detector_ignores_noise_a_flash_and_a_slow_fade() -> None:
    assert _detect(_thumbs([100] * 60)) == []
    assert _detect(_thumbs([60] * 30 + [250] + [60] * 30)) == []
    assert _detect(_thumbs([200 - 4 * i for i in range(48)])) == []


def test_detector_cuts_a_small_change_only_in_a_steady_picture() -> None:
    levels = [100] * 30 + [106] * 30
    assert _detect(_thumbs(levels, noise=0.4)) == [30 / 24]
    assert _detect(_thumbs(levels, noise=3.0)) == []


def test_detector_keeps_shots_at_least_half_a_second() -> None:
    levels = [40] * 24 + [200] * 6 + [120] * 18 + [220] * 12  # the second step 0.25 s later
    assert _detect(_thumbs(levels)) == [1.0, 2.0]


def test_parts_hold_few_pictures_and_choose_the_middle() -> None:
    parts = Parts(segment=8.0)
    out: list[Shot] = []
    rng = random.Random(0)
    t = 0.0
    while t < 30:
        out += parts.advance(t)
        if parts.wants(t):
            parts.add(t, object())  # type: ignore[arg-type]
        t += rng.uniform(0.02, 0.07)  # variable frame rate
    out += parts.finish(t)
    assert [s.part for s in out] == [0, 1, 2, 3] and out[-1].end == t
    assert parts.peak <= 11
    for s in out:
        assert abs(s.keyframe_time - (s.start + s.end) / 2) < 0.3


def test_a_named_pipe_in_a_videos_place_is_refused_at_once(tmp_path: Path) -> None:
    """A named pipe put where a video was (after the scan saw a file) would keep FFmpeg, and
    the content hash, waiting for a writer for ever: both refuse it in one line."""
    import os

    from retrieval.media import hash_file

    pipe = tmp_path / "clip.mp4"
    os.mkfifo(pipe)
    with pytest.raises(VideoError, match=r"^not a regular file \(a named pipe\)$"):
        probe(str(pipe))
    with pytest.raises(OSError, match=r"^not a regular file \(a named pipe\)$"):
        hash_file(pipe)
