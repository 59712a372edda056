"""The ``retrieval`` command: a thin click layer over :class:`retrieval.Collection`.

One module per group of commands: :mod:`.indexing` (index, add-texts, remove, tag),
:mod:`.searching` (search, caption, duplicates, info), :mod:`.describing` (generate-captions,
and its old name describe), :mod:`.ocr` (ocr), :mod:`.models` (train, demo, model export/list),
:mod:`.serving` (serve);
:mod:`.group` holds what they share, :mod:`.output` how things are shown.
"""

from __future__ import annotations

import gc
import sys

from . import describing, indexing, models, ocr, searching, serving
from .group import cli

__all__ = ["cli", "describing", "indexing", "main", "models", "ocr", "searching", "serving"]


def main() -> None:
    _tolerant_stdout()
    try:
        cli(prog_name="retrieval")
    finally:
        # Python's final garbage collection walks every object still alive, a noticeable
        # part of a one-shot search (SQLAlchemy's objects most of it; benchmarks/cold_query.py);
        # frozen objects are skipped, while finalizers and exit hooks still run.
        gc.freeze()


def _tolerant_stdout() -> None:
    """On a stdout that cannot encode every character (an ASCII or Latin-1 terminal or pipe),
    a Chinese caption is shown as escapes (\\u732b) instead of failing the command; JSON output
    escapes such characters itself (see :func:`.output.json_text`)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "")
    if encoding not in ("utf8", "utf_8") and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
