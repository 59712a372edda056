"""Text recognition (OCR): the lines of text in an image, with where they are and how sure the
model is, read by PaddleOCR's PP-OCR models (Chinese and English) on ONNX Runtime through the
``rapidocr`` package (the ``ocr`` extra: ``pip install 'retrieval[ocr]'``).

Detection runs first, on the image scaled to at most :data:`DETECT_SIDE` pixels on its longest
side (never up), so an image without text costs only the detector at that size; the direction
classifier and the recogniser run on the detected lines only, cut out of the image at up to
:data:`MAX_SIDE` pixels. Lines read with a confidence under :data:`MIN_SCORE` are dropped.
Boxes are four (x, y) points in the pixels of the image as it is shown (EXIF orientation
applied), whatever size it was read at.

:func:`ocr_key` names the models and the options that change what is read: a collection's text
is read again when it changes (see :mod:`retrieval.enrich.recognition`). Nothing here is
imported by a search.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np

from ..errors import InputError, OCRUnavailableError

if TYPE_CHECKING:
    from PIL import Image

MIN_SCORE = 0.5  # lines read with less confidence are dropped
MAX_SIDE = 2000  # the longest side text is read at; larger images are scaled down
# the longest side the detector looks at (never scaled up: small is cheap); on the rendered
# corpus (benchmarks/ocr.py) 960 found more small print than 1280 (and than RapidOCR's default,
# up to 2000), at 1.25-1.4x the speed of 1280 on photos without text; 640 starts losing text
DETECT_SIDE = 960
MIN_SIDE = 8  # an image with a shorter side than this holds no readable text
MISSING = ("text recognition needs the rapidocr package: pip install 'retrieval[ocr]' "
           "(or pip install rapidocr)")


@dataclass(frozen=True)
class TextLine:
    """One line of text found in an image: the text, its box (four (x, y) points, clockwise
    from the top left, in the image's pixels) and the model's confidence (0 to 1)."""

    text: str
    box: tuple[tuple[float, float], ...]
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": [list(p) for p in self.box],
                "score": round(self.score, 4)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TextLine:
        return cls(str(d["text"]), tuple((float(x), float(y)) for x, y in d["box"]),
                   float(d["score"]))


def joined(lines: list[TextLine]) -> str:
    """The text of an image: its lines, one per line."""
    return "\n".join(line.text for line in lines)


def _rapidocr() -> Any:
    try:
        import rapidocr
    except ImportError:
        raise OCRUnavailableError(MISSING) from None
    except Exception as exc:  # installed but broken (a missing system library for OpenCV)
        raise OCRUnavailableError(f"the rapidocr package cannot be loaded ({type(exc).__name__}: "
                                  f"{exc}); reinstall it: pip install 'retrieval[ocr]'") from None
    return rapidocr


def available() -> bool:
    """Whether text recognition can run here (the ``ocr`` extra is installed)."""
    try:
        _rapidocr()
    except OCRUnavailableError:
        return False
    return True


class _Engines:
    lock = threading.Lock()
    loaded: ClassVar[dict[int, Any]] = {}  # threads -> a RapidOCR engine
    threads: int | None = None  # this process's default (a decode worker sets 1)
    key: str | None = None


def set_threads(threads: int | None) -> None:
    """The ONNX Runtime threads each recognition uses in this process by default (None: one
    per core). Decode workers set 1, so that they do not fight the embedding's threads."""
    _Engines.threads = threads


def _engine(threads: int | None) -> Any:
    n = threads or _Engines.threads or os.cpu_count() or 1
    with _Engines.lock:
        if n not in _Engines.loaded:
            rapidocr = _rapidocr()
            _Engines.loaded[n] = rapidocr.RapidOCR(params={
                "Global.log_level": "error", "Global.text_score": MIN_SCORE,
                "Global.max_side_len": MAX_SIDE, "Det.limit_type": "max",
                "Det.limit_side_len": DETECT_SIDE,
                "EngineConfig.onnxruntime.intra_op_num_threads": n,
                "EngineConfig.onnxruntime.inter_op_num_threads": 1,
                # rapidocr turns ONNX Runtime's memory arena off; with it buffers are reused
                # from image to image: the engine reads photos without text about 1.5x as
                # fast, index --ocr spends 0.11 s per photo on OCR instead of 0.13
                # (benchmarks/results/ocr-*arena*.json), for some 70-90 MB more memory
                # per process
                "EngineConfig.onnxruntime.enable_cpu_mem_arena": True})
        return _Engines.loaded[n]


def ocr_key() -> str:
    """The OCR model's identity: rapidocr's version, its model files (names and sizes) and
    the options that change what is read. Text read under another key is read again."""
    if _Engines.key is None:
        rapidocr = _rapidocr()
        from importlib.metadata import version

        folder = Path(rapidocr.__file__).parent
        models = sorted((p.name, p.stat().st_size) for p in (folder / "models").glob("*.onnx"))
        config = (folder / "config.yaml").read_bytes()
        described = json.dumps({"models": models, "min_score": MIN_SCORE, "max_side": MAX_SIDE,
                                "detect_side": DETECT_SIDE, "min_side": MIN_SIDE,
                                "config": hashlib.sha256(config).hexdigest()})
        digest = hashlib.sha256(described.encode()).hexdigest()[:16]
        _Engines.key = f"rapidocr-{version('rapidocr')}-{digest}"
    return _Engines.key


def recognise_text(pixels: np.ndarray, *, threads: int | None = None,
                   min_score: float = MIN_SCORE) -> list[TextLine]:
    """The lines of text in an image's pixels (H x W x 3 RGB uint8; grayscale H x W and RGBA
    H x W x 4 are taken too), top to bottom as the detector orders them; boxes in these pixels'
    coordinates. An image smaller than :data:`MIN_SIDE` has none. Raises
    :class:`~retrieval.errors.OCRUnavailableError` without the ``ocr`` extra."""
    rgb = _as_rgb(pixels)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        return []
    engine = _engine(threads)
    scale = min(1.0, MAX_SIDE / max(h, w))
    if scale < 1.0:  # bounded memory and time: the detector never sees more than MAX_SIDE
        from PIL import Image

        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
        scale_x, scale_y = size[0] / w, size[1] / h
    else:
        scale_x = scale_y = 1.0
    result = engine(np.ascontiguousarray(rgb[..., ::-1]))  # rapidocr takes arrays as BGR
    if result.txts is None or result.boxes is None:
        return []
    lines = []
    for text, box, score in zip(result.txts, result.boxes, result.scores, strict=True):
        text = " ".join(str(text).split())
        if text and float(score) >= min_score:
            points = tuple((round(float(x) / scale_x, 1), round(float(y) / scale_y, 1))
                           for x, y in np.asarray(box).reshape(-1, 2))
            lines.append(TextLine(text, points, float(score)))
    return lines


def _as_rgb(pixels: np.ndarray) -> np.ndarray:
    """H x W x 3 uint8 from RGB, grayscale or RGBA pixels (transparent parts over a background
    that contrasts with what is drawn)."""
    if not isinstance(pixels, np.ndarray) or pixels.dtype != np.uint8:
        raise InputError("text recognition takes uint8 pixels (H x W x 3 RGB)")
    if pixels.ndim == 2:
        return np.repeat(pixels[:, :, None], 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] not in (1, 3, 4):
        raise InputError(f"text recognition takes H x W x 3 RGB pixels, not shape {pixels.shape}")
    if pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if pixels.shape[2] == 4:
        alpha = pixels[..., 3:4].astype(np.float32) / 255
        drawn = pixels[..., :3][pixels[..., 3] > 0]
        background = 255.0 if drawn.size == 0 or drawn.mean() < 128 else 0.0
        mixed = pixels[..., :3] * alpha + background * (1 - alpha)
        return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)
    return pixels


