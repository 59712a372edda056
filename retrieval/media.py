"""Safe image decoding, model preprocessing without torch, metadata and content hashing.

The decode worker processes (:mod:`retrieval.ingest.workers`) run this module, so it imports
only Pillow and NumPy: a worker starts in a fraction of a second.

Preprocessing reproduces open_clip's evaluation transform (resize with the model's interpolation,
centre crop or pad, RGB) on Pillow images and returns uint8 HWC pixels; the encoder normalises a
whole batch at once. JPEGs are decoded at the largest DCT scale-down that still covers the
model's input resolution (``Image.draft``), which makes a 4 MP photo about four times cheaper to
decode; the pixels the model sees differ from a full decode by under 1/255 on average.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Extensions the scanner treats as images. HEIC/HEIF are decoded only when pillow-heif is
# installed (the ``heif`` extra); without it such files are reported, not silently dropped.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib",
     ".tif", ".tiff", ".heic", ".heif"}
)
# Pillow format names accepted when opening; anything else (PSD, ICO, EPS...) is refused even if
# the file sits behind an image extension, so untrusted input only reaches well-tested decoders.
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "DIB", "TIFF", "MPO", "HEIF")
DEFAULT_MAX_PIXELS = 100_000_000

_EXIF_IFD = 0x8769
_TAG_MAKE, _TAG_MODEL, _TAG_DATETIME = 0x010F, 0x0110, 0x0132
_TAG_DATETIME_ORIGINAL = 0x9003
_HEIF_READY: bool | None = None


class ImageDecodeError(Exception):
    """An image file cannot be used; ``reason`` is a short phrase for reports."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ImageSpec:
    """What an image encoder expects as input (mirrors open_clip's PreprocessCfg)."""

    size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    fill_color: int = 0


@dataclass(frozen=True)
class ImageInfo:
    """Metadata read from an image file (dimensions after EXIF orientation)."""

    width: int
    height: int
    taken_at: dt.datetime | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    format: str | None = None


def heif_available() -> bool:
    """Register pillow-heif's opener once per process; False when it is not installed."""
    global _HEIF_READY
    if _HEIF_READY is None:
        try:
            import pillow_heif
        except ImportError:
            _HEIF_READY = False
        else:
            pillow_heif.register_heif_opener()
            _HEIF_READY = True
    return _HEIF_READY


@functools.cache
def _open_formats() -> tuple[str, ...]:
    heif_available()
    Image.init()
    return tuple(f for f in ALLOWED_FORMATS if f in Image.OPEN)


