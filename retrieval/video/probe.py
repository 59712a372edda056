"""Opening a video with PyAV and reading what it says about itself (:func:`probe`).

Every way FFmpeg can refuse a file becomes a :class:`VideoError` of one line here; a missing or
unreadable file stays the ``OSError`` it is. PyAV is imported inside the functions, so importing
this module costs nothing at the CLI's start.
"""

from __future__ import annotations

import datetime
import math
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from retrieval.video.base import MAX_PIXELS, VideoError, VideoInfo, sane_duration

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.frame import VideoFrame
    from av.video.stream import VideoStream

# Packets read at most while looking for the first frame: a file that yields no picture in
# that many is broken, and probing must stay cheap whatever the file holds.
FIRST_FRAME_PACKETS = 300
# ISO base media brands (the ftyp box) that mean a QuickTime or an iTunes video file.
_BRANDS = {"qt": "mov", "m4v": "m4v", "m4vh": "m4v", "m4vp": "m4v"}


def ffmpeg_reason(exc: BaseException) -> str:
    """FFmpeg's words for an error, without the path or the function PyAV adds to them."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(reason).split())


def _top_boxes(path: str, limit: int = 64) -> list[bytes]:
    """The types of an ISO media file's top-level boxes (ftyp, moov, mdat, ...), read from
    their headers alone; empty for a file that does not start with an ftyp box."""
    boxes: list[bytes] = []
    with open(path, "rb") as f:
        size_total = os.fstat(f.fileno()).st_size
        at = 0
        while at + 8 <= size_total and len(boxes) < limit:
            f.seek(at)
            head = f.read(16)
            size, kind = struct.unpack(">I4s", head[:8])
            if not boxes and kind != b"ftyp":
                return []
            boxes.append(kind)
            if size == 1 and len(head) == 16:
                size = struct.unpack(">Q", head[8:16])[0]
            if size < 8:
                break
            at += size
    return boxes


def _unreadable(path: str, exc: BaseException) -> VideoError:
    """The one line for a file FFmpeg refuses to open; an MP4 without its index (moov box,
    written last unless the file is "fast start") is the usual truncated or unfinished copy."""
    reason = ffmpeg_reason(exc)
    try:
        if os.path.getsize(path) == 0:
            return VideoError("the file is empty")
        boxes = _top_boxes(path)
    except OSError:
        boxes = []
    if boxes and b"moov" not in boxes:
        return VideoError(f"the MP4/QuickTime index (moov box) is missing: the file is "
                          f"truncated or still being written ({reason})")
    return VideoError(f"not a video file FFmpeg can read ({reason})")


@contextmanager
def open_input(path: str) -> Iterator[InputContainer]:
    """The file opened for reading; VideoError when FFmpeg cannot read it as a media file.
    Only a regular file is opened: FFmpeg would wait for ever on a named pipe put in a
    video's place after the scan."""
    import stat

    import av

    from ..media import file_type

    mode = os.stat(path).st_mode  # a missing file is the file system's error, not a video's
    if not stat.S_ISREG(mode):
        raise VideoError(f"not a regular file ({file_type(mode)})")
    try:
        container = av.open(str(path), metadata_errors="replace")
    except av.error.FFmpegError as exc:
        if isinstance(exc, OSError) and not isinstance(exc, av.error.InvalidDataError):
            raise  # a missing or unreadable file is a file system error, not a video's
        raise _unreadable(str(path), exc) from exc
    try:
        yield container
    finally:
        container.close()


def video_stream(container: InputContainer, max_pixels: int = MAX_PIXELS) -> VideoStream:
    """The first real video stream: cover pictures of audio files (attached_pic) are not one.
    VideoError when there is none, or its picture is larger than ``max_pixels``."""
    import av

    audio = bool(container.streams.audio)
    for stream in container.streams.video:
        if stream.disposition & av.stream.Disposition.attached_pic:
            continue
        ctx = stream.codec_context
        if ctx is None:
            raise VideoError("the video codec is unknown to FFmpeg")
        if ctx.width * ctx.height > max_pixels:
            raise VideoError(f"the picture is {ctx.width}x{ctx.height}, larger than the "
                             f"{max_pixels / 1e6:g} MP a video may have")
        return stream
    if audio:
        raise VideoError("no video stream: the file holds audio only")
    raise VideoError("no video stream in the file")


