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
VIDEO = "video"  # a video file: its duration, size, codec; no vector (its shots have them)
SHOT = "shot"  # a part of a video (a shot, or a few seconds of a long one): its keyframe's vector
KINDS = (IMAGE, TEXT, SHOT)  # the kinds that have vectors, one index each
VISUAL = (IMAGE, SHOT)  # kinds with a picture (a file, a keyframe) and an image's texts
# What a search returns (``target``), as users name it, and the kind of item it searches: a
# video search ranks shots (one per video unless every segment is asked for).
TARGET_KINDS = {IMAGE: IMAGE, TEXT: TEXT, VIDEO: SHOT}


def shown_kind(kind: str) -> str:
    """A kind as a hit shows it: a shot is a video's (its time span says which part)."""
    return VIDEO if kind == SHOT else kind

# Sources: what made an item.
FILE = "file"  # an image or video file found by indexing a folder
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
