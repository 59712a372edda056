"""Test videos written with PyAV: clips of synthetic scenes with known cut times, and bad files.

A clip shows one :class:`retrieval.training.synthetic.Scene` (the shapes the demo model was
trained on) for a number of seconds. Inside a clip the picture drifts by a pixel or two and
carries a little noise, so a clip is not a still image, yet has no cut in it; between clips the
picture changes at once (a hard cut), unless the clips fade to or from black.

Used by ``tests/test_video.py``, by the integration tests of indexing and by
``benchmarks/video.py``. Writing a few seconds at 160x120 takes well under a second.
"""

from __future__ import annotations

import math
import random
import shutil
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.training.synthetic import Scene, Thing, render

# The encoder a suffix gets when none is given.
CODECS = {".mp4": "libx264", ".mov": "libx264", ".m4v": "libx264", ".mkv": "libx264",
          ".webm": "libvpx-vp9", ".avi": "mpeg4"}
AUDIO_CODECS = {".webm": "libopus", ".avi": "mp3"}  # others: aac
# Scenes that differ at a glance (background and colour), for tests that name clips by hand.
RED_CIRCLE = Scene((Thing("circle", "red", "large", "top left"),), "white")
BLUE_SQUARE = Scene((Thing("square", "blue", "large", "bottom right"),), "black")
GREEN_STAR = Scene((Thing("star", "green", "large", "center"),), "gray")
YELLOW_CROSS = Scene((Thing("cross", "yellow", "large", "top right"),), "black")
PURPLE_TRIANGLE = Scene((Thing("triangle", "purple", "large", "bottom left"),), "white")
SCENES = (RED_CIRCLE, BLUE_SQUARE, GREEN_STAR, YELLOW_CROSS, PURPLE_TRIANGLE)


@dataclass(frozen=True)
class Clip:
    """One shot of a test video: a scene shown for ``seconds`` (fades included)."""

    scene: Scene
    seconds: float
    fade_in: float = 0.0  # seconds from black at the clip's start
    fade_out: float = 0.0  # seconds to black at the clip's end
    pan: float = 0.0  # pixels per frame the picture slides to the left (a camera pan)
    flash: float | None = None  # seconds into the clip of one white frame (a camera flash)


def random_clips(n: int, seed: int = 0, seconds: tuple[float, float] = (0.8, 2.0)
                 ) -> list[Clip]:
    """``n`` clips of random scenes and lengths, each on another background than the clip
    before it, so every cut is plain to see. (Two scenes on one background can differ by a
    small shape alone: a small red triangle, then a small purple star in the same corner is
    a change of 4 levels in 255 on average, which the cut detector may take for noise.)"""
    from retrieval.training.synthetic import random_scene

    rng = random.Random(seed)
    clips: list[Clip] = []
    while len(clips) < n:
        scene = random_scene(rng)
        if clips and scene.background == clips[-1].scene.background:
            continue
        clips.append(Clip(scene, round(rng.uniform(*seconds), 3)))
    return clips


