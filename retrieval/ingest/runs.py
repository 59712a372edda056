"""Index and add-texts runs as a collection performs them, under its write lock: what is
recorded besides the items (the roots indexed, when), the model's export made first when it
has none, and the run's summary."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..encoders import Encoder
from .images import index_images
from .report import FileError, IndexOptions, IndexSummary, ProgressCallback
from .texts import TextInput, add_texts, read_text_file

if TYPE_CHECKING:
    from ..storage import Catalog


def index_run(catalog: Catalog, encoder: Callable[[], Encoder], roots: list[str],
              options: IndexOptions, progress: ProgressCallback | None) -> IndexSummary:
    """Record the roots, then bring the catalog in step with the images under them. Paths
    below the recorded roots (``options.under_roots``: a watcher's changes) are not recorded:
    the list of roots stays the folders a user named."""
    known = set(catalog.get_settings().get("roots") or [])
    if not options.under_roots and not known.issuperset(roots):
        catalog.set_settings(roots=sorted(known | set(roots)))
    encoder()  # a model without an export gets one before the first file is decoded
    try:
        summary = index_images(catalog, encoder, roots, options, progress)
    except Exception:
        _stamp(catalog)
        raise
    # Not after Ctrl-C (KeyboardInterrupt): the catalog may be mid-statement then, and a
    # second error from this write would replace the interrupt's one line and exit code.
    _stamp(catalog)
    return summary


def _stamp(catalog: Catalog) -> None:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    catalog.set_settings(last_indexed_at=now.isoformat())


def text_inputs(texts: str | os.PathLike[str] | Sequence[str | Mapping[str, Any] | TextInput]
                ) -> tuple[list[TextInput], list[FileError]]:
    """Texts from a file (lines or JSONL) or a list of strings, mappings or TextInputs."""
    if isinstance(texts, (str, os.PathLike)):
        return read_text_file(texts)
    return [TextInput.of(t) for t in texts], []


def add_texts_run(catalog: Catalog, encoder: Callable[[], Encoder], inputs: list[TextInput],
                  errors: list[FileError], progress: ProgressCallback | None) -> IndexSummary:
    encoder()
    summary = add_texts(catalog, encoder, inputs, progress=progress)
    summary.failed += len(errors)
    summary.errors.extend(errors)
    return summary


def remove_run(catalog: Catalog, paths: Iterable[str | os.PathLike[str]]) -> int:
    """Delete the images and videos at these paths or under these folders (and their
    captions, a video's shots). A path with nothing of the collection at or under it is an
    error, and then nothing is removed."""
    from ..errors import InputError
    from .scan import normalize_path

    found = {}
    for path in map(normalize_path, paths):
        states = {**catalog.file_states([path]), **catalog.video_states([path])}
        if not states:
            raise InputError(f"nothing in the collection is at or under {path}; "
                             + _indexed(catalog.get_settings().get("roots") or []))
        found.update(states)
    catalog.delete_items(s.id for s in found.values())
    return len(found)


def _indexed(roots: Sequence[str], most: int = 5) -> str:
    if not roots:
        return "it holds no indexed files"
    more = f" and {len(roots) - most} more" if len(roots) > most else ""
    return f"indexed files and folders: {', '.join(sorted(roots)[:most])}{more}"
