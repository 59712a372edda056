"""Shots into parts, and the keyframe of each part, with a bounded number of pictures held.

A part closes when its shot ends or when it reaches ``segment`` seconds; the next part of the
same shot starts at that frame. The keyframe is the candidate picture nearest the part's middle.
Candidates are kept at offsets of (k + 1/2) x ``interval`` from the part's start (0.25 s,
0.75 s, ... for the default 0.5 s), so none is the first frame after a cut (transitions and
encoder warm-up blur it) unless the part is shorter than a quarter second. Only the first
``0.625 x segment`` of a part is ever its middle, so candidates stop there: at most about ten
pictures are held, whatever the length of the shot.

A tail part shorter than a quarter ``segment`` is merged into the part before it (which is held
back, keyframe chosen, until the part after it is long enough): a 9 s shot is one part, not
8 s + 1 s; parts are a quarter to 1.25 ``segment`` long, except whole short shots.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from retrieval.video.base import Shot

if TYPE_CHECKING:
    from PIL import Image

TAIL = 0.25  # a tail part shorter than this share of the segment joins the part before it
INTERVAL = 0.5  # seconds between candidate keyframes (at most segment / 8)


@dataclass
class _Part:
    index: int
    part: int
    start: float
    candidates: list[tuple[float, Image.Image]] = field(default_factory=list)
    next_offset: float = 0.0  # offset from start of the next candidate to keep


class Parts:
    """Turns frame times, cuts and candidate pictures into finished :class:`Shot` parts.

    The caller asks :meth:`wants` for each frame and hands over the picture through
    :meth:`add` only when asked (so most frames are never converted), reports cuts with
    :meth:`cut`, and ends with :meth:`finish`. Every method returns the parts that became final.
    """

    def __init__(self, segment: float) -> None:
        if not segment > 0:
            raise ValueError(f"segment must be positive, not {segment!r}")
        self.segment = segment
        self.interval = min(INTERVAL, segment / 8)
        self.horizon = segment * (1 + TAIL) / 2  # the latest a middle can lie after a start
        self.current = _Part(0, 0, 0.0)
        self.held: Shot | None = None  # a closed part that waits to know its tail
        self.peak = 0  # the most pictures held at once (candidates and the held part)

    def start(self, time: float) -> None:
        """The first frame's time (the video's start)."""
        self.current = _Part(0, 0, time)

    def wants(self, time: float) -> bool:
        """Whether the frame at ``time`` should be handed over as a candidate keyframe."""
        part = self.current
        offset = time - part.start
        if not part.candidates:
            return True  # a first picture, in case the part is too short for another
        return part.next_offset <= offset <= self.horizon

    def add(self, time: float, picture: Image.Image) -> None:
        part = self.current
        offset = time - part.start
        if len(part.candidates) == 1 and part.candidates[0][0] == part.start \
                and offset >= self.interval / 2:
            part.candidates.clear()  # the first frame was only a stand-in
        part.candidates.append((time, picture))
        self.peak = max(self.peak, len(part.candidates) + (self.held is not None))
        while part.next_offset <= offset:
            part.next_offset += self.interval if part.next_offset else self.interval / 2

    def advance(self, time: float) -> list[Shot]:
        """A frame at ``time`` arrives: the parts it closes or releases."""
        out = []
        part = self.current
        if self.held is not None and time - part.start >= TAIL * self.segment:
            out.append(self._release())
        if time - part.start >= self.segment:
            if self.held is not None:
                out.append(self._release())
            self.held = self._close(part, time)
            self.current = _Part(part.index, part.part + 1, time)
        return out

    def cut(self, time: float) -> list[Shot]:
        """A new shot starts at ``time``."""
        out = self._end(time)
        self.current = _Part(self.current.index + 1, 0, time)
        return out

    def finish(self, end: float) -> list[Shot]:
        """The video ends at ``end`` (after its last frame)."""
        return self._end(end)

    def _end(self, time: float) -> list[Shot]:
        part, held = self.current, self.held
        if held is not None and time - part.start < TAIL * self.segment:
            held.end = time  # the short tail joins the part before it
            return [self._release()]
        out = [self._release()] if held is not None else []
        if part.candidates and time > part.start:
            out.append(self._close(part, time))
        return out

    def _release(self) -> Shot:
        shot, self.held = self.held, None
        assert shot is not None
        return shot

    def _close(self, part: _Part, end: float) -> Shot:
        middle = (part.start + end) / 2
        time, picture = min(part.candidates, key=lambda c: abs(c[0] - middle))
        part.candidates = []
        return Shot(index=part.index, part=part.part, start=part.start, end=end,
                    keyframe_time=time, keyframe=picture)

