"""Cross-modal retrieval: index images and texts with open_clip, search them with FAISS.

    >>> from retrieval import Collection
    >>> col = Collection("~/photos.retrieval", model="ViT-B-32", pretrained="laion2b_s34b_b79k")
    >>> col.index(["~/Pictures"])
    >>> for hit in col.search("a dog on a beach", k=5):
    ...     print(hit.score, hit.path)

Importing this package is cheap: torch, open_clip, FAISS and SQLAlchemy load on first use.
"""

from .collection import Collection, Hit
from .encoders import DEFAULT_MODEL, Encoder, ModelSpec, load_encoder
from .errors import (
    CatalogError,
    CollectionError,
    CollectionLockedError,
    CollectionNotFoundError,
    IndexingError,
    InputError,
    ItemNotFoundError,
    ModelError,
    ModelMismatchError,
    ModelNotFoundError,
    QueryError,
    RetrievalError,
    WeightsUnavailableError,
)
from .query import Query, Term

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "CatalogError",
    "Collection",
    "CollectionError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "Encoder",
    "Hit",
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
    "Term",
    "WeightsUnavailableError",
    "load_encoder",
]
