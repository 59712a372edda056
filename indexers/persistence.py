"""Atomic persistence of indexes: a JSON manifest that points at one generation of files.

A save writes ``<name>.<generation>.faiss`` (and any extra ``.npy`` arrays of that generation)
under temporary names, renames them into place, then atomically replaces ``<name>.json``. The
manifest rename is the commit point: a crash at any moment leaves either the old or the new
generation fully visible, and readers that opened the old files keep reading them. The manifest
records every file's size, so a truncated or swapped file is detected instead of being loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from .base import VectorIndex
from .errors import IndexFileError
from .kinds import index_class
from .routing import Router

FORMAT_VERSION = 2
SEGMENTS_SUFFIX = ".segments"  # <folder>/<name>.segments/<segment>/ (the on-disk tier)
MMAP_MIN_BYTES = 256 * 1024**2  # memory-map extra arrays of indexes at least this large


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write_text(path: Path, text: str) -> None:
    path.write_text(text)


def _save_npy(array: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as f:
            np.save(f, array)
    return write


def save_index(index: VectorIndex, folder: str | os.PathLike[str], name: str,
               meta: dict[str, Any] | None = None) -> Path:
    """Write ``index`` and its ``meta`` atomically; returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    gen = uuid.uuid4().hex[:12]
    files: dict[str, dict[str, Any]] = {}
    # Segments shared by generations (the on-disk tier) come first: a save only adds its
    # small per-generation files to them.
    for key, path in index.place_files(folder, name).items():
        files[key] = {"file": path.relative_to(folder).as_posix(), "bytes": path.stat().st_size}
    data = folder / f"{name}.{gen}.faiss"
    _write_atomic(data, lambda p: faiss.write_index(index.to_faiss(), str(p)))
    files["faiss"] = {"file": data.name, "bytes": data.stat().st_size}
    for key, array in index.extra_arrays().items():
        path = folder / f"{name}.{gen}.{key}.npy"
        _write_atomic(path, _save_npy(array))
        files[key] = {"file": path.name, "bytes": path.stat().st_size}
    manifest = {
        "format": FORMAT_VERSION,
        "kind": index.kind,
        "params": index.params(),
        "search_params": index.search_params,
        "tuning": index.tuning,
        "router": index.router.to_dict() if index.router is not None else None,
        "files": files,
        "ntotal": index.ntotal,
        "meta": meta or {},
    }
    manifest_path = folder / f"{name}.json"
    _write_atomic(manifest_path, lambda p: _write_text(p, json.dumps(manifest, indent=1)))
    _fsync_dir(folder)
    keep = {f["file"] for f in files.values()}
    for old in folder.glob(f"{name}.*.*"):
        if old.name not in keep and old.name != manifest_path.name and \
                not old.name.startswith("."):
            with contextlib.suppress(OSError):
                old.unlink()
    _drop_unused_segments(folder / f"{name}{SEGMENTS_SUFFIX}", folder, keep)
    return manifest_path


def _drop_unused_segments(home: Path, folder: Path, keep: set[str]) -> None:
    """Remove segment directories the committed manifest no longer names (old generations,
    leftovers of a crash). Processes that opened them keep reading the unlinked files."""
    if not home.is_dir():
        return
    used = {(folder / f).parent for f in keep}
    for seg in home.iterdir():
        if seg.is_dir() and seg not in used:
            shutil.rmtree(seg, ignore_errors=True)


def read_manifest(folder: str | os.PathLike[str], name: str) -> dict[str, Any]:
    path = Path(folder) / f"{name}.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise IndexFileError(f"index manifest {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise IndexFileError(f"index manifest {path} is unreadable ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise IndexFileError(f"index manifest {path} has an unknown format")
    return manifest


def load_index(folder: str | os.PathLike[str], name: str, *, mmap: bool | None = None
               ) -> tuple[VectorIndex, dict[str, Any]]:
    """Read an index saved by :func:`save_index`; returns (index, meta).

    ``mmap`` memory-maps IVF inverted lists and extra arrays (refinement vectors), which makes
    the index read-only (search only); by default it does so for indexes of at least 256 MiB.
    Raises :class:`IndexFileError` when the manifest or any file is missing, truncated,
    unreadable, or disagrees with the manifest.
    """
    folder = Path(folder)
    manifest = read_manifest(folder, name)
    paths: dict[str, Path] = {}
    total = 0
    try:
        for key, f in manifest["files"].items():
            path = folder / str(f["file"])
            try:
                size = path.stat().st_size
            except OSError:
                raise IndexFileError(f"index file {path} is missing") from None
            if size != f["bytes"]:
                raise IndexFileError(f"index file {path} has {size} bytes, its manifest says "
                                     f"{f['bytes']} (truncated or replaced)")
            paths[key] = path
            total += size
        if mmap is None:
            mmap = total >= MMAP_MIN_BYTES
        # Inverted lists can be memory-mapped (read-only); other types are read into memory.
        # Other types memory-map only their extra arrays (the graph's exact vectors).
        flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY \
            if mmap and manifest["kind"] == "ivf" else 0
        raw = faiss.read_index(str(paths.pop("faiss")), flags)
        index = index_class(str(manifest["kind"])).from_faiss(
            raw, manifest["params"], paths, mmap)
    except IndexFileError:
        raise
    except (RuntimeError, KeyError, ValueError, TypeError, OSError) as exc:
        raise IndexFileError(f"index {folder / name} is unreadable ({exc})") from None
    if index.ntotal != manifest.get("ntotal"):
        raise IndexFileError(f"index {folder / name} holds {index.ntotal} vectors, its manifest "
                             f"says {manifest.get('ntotal')}")
    index.search_params.update(manifest.get("search_params") or {})
    index.tuning = dict(manifest.get("tuning") or {})
    if manifest.get("router"):
        index.router = Router.from_dict(manifest["router"])
    return index, dict(manifest.get("meta") or {})
