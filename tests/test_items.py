"""Item kinds and sources are named once (retrieval/items.py), and every source a hit can
show has a label in the CLI's table."""

from __future__ import annotations

from retrieval import items
from retrieval.interfaces.cli.table import SOURCE_LABELS


def test_every_shown_source_has_a_label() -> None:
    shown = {items.shown_source(s) for s in (items.SIDECAR, items.GENERATED, items.ADDED,
                                             items.RECOGNISED)}
    assert shown | {items.FILE_NAME} == set(SOURCE_LABELS)


def test_kinds_and_caption_sources() -> None:
    assert items.KINDS == (items.IMAGE, items.TEXT, items.SHOT)  # the kinds with vectors
    assert items.VIDEO not in items.KINDS  # a video's vectors are its shots'
    # a video search ranks shots, and a shot's hit shows as a video's
    assert items.TARGET_KINDS["video"] == items.SHOT and items.shown_kind(items.SHOT) == "video"
    assert set(items.CAPTIONS) == {items.SIDECAR, items.GENERATED}
    assert items.shown_source(None) is None and items.shown_source(items.ADDED) == items.TEXT
