"""The one exception hierarchy of the retrieval engine.

Every problem the library reports to its caller is a :class:`RetrievalError`. Its message is a
single line meant for a person: it names what went wrong, where, and how to fix it when there is
something to do. The CLI prints that line and exits non-zero; the HTTP layer maps it to a 4xx.

    RetrievalError
    ├── ModelError            a model cannot be resolved or loaded
    │   ├── ModelNotFoundError     unknown architecture name or pretrained tag
    │   ├── WeightsUnavailableError  weights are not cached and cannot be downloaded
    │   └── OCRUnavailableError      text recognition's package (the ocr extra) is missing
    ├── CollectionError       a collection cannot be opened or used as asked
    │   ├── CollectionNotFoundError  no collection at that path
    │   ├── ModelMismatchError       the collection is bound to another model
    │   ├── CollectionLockedError    another process is writing to the collection
    │   ├── CatalogError             the catalog file is unreadable or from a newer version
    │   ├── VectorIndexError         a vector index cannot be built or used as asked
    │   ├── DiskFullError            no space left where the collection writes
    │   └── FileChangedError         an item's file is no longer the file that was indexed
    ├── IndexingError         an index run was asked to fail on skipped files (--strict)
    ├── TrainingError         training cannot start or continue
    ├── InputError            a bad argument: a missing file or folder, a malformed text file
    ├── QueryError            a search that cannot be run as given
    │   ├── ItemNotFoundError        no item with that id
    │   └── FileOutsideError         an item's file resolves outside the indexed folders
    ├── SearchInterrupted     a search stopped before its end (retrieval.search.budget)
    │   ├── SearchTimeout            it ran past its deadline
    │   └── SearchCancelled          its caller cancelled it (a client that went away)
    └── ServiceError          the HTTP service answered with an error (retrieval.Client)
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error the engine raises on purpose."""


class ModelError(RetrievalError):
    """A model cannot be resolved or loaded."""


class ModelNotFoundError(ModelError):
    """The model name or pretrained tag is not known to open_clip and is not a file."""


class WeightsUnavailableError(ModelError):
    """The weights are not cached locally and cannot be downloaded (offline, missing file)."""


class OCRUnavailableError(ModelError):
    """Text recognition was asked for and its package (``retrieval[ocr]``) is not installed."""


class CollectionError(RetrievalError):
    """A collection cannot be opened or used as asked."""


class CollectionNotFoundError(CollectionError):
    """No collection exists at the path, and no model was given to create one."""


class ModelMismatchError(CollectionError):
    """The collection is bound to a different model than the one asked for."""


class CollectionLockedError(CollectionError):
    """Another process holds the collection's write lock."""


class CatalogError(CollectionError):
    """The catalog database is unreadable, corrupt, or written by a newer version."""


class VectorIndexError(CollectionError):
    """A vector index cannot be built, loaded or searched as asked (the index layer's own
    errors, in one line)."""


class DiskFullError(CollectionError):
    """The disk (or quota) is full where the collection writes; what was stored before stays
    intact, and the same command can run again once there is space."""


class FileChangedError(CollectionError):
    """An item's file is no longer the file that was indexed (replaced, rewritten, or no
    longer an image): it is not served until the folder is indexed again."""


class IndexingError(RetrievalError):
    """An index run failed as a whole (for example files were skipped under ``strict``).

    ``summary`` holds what the run did commit, when it got that far."""

    def __init__(self, message: str, summary: object | None = None) -> None:
        super().__init__(message)
        self.summary = summary


class TrainingError(RetrievalError):
    """Training cannot start or continue (too little data, incompatible checkpoint)."""


class InputError(RetrievalError):
    """An input path or file is missing or malformed."""


class QueryError(RetrievalError):
    """A search request cannot be run: no terms, unknown item, unreadable query image."""


class ItemNotFoundError(QueryError):
    """No item with the given id in the collection."""


class FileOutsideError(QueryError):
    """An item's file resolves outside the folders the collection indexed."""


class SearchInterrupted(RetrievalError):
    """A search stopped before its end; nothing was returned."""


class SearchTimeout(SearchInterrupted):
    """A search ran past its deadline (the service answers 503: busy, try again)."""


class SearchCancelled(SearchInterrupted):
    """A search was cancelled by its caller (for the service: the client went away)."""


class ServiceError(RetrievalError):
    """The HTTP service answered with an error (the message is the server's detail line)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status


_FULL_ERRNOS = (28, 122)  # ENOSPC, EDQUOT (Linux)
_FULL_WORDS = ("no space left on device", "database or disk is full", "disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    """Whether an error (an OSError, SQLite's, FAISS's) means the disk or quota is full."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
            return True
        if any(w in str(exc).lower() for w in _FULL_WORDS):
            return True
        exc = getattr(exc, "orig", None) or exc.__cause__ or exc.__context__  # type: ignore
    return False


def disk_full(what: str, folder: object) -> DiskFullError:
    """The one line for a full disk: what could not be written, and where."""
    return DiskFullError(f"no space left on the device of {folder} to write {what}; free some "
                         "space and run the same command again (what was stored is intact)")


def first_line(exc: BaseException | str) -> str:
    """The first line of a driver's message (psycopg's go on with hints)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__
