"""Videos: found by the scan beside images, cut into shots, each shot's keyframe embedded by
the collection's model and written with its video in one transaction.

A run is incremental like the image run: a video whose (size, mtime) match the catalog costs
nothing; one whose content the catalog holds already (a rename, a copy) is written from the
stored shots without decoding; a changed one is decoded again and replaces its shots. The
decoding (:mod:`retrieval.video`) streams on a thread while this one embeds the keyframes it
has produced, so memory stays bounded by a few batches of keyframes, whatever the video's
length. A file that cannot be decoded is one line in the summary; the run goes on.
"""

from __future__ import annotations

import io
import os
import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders import Encoder
from ..errors import first_line
from ..media import hash_file, to_model_input
from ..storage.records import FileState, ShotRecord, VideoRecord
from .report import FileError, IndexOptions, IndexProgress, IndexSummary, ProgressCallback
from .scan import FileStat

if TYPE_CHECKING:
    from PIL import Image

    from ..storage import Catalog
    from ..video import Shot, VideoInfo

KEYFRAME_QUALITY = 85  # JPEG quality of stored keyframes (thumbnails, captions, OCR read them)
_END = object()


def index_videos(catalog: Catalog, get_encoder: Callable[[], Encoder],
                 found: dict[str, FileStat], roots: list[str], options: IndexOptions,
                 summary: IndexSummary, progress: ProgressCallback) -> list[int]:
    """Bring the catalog's videos under ``roots`` in step with ``found``; returns the ids of
    stored videos that are gone (deleted by the caller, after every copy had the chance to
    reuse their shots)."""
    known = catalog.video_states(roots)
    todo = []
    for path, st in found.items():
        state = known.get(path)
        if state is not None and (state.size, state.mtime_ns) == (st.size, st.mtime_ns):
            summary.unchanged += 1
        else:
            todo.append(st)
    gone = [s.id for p, s in known.items() if p not in found]
    from ..video import missing

    if todo and (reason := missing()) is not None:  # a small install without PyAV
        for st in todo:
            summary.fail(st.path, reason)
        return gone
    if todo:
        _Videos(catalog, get_encoder, known, options, summary, progress).run(todo)
    return gone


