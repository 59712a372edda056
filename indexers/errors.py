"""Errors raised by the indexers package (it never imports the retrieval package)."""

from __future__ import annotations


class IndexerError(Exception):
    """Base class of errors raised by ``indexers``."""


class IndexFileError(IndexerError):
    """An index file is missing, truncated, unreadable or does not match its manifest."""