def first_frame(container: InputContainer, stream: VideoStream) -> VideoFrame:
    """The first picture the stream decodes to (for its rotation and to prove it decodes)."""
    import av

    errors: list[str] = []
    for n, packet in enumerate(container.demux(stream)):
        if n >= FIRST_FRAME_PACKETS:
            break
        try:
            frames = stream.decode(packet)
        except av.error.DecoderNotFoundError as exc:
            raise VideoError(f"FFmpeg has no decoder for the {stream.codec_context.name} "
                             "codec") from exc
        except av.error.FFmpegError as exc:
            errors.append(ffmpeg_reason(exc))
            continue
        if frames:
            return frames[0]
    why = f": {errors[-1]}" if errors else ""
    raise VideoError(f"no picture could be decoded from the {stream.codec_context.name} "
                     f"stream{why}")


def rotation_of(frame: VideoFrame) -> int:
    """Clockwise degrees (0, 90, 180, 270) a player turns the picture, from the display
    matrix; PyAV gives the matrix's counter-clockwise angle."""
    try:
        ccw = float(frame.rotation)
    except (AttributeError, TypeError, ValueError):
        return 0
    if not math.isfinite(ccw):
        return 0
    return round(-ccw / 90) % 4 * 90


def parse_time(value: str | None) -> datetime.datetime | None:
    """A creation_time tag as naive UTC; None when absent, unparsable or the epoch's start
    (what a camera without a clock writes)."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        try:
            when = datetime.datetime.strptime(text[:19], "%Y-%m-%d %H:%M:%S")
        except ValueError:
            return None
    if when.tzinfo is not None:
        when = when.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    if when.year <= 1970 or when.year > 9000:
        return None
    return when


def _tag_seconds(value: str | None) -> float | None:
    """Matroska's per-track DURATION tag ("00:01:02.500000000") in seconds."""
    try:
        h, m, s = (value or "").split(":")
        return int(h) * 3600 + int(m) * 60 + float(s)
    except ValueError:
        return None


def header_duration(container: InputContainer, stream: VideoStream) -> float | None:
    """The video's length as the headers give it: the stream's own, then the container's
    (which may include a longer audio track); None when absurd or absent."""
    if stream.duration is not None and stream.time_base is not None:
        seconds = sane_duration(float(stream.duration * stream.time_base))
        if seconds is not None:
            return seconds
    tags = {k.lower(): v for k, v in stream.metadata.items()}
    seconds = sane_duration(_tag_seconds(tags.get("duration")))
    if seconds is not None:
        return seconds
    if container.duration is not None:
        return sane_duration(container.duration / 1_000_000)
    return None


def container_name(container: InputContainer, path: str) -> str:
    """A short format name: FFmpeg's first name, with "mp4"/"mov"/"m4v" told apart by the
    brand and "webm" by the Matroska header's DocType (FFmpeg names both families as one)."""
    name = container.format.name.split(",")[0]
    if name == "mov":
        brand = container.metadata.get("major_brand", "").strip().lower()
        return _BRANDS.get(brand, "mp4")
    if name == "matroska":
        with open(path, "rb") as f:
            if b"\x42\x82\x84webm" in f.read(64):  # DocType, 4 bytes long: "webm"
                return "webm"
    return name


def display_size(stream: VideoStream, rotation: int) -> tuple[int, int]:
    """(width, height) as shown: non-square pixels stretched, turned by the rotation."""
    ctx = stream.codec_context
    width, height = ctx.width, ctx.height
    sar = stream.sample_aspect_ratio
    if sar and 0.25 < sar < 4 and sar != 1:
        width = max(1, round(width * float(sar)))
    return (height, width) if rotation in (90, 270) else (width, height)


def _fps(stream: VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate and 0 < float(rate) < 10_000:
            return float(rate)
    return None


def _creation_time(container: InputContainer, stream: VideoStream) -> datetime.datetime | None:
    return (parse_time(container.metadata.get("creation_time"))
            or parse_time(stream.metadata.get("creation_time")))


def describe(container: InputContainer, stream: VideoStream, rotation: int, path: str
             ) -> VideoInfo:
    """The VideoInfo of an opened file."""
    width, height = display_size(stream, rotation)
    if width <= 0 or height <= 0:
        raise VideoError("the video stream has no picture size")
    codec: Any = stream.codec_context.codec
    return VideoInfo(
        duration=header_duration(container, stream), width=width, height=height,
        fps=_fps(stream), codec=getattr(codec, "canonical_name", None) or codec.name,
        container=container_name(container, path), taken_at=_creation_time(container, stream),
        rotation=rotation, has_audio=bool(container.streams.audio))


def probe(path: str) -> VideoInfo:
    """What the video at ``path`` says about itself; decodes its first picture, so a file that
    probes is one FFmpeg can decode.

    Raises VideoError for a file that is not a video (no video stream, audio only, garbage, a
    codec FFmpeg lacks); OSError for a missing or unreadable file.
    """
    with open_input(path) as container:
        stream = video_stream(container)
        rotation = rotation_of(first_frame(container, stream))
        return describe(container, stream, rotation, str(path))
