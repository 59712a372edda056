"""Decoding image files: hash, validate, read metadata, preprocess (in worker processes, see
:mod:`.pool`).

Workers run at the lowest CPU priority: the model's threads keep both cores and a worker runs
when the model leaves one free, instead of preempting a model thread and stalling the others at
the next barrier. Each worker opens the catalog read-only to skip decoding content that is
already embedded (a rename, a copy); the main process still decides, this only saves work.
Results come back in task order from a bounded window of jobs.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def worker_count(requested: int | None) -> int:
    """Decode processes: as asked (0 decodes in the calling process), else one per CPU, up
    to 8."""
    if requested is not None:
        return max(0, requested)
    return max(1, min(8, os.cpu_count() or 1))


class _State:
    spec: ImageSpec
    max_pixels: int
    known_hash: Any = None  # callable(str) -> bool, or None


def init_worker(spec: ImageSpec, max_pixels: int, catalog_file: str | None,
                background: bool = False, known: Callable[[str], bool] | None = None) -> None:
    """Process initialiser: remember the spec, lower the priority, open the catalog read-only
    (or take ``known``, a test of content hashes already embedded)."""
    _State.spec = spec
    _State.max_pixels = max_pixels
    _State.known_hash = known
    if background:
        with contextlib.suppress(AttributeError, OSError):
            os.nice(WORKER_NICENESS)
    heif_available()
    if catalog_file:
        import sqlite3

        conn = sqlite3.connect(f"file:{catalog_file}?mode=ro", uri=True, check_same_thread=False)

        def in_catalog(h: str) -> bool:
            try:
                row = conn.execute(
                    "SELECT 1 FROM items WHERE content_hash = ? AND kind = 'image' LIMIT 1", (h,)
                ).fetchone()
            except sqlite3.Error:
                return False
            return row is not None

        _State.known_hash = in_catalog


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
    return result


def decode_chunk(tasks: list[DecodeTask]) -> list[DecodeResult]:
    """Worker entry point: a few files per round trip to amortise inter-process overhead."""
    return [decode_file(t) for t in tasks]