def hash_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a regular file's bytes, hex encoded. Opened without blocking: a named pipe
    put in the file's place is an OSError, not a read that waits for a writer for ever."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise OSError(f"not a regular file ({file_type(mode)})")
        return hashlib.file_digest(f, "sha256").hexdigest()


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_text(text: str) -> str:
    """SHA-256 of a text's UTF-8 bytes, hex encoded."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _oriented_size(img: Image.Image) -> tuple[int, int]:
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = str(value).replace("\x00", "").strip()
    return text or None


def _parse_exif_datetime(value: Any) -> dt.datetime | None:
    text = _clean(value)
    if not text:
        return None
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return dt.datetime.strptime(text[:19], fmt)
        except ValueError:
            continue
    return None


def read_info(img: Image.Image) -> ImageInfo:
    """Dimensions (as displayed), capture date and camera of an opened image."""
    width, height = _oriented_size(img)
    make = model = taken = None
    try:
        exif = img.getexif()
    except Exception:
        exif = None
    if exif:
        make, model = _clean(exif.get(_TAG_MAKE)), _clean(exif.get(_TAG_MODEL))
        try:
            sub = exif.get_ifd(_EXIF_IFD)
        except Exception:
            sub = {}
        taken = _parse_exif_datetime(sub.get(_TAG_DATETIME_ORIGINAL) or exif.get(_TAG_DATETIME))
    return ImageInfo(width, height, taken, make, model, img.format)


_FILE_TYPES = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a named pipe"),
               (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
               (stat.S_ISBLK, "a block device"))


def file_type(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    return next((name for test, name in _FILE_TYPES if test(mode)), "a special file")


def open_image(path: str | os.PathLike[str] | BinaryIO,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image (a path or a binary file object) lazily, after checking it is a real,
    allowed image within the pixel limit.

    Raises :class:`ImageDecodeError` with a short reason for every kind of bad input.
    """
    if hasattr(path, "read"):
        return _open_checked(path, max_pixels)  # type: ignore[arg-type]
    path = os.fspath(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        reason = "broken symbolic link" if os.path.islink(path) else "file not found"
        raise ImageDecodeError(reason) from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read file ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ImageDecodeError(f"not a regular file ({file_type(st.st_mode)})")
    if st.st_size == 0:
        raise ImageDecodeError("empty file")
    if Path(path).suffix.lower() in (".heic", ".heif") and not heif_available():
        raise ImageDecodeError(
            "HEIC/HEIF support needs pillow-heif (pip install 'retrieval[heif]')")
    return _open_checked(path, max_pixels)


def _open_checked(path: str | BinaryIO, max_pixels: int) -> Image.Image:
    formats = _open_formats()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(path, formats=formats)
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(_bomb(exc, max_pixels)) from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not a recognised image format") from None
    except PermissionError:
        raise ImageDecodeError("permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(f"cannot read image ({exc})") from None
    pixels = img.width * img.height
    if pixels > max_pixels:
        img.close()
        raise ImageDecodeError(f"image is {img.width}x{img.height} = {_over(pixels, max_pixels)}")
    return img


def _over(pixels: int, max_pixels: int) -> str:
    return (f"{pixels / 1e6:.1f} MP, over the limit of {max_pixels / 1e6:.1f} MP "
            "(--max-pixels, or max_pixels in Python)")


def _bomb(exc: Exception, max_pixels: int) -> str:
    """Pillow refused an image as a decompression bomb: say so in terms of our limit."""
    import re

    found = re.search(r"\((\d+) pixels\)", str(exc))
    pixels = int(found.group(1)) if found else 0
    if pixels > max_pixels:
        return f"image is {_over(pixels, max_pixels)}"
    return (f"image is {pixels / 1e6:.1f} MP, over Pillow's decompression-bomb limit of "
            f"{2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.1f} MP in this process")


def _resized_size(w: int, h: int, spec: ImageSpec) -> tuple[int, int]:
    """Size (w, h) after open_clip's resize step, before the crop or pad."""
    th, tw = spec.size
    if spec.resize_mode == "squash":
        return tw, th
    if spec.resize_mode == "shortest" and th == tw:
        # torchvision's Resize(int): shorter edge to size, longer edge truncated
        if w <= h:
            return th, int(th * h / w)
        return int(th * w / h), th
    # ResizeKeepRatio: 'shortest' for non-square targets, 'longest' fits inside the target
    rh, rw = h / th, w / tw
    ratio = max(rh, rw) if spec.resize_mode == "longest" else min(rh, rw)
    return round(w / ratio), round(h / ratio)


def _crop_or_pad(img: Image.Image, spec: ImageSpec) -> Image.Image:
    th, tw = spec.size
    w, h = img.size
    if tw > w or th > h:
        canvas = Image.new("RGB", (max(w, tw), max(h, th)), (spec.fill_color,) * 3)
        canvas.paste(img, ((max(w, tw) - w) // 2, (max(h, th) - h) // 2))
        img, (w, h) = canvas, canvas.size
    top, left = round((h - th) / 2.0), round((w - tw) / 2.0)
    if (w, h) == (tw, th):
        return img
    return img.crop((left, top, left + tw, top + th))


def to_model_input(img: Image.Image, spec: ImageSpec, *, draft: bool = True) -> np.ndarray:
    """Decode an opened image into the model's input as uint8 HxWx3 pixels.

    Applies EXIF orientation, converts to RGB, resizes and crops exactly as open_clip's
    evaluation transform does (normalisation happens on the batch, in the encoder).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ow, oh = _oriented_size(img)
        if draft and img.format in ("JPEG", "MPO"):
            # The largest DCT scale-down that keeps at least the size the resize produces.
            rw, rh = _resized_size(ow, oh, spec)
            img.draft("RGB", (rh, rw) if (ow, oh) != img.size else (rw, rh))
        try:
            img.load()
        except Image.DecompressionBombError as exc:
            raise ImageDecodeError(_bomb(exc, DEFAULT_MAX_PIXELS)) from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageDecodeError(f"corrupt or truncated image data ({exc})") from None
        if img.getexif().get(0x0112, 1) != 1:
            img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            if img.mode == "P" and "transparency" in img.info:
                img = img.convert("RGBA")
            img = img.convert("RGB")
        w, h = img.size
        resample = Image.Resampling.BILINEAR if spec.interpolation == "bilinear" else \
            Image.Resampling.BICUBIC
        if spec.resize_mode == "shortest" and spec.size[0] != spec.size[1]:
            resample = Image.Resampling.BICUBIC  # open_clip's ResizeKeepRatio ignores the mode
        size = _resized_size(w, h, spec)
        if size != (w, h):
            img = img.resize(size, resample)
        img = _crop_or_pad(img, spec)
        return np.asarray(img, dtype=np.uint8)


def load_image(
    path: str | os.PathLike[str] | BinaryIO, spec: ImageSpec,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> tuple[np.ndarray, ImageInfo]:
    """Open, validate, read metadata and preprocess one image (a path or a binary file)."""
    img = open_image(path, max_pixels)
    try:
        info = read_info(img)
        return to_model_input(img, spec), info
    finally:
        img.close()