class _Videos:
    """One run's videos, one at a time."""

    def __init__(self, catalog: Catalog, get_encoder: Callable[[], Encoder],
                 known: dict[str, FileState], options: IndexOptions, summary: IndexSummary,
                 progress: ProgressCallback) -> None:
        self.catalog, self.get_encoder, self.known = catalog, get_encoder, known
        self.options, self.summary, self.progress = options, summary, progress
        self.seconds = 0.0  # of video done by this run (the progress bar's count)
        self.total = 0.0

    def run(self, todo: list[FileStat]) -> None:
        """Each video of ``todo``; progress in seconds of video (its rate is the real-time
        factor), out of the durations their headers give."""
        probed = [_probe(st.path) for st in todo]  # each file's header, read once
        lengths = [0.0 if isinstance(p, Exception) else p.duration or 0.0 for p in probed]
        self.total = sum(lengths)
        self.report()
        for st, info, length in zip(todo, probed, lengths, strict=True):
            start = self.seconds
            try:
                self.one(st, info)
            except OSError as exc:  # gone or unreadable since the scan
                self.failed(st.path, first_line(exc))
            self.seconds = start + length
            self.report()

    def report(self) -> None:
        self.progress(IndexProgress("video", round(self.seconds), round(self.total),
                                    self.summary.shots, self.summary.failed))

    def failed(self, path: str, reason: str) -> None:
        self.summary.fail(path, reason)
        state = self.known.get(path)
        if state is not None:  # a changed video that no longer reads: its old shots are wrong
            self.catalog.delete_items([state.id])

    def one(self, st: FileStat, info: VideoInfo | Exception) -> None:
        """One video: re-stated, copied from stored shots, or decoded (``info``: what its
        header said, or why it could not be read)."""
        from ..video import VideoError

        content = hash_file(st.path)
        state = self.known.get(st.path)
        record = VideoRecord(st.path, st.size, st.mtime_ns, content)
        if state is not None and state.content_hash == content:
            self.catalog.restat_video(state.id, st.size, st.mtime_ns)
            self.summary.unchanged += 1  # touched, same bytes
            return
        if not isinstance(info, Exception):
            _described(record, info)  # a copy's own creation date, say
        source = self.catalog.videos_by_hash([content]).get(content)
        if source is not None and self.catalog.copy_video(source, record) is not None:
            self._count(st.path)
            return
        try:
            if isinstance(info, Exception):
                raise info  # a VideoError is this file's line; an OSError the run's
            shots = self.shots(st.path, info)
        except VideoError as exc:
            self.failed(st.path, str(exc))
            return
        if not shots:
            self.failed(st.path, "no picture could be decoded")
            return
        self.catalog.write_video(record, shots)
        self._count(st.path)

    def _count(self, path: str) -> None:
        if path in self.known:
            self.summary.updated += 1
        else:
            self.summary.added += 1

    def shots(self, path: str, info: VideoInfo) -> list[ShotRecord]:
        """Decode the video (on a thread), embed its keyframes a batch at a time here. A
        truncated file keeps the shots it holds, with a warning."""
        from ..video import shots

        encoder = self.get_encoder()
        out: list[ShotRecord] = []
        batch: list[Shot] = []
        size = max(1, self.options.batch_size)
        stream = shots(path, info=info, threads=min(4, os.cpu_count() or 1))
        start = self.seconds
        for shot in _ahead(stream):
            self.seconds = start + shot.end
            batch.append(shot)
            if len(batch) >= size:
                out += self.embedded(encoder, batch, info)
                batch = []
                self.report()
        out += self.embedded(encoder, batch, info)
        if stream.warning:
            self.summary.partial.append(FileError(path, stream.warning))
        return out

    def embedded(self, encoder: Encoder, shots: list[Shot], info: VideoInfo
                 ) -> list[ShotRecord]:
        if not shots:
            return []
        pixels = np.stack([to_model_input(s.keyframe, encoder.image_spec) for s in shots])
        vectors = encoder.embed_images(pixels)
        self.summary.shots += len(shots)
        meta = info.to_metadata()
        return [ShotRecord(round(s.start, 3), round(_end(s, info), 3), v, _jpeg(s.keyframe),
                           dict(meta, shot=s.index, part=s.part,
                                keyframe=round(s.keyframe_time, 3)))
                for s, v in zip(shots, vectors, strict=True)]


def _end(shot: Shot, info: VideoInfo) -> float:
    """A shot's end, no later than its video's (a container's clock, in milliseconds, can run
    a moment past the duration its header gives); a header that is wrong by more keeps the
    shot's own."""
    if info.duration is not None and 0 < shot.end - info.duration <= 0.1:
        return max(shot.start, info.duration)
    return shot.end


def _probe(path: str) -> VideoInfo | Exception:
    """What a video's header says, or why it cannot be read (raised when the video's turn
    comes: a copy of stored content needs no header)."""
    from ..video import VideoError, probe

    try:
        return probe(path)
    except (VideoError, OSError) as exc:
        return exc


def _described(record: VideoRecord, info: VideoInfo) -> VideoRecord:
    record.duration, record.width, record.height = info.duration, info.width, info.height
    record.taken_at, record.metadata = info.taken_at, info.to_metadata()
    return record


def _jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=KEYFRAME_QUALITY)
    return buf.getvalue()


def _ahead(stream: Iterator[Shot]) -> Iterator[Shot]:
    """A video's shots decoded on a thread (FFmpeg decodes without the GIL, so it runs beside
    the model), at most a few batches ahead; an error there is raised here, and leaving early
    (an error here, Ctrl-C) stops the thread."""
    ahead: queue.Queue[Any] = queue.Queue(maxsize=64)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                ahead.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def decode() -> None:
        try:
            for shot in stream:
                if not put(shot):
                    return
            put(_END)
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)

    worker = threading.Thread(target=decode, name="video-decode", daemon=True)
    worker.start()
    try:
        while True:
            item = ahead.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)  # it stops at its next shot; a daemon, should that be long
