"""Text recognition (OCR) with the real PP-OCR models of ``rapidocr`` on rendered English and
Chinese text: ``index --ocr`` (in the process and in decode workers), the remembered choice,
``retrieval ocr`` over a collection (incremental: unchanged files and an unchanged model are not
read again), ``retrieval ocr IMAGE``, what is stored, and the message without the package.

Needs the ``ocr`` extra (rapidocr); without it these tests are skipped, unless
``RETRIEVAL_REQUIRE_OCR=1`` (CI), where they fail. OCR calls are few: each costs ~0.2 s."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error_line, run_cli

from retrieval import Collection
from retrieval.enrich import ocr as ocr_module
from retrieval.errors import OCRUnavailableError
from retrieval.items import RECOGNISED

if os.environ.get("RETRIEVAL_REQUIRE_OCR") == "1":
    import rapidocr  # noqa: F401  (CI: a missing package fails here)
else:
    pytest.importorskip("rapidocr", reason="the ocr extra is not installed "
                                           "(pip install -e '.[ocr]')")

LATIN = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"
CJK = "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"


def render(path: Path, text: str, font: str = LATIN, size: tuple[int, int] = (640, 200),
           colour: tuple[int, int, int] = (245, 245, 240)) -> Path:
    """``text`` printed in 60 px letters on a plain background."""
    from PIL import Image, ImageDraw, ImageFont

    if not Path(font).exists():
        pytest.skip(f"font {font} is not installed")
    img = Image.new("RGB", size, colour)
    ImageDraw.Draw(img).text((30, 60), text, font=ImageFont.truetype(font, 60), fill=(10, 10, 10))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    folder = tmp_path / "pics"
    render(folder / "hotel.png", "HOTEL LINDNER")
    render(folder / "exit.jpg", "紧急出口", CJK)
    render(folder / "blank.png", "", colour=(40, 120, 200))
    return folder


def _stored(col: Collection) -> dict[str, dict[str, Any]]:
    """File name -> the metadata of its recognised text."""
    catalog = col._catalog
    images = {i: Path(p).name for i, p, _ in catalog.image_contents()}
    return {images[i]: meta for i, meta in catalog.derived_metadata(RECOGNISED, images).items()}


def _runs(col: Collection) -> dict[str, str]:
    catalog = col._catalog
    images = {i: Path(p).name for i, p, _ in catalog.image_contents()}
    return {images[i]: key for i, key in catalog.derived_runs(RECOGNISED).items()}


def test_index_with_ocr_stores_text_found_by_search(tmp_path, pics, encoder, catalog_url):
    col = Collection(tmp_path / "col", encoder=encoder, catalog=catalog_url)
    summary = col.index([pics], ocr=True, workers=0)
    assert (summary.added, summary.recognised, summary.warnings) == (3, 2, [])
    stored = _stored(col)
    assert set(stored) == {"hotel.png", "exit.jpg"}  # the blank image has a run, no text
    assert set(_runs(col)) == {"hotel.png", "exit.jpg", "blank.png"}
    hotel = stored["hotel.png"]
    assert [line["text"] for line in hotel["lines"]] == ["HOTEL LINDNER"]
    assert len(hotel["lines"][0]["box"]) == 4 and hotel["lines"][0]["score"] > 0.8
    assert hotel["ocr_key"] == ocr_module.ocr_key() and len(hotel["image_hash"]) == 64
    assert [line["text"] for line in stored["exit.jpg"]["lines"]] == ["紧急出口"]
    for word, name in (("LINDNER", "hotel.png"), ("出口", "exit.jpg")):
        top = col.search(word, hybrid=True, k=3)[0]
        assert Path(top.path).name == name, word
        assert top.metadata["match"]["source"] == RECOGNISED
    hit = next(h for h in col.search("x", k=3) if h.path.endswith("hotel.png"))
    assert hit.metadata["ocr_text"] == "HOTEL LINDNER"
    texts = col.search("HOTEL LINDNER", target="text", k=5)  # the text has its own vector
    assert any(h.text == "HOTEL LINDNER" for h in texts)

    # unchanged files are not read again; the choice is remembered
    runs = _runs(col)
    again = col.index([pics], workers=0)
    assert (again.unchanged, again.recognised) == (3, 0) and _runs(col) == runs
    assert col.ocr().read == 0
    # a changed file is read again (the run remembered --ocr)
    render(pics / "hotel.png", "GRAND HOTEL")
    changed = col.index([pics], workers=0)
    assert (changed.updated, changed.recognised) == (1, 1)
    assert [ln["text"] for ln in _stored(col)["hotel.png"]["lines"]] == ["GRAND HOTEL"]
    assert _runs(col)["exit.jpg"] == runs["exit.jpg"]
    # --no-ocr is remembered too: a new file is not read, and no text is dropped
    render(pics / "new.png", "NOTHING READ")
    off = col.index([pics], ocr=False, workers=0)
    assert (off.added, off.recognised) == (1, 0) and "new.png" not in _runs(col)
    assert col._catalog.get_settings()["ocr"] is False
    assert set(_stored(col)) == {"hotel.png", "exit.jpg"}
    col.close()


def test_ocr_command_is_incremental_and_follows_the_model(tmp_path, pics, tiny_spec,
                                                         monkeypatch):
    col = tmp_path / "col"
    run_cli("index", pics, "--model", tiny_spec, "--workers", "0", collection=col)
    first = json.loads(run_cli("ocr", "--json", collection=col).stdout)
    assert (first["read"], first["recognised"], first["failed"]) == (3, 2, 0)
    out = run_cli("ocr", collection=col)
    assert "0 images read (0 with text), 3 up to date, 0 failed" in out.stdout
    # another OCR model (or options): every image is read again
    monkeypatch.setattr(ocr_module._Engines, "key", "rapidocr-test-another-model")
    again = json.loads(run_cli("ocr", "--json", collection=col).stdout)
    assert (again["read"], again["unchanged"]) == (3, 0)
    stored = _stored(Collection(col))
    assert stored["hotel.png"]["ocr_key"] == "rapidocr-test-another-model"
    hits = json.loads(run_cli("search", "LINDNER", "--hybrid", "--json", "-k", "1",
                              collection=col).stdout.splitlines()[0])
    assert hits["path"].endswith("hotel.png") and hits["metadata"]["ocr_text"] == "HOTEL LINDNER"


def test_index_ocr_in_decode_workers(tmp_path, pics, tiny_spec):
    """The default path: decode worker processes read the text while the parent embeds."""
    col = tmp_path / "col"
    out = run_cli("index", pics, "--model", tiny_spec, "--workers", "2", "--batch-size", "2",
                  "--ocr", collection=col)
    assert "text read in 2 images" in out.stdout, out
    c = Collection(col)
    assert set(_stored(c)) == {"hotel.png", "exit.jpg"} and len(_runs(c)) == 3
    assert c._catalog.get_settings()["ocr"] is True
    summary = json.loads(run_cli("index", pics, "--json", collection=col).stdout)
    assert (summary["unchanged"], summary["recognised"], summary["warnings"]) == (3, 0, [])


def test_ocr_image_files_without_a_collection(tmp_path, pics):
    out = run_cli("ocr", pics / "hotel.png")
    assert out.stdout.splitlines() == ["HOTEL LINDNER"]
    found = json.loads(run_cli("ocr", pics / "exit.jpg", "--json").stdout)
    assert found["text"] == "紧急出口" and found["lines"][0]["text"] == "紧急出口"
    box = found["lines"][0]["box"]
    assert len(box) == 4 and all(0 <= x <= 640 and 0 <= y <= 200 for x, y in box)
    assert 0.5 <= found["lines"][0]["score"] <= 1
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot an image")
    assert_one_error_line(run_cli("ocr", bad, check=False), "bad.png")
    assert_one_error_line(run_cli("ocr", tmp_path / "missing.png", check=False), "not found")
    several = run_cli("ocr", bad, pics / "blank.png", check=False)
    assert several.returncode == 1 and "Error: " in several.stderr and "bad.png" in several.stderr
    assert "no text found" in several.stderr and "Traceback" not in several.stderr


def test_without_the_package_ocr_says_what_to_install(tmp_path, pics, tiny_spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "rapidocr", None)  # import rapidocr raises ImportError
    monkeypatch.setattr(ocr_module._Engines, "key", None)
    monkeypatch.setattr(ocr_module._Engines, "loaded", {})
    col = tmp_path / "col"
    proc = run_cli("index", pics, "--model", tiny_spec, "--ocr", collection=col, check=False)
    assert_one_error_line(proc, "pip install 'retrieval[ocr]'")
    assert not col.exists()  # refused before anything was made
    assert_one_error_line(run_cli("ocr", pics / "hotel.png", check=False), "retrieval[ocr]")
    with pytest.raises(OCRUnavailableError, match=r"retrieval\[ocr\]"):
        ocr_module.recognise_file(pics / "hotel.png")
    # a collection that remembers --ocr says so, and how to index without it
    run_cli("index", pics, "--model", tiny_spec, "--workers", "0", collection=col)
    Collection(col)._catalog.set_settings(ocr=True)
    line = assert_one_error_line(run_cli("index", pics, collection=col, check=False),
                                 "retrieval[ocr]", "--no-ocr")
    assert "indexed with --ocr" in line
    assert_one_error_line(run_cli("ocr", collection=col, check=False), "retrieval[ocr]")
    run_cli("index", pics, "--no-ocr", collection=col)
