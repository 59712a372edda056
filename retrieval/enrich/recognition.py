"""Recognised text in a collection: the text an OCR model read in each image, stored as a text
item of source ``ocr`` whose parent is its image (at most one per image), with a text vector
(the collection's text tower, like captions) and keyword rows, so keyword search, ``ocr ~``
filters and ``target=text`` searches find it.

Its metadata keeps the lines (text, box, confidence), the OCR key (:func:`.ocr.ocr_key`) and the
image's content hash. Every image looked at gets a *run* recording the key it was read with and
its content (an image without text has a run and no text item), so an image is read again only
when its file or the OCR model changes. Index runs with ``--ocr`` read new files in the decode
workers (:mod:`retrieval.ingest.workers`) and write their text with each batch; :func:`ocr_run`
reads the images still lacking a current run (``retrieval ocr``, and the end of such an index
run), a batch per transaction, so an interrupted run continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import OCRUnavailableError
from ..ingest.report import FileError, IndexProgress, no_progress, summary_dict
from ..items import RECOGNISED
from ..storage.records import TextRecord
from .ocr import TextLine, joined, ocr_key, recognise_file
from .pictures import Pictures

if TYPE_CHECKING:
    from ..encoders import Encoder
    from ..storage import Catalog


@dataclass(frozen=True)
class OCRProgress(IndexProgress):
    """An OCR run's progress (phase ``ocr``): images done of total (``embedded``: those with
    text so far), and the rate."""

    rate: float | None = None  # images per second so far


@dataclass
class OCRSummary:
    """What an OCR run did: images read (``recognised`` of them with text), images already
    up to date, failures (each file's reason in ``errors``)."""

    key: str
    read: int = 0
    recognised: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list[FileError] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return summary_dict(self)


@dataclass(frozen=True)
class Recognised:
    """One image's reading: its id, its content hash, and the lines found (maybe none)."""

    image_id: int
    content_hash: str | None
    lines: list[TextLine]


def run_key(key: str, content_hash: str | None) -> str:
    """What an image's run records: the OCR key and the content it read."""
    return f"{key}:{content_hash or ''}"


def write_recognised(catalog: Catalog, encoder: Encoder, found: Sequence[Recognised],
                     key: str) -> int:
    """Store what was read in these images (their text, embedded, and their runs) in one
    transaction; returns how many had text."""
    from ..ingest.texts import embed_texts
    from ..media import hash_text

    if not found:
        return 0
    with_text = [f for f in found if f.lines]
    texts = [joined(f.lines) for f in with_text]
    vectors = embed_texts(catalog, encoder, texts, None) if texts else []
    records = [TextRecord(text=text, vector=vec, content_hash=hash_text(text), source=RECOGNISED,
                          parent_id=f.image_id,
                          metadata={"lines": [line.to_dict() for line in f.lines],
                                    "ocr_key": key, "image_hash": f.content_hash})
               for f, text, vec in zip(with_text, texts, vectors, strict=True)]
    catalog.write_derived(RECOGNISED, records,
                          {f.image_id: run_key(key, f.content_hash) for f in found})
    return len(with_text)


def failure(exc: Exception) -> str:
    """Why a file's text could not be read, in a few words."""
    from ..media import ImageDecodeError

    if isinstance(exc, ImageDecodeError):
        return exc.reason
    return f"text recognition failed ({type(exc).__name__}: {exc})"


def ocr_run(catalog: Catalog, encoder: Callable[[], Encoder], *, force: bool = False,
            batch_size: int = 16, skip: Collection[str] = (), threads: int | None = None,
            progress: Callable[[IndexProgress], None] | None = None) -> OCRSummary:
    """Read the text of every image (and video shot's keyframe) of ``catalog`` lacking a
    current run (every image with
    ``force``; none of the paths in ``skip``), embedded with ``encoder()``, a batch per
    transaction. The caller holds the collection's write lock and brings its vector indexes up
    to date after (:meth:`retrieval.Collection.ocr`)."""
    report = progress or no_progress
    key = ocr_key()  # before anything: says what to install when the package is missing
    summary = OCRSummary(key)
    images = Pictures(catalog)  # and the keyframes of videos' shots
    runs = catalog.derived_runs(RECOGNISED)
    todo = [(i, p, h) for i, p, h in images.items
            if p not in skip and (force or runs.get(i) != run_key(key, h))]
    summary.unchanged = len(images) - len(todo)
    report(OCRProgress("ocr", 0, len(todo)))
    t0 = time.perf_counter()
    size = max(1, batch_size)
    for start in range(0, len(todo), size):
        found = []
        for item_id, path, content in todo[start:start + size]:
            try:
                found.append(Recognised(item_id, content, recognise_file(
                    images.open(item_id, path), threads=threads)))
            except OCRUnavailableError:
                raise
            except Exception as exc:  # one file's failure: say why, read it again next run
                summary.failed += 1
                summary.errors.append(FileError(path, failure(exc)))
        summary.recognised += write_recognised(catalog, encoder(), found, key) if found else 0
        summary.read += len(found)
        done = min(start + size, len(todo))
        rate = done / max(1e-9, time.perf_counter() - t0)
        report(OCRProgress("ocr", done, len(todo), summary.recognised, summary.failed,
                           rate=round(rate, 2)))
    summary.seconds = round(time.perf_counter() - t0, 2)
    return summary


def ocr_choice(catalog: Catalog | None, ocr: bool | None) -> bool:
    """Whether an index run reads the text in images: as asked (``ocr``), else as the
    collection remembers; one that will is refused at once when the ``ocr`` extra is missing."""
    reads = bool(catalog.get_settings().get("ocr")) if ocr is None and catalog else bool(ocr)
    if reads:
        try:
            ocr_key()
        except OCRUnavailableError as exc:
            if ocr is None:  # remembered: say why it is asked for, and how not to
                raise OCRUnavailableError(
                    f"this collection reads the text in its images (indexed with --ocr); {exc}; "
                    "or index with --no-ocr") from None
            raise
    return reads
