"""What an item is: its kind, and where it came from (its source). The one place these names
are spelled; the catalog stores them, every surface shows them.

A new kind (a video, a shot of one) or a new source (text found in an image, a video's
transcript) is a constant here, then the code that makes such items and the labels that show
them (the CLI table's ``SOURCE_LABELS``).
"""

from __future__ import annotations

# Kinds: what a search returns, and what each vector index holds (one index per kind). A
# search's ``target`` (a query field users send) names the kind it returns.
IMAGE = "image"
TEXT = "text"
KINDS = (IMAGE, TEXT)

# Sources: what made an item.
FILE = "file"  # an image file found by indexing a folder
SIDECAR = "caption"  # the caption file beside an image: a text whose parent is its image
GENERATED = "generated"  # a caption a captioning model wrote: a text whose parent is its image
ADDED = "texts"  # a text added by the user (add-texts, Collection.add_texts)
RECOGNISED = "ocr"  # the text an OCR model recognised in an image: a text whose parent is it
CAPTIONS = (SIDECAR, GENERATED)  # texts that describe their parent image, at most one of each
# Texts a model made from their parent image: at most one of each source per image, keyed by
# the image's content and the model, and made again only when one of them changes.
DERIVED = (GENERATED, RECOGNISED)
# An image's texts, in the order an image's hit and its keyword row take them.
IMAGE_TEXTS = (SIDECAR, GENERATED, RECOGNISED)

# Where the text that made a hit match came from (``Hit.metadata["match"]["source"]``): a
# source above, spelled as a hit shows it, or an image's file name.
FILE_NAME = "name"
SHOWN_SOURCES = {ADDED: TEXT}  # a source whose spelling on a hit differs


def shown_source(source: str | None) -> str | None:
    """A source as a hit shows it."""
    return SHOWN_SOURCES.get(source, source) if source is not None else None
