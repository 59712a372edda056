"""Text recognition on bad input: tiny and huge images, a page that is all text, rotated and
mirrored scans, odd pixel layouts, a corrupt file and an OCR model that fails on one file.
Each gives lines or none, never a crash; a failure is one line naming its file and nothing
else is lost. Real rapidocr (skipped without the ocr extra unless RETRIEVAL_REQUIRE_OCR=1)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from retrieval import Collection
from retrieval.enrich import ocr as ocr_module
from retrieval.enrich import recognition
from retrieval.enrich.ocr import MAX_SIDE, recognise_file, recognise_text
from retrieval.errors import InputError
from retrieval.items import RECOGNISED
from retrieval.media import ImageDecodeError

if os.environ.get("RETRIEVAL_REQUIRE_OCR") == "1":
    import rapidocr  # noqa: F401
else:
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed")

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"


def _page(size: tuple[int, int], lines: list[tuple[tuple[int, int], str, int]]) -> Any:
    from PIL import Image, ImageDraw, ImageFont

    if not Path(FONT).exists():
        pytest.skip(f"font {FONT} is not installed")
    img = Image.new("RGB", size, (250, 250, 245))
    draw = ImageDraw.Draw(img)
    for at, text, px in lines:
        draw.text(at, text, font=ImageFont.truetype(FONT, px), fill=(0, 0, 0))
    return img


def test_tiny_and_odd_pixels():
    assert recognise_text(np.zeros((5, 5, 3), np.uint8)) == []
    assert recognise_text(np.zeros((1, 4000, 3), np.uint8)) == []
    assert recognise_text(np.full((40, 40), 255, np.uint8)) == []  # grayscale, blank
    with pytest.raises(InputError):
        recognise_text(np.zeros((40, 40, 3), np.float32))
    with pytest.raises(InputError):
        recognise_text(np.zeros((40, 40, 2), np.uint8))


def test_huge_image_is_read_scaled_down_with_boxes_in_its_pixels(tmp_path):
    """A 6000x4500 JPEG (27 MP, under the pixel limit): read at MAX_SIDE, boxes mapped back."""
    img = _page((6000, 4500), [((3200, 3600), "BIG SIGN", 360)])
    path = tmp_path / "huge.jpg"
    img.save(path, quality=85)
    lines = recognise_file(path)
    assert [ln.text for ln in lines] == ["BIG SIGN"]
    xs = [x for x, _ in lines[0].box]
    ys = [y for _, y in lines[0].box]
    assert 3000 < min(xs) < max(xs) < 6000 and 3400 < min(ys) < max(ys) < 4500
    assert MAX_SIDE < 6000
    with pytest.raises(ImageDecodeError):  # over a lower pixel limit: refused, not read
        recognise_file(path, max_pixels=10_000_000)


def test_all_text_rotated_and_mirrored_scans(tmp_path):
    words = ["INVOICE", "NUMBER", "TOTAL", "AMOUNT", "PAID", "BALANCE", "VAT", "DATE"]
    page = _page((560, 620), [((20, 10 + 40 * i), f"{words[i % 8]} {i:02d} {words[-1 - i % 8]}",
                                30) for i in range(15)])  # every line of the page is text
    rgba = page.convert("RGBA")
    lines = recognise_text(np.asarray(rgba))
    assert len(lines) >= 12 and any("INVOICE" in ln.text for ln in lines)
    for name, turned in (("rotated", page.rotate(90, expand=True)),
                         ("upside-down", page.rotate(180)),
                         ("mirrored", page.transpose(0))):
        found = recognise_text(np.asarray(turned))
        assert isinstance(found, list), name  # whatever it reads, it does not crash
        assert all(ln.text and 0.5 <= ln.score <= 1 and len(ln.box) == 4 for ln in found)
        turned.save(tmp_path / f"{name}.png")


def test_one_file_failing_is_one_line_and_loses_nothing(tmp_path, encoder, monkeypatch):
    folder = tmp_path / "pics"
    folder.mkdir()
    for name, text in (("good.png", "GOOD SIGN"), ("cursed.png", "CURSED SIGN")):
        _page((500, 160), [((20, 40), text, 56)]).save(folder / name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    real = ocr_module.recognise_file

    def flaky(path, **kwargs):
        if str(path).endswith("cursed.png"):
            raise RuntimeError("onnxruntime exploded")
        return real(path, **kwargs)

    for module in (ocr_module, recognition):  # where decoding and OCR runs find it
        monkeypatch.setattr(module, "recognise_file", flaky)
    col = Collection(tmp_path / "col", encoder=encoder)
    summary = col.index([folder], ocr=True, workers=0)
    assert summary.added == 2 and summary.failed == 1  # the corrupt file, as without OCR
    assert [(Path(w.path).name, w.reason) for w in summary.warnings] == [
        ("cursed.png", "text recognition failed (RuntimeError: onnxruntime exploded)")]
    assert summary.recognised == 1
    catalog = col._catalog
    names = {i: Path(p).name for i, p, _ in catalog.image_contents()}
    assert sorted(names.values()) == ["cursed.png", "good.png"]  # indexed all the same
    assert [names[i] for i in catalog.derived_runs(RECOGNISED)] == ["good.png"]
    # the next run reads it (it has no run), once the model no longer fails
    for module in (ocr_module, recognition):
        monkeypatch.setattr(module, "recognise_file", real)
    again = col.ocr()
    assert (again.read, again.recognised, again.failed) == (1, 1, 0), again.errors
    assert col.search("CURSED", hybrid=True, k=1)[0].metadata["ocr_text"].split() == [
        "CURSED", "SIGN"]
    col.close()
