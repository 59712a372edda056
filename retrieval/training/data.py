"""Training data: captioned images from a folder of sidecars or a CSV / JSONL file, a
deterministic train / validation split, and the images decoded once into a memory-mapped cache.

Data is a folder of images with sidecar captions (``x.jpg`` + ``x.txt``, one caption per
line; read under the same rule as when indexing: only a regular file inside the folder, see
:mod:`retrieval.ingest.confine`), or a CSV / JSONL file of image paths and captions (several
captions per image allowed: repeat the row, or give JSONL ``"captions": [...]``). Images are
decoded once, in the same worker processes as indexing, into a uint8 array beside the output
(memory-mapped, so it need not fit in RAM); epochs then read batches from it.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, TrainingError
from ..fileio import atomic_path, atomic_write
from ..ingest.pool import decoded
from ..ingest.report import FileError
from ..ingest.workers import DecodeTask, worker_count
from ..media import ImageSpec

CAPTION_COLUMNS = ("caption", "text", "title", "captions")
IMAGE_COLUMNS = ("image", "path", "filepath", "file", "filename", "image_path")
CAPTION_FILE_LIMIT = 16 << 20  # bytes of a sidecar read (one caption per line)


# --- data ------------------------------------------------------------------------------------

def read_pairs(data: str | os.PathLike[str]) -> tuple[dict[str, list[str]], list[FileError]]:
    """Image path -> captions, from a folder with sidecars or a CSV / JSONL file."""
    src = Path(data).expanduser()
    pairs = _Pairs(src)
    if src.is_dir():
        pairs.from_folder()
    elif src.is_file() and src.suffix.lower() in (".jsonl", ".ndjson"):
        pairs.from_jsonl()
    elif src.is_file() and src.suffix.lower() in (".csv", ".tsv"):
        pairs.from_csv()
    elif not src.exists():
        raise InputError(f"{data}: no such file or folder")
    else:
        raise InputError(f"{data}: expected a folder, a .csv/.tsv or a .jsonl file")
    return pairs.pairs, pairs.errors


class _Pairs:
    """Captions gathered per image, and what could not be used."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.pairs: dict[str, list[str]] = {}
        self.errors: list[FileError] = []

    def add(self, image: str, captions: Sequence[str], where: str) -> None:
        path = str((self.src.parent / image).absolute()) if not os.path.isabs(image) else image
        caps = [" ".join(c.split()) for c in captions if isinstance(c, str) and c.strip()]
        if not caps:
            self.errors.append(FileError(where, "empty caption"))
        elif not os.path.isfile(path):
            self.errors.append(FileError(path, "image file not found"))
        else:
            self.pairs.setdefault(path, []).extend(caps)

    def from_folder(self) -> None:
        from ..ingest.confine import FoundFileError, read_sidecar
        from ..ingest.scan import scan

        found = scan([self.src])
        self.errors += [FileError(p, r) for p, r in found.errors]
        for path in found.images:
            cap = found.captions.get(path)
            if cap is None:
                self.errors.append(FileError(path, "no caption file beside it"))
                continue
            try:
                lines = read_sidecar(cap, CAPTION_FILE_LIMIT).decode("utf-8-sig").splitlines()
            except FoundFileError as exc:
                self.errors.append(FileError(cap.path, exc.reason))
                continue
            except UnicodeDecodeError as exc:
                self.errors.append(FileError(cap.path, f"unreadable caption ({exc})"))
                continue
            self.add(path, lines, cap.path)

    def from_jsonl(self) -> None:
        for n, line in enumerate(self.src.read_text(encoding="utf-8-sig").splitlines(), 1):
            if not line.strip():
                continue
            where = f"{self.src}:{n}"
            try:
                obj = json.loads(line)
                image = next(obj[k] for k in IMAGE_COLUMNS if k in obj)
            except (ValueError, StopIteration, TypeError):
                self.errors.append(FileError(where, "expected a JSON object with an image path"))
                continue
            caps = obj.get("captions") or [obj.get("caption") or obj.get("text") or ""]
            self.add(str(image), caps if isinstance(caps, list) else [str(caps)], where)

    def from_csv(self) -> None:
        with open(self.src, newline="", encoding="utf-8-sig") as f:
            tsv = self.src.suffix.lower() == ".tsv"
            reader = csv.DictReader(f, delimiter="\t" if tsv else ",")
            cols = {c.lower().strip(): c for c in reader.fieldnames or []}
            img_col = next((cols[c] for c in IMAGE_COLUMNS if c in cols), None)
            cap_col = next((cols[c] for c in CAPTION_COLUMNS if c in cols), None)
            if img_col is None or cap_col is None:
                raise InputError(
                    f"{self.src}: needs an image column ({', '.join(IMAGE_COLUMNS)}) and a "
                    f"caption column ({', '.join(CAPTION_COLUMNS)}); found {list(cols)}")
            for n, row in enumerate(reader, 2):
                self.add(row.get(img_col) or "", [row.get(cap_col) or ""], f"{self.src}:{n}")


