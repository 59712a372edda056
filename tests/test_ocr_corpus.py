"""The rendered OCR corpus (tests/ocr_corpus.py) holds what it says: each needle in exactly one
image, every language and background present, the same files from the same seed."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from pathlib import Path

import pytest

pytest.importorskip("skimage")

from ocr_corpus import BACKGROUNDS, CHINESE, ENGLISH, missing_fonts, write_corpus

if missing_fonts() and os.environ.get("RETRIEVAL_REQUIRE_OCR") != "1":
    pytest.skip(f"fonts not installed: {', '.join(missing_fonts())}", allow_module_level=True)


def _digests(paths: list[str]) -> list[str]:
    return [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in paths]


def test_needles_are_printed_once_in_every_background(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, per_language=8, screenshots=2, no_text=3, seed=1)
    assert len(corpus.needles) == 16
    kinds = Counter(p.kind for p in corpus.pictures)
    assert kinds == {"text": 12, "screenshot": 4, "no-text": 3}
    assert {(n.lang, n.background) for n in corpus.needles} == {
        (lang, bg) for lang in ("en", "zh") for bg in (*BACKGROUNDS, "screenshot")}
    lines = {p.path: " ".join(p.lines).lower() for p in corpus.pictures}
    for n in corpus.needles:
        assert [p for p, text in lines.items() if n.word in text] == [n.path]
        assert Path(n.path).is_file()
    assert all(not p.lines for p in corpus.pictures if p.kind == "no-text")


def test_needle_tables_share_nothing() -> None:
    """No needle is inside another needle's phrase (a search for it would find two images)."""
    for table in (ENGLISH, CHINESE):
        for word, _ in table:
            holders = [phrase for _, phrase in table if word in phrase.lower()]
            assert len(holders) == 1, (word, holders)


def test_same_seed_same_files(tmp_path: Path) -> None:
    a = write_corpus(tmp_path / "a", per_language=3, screenshots=1, no_text=2, seed=5)
    b = write_corpus(tmp_path / "b", per_language=3, screenshots=1, no_text=2, seed=5)
    assert [Path(p).name for p in a.paths()] == [Path(p).name for p in b.paths()]
    assert _digests(a.paths()) == _digests(b.paths())
