"""Atomic persistence of indexes: a JSON manifest that points at one generation of FAISS data.

A save writes ``<name>.<generation>.faiss`` under a temporary name, renames it into place, then
atomically replaces ``<name>.json``. The manifest rename is the commit point: a crash at any
moment leaves either the old or the new generation fully visible, and readers that opened the
old file keep reading it. The manifest records the data file's size so that a truncated or
swapped file is detected instead of being loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from pathlib import Path
from typing import Any

import faiss

from .base import VectorIndex, index_class
from .errors import IndexFileError

FORMAT_VERSION = 1


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform can fsync a directory
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def save_index(index: VectorIndex, folder: str | os.PathLike[str], name: str,
               meta: dict[str, Any] | None = None) -> Path:
    """Write ``index`` and its ``meta`` atomically; returns the manifest path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data_name = f"{name}.{uuid.uuid4().hex[:12]}.faiss"
    data_path = folder / data_name
    _write_atomic(data_path, lambda p: faiss.write_index(index.to_faiss(), str(p)))
    manifest = {
        "format": FORMAT_VERSION,
        "kind": index.kind,
        "params": index.params(),
        "file": data_name,
        "bytes": data_path.stat().st_size,
        "ntotal": index.ntotal,
        "meta": meta or {},
    }
    manifest_path = folder / f"{name}.json"
    _write_atomic(manifest_path, lambda p: p.write_text(json.dumps(manifest, indent=1)))
    _fsync_dir(folder)
    for old in folder.glob(f"{name}.*.faiss"):
        if old.name != data_name:
            with contextlib.suppress(OSError):
                old.unlink()
    return manifest_path


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


def load_index(folder: str | os.PathLike[str], name: str, *, mmap: bool = False
               ) -> tuple[VectorIndex, dict[str, Any]]:
    """Read an index saved by :func:`save_index`; returns (index, meta).

    Raises :class:`IndexFileError` when the manifest or the data is missing, truncated,
    unreadable, or disagrees with the manifest.
    """
    manifest = read_manifest(folder, name)
    data_path = Path(folder) / str(manifest.get("file", ""))
    try:
        size = data_path.stat().st_size
    except OSError:
        raise IndexFileError(f"index data {data_path} is missing") from None
    if size != manifest.get("bytes"):
        raise IndexFileError(
            f"index data {data_path} has {size} bytes, its manifest says {manifest.get('bytes')}"
            " (truncated or replaced)"
        )
    flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY if mmap else 0
    try:
        raw = faiss.read_index(str(data_path), flags)
        cls = index_class(str(manifest["kind"]))
        index = cls.from_faiss(raw, manifest["params"])
    except (RuntimeError, KeyError, ValueError) as exc:
        raise IndexFileError(f"index data {data_path} is unreadable ({exc})") from None
    if index.ntotal != manifest.get("ntotal"):
        raise IndexFileError(
            f"index data {data_path} holds {index.ntotal} vectors, its manifest says "
            f"{manifest.get('ntotal')}"
        )
    return index, dict(manifest.get("meta") or {})


def remove_index(folder: str | os.PathLike[str], name: str) -> None:
    """Delete an index's manifest and data files."""
    folder = Path(folder)
    for p in [folder / f"{name}.json", *folder.glob(f"{name}.*.faiss")]:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
