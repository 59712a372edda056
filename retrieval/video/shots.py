"""Decoding a video once, front to back, into shots with keyframes (:func:`shots`).

Per decoded frame the engine pays for one tiny thumbnail (cut detection, :mod:`.cuts`); about
twice a second it also converts a frame to keyframe size (:mod:`.parts` says which). Nothing
else is kept: one decoded frame (cut decisions come one frame late), the recent differences,
and at most about ten keyframe-sized candidates. Times come from each frame's own timestamp,
so variable frame rates, gaps and absurd header durations change nothing; a frame without a
timestamp is placed one frame period after the one before.

A file that ends early (truncated, damaged) is not an error once some pictures were decoded:
the stream yields the shots it found and ends; :attr:`ShotStream.truncated` and
:attr:`ShotStream.warning` then say what happened. A file with no decodable picture at all
raises :class:`VideoError`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any

from retrieval.video.base import KEYFRAME_SIDE, SEGMENT, Shot, VideoError, VideoInfo
from retrieval.video.probe import ffmpeg_reason, open_input, probe, video_stream

if TYPE_CHECKING:
    import numpy as np
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream
    from PIL import Image

# Packets in a row that fail to decode before the rest of the file is given up as damaged.
MAX_BAD_RUN = 100
# The end of the decoded pictures may fall this much short of the header's duration (seconds,
# or this share of it) before the stream calls the file truncated: headers round, and a
# container's duration may be its longer audio track's.
SHORT_BY = 1.0
SHORT_SHARE = 0.05


class Clock:
    """Presentation times in seconds from the video's start, strictly increasing."""

    def __init__(self, origin: float | None, fps: float | None) -> None:
        self.origin = origin
        self.step = 1 / fps if fps else 1 / 30  # until two frames show the real period
        self.offset = 0.0
        self.last: float | None = None

    def time(self, frame: VideoFrame) -> float:
        raw = frame.time
        if raw is None or not math.isfinite(raw):
            t = 0.0 if self.last is None else self.last + self.step
        else:
            if self.origin is None or (self.last is None and raw < self.origin):
                self.origin = raw
            t = raw - self.origin + self.offset
            if self.last is not None and t <= self.last:  # a timestamp going back: go on
                self.offset += self.last + self.step - t
                t = self.last + self.step
        if self.last is not None and 0 < t - self.last <= 4 * self.step:
            self.step = t - self.last
        self.last = t
        return t

    def end(self) -> float:
        """Where the last picture stops showing: one frame period after it."""
        return (self.last or 0.0) + self.step


class Pictures:
    """The two conversions of a decoded frame: the cut thumbnail and the keyframe."""

    def __init__(self, stream: VideoStream, rotation: int) -> None:
        from av.video.reformatter import VideoReformatter

        sar = stream.sample_aspect_ratio
        self.sar = float(sar) if sar and 0.25 < sar < 4 else 1.0
        self.rotation = rotation
        self.small = VideoReformatter()  # one each: each keeps its scaler between frames
        self.large = VideoReformatter()

    def thumb(self, frame: VideoFrame) -> np.ndarray:
        from retrieval.video.cuts import THUMB

        width, height = THUMB
        out = self.small.reformat(frame, width=width, height=height, format="rgb24",
                                  interpolation="AREA")
        return out.to_ndarray()

    def keyframe(self, frame: VideoFrame) -> Image.Image:
        from PIL import Image

        width = frame.width * self.sar
        scale = min(1.0, KEYFRAME_SIDE / max(width, frame.height))
        size = max(1, round(width * scale)), max(1, round(frame.height * scale))
        out = self.large.reformat(frame, width=size[0], height=size[1], format="rgb24",
                                  interpolation="AREA")
        picture = out.to_image()
        turn = {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180,
                270: Image.Transpose.ROTATE_90}.get(self.rotation)
        return picture.transpose(turn) if turn is not None else picture


def _origin(container: InputContainer) -> float | None:
    """The container's start time (seconds): players count from it."""
    start = container.start_time
    if start is None or not -86400e6 < start < 86400e6:
        return None
    return start / 1_000_000


def configure(container: InputContainer, stream: VideoStream, threads: int,
              fast: bool = False) -> None:
    """Threaded decoding of the video stream; every other stream skipped by the demuxer.

    ``fast`` skips the in-loop deblocking filter and the frames nothing refers to (most
    B-frames): the keyframes drift by 1-3 levels of 255 until the next key frame, and a cut
    lands on the first decoded frame of the new shot, which is exact when the encoder put a
    reference frame at the cut (x264 and x265 do, by scene-cut detection) and otherwise one
    or two frames late; where the drift snaps back at a key frame, a steady picture can cut
    (2 false cuts and 1 missed among 195 in the benchmark's 10 minutes, none without it). How
    much it saves depends on the encoder: 20-30% of the CPU time on x264 output, half on
    x265's (benchmarks/video.py).
    """
    import av

    stream.thread_type = "AUTO"
    stream.codec_context.thread_count = max(0, threads)
    if fast:
        stream.codec_context.options = {"skip_loop_filter": "all"}
        stream.codec_context.skip_frame = "NONREF"
    for other in container.streams:
        if other.index != stream.index:
            other.discard = av.stream.Discard.all


