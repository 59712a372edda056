"""What the enrichment runs read (recognised text, generated captions): every picture of the
collection, an image file or a video shot's keyframe, as one list."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from ..storage import Catalog


class Pictures:
    """(id, path, content hash) of the collection's images and shots, in id order, and how
    to open each: an image's file by its path, a shot's keyframe from the catalog (its path
    is its video's, which is what messages name)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        shots = catalog.shot_contents()
        self.shots = {i for i, _, _ in shots}
        self.items = sorted(catalog.image_contents() + shots)

    def __len__(self) -> int:
        return len(self.items)

    def open(self, item_id: int, path: str) -> str | BinaryIO:
        """A path or an open file to read the picture from."""
        if item_id not in self.shots:
            return path
        return io.BytesIO(self.catalog.keyframe(item_id) or b"")