def split(paths: Sequence[str], val_fraction: float, seed: int, batch_size: int
          ) -> tuple[list[str], list[str]]:
    """A deterministic split of images into train and validation."""
    if not 0 <= val_fraction < 1:
        raise TrainingError(f"val fraction must be in [0, 1), got {val_fraction}")
    order = sorted(paths)
    random.Random(seed).shuffle(order)
    n_val = round(len(order) * val_fraction)
    if val_fraction > 0 and n_val < 2:
        need = math.ceil(2 / val_fraction)
        raise TrainingError(
            f"too little data: a validation split of {val_fraction:g} needs at least {need} "
            f"usable images, found {len(order)} (add data or lower --val-fraction)")
    train = order[n_val:]
    if len(train) < 2:
        raise TrainingError(
            f"too little data: {len(train)} training image(s) left after the validation split "
            "(contrastive training needs at least 2 per batch)")
    return train, order[:n_val]


def fingerprint(items: Sequence[Any]) -> str:
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def decode_cache(paths: Sequence[str], spec: ImageSpec, folder: Path, workers: int | None,
                 max_pixels: int, progress: Callable[[int], None]
                 ) -> tuple[np.ndarray, list[str], list[FileError]]:
    """Decode images once into a memory-mapped uint8 array (N, H, W, 3) under ``folder``.

    Returns the array, the paths it holds (in order), and the images that failed. A cache made
    for the same paths and preprocessing is reused (resuming does not decode again)."""
    key = fingerprint([list(paths), asdict(spec)])
    folder.mkdir(parents=True, exist_ok=True)
    data_file, meta_file = folder / f"pixels-{key}.npy", folder / f"pixels-{key}.json"
    if data_file.exists() and meta_file.exists():
        meta = json.loads(meta_file.read_text())
        arr = np.load(data_file, mmap_mode="r")
        return arr, meta["paths"], [FileError(**e) for e in meta["errors"]]
    for old in folder.glob("pixels-*"):
        old.unlink()
    h, w = spec.size
    kept: list[str] = []
    errors: list[FileError] = []
    tasks = [DecodeTask(p, 0, 0) for p in paths]
    n_workers = worker_count(workers)
    with atomic_path(data_file) as tmp:
        arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                        shape=(len(paths), h, w, 3))
        results = decoded(tasks, spec=spec, max_pixels=max_pixels, workers=n_workers,
                          window=4 * n_workers)
        with contextlib.closing(results):
            for i, res in enumerate(results):
                if res.error is not None or res.pixels is None:
                    errors.append(FileError(res.path, res.error or "cannot decode image"))
                else:
                    arr[len(kept)] = res.pixels
                    kept.append(res.path)
                if i % 256 == 0:
                    progress(i)
        arr.flush()
        del arr
    atomic_write(meta_file, json.dumps({"paths": kept, "errors": [asdict(e) for e in errors]}))
    progress(len(paths))
    return np.load(data_file, mmap_mode="r"), kept, errors