def _picture(scene: Scene, size: tuple[int, int], seed: int) -> np.ndarray:
    """The scene at ``size`` (width, height); drawn at 256 px at most and scaled, so a 4K
    frame costs no more to draw than a small one."""
    from PIL import Image

    side = min(max(size), 256)
    img = render(scene, size=side, seed=seed).resize(size, Image.Resampling.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _noise_bank(size: tuple[int, int], rng: np.random.Generator, n: int = 4) -> list[np.ndarray]:
    """A few noise fields (+-4 levels, in 2x2 blocks) that frames cycle through, each frame
    shifting its field at random (so no two frames share their noise, as with a camera's
    sensor): fresh noise for every frame of a 4K video would cost more than encoding it."""
    w, h = size
    bank = []
    for _ in range(n):
        small = rng.integers(-4, 5, size=((h + 1) // 2, (w + 1) // 2, 1), dtype=np.int16)
        bank.append(small.repeat(2, axis=0).repeat(2, axis=1)[:h, :w])
    return bank


def _clip_frames(clip: Clip, base: np.ndarray, n: int, noise: list[np.ndarray], fps: float,
                 rng: np.random.Generator) -> Iterator[np.ndarray]:
    """The frames of one clip: the picture drifting slowly, with noise and the fades."""
    h, w = base.shape[:2]
    for i in range(n):
        t = i / fps
        dx = round(2 * math.sin(2 * math.pi * t / 3) - clip.pan * i)
        dy = round(1.5 * math.cos(2 * math.pi * t / 4))
        grain = np.roll(noise[i % len(noise)], (int(rng.integers(h)), int(rng.integers(w))),
                        axis=(0, 1))
        frame = np.roll(base, (dy, dx), axis=(0, 1)).astype(np.int16) + grain
        gain = 1.0
        if clip.fade_in > 0 and t < clip.fade_in:
            gain = min(gain, t / clip.fade_in)
        if clip.fade_out > 0 and clip.seconds - t < clip.fade_out:
            gain = min(gain, (clip.seconds - t - 1 / fps) / clip.fade_out)
        if gain < 1.0:
            frame = frame * max(gain, 0.0)
        if clip.flash is not None and abs(t - clip.flash) < 0.5 / fps:
            frame = frame // 4 + 200
        yield np.clip(frame, 0, 255).astype(np.uint8)


def _frame_times(clips: Sequence[Clip], fps: float, vfr: bool, seed: int
                 ) -> list[list[float]]:
    """Presentation times of each clip's frames. Variable frame rate: intervals between 0.4 and
    1.6 frame periods, as phones write when the light or the load changes."""
    rng = random.Random(seed)
    out, t = [], 0.0
    for clip in clips:
        times, end = [], t + clip.seconds
        while t < end - 1e-9:
            times.append(t)
            t += (rng.uniform(0.4, 1.6) if vfr else 1.0) / fps
        out.append(times)
    return out


def _add_video_stream(out: Any, codec: str, fps: float, size: tuple[int, int], rotate: int,
                      time_base: Fraction, bitrate: int | None) -> Any:
    stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
    if bitrate:
        stream.bit_rate = bitrate
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = time_base
    if codec == "libx264":
        stream.options = {"preset": "veryfast"}
    elif codec == "libx265":
        stream.options = {"preset": "ultrafast", "x265-params": "log-level=none"}
    elif codec.startswith("libvpx"):
        stream.options = {"deadline": "realtime", "cpu-used": "8", "crf": "32", "b": "0"}
    if rotate:
        stream.set_display_rotation(-rotate)  # PyAV counts counter-clockwise
    return stream


class _Tone:
    """A quiet 440 Hz tone, encoded in step with the video (a muxer wants its streams
    interleaved) so the file has an audio stream."""

    def __init__(self, out: Any, codec: str) -> None:
        self.out, self.rate = out, 48000 if codec == "libopus" else 44100
        self.stream = out.add_stream(codec, rate=self.rate, layout="mono")
        self.pts = 0

    def write_until(self, seconds: float) -> None:
        import av

        n = self.stream.codec_context.frame_size or 1024
        while self.pts < seconds * self.rate:
            t = (np.arange(n) + self.pts) / self.rate
            samples = (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32).reshape(1, -1)
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate, frame.pts = self.rate, self.pts
            frame.time_base = Fraction(1, self.rate)
            for packet in self.stream.encode(frame):
                self.out.mux(packet)
            self.pts += n

    def close(self) -> None:
        for packet in self.stream.encode():
            self.out.mux(packet)


def write_video(path: str | Path, clips: Sequence[Clip], *, fps: float = 24,
                size: tuple[int, int] = (320, 240), codec: str | None = None, vfr: bool = False,
                creation_time: str | None = None, rotate: int = 0, audio: bool = False,
                seed: int = 0, faststart: bool = False, bitrate: int | None = None
                ) -> list[float]:
    """Write the clips one after the other and return the true cut times (the start of clips
    1..n, in seconds: the time of each clip's first frame).

    ``rotate`` is the clockwise rotation a player applies (a display matrix, as phones write for
    portrait videos); ``faststart`` puts an MP4's index first, so a truncated copy still opens;
    ``bitrate`` (bits/s) replaces the encoder's constant quality (x265 squeezes the synthetic
    pictures to almost nothing, far below what a camera writes).
    """
    import av

    path = Path(path)
    codec = codec or CODECS[path.suffix.lower()]
    time_base = Fraction(1, 90000) if vfr else 1 / Fraction(fps).limit_denominator(1001)
    options = {"movflags": "faststart"} if faststart else {}
    rng = np.random.default_rng(seed)
    noise = _noise_bank(size, rng)
    times = _frame_times(clips, fps, vfr, seed)
    with av.open(str(path), "w", options=options) as out:
        if creation_time is not None:
            out.metadata["creation_time"] = creation_time
        stream = _add_video_stream(out, codec, fps, size, rotate, time_base, bitrate)
        tone = _Tone(out, AUDIO_CODECS.get(path.suffix.lower(), "aac")) if audio else None
        for k, (clip, clip_times) in enumerate(zip(clips, times, strict=True)):
            base = _picture(clip.scene, size, seed * 1000 + k)
            frames = _clip_frames(clip, base, len(clip_times), noise, fps, rng)
            for t, pixels in zip(clip_times, frames, strict=True):
                frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
                frame.pts, frame.time_base = round(t / time_base), time_base
                for packet in stream.encode(frame):
                    out.mux(packet)
                if tone is not None:
                    tone.write_until(t)
        for packet in stream.encode():
            out.mux(packet)
        if tone is not None:
            tone.write_until(sum(c.seconds for c in clips))
            tone.close()
    return [float(round(ts[0] / time_base) * time_base) for ts in times[1:] if ts]


def write_audio_only(path: str | Path, seconds: float = 2.0) -> None:
    """An audio file (AAC in MP4 by default, the suffix decides the container)."""
    import av

    with av.open(str(path), "w") as out:
        tone = _Tone(out, AUDIO_CODECS.get(Path(path).suffix.lower(), "aac"))
        tone.write_until(seconds)
        tone.close()


def write_audio_with_cover(path: str | Path, seconds: float = 2.0) -> None:
    """An MP3 with a cover picture: FFmpeg shows the picture as a video stream of one frame
    (disposition attached_pic), which is not a video."""
    import io

    import av
    from PIL import Image

    with av.open(str(path), "w", format="mp3") as out:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
        cover.disposition = av.stream.Disposition.attached_pic
        tone = _Tone(out, "mp3")
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (200, 30, 30)).save(buf, format="JPEG")
        packet = av.Packet(buf.getvalue())
        packet.stream, packet.pts, packet.dts = cover, 0, 0
        out.mux(packet)
        tone.write_until(seconds)
        tone.close()


def write_truncated(path: str | Path, src: str | Path, fraction: float = 0.5) -> None:
    """A copy of ``src`` cut at ``fraction`` of its bytes, as an interrupted copy leaves it."""
    data = Path(src).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * fraction)])


