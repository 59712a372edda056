"""Writing files so that a crash leaves either the old content or the new, never a mix; and
scratch folders.

(The ``indexers`` package has its own copy of this idea: it never imports ``retrieval``.)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary path beside ``path`` for a writer to fill (any library's ``save``); when
    the block ends without an error the file is flushed to disk and renamed over ``path``, so
    readers see the old file or the new one. On an error the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


@contextlib.contextmanager
def scratch_folder(folder: str | os.PathLike[str] | None) -> Iterator[Path]:
    """``folder`` when given (left in place, as a caller may want to resume or look in it),
    else a temporary folder removed when the block ends."""
    if folder is not None:
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)