def file_pixels(img: Image.Image) -> np.ndarray:
    """An opened image's pixels as text recognition reads them: EXIF orientation applied,
    RGB (or RGBA where it has transparency), decoded at no more than about twice
    :data:`MAX_SIDE` (a JPEG decodes scaled down)."""
    import warnings

    from PIL import ImageOps

    from ..media import ImageDecodeError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if img.format in ("JPEG", "MPO") and max(img.size) > 2 * MAX_SIDE:
            img.draft("RGB", (MAX_SIDE, MAX_SIDE))  # the smallest DCT scale still >= this
        try:
            img.load()
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"corrupt or truncated image data ({exc})") from None
        if img.getexif().get(0x0112, 1) != 1:
            img = ImageOps.exif_transpose(img)
        alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P"
                                                     and "transparency" in img.info)
        return np.asarray(img.convert("RGBA" if alpha else "RGB"), dtype=np.uint8)


def recognise_file(image: str | os.PathLike[str] | BinaryIO, *, max_pixels: int | None = None,
                   threads: int | None = None) -> list[TextLine]:
    """The lines of text in an image file (a path or a binary file), boxes in the pixels of
    the image as shown (EXIF orientation applied). A file that is not a readable image raises
    :class:`~retrieval.media.ImageDecodeError` (its ``reason`` says why)."""
    from ..media import DEFAULT_MAX_PIXELS, open_image

    img = open_image(image, max_pixels or DEFAULT_MAX_PIXELS)
    try:
        full = img.size
        if img.getexif().get(0x0112, 1) in (5, 6, 7, 8):
            full = full[::-1]
        pixels = file_pixels(img)
    finally:
        img.close()
    lines = recognise_text(pixels, threads=threads)
    sx, sy = full[0] / pixels.shape[1], full[1] / pixels.shape[0]
    if (sx, sy) == (1.0, 1.0):
        return lines
    return [TextLine(line.text, tuple((round(x * sx, 1), round(y * sy, 1)) for x, y in line.box),
                     line.score) for line in lines]
