"""Cross-modal retrieval: index images and texts with open_clip, search them with FAISS.

    >>> from retrieval import Collection
    >>> col = Collection("~/photos.retrieval", model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    >>> col.index(["~/Pictures"])
    >>> for hit in col.search("a dog on a beach", k=5):
    ...     print(hit.score, hit.path)

Importing this package is cheap: torch, open_clip, ONNX Runtime, FAISS and SQLAlchemy load on
first use. ``Client`` (the HTTP service's client) and ``TrainConfig`` / ``train`` are loaded
when first named.
"""

from typing import Any

from .collection import Collection
from .encoders import DEFAULT_MODEL, Encoder, ModelSpec, load_encoder
from .errors import (
    CatalogError,
    CollectionError,
    CollectionLockedError,
    CollectionNotFoundError,
    DiskFullError,
    FileChangedError,
    FileOutsideError,
    IndexingError,
    InputError,
    ItemNotFoundError,
    ModelError,
    ModelMismatchError,
    ModelNotFoundError,
    QueryError,
    RetrievalError,
    ServiceError,
    TrainingError,
    VectorIndexError,
    WeightsUnavailableError,
)
from .search import Hit, Hybrid, Query, Term, build_query

__version__ = "0.1.0"

_LAZY = {"Client": ("interfaces.client", "Client"), "TrainConfig": ("training", "TrainConfig"),
         "train": ("training", "train")}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'retrieval' has no attribute {name!r}")


__all__ = [
    "DEFAULT_MODEL",
    "CatalogError",
    "Client",
    "Collection",
    "CollectionError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "DiskFullError",
    "Encoder",
    "FileChangedError",
    "FileOutsideError",
    "Hit",
    "Hybrid",
    "IndexingError",
    "InputError",
    "ItemNotFoundError",
    "ModelError",
    "ModelMismatchError",
    "ModelNotFoundError",
    "ModelSpec",
    "Query",
    "QueryError",
    "RetrievalError",
    "ServiceError",
    "Term",
    "TrainConfig",
    "TrainingError",
    "VectorIndexError",
    "WeightsUnavailableError",
    "build_query",
    "load_encoder",
    "train",
]
