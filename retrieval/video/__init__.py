"""Search inside videos: probe a file, split it into shots, take a keyframe per shot part.

Decoding uses PyAV (FFmpeg), imported only when a video is read. :func:`shots` decodes a file
once, front to back, at the cost of a tiny thumbnail per frame for cut detection and a
keyframe-sized picture twice a second; memory stays bounded whatever the video's length.
"""

from __future__ import annotations

from retrieval.video.base import (
    KEYFRAME_SIDE,
    SEGMENT,
    VIDEO_EXTENSIONS,
    Shot,
    VideoError,
    VideoInfo,
    missing,
)
from retrieval.video.probe import probe
from retrieval.video.shots import ShotStream, cut_times, shots

__all__ = ["KEYFRAME_SIDE", "SEGMENT", "VIDEO_EXTENSIONS", "Shot", "ShotStream", "VideoError",
           "VideoInfo", "cut_times", "missing", "probe", "shots"]
