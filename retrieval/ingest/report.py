"""What an ingest run reports: its summary, the files it skipped, and progress events."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from ..media import DEFAULT_MAX_PIXELS
from ..pathnames import shown


@dataclass
class FileError:
    """A file that was skipped, and why."""

    path: str
    reason: str


@dataclass
class IndexSummary:
    """The outcome of an index or add-texts run (the CLI prints it with ``--json``)."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    embedded: int = 0
    shots: int = 0  # shots of videos embedded (their keyframes)
    errors: list[FileError] = field(default_factory=list)
    recognised: int = 0  # images whose text was read (--ocr) and had some
    # files indexed whose text could not be read (--ocr): read again next run
    warnings: list[FileError] = field(default_factory=list)
    # videos damaged or cut off part way: the shots before the damage are indexed
    partial: list[FileError] = field(default_factory=list)

    def fail(self, path: str, reason: str) -> None:
        self.failed += 1
        self.errors.append(FileError(path, reason))

    def to_dict(self) -> dict[str, Any]:
        return summary_dict(self)

    def check_strict(self) -> None:
        """A run asked to fail on skipped files: :class:`IndexingError` when any was."""
        from ..errors import IndexingError

        if self.failed:
            first = self.errors[0]
            raise IndexingError(f"{self.failed} file(s) skipped (strict mode); first: "
                                f"{shown(first.path)}: {first.reason}", self)


@dataclass(frozen=True)
class IndexProgress:
    """A progress report: ``phase`` is scan, embed, video, captions, ocr, remove, tag, model
    or index (``video`` counts seconds of video, and the shots embedded in ``embedded``);
    ``detail`` carries a message worth showing (a model exported, an index rebuilt); ``ocr``
    (text recognition) counts images with text in ``embedded``."""

    phase: str
    done: int
    total: int | None = None
    embedded: int = 0
    failed: int = 0
    detail: str | None = None


ProgressCallback = Callable[[IndexProgress], None]


def no_progress(_: IndexProgress) -> None:
    """The progress callback of a caller who wants none."""


def messages(progress: ProgressCallback | None, phase: str) -> Callable[[str], None]:
    """A callback for a phase's messages (a model exported, an index rebuilt into another
    tier): each goes to the ``retrieval`` logger and, as a progress report, to ``progress``."""
    import logging

    log = logging.getLogger("retrieval")

    def say(message: str) -> None:
        log.info(message)
        if progress:
            progress(IndexProgress(phase, 0, detail=message))

    return say


@dataclass(frozen=True)
class IndexOptions:
    """How an index run behaves (see ``retrieval index --help``)."""

    hidden: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 32
    workers: int | None = None  # decode processes; None: one per CPU (up to 8), 0: inline
    captions: bool = True
    ray: str | None = None  # decode and embed on Ray: "auto" or a cluster address
    ocr: bool = False  # read the text in images (retrieval.enrich.recognition)
    videos: bool = True  # index videos too, shot by shot (retrieval.ingest.videos)
    # the paths are changes below the collection's folders (a watcher's): none is recorded as
    # a folder of the collection, and one that is gone removes what was at or under it
    under_roots: bool = False


def summary_dict(summary: Any) -> dict[str, Any]:
    """A run's summary (a dataclass) as JSON-ready data, its files' paths shown as the CLI
    shows paths (``errors`` and ``warnings``: lists of :class:`FileError`)."""
    out = asdict(summary)
    for e in out.get("errors", []) + out.get("warnings", []) + out.get("partial", []):
        e["path"] = shown(e["path"])
    return out