class ShotStream(Iterator[Shot]):
    """The shots of one video, in time order, decoded as they are asked for.

    After the last shot, :attr:`truncated` says whether the pictures stopped before the
    video's end (a damaged or cut-off file: the shots cover what could be decoded) and
    :attr:`warning` says so in one line (None for a clean file). :meth:`close` (or leaving a
    ``with`` block) releases the file early.
    """

    def __init__(self, path: str, info: VideoInfo, *, segment: float = SEGMENT,
                 threads: int = 0, on_progress: Callable[[float], None] | None = None,
                 fast: bool = False) -> None:
        if not segment > 0:
            raise ValueError(f"segment must be positive, not {segment!r}")
        self.path, self.info, self.segment = str(path), info, segment
        self.threads, self.on_progress, self.fast = threads, on_progress, fast
        self.truncated = False
        self.warning: str | None = None
        self.frames = 0  # pictures decoded so far
        self.decoded = 0.0  # seconds of video decoded so far
        self.cuts: list[float] = []  # start times of shots 1..n found so far
        self.bad_packets = 0  # packets the decoder refused
        self.peak_pictures = 0  # the most keyframe-sized pictures held at once
        self._stop_reason: str | None = None
        self._reported: float | None = None  # video time of the last progress report
        self._run = self._shots()

    def __iter__(self) -> ShotStream:
        return self

    def __next__(self) -> Shot:
        return next(self._run)

    def __enter__(self) -> ShotStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop decoding and release the file."""
        self._run.close()

    def _shots(self) -> Generator[Shot, None, None]:
        from retrieval.video.cuts import CutDetector
        from retrieval.video.parts import Parts

        with open_input(self.path) as container:
            stream = video_stream(container)
            configure(container, stream, self.threads, self.fast)
            clock = Clock(_origin(container), self.info.fps)
            pictures = Pictures(stream, self.info.rotation)
            detector, parts = CutDetector(), Parts(self.segment)
            previous: tuple[VideoFrame, float] | None = None
            for frame in self._frames(container, stream):
                t = clock.time(frame)
                cut = detector.push(pictures.thumb(frame), t)
                if previous is None:
                    parts.start(t)
                else:
                    yield from self._place(parts, pictures, *previous, cut)
                previous = frame, t
                self._progress(t)
            if previous is None:
                raise VideoError(f"no picture could be decoded{self._why()}")
            yield from self._place(parts, pictures, *previous, None)
            self.decoded = clock.end()
            yield from parts.finish(self.decoded)
            self._check_end()

    def _place(self, parts: Any, pictures: Pictures, frame: VideoFrame, t: float,
               cut: float | None) -> list[Shot]:
        """Hand one frame (the one before the newest: cuts are known a frame late) to the
        parts; the parts that became final."""
        out: list[Shot] = []
        if cut is not None and cut == t:
            self.cuts.append(t)
            out += parts.cut(t)
        out += parts.advance(t)
        if parts.wants(t):
            parts.add(t, pictures.keyframe(frame))
            self.peak_pictures = parts.peak
        return out

    def _frames(self, container: InputContainer, stream: VideoStream) -> Iterator[VideoFrame]:
        """Decoded pictures; reading errors end them (the file is cut off or damaged there),
        single packets the decoder refuses are skipped."""
        import av

        packets = container.demux(stream)
        run = 0
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.error.FFmpegError as exc:
                self._stop_reason = f"reading stopped: {ffmpeg_reason(exc)}"
                return
            try:
                frames = stream.decode(packet)
            except av.error.DecoderNotFoundError as exc:
                raise VideoError(f"FFmpeg has no decoder for {self.info.codec}") from exc
            except av.error.FFmpegError as exc:
                self.bad_packets += 1
                run += 1
                self._stop_reason = f"undecodable data: {ffmpeg_reason(exc)}"
                if run >= MAX_BAD_RUN:
                    return
                continue
            run = 0 if frames else run
            self.frames += len(frames)
            yield from frames

    def _progress(self, t: float) -> None:
        self.decoded = t
        if self._reported is None or t >= self._reported + 1.0:
            self._reported = t
            if self.on_progress is not None:
                self.on_progress(t)

    def _why(self) -> str:
        return f" ({self._stop_reason})" if self._stop_reason else ""

    def _check_end(self) -> None:
        """Truncated: reading failed, or the pictures stop well before the header's end."""
        duration, end = self.info.duration, self.decoded
        short = duration is not None and end < duration - max(SHORT_BY, SHORT_SHARE * duration)
        reading_failed = self._stop_reason is not None and self._stop_reason.startswith(
            "reading stopped")
        if short or reading_failed:
            self.truncated = True
            of = f" of the {duration:.1f} s the header gives" if duration is not None else ""
            self.warning = f"truncated: the pictures stop at {end:.1f} s{of}{self._why()}"
        elif self.bad_packets:
            self.warning = (f"damaged: {self.bad_packets} packet(s) could not be decoded"
                            f"{self._why()}")


def shots(path: str, *, info: VideoInfo | None = None, segment: float = SEGMENT,
          threads: int = 0, on_progress: Callable[[float], None] | None = None,
          fast: bool = False) -> ShotStream:
    """The shots of the video at ``path``, in time order, each part with its keyframe.

    Decodes the file once, front to back (``threads`` decoder threads, 0 for FFmpeg's
    choice), in memory bounded whatever its length; ``on_progress(seconds)`` is called about
    every second of video. ``info`` (from :func:`probe`) saves probing the file again;
    ``fast`` skips the deblocking filter (see :func:`configure`). Raises VideoError for a file
    that is not a decodable video (at once when probing, else on the first ``next``); a
    truncated file yields what it holds and sets :attr:`ShotStream.truncated`.
    """
    return ShotStream(path, info if info is not None else probe(path), segment=segment,
                      threads=threads, on_progress=on_progress, fast=fast)


def cut_times(path: str, **kw: Any) -> list[float]:
    """Where the cuts are: the start times of shots 1..n (for tests and diagnostics)."""
    with shots(path, **kw) as stream:
        for _ in stream:
            pass
        return stream.cuts