def write_garbage(path: str | Path, n: int = 20000, seed: int = 0) -> None:
    """Random bytes (under a video suffix, they stand for a file that is not a video)."""
    Path(path).write_bytes(random.Random(seed).randbytes(n))


def _patch(path: Path, marker: bytes, new: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(marker)
    if at < 0:
        raise ValueError(f"{marker!r} not found in {path}")
    data[at + len(marker):at + len(marker) + len(new)] = new
    path.write_bytes(bytes(data))


def write_absurd_duration(path: str | Path, src: str | Path, seconds: float = 1e12) -> None:
    """A copy of the Matroska file ``src`` whose header claims ``seconds`` (the Segment Info's
    Duration, a float in milliseconds, element 0x4489; FFmpeg writes it 8 bytes long), with the
    per-track DURATION tags removed, so only the absurd figure remains."""
    path = Path(path)
    shutil.copyfile(src, path)
    _patch(path, b"\x44\x89\x88", struct.pack(">d", seconds * 1000))
    data = path.read_bytes().replace(b"DURATION", b"XURATION")  # a tag nobody reads
    path.write_bytes(data)


def write_unknown_codec(path: str | Path, src: str | Path) -> None:
    """A copy of the H.264 Matroska file ``src`` whose codec id names a codec FFmpeg does not
    know (V_MPEG4/ISO/AVC -> V_MPEG4/ISO/XYZ), as a file from a newer camera would look."""
    path = Path(path)
    shutil.copyfile(src, path)
    _patch(path, b"V_MPEG4/ISO/", b"XYZ")
