"""Texts: files of texts (lines or JSONL), added or updated by id, embedded once per content."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders import Encoder
from ..errors import InputError
from ..items import ADDED, TEXT
from ..media import hash_text
from ..pathnames import clean_data, clean_text
from ..storage.records import TextRecord
from .report import FileError, IndexProgress, IndexSummary, ProgressCallback, no_progress

if TYPE_CHECKING:
    from ..storage import Catalog


@dataclass
class TextInput:
    """One text to add: its words, an optional stable id, and free metadata."""

    text: str
    id: str | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        # Undecodable bytes (from argv, or JSON's lone surrogate escapes) cannot be stored.
        self.text = clean_text(self.text)
        self.id = None if self.id is None else clean_text(self.id)
        self.metadata = clean_data(self.metadata)

    @classmethod
    def of(cls, value: Any) -> TextInput:
        """A text from a string, a dict (``text``, optional ``id``, metadata) or a TextInput."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, dict):
            d = dict(value)
            text = d.pop("text", None)
            if not isinstance(text, str) or not text.strip():
                raise InputError("each text needs a non-empty 'text'")
            ext = d.pop("id", None)
            return cls(text.strip(), None if ext is None else str(ext), d or None)
        raise InputError(f"cannot add {type(value).__name__} as a text")


def embed_texts(catalog: Catalog, encoder: Encoder, texts: Sequence[str],
                summary: IndexSummary | None) -> list[np.ndarray]:
    """Vectors for texts, reusing stored ones for texts already in the catalog.

    Texts that went through the model are counted in ``summary.embedded`` when given."""
    reuse = catalog.vectors_for_hashes((hash_text(t) for t in texts), TEXT)
    missing = list(dict.fromkeys(t for t in texts if hash_text(t) not in reuse))
    fresh: dict[str, np.ndarray] = {}
    if missing:
        fresh = dict(zip(missing, encoder.embed_texts(missing), strict=True))
        if summary is not None:
            summary.embedded += len(missing)
    return [fresh[t] if t in fresh else reuse[hash_text(t)] for t in texts]


def read_text_file(path: str | os.PathLike[str]) -> tuple[list[TextInput], list[FileError]]:
    """Parse a texts file: JSONL (``text``, optional ``id``, other keys are metadata) when it
    ends in .jsonl/.ndjson or its first line is a JSON object; otherwise one text per line."""
    p = Path(path)
    try:
        raw = p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a text or JSONL file") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    lines = raw.splitlines()
    first = next((ln.strip() for ln in lines if ln.strip()), "")
    jsonl = p.suffix.lower() in (".jsonl", ".ndjson") or first.startswith("{")
    inputs: list[TextInput] = []
    errors: list[FileError] = []
    for n, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not jsonl:
            inputs.append(TextInput(line))
            continue
        parsed = _jsonl_text(line)
        if isinstance(parsed, str):
            errors.append(FileError(f"{path}:{n}", parsed))
        else:
            inputs.append(parsed)
    return inputs, errors


def _jsonl_text(line: str) -> TextInput | str:
    """A text from one JSONL line, or why the line is refused."""
    try:
        obj = json.loads(line)
    except ValueError as exc:
        return f"invalid JSON ({exc})"
    if not isinstance(obj, dict):
        return "expected a JSON object"
    text = obj.pop("text", None)
    if not isinstance(text, str) or not text.strip():
        return "missing or empty 'text'"
    ext = obj.pop("id", None)
    if ext is not None and not isinstance(ext, (str, int)):
        return "'id' must be a string or an integer"
    return TextInput(text.strip(), None if ext is None else str(ext), obj or None)


def add_texts(catalog: Catalog, get_encoder: Callable[[], Encoder], inputs: Sequence[TextInput],
              *, batch: int = 256, progress: ProgressCallback | None = None) -> IndexSummary:
    """Add or update texts. A text with an id replaces the stored text of that id; a text
    without one is added once (the same words again are counted as unchanged)."""
    progress = progress or no_progress
    summary = IndexSummary()
    todo = _changed_texts(catalog, inputs, summary)
    if not todo:
        return summary
    encoder = get_encoder()
    progress(IndexProgress("embed", 0, len(todo)))
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        vecs = embed_texts(catalog, encoder, [t.text for t, _ in part], summary)
        catalog.write_texts([
            TextRecord(text=t.text, vector=v, content_hash=hash_text(t.text), source=ADDED,
                       external_id=t.id, metadata=t.metadata)
            for (t, _), v in zip(part, vecs, strict=True)])
        for _, is_new in part:
            if is_new:
                summary.added += 1
            else:
                summary.updated += 1
        progress(IndexProgress("embed", min(start + batch, len(todo)), len(todo),
                               summary.embedded))
    return summary


def _changed_texts(catalog: Catalog, inputs: Sequence[TextInput], summary: IndexSummary
                   ) -> list[tuple[TextInput, bool]]:
    """The inputs that change the catalog, each with whether it is new; counts the rest."""
    by_id = catalog.text_states_by_external_id(t.id for t in inputs if t.id is not None)
    by_hash = catalog.text_ids_by_hash(hash_text(t.text) for t in inputs if t.id is None)
    todo: list[tuple[TextInput, bool]] = []
    seen: set[str] = set()
    for t in inputs:
        h = hash_text(t.text)
        key = f"id:{t.id}" if t.id is not None else f"hash:{h}"
        if key in seen:
            continue
        seen.add(key)
        if t.id is not None:
            state = by_id.get(t.id)
            if state is not None and state.content_hash == h:
                summary.unchanged += 1
            else:
                todo.append((t, state is None))
        elif h in by_hash:
            summary.unchanged += 1
        else:
            todo.append((t, True))
    return todo
