"""What the video engine hands out: a file's facts (:class:`VideoInfo`), its shots
(:class:`Shot`), the one error it raises (:class:`VideoError`) and the constants callers share.

Only the standard library is imported here: the scanner reads :data:`VIDEO_EXTENSIONS` at the
CLI's start, long before anything decodes a video.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

# Suffixes the scanner treats as videos (lower case, with the dot).
VIDEO_EXTENSIONS = frozenset({".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi"})
# A shot longer than this (seconds) is split into parts of about this length, each with its own
# keyframe, so a search can land inside a long take.
SEGMENT = 8.0
# The long side of a keyframe at most (pixels, display orientation): above every image model's
# input (224-384) with room for a centre crop, and small enough that holding a few is cheap.
KEYFRAME_SIDE = 512
# A duration in a header above this (seconds) is a broken header, not a video.
MAX_DURATION = 7 * 24 * 3600.0
# Pixels a video's picture may have at most, as an image's (retrieval.media): 8K is 33 MP; a
# larger picture costs the decoder 1.5 bytes a pixel for each frame it holds (several, with
# frame threads), which a crafted header could otherwise make any size.
MAX_PIXELS = 100_000_000


MISSING = "PyAV is not installed (pip install av): videos are not indexed"


def missing() -> str | None:
    """Why videos cannot be read here (PyAV missing, as in an install without the default
    dependencies), or None."""
    try:
        import av  # noqa: F401
    except ImportError:
        return MISSING
    return None


class VideoError(Exception):
    """A video file cannot be used; the message is one line without the path (callers add it)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def sane_duration(seconds: float | None) -> float | None:
    """``seconds`` when a header's duration is believable, else None (0, negative, NaN, more
    than a week)."""
    if seconds is None or not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_DURATION:
        return None
    return float(seconds)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself, read from its headers and its first frame."""

    duration: float | None  # seconds; None when the file does not say or says something absurd
    width: int  # as displayed: after the rotation and the pixel aspect ratio
    height: int
    fps: float | None  # average frame rate
    codec: str  # FFmpeg's codec name: "h264", "hevc", "vp9", "mpeg4", "av1", ...
    container: str  # "mp4", "mov", "matroska", "webm", "avi", ...
    taken_at: datetime.datetime | None  # the creation_time tag, naive UTC
    rotation: int  # 0/90/180/270: clockwise degrees a player turns the stored picture
    has_audio: bool

    def to_metadata(self) -> dict[str, Any]:
        """The facts the catalog keeps in a video item's metadata (JSON-able)."""
        return {"fps": None if self.fps is None else round(self.fps, 3), "codec": self.codec,
                "container": self.container, "rotation": self.rotation,
                "has_audio": self.has_audio}


@dataclass
class Shot:
    """One part of one shot: a stretch of the video and the frame that stands for it.

    A shot (the pictures between two cuts) longer than :data:`SEGMENT` comes as several parts
    with the same ``index`` and ``part`` 0, 1, ...; a shorter one as a single part 0.
    """

    index: int  # shot number in the video, from 0
    part: int  # part of a long shot, from 0
    start: float  # seconds from the video's start
    end: float  # seconds; always after start
    keyframe_time: float
    keyframe: Image.Image  # RGB, display orientation, long side <= KEYFRAME_SIDE
