"""Decoding image files: hash, validate, read metadata, preprocess (in worker processes, see
:mod:`.pool`).

Workers run at the lowest CPU priority: the model's threads keep both cores and a worker runs
when the model leaves one free, instead of preempting a model thread and stalling the others at
the next barrier. Each worker is given the contents the catalog holds (a compact set of their
hashes' prefixes, read once per run on any backend) to skip preprocessing content that is
already embedded (a rename, a copy); the main process still decides, this only saves work.
Results come back in task order from a bounded window of jobs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..media import (
    ImageDecodeError,
    ImageInfo,
    ImageSpec,
    hash_file,
    heif_available,
    open_image,
    read_info,
    to_model_input,
)
from ..storage.records import prefix_test

if TYPE_CHECKING:
    from ..enrich.ocr import TextLine

CHUNK = 8  # files per worker round trip
WORKER_NICENESS = 19


@dataclass(frozen=True)
class DecodeTask:
    """One file for a decode worker: where it is and what the scan saw."""

    path: str
    size: int
    mtime_ns: int


@dataclass
class DecodeResult:
    """What a worker returns for a file. ``pixels`` is None when the hash is already known
    (the vector will be reused) or when the file failed (``error`` is set); ``vector`` is set
    when the file was embedded where it was decoded (a Ray run)."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None = None
    info: ImageInfo | None = None
    pixels: np.ndarray | None = None
    error: str | None = None
    vector: np.ndarray | None = None
    lines: list[TextLine] | None = None  # the text read in it (OCR runs; None: not read)
    ocr_error: str | None = None  # why its text could not be read


def worker_count(requested: int | None) -> int:
    """Decode processes: as asked (0 decodes in the calling process), else one per CPU, up
    to 8."""
    if requested is not None:
        return max(0, requested)
    return max(1, min(8, os.cpu_count() or 1))


class _State:
    spec: ImageSpec
    max_pixels: int
    known_hash: Callable[[str], bool] | None = None
    ocr: bool = False


def init_worker(spec: ImageSpec, max_pixels: int, known: np.ndarray | None = None,
                background: bool = False, ocr: bool = False) -> None:
    """Process initialiser: remember the spec and ``known``, the contents the catalog holds
    (:meth:`~retrieval.storage.Catalog.content_prefixes`), and lower the priority. With
    ``ocr``, new contents' text is read too (one ONNX Runtime thread in a worker process)."""
    _State.spec = spec
    _State.max_pixels = max_pixels
    _State.ocr = ocr
    if ocr and background:
        from ..enrich.ocr import set_threads

        set_threads(1)
    _State.known_hash = prefix_test(known) if known is not None and len(known) else None
    if background:
        with contextlib.suppress(AttributeError, OSError):
            os.nice(WORKER_NICENESS)
    heif_available()


def decode_file(task: DecodeTask, *, skip_known: bool = True) -> DecodeResult:
    """Hash, validate and preprocess one file; never raises for a bad file."""
    result = DecodeResult(task.path, task.size, task.mtime_ns)
    try:
        img = open_image(task.path, _State.max_pixels)
        try:
            result.content_hash = hash_file(task.path)
            result.info = read_info(img)
            known = _State.known_hash
            if not (skip_known and known is not None and known(result.content_hash)):
                result.pixels = to_model_input(img, _State.spec)
        finally:
            img.close()
    except ImageDecodeError as exc:
        result.error = exc.reason
    except OSError as exc:
        result.error = f"cannot read file ({exc.strerror or exc})"
    except Exception as exc:  # a decoder bug on hostile input must not stop the run
        result.error = f"cannot decode image ({type(exc).__name__}: {exc})"
    if _State.ocr and result.pixels is not None:
        read_text(result)
    return result


def read_text(result: DecodeResult) -> None:
    """Read the text in a decoded file (new content of an OCR run); a failure is the file's
    ``ocr_error``, and the image is indexed all the same."""
    from ..enrich.ocr import recognise_file
    from ..enrich.recognition import failure

    try:
        result.lines = recognise_file(result.path, max_pixels=_State.max_pixels)
    except Exception as exc:  # the OCR model failing on one file must not stop the run
        result.ocr_error = failure(exc)


def decode_chunk(tasks: list[DecodeTask]) -> list[DecodeResult]:
    """Worker entry point: a few files per round trip to amortise inter-process overhead."""
    return [decode_file(t) for t in tasks]
