"""Ingest: bringing files and texts into a collection.

* :mod:`.scan`: walking folders for image files and their sidecar captions;
* :mod:`.confine`: files found by name (sidecars, links) stay inside the indexed folders;
* :mod:`.workers`: decoding, hashing and preprocessing in worker processes;
* :mod:`.images`: the incremental, restartable index run over folders;
* :mod:`.distributed`: its decoding and embedding on a Ray cluster (``--ray``);
* :mod:`.texts`: texts from lists or files (lines, JSONL), added or updated by id;
* :mod:`.report`: the run's summary and progress events.
"""

from .images import index_images
from .report import FileError, IndexOptions, IndexProgress, IndexSummary, ProgressCallback
from .texts import TextInput, add_texts, read_text_file

__all__ = ["FileError", "IndexOptions", "IndexProgress", "IndexSummary", "ProgressCallback",
           "TextInput", "add_texts", "index_images", "read_text_file"]
