"""Cut detection on tiny thumbnails: where the picture changes at once, not where it drifts.

Every decoded frame is shrunk to :data:`THUMB` (48x27 RGB, a few kilobytes) and compared with
the frame before it: the mean absolute difference over pixels and channels, 0-255. (The least
difference over shifts of one thumbnail pixel, to discount camera jolts, was tried: it missed
more cuts between look-alike shots and removed no false one on the test videos.) A frame
starts a new shot when that difference is

- large in itself (:data:`MIN_DIFF`) and against what is usual just before it (:data:`RATIO`
  times the median of the last :data:`WINDOW` differences, and times the difference just
  before): a pan or a shaking camera changes every frame a lot, a cut changes one frame much
  more than its neighbours; a fade changes each frame by about as much as the one before, so
  it cuts at most where it starts;
- or, in a steady picture, smaller (:data:`STILL_DIFF`) but far above the usual
  (:data:`STILL_RATIO`): a cut between two shots of one background with small objects (a
  green square, then a green triangle, on black) changes the mean by only 5-6 levels, when
  the frames before it differed by 0.3;
- not a flash: the frame after it must differ from the frame before it too (one frame of
  lookahead), else a camera flash or a glitch frame would cut twice;
- at least :data:`MIN_SHOT` seconds after the previous cut: the first cut of a burst stands.

The cut is placed at the first frame of the new shot, at its presentation time, so hard cuts
are frame-accurate at any frame rate, variable ones included.
"""

from __future__ import annotations

from collections import deque

import numpy as np

THUMB = (48, 27)  # width, height of the comparison thumbnail
MIN_DIFF = 8.0  # mean absolute difference (0-255) a cut reaches at least
RATIO = 3.0  # a cut's difference against the usual difference before it
FLOOR = 2.0  # the usual difference is taken as at least this (noise of a still picture)
WINDOW = 24  # frames of recent differences the usual one is the median of
STILL_DIFF = 4.0  # ... or at least this, in a steady picture,
STILL_RATIO = 8.0  # when that many times the usual difference
STILL_FLOOR = 0.5  # (taken as at least this)
MIN_SHOT = 0.5  # seconds: no shot shorter than this (except the last)


def difference(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute difference of two thumbnails (uint8 arrays of one shape), 0-255."""
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


class CutDetector:
    """Fed frame by frame (thumbnail, time); tells, one frame late, where a cut was.

    :meth:`push` returns the time of a cut confirmed by the frame just pushed: the cut is at
    the frame before it, whose successor showed it was not a flash.
    """

    def __init__(self, min_shot: float = MIN_SHOT) -> None:
        self.min_shot = min_shot
        self.recent: deque[float] = deque(maxlen=WINDOW)
        self.before: np.ndarray | None = None  # the frame before the previous one
        self.previous: np.ndarray | None = None
        self.candidate: tuple[float, float] | None = None  # (time, difference) of previous
        self.shot_start = 0.0
        self.last_diff = 0.0

    def push(self, thumb: np.ndarray, time: float) -> float | None:
        """Take the next frame; the time of the cut it confirms, if any."""
        if self.previous is None:
            self.previous, self.shot_start = thumb, time
            return None
        diff = difference(thumb, self.previous)
        cut = self._confirm(thumb)
        if self._is_candidate(diff, time):
            self.candidate = (time, diff)
        self.recent.append(diff)
        self.last_diff = diff
        self.before, self.previous = self.previous, thumb
        return cut

    def _confirm(self, thumb: np.ndarray) -> float | None:
        """The pending candidate's time when this frame still differs from the frame before
        the candidate (a real change, not a flash)."""
        if self.candidate is None or self.before is None:
            self.candidate = None
            return None
        time, diff = self.candidate
        self.candidate = None
        if difference(thumb, self.before) < max(STILL_DIFF, diff) / 2:
            return None
        self.shot_start = time
        return time

    def _is_candidate(self, diff: float, time: float) -> bool:
        if diff < STILL_DIFF or time - self.shot_start < self.min_shot:
            return False
        usual = max(float(np.median(self.recent)) if self.recent else 0.0, self.last_diff)
        if diff >= MIN_DIFF and diff >= RATIO * max(usual, FLOOR):
            return True
        return diff >= STILL_RATIO * max(usual, STILL_FLOOR)
