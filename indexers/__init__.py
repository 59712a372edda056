"""Vector indexes over FAISS: float32 vectors and int64 ids in, ids and scores out.

This package is the engine's lowest layer. It knows nothing about images, texts or catalogs:
callers give it vectors with stable int64 ids and get back the ids of the nearest ones.
"""

from .base import VectorIndex, build_index
from .errors import IndexerError, IndexFileError
from .flat import FlatIndex
from .storage import load_index, remove_index, save_index

__all__ = [
    "FlatIndex",
    "IndexFileError",
    "IndexerError",
    "VectorIndex",
    "build_index",
    "load_index",
    "remove_index",
    "save_index",
]
