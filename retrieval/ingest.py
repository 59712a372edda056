"""Ingest: scan, diff against the catalog, decode in worker processes, embed, commit in batches.

A run is incremental and restartable:

* files whose (size, mtime) match the catalog cost nothing;
* new and changed files are hashed and decoded in worker processes while the model embeds the
  previous batch; a file whose content hash is already in the catalog (a rename, a copy)
  reuses the stored vector and never reaches the model;
* each batch is one catalog transaction, so an interruption loses at most the batch in flight
  and the next run picks up from there;
* files that disappeared under the given roots are removed at the end, after new files had the
  chance to reuse their vectors.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .encoders import Encoder
from .errors import IndexingError, InputError
from .media import (
    DEFAULT_MAX_PIXELS,
    DecodeResult,
    DecodeTask,
    decode_chunk,
    decode_file,
    hash_text,
    init_worker,
)
from .scan import FileStat, check_roots, scan
from .storage import IMAGE, TEXT, Catalog, ImageRecord, TextRecord

CHUNK = 8  # files per worker round trip


@dataclass
class FileError:
    """A file that was skipped, and why."""

    path: str
    reason: str


@dataclass
class IndexSummary:
    """The outcome of an index or add-texts run (the CLI prints it with ``--json``)."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    failed: int = 0
    embedded: int = 0
    errors: list[FileError] = field(default_factory=list)

    def fail(self, path: str, reason: str) -> None:
        self.failed += 1
        self.errors.append(FileError(path, reason))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class IndexProgress:
    """A progress report: ``phase`` is scan, embed, captions, remove or index; ``detail``
    carries a message worth showing (an index rebuilt into another tier)."""

    phase: str
    done: int
    total: int | None = None
    embedded: int = 0
    failed: int = 0
    detail: str | None = None


ProgressCallback = Callable[[IndexProgress], None]


@dataclass(frozen=True)
class IndexOptions:
    """How an index run behaves (see ``retrieval index --help``)."""

    hidden: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS
    batch_size: int = 32
    workers: int | None = None  # decode processes; None: one per CPU (up to 8), 0: inline
    captions: bool = True

    def decode_workers(self) -> int:
        if self.workers is not None:
            return max(0, self.workers)
        return max(1, min(8, os.cpu_count() or 1))


def _noop(_: IndexProgress) -> None:
    pass


# --- images ------------------------------------------------------------------------------------

def _decoded(
    tasks: Sequence[DecodeTask], workers: int, init: tuple[Any, ...], window: int
) -> Iterator[DecodeResult]:
    """Decode results in task order, from a bounded window of worker jobs."""
    chunks = [list(tasks[i:i + CHUNK]) for i in range(0, len(tasks), CHUNK)]
    if workers == 0 or len(chunks) <= 1:
        init_worker(init[0], init[1], None)  # inline: no catalog peeking, no lower priority
        for chunk in chunks:
            yield from decode_chunk(chunk)
        return
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=mp.get_context("spawn"), initializer=init_worker,
        initargs=(*init, True),
    )
    pending: deque[Future[list[DecodeResult]]] = deque()
    try:
        todo = iter(chunks)
        for chunk in todo:
            pending.append(pool.submit(decode_chunk, chunk))
            if len(pending) >= window:
                break
        while pending:
            try:
                results = pending.popleft().result()
            except BrokenProcessPool:
                raise IndexingError(
                    "the decode worker processes died. A script that indexes must guard its "
                    "entry point with `if __name__ == '__main__':` (worker processes are "
                    "spawned and import the main module), or pass workers=0") from None
            nxt = next(todo, None)
            if nxt is not None:
                pending.append(pool.submit(decode_chunk, nxt))
            yield from results
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def index_images(
    catalog: Catalog,
    get_encoder: Callable[[], Encoder],
    paths: Iterable[str | os.PathLike[str]],
    options: IndexOptions,
    progress: ProgressCallback | None = None,
) -> IndexSummary:
    """Bring the catalog in step with the image files under ``paths``."""
    progress = progress or _noop
    roots = check_roots(paths)
    summary = IndexSummary()
    found = scan(roots, hidden=options.hidden,
                 on_progress=lambda n: progress(IndexProgress("scan", n)))
    for path, reason in found.errors:
        summary.fail(path, reason)
    known = catalog.file_states(roots)
    todo: list[DecodeTask] = []
    for path, st in found.images.items():
        state = known.get(path)
        if state is not None and state.size == st.size and state.mtime_ns == st.mtime_ns:
            summary.unchanged += 1
        else:
            todo.append(DecodeTask(path, st.size, st.mtime_ns))
    stale: list[int] = []  # changed files that can no longer be read

    if todo:
        _embed_files(catalog, get_encoder, todo, known, options, progress, summary, stale)
    if options.captions:
        ids = {p: s.id for p, s in catalog.file_states(roots).items() if p in found.images}
        _sync_captions(catalog, get_encoder, ids, found.captions, progress)
    gone = [s.id for p, s in known.items() if p not in found.images] + stale
    if gone:
        progress(IndexProgress("remove", 0, len(gone)))
        catalog.delete_items(gone)
        summary.removed += len(gone)
        progress(IndexProgress("remove", len(gone), len(gone)))
    return summary


def _embed_files(
    catalog: Catalog,
    get_encoder: Callable[[], Encoder],
    todo: list[DecodeTask],
    known: dict[str, Any],
    options: IndexOptions,
    progress: ProgressCallback,
    summary: IndexSummary,
    stale: list[int],
) -> None:
    encoder = get_encoder()
    workers = options.decode_workers()
    batch_size = max(1, options.batch_size)
    spec = encoder.image_spec
    window = max(2 * workers, -(-2 * batch_size // CHUNK))
    done = 0
    pending: list[DecodeResult] = []
    progress(IndexProgress("embed", 0, len(todo)))

    def failed(path: str, reason: str) -> None:
        summary.fail(path, reason)
        if path in known:  # a changed file that no longer reads: its old vector is wrong
            stale.append(known[path].id)

    def flush() -> None:
        """Embed what needs the model, reuse stored vectors for known content, commit."""
        reuse = catalog.vectors_for_hashes((r.content_hash for r in pending), IMAGE)
        slot: dict[str, int] = {}  # content hash -> row in the batch to embed
        pixels: list[np.ndarray] = []
        kept: list[DecodeResult] = []
        for res in pending:
            h = res.content_hash
            assert h is not None
            if h not in reuse and h not in slot:
                if res.pixels is None:
                    # The worker saw this content in the catalog, but it has changed since
                    # (two files swapped contents, say): decode it here after all.
                    init_worker(spec, options.max_pixels, None)
                    res = decode_file(DecodeTask(res.path, res.size, res.mtime_ns),
                                      skip_known=False)
                    if res.error is not None or res.pixels is None:
                        failed(res.path, res.error or "cannot decode image")
                        continue
                slot[h] = len(pixels)
                pixels.append(res.pixels)
            kept.append(res)
        vectors = encoder.embed_images(np.stack(pixels)) if pixels else None
        summary.embedded += len(pixels)
        records = []
        for res in kept:
            h = res.content_hash or ""
            vec = reuse[h] if h in reuse else vectors[slot[h]]  # type: ignore[index]
            info = res.info
            records.append(ImageRecord(
                path=res.path, size=res.size, mtime_ns=res.mtime_ns, content_hash=h,
                vector=vec, width=info.width if info else None,
                height=info.height if info else None, taken_at=info.taken_at if info else None,
                camera_make=info.camera_make if info else None,
                camera_model=info.camera_model if info else None,
            ))
            if res.path not in known:
                summary.added += 1
            elif known[res.path].content_hash == h:
                summary.unchanged += 1  # touched, same bytes: only the stat is refreshed
            else:
                summary.updated += 1
        catalog.write_images(records)
        pending.clear()

    with_pixels = 0
    for res in _decoded(todo, workers, (spec, options.max_pixels, catalog.file), window):
        done += 1
        if res.error is not None:
            failed(res.path, res.error)
        else:
            pending.append(res)
            with_pixels += res.pixels is not None
            if with_pixels >= batch_size or len(pending) >= 4 * batch_size:
                flush()
                with_pixels = 0
        if done % CHUNK == 0 or done == len(todo):
            progress(IndexProgress("embed", done, len(todo), summary.embedded, summary.failed))
    if pending:
        flush()
    progress(IndexProgress("embed", done, len(todo), summary.embedded, summary.failed))


# --- texts and captions ------------------------------------------------------------------------

def _embed_texts(
    catalog: Catalog, encoder: Encoder, texts: Sequence[str], summary: IndexSummary | None
) -> list[np.ndarray]:
    """Vectors for texts, reusing stored ones for texts already in the catalog.

    Texts that went through the model are counted in ``summary.embedded`` when given."""
    reuse = catalog.vectors_for_hashes((hash_text(t) for t in texts), TEXT)
    missing = list(dict.fromkeys(t for t in texts if hash_text(t) not in reuse))
    fresh: dict[str, np.ndarray] = {}
    if missing:
        fresh = dict(zip(missing, encoder.embed_texts(missing), strict=True))
        if summary is not None:
            summary.embedded += len(missing)
    out = [fresh[t] if t in fresh else reuse[hash_text(t)] for t in texts]
    return out


def _read_caption(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8-sig", errors="replace") as f:
            text = " ".join(f.read(100_000).split())
    except OSError:
        return None
    return text or None


def _sync_captions(
    catalog: Catalog,
    get_encoder: Callable[[], Encoder],
    ids: dict[str, int],
    captions: dict[str, FileStat],
    progress: ProgressCallback,
    batch: int = 256,
) -> None:
    """Store each image's sidecar caption (photo.txt beside photo.jpg) as a linked text.

    ``ids`` maps the paths of the images seen by this run to their item ids."""
    stored = catalog.caption_states(ids.values())
    todo: list[tuple[int, FileStat]] = []
    drop: list[int] = []
    for path, item_id in ids.items():
        cap = captions.get(path)
        old = stored.get(item_id)
        if cap is None:
            if old is not None:
                drop.append(old[0].id)
        elif old is None or old[1] != cap.path or (old[0].size, old[0].mtime_ns) != (
                cap.size, cap.mtime_ns):
            todo.append((item_id, cap))
    if drop:
        catalog.delete_items(drop)
    if not todo:
        return
    encoder = get_encoder()
    progress(IndexProgress("captions", 0, len(todo)))
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        texts, keep = [], []
        for item_id, cap in part:
            text = _read_caption(cap.path)
            if text is None:
                if item_id in stored:
                    catalog.delete_items([stored[item_id][0].id])
                continue
            texts.append(text)
            keep.append((item_id, cap))
        vecs = _embed_texts(catalog, encoder, texts, None)  # 'embedded' counts images
        catalog.write_texts([
            TextRecord(text=t, vector=v, content_hash=hash_text(t), source="caption",
                       parent_id=item_id, path=cap.path, size=cap.size, mtime_ns=cap.mtime_ns)
            for t, v, (item_id, cap) in zip(texts, vecs, keep, strict=True)
        ])
        progress(IndexProgress("captions", min(start + batch, len(todo)), len(todo)))


@dataclass
class TextInput:
    """One text to add: its words, an optional stable id, and free metadata."""

    text: str
    id: str | None = None
    metadata: dict[str, Any] | None = None


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
        where = f"{path}:{n}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            errors.append(FileError(where, f"invalid JSON ({exc})"))
            continue
        if not isinstance(obj, dict):
            errors.append(FileError(where, "expected a JSON object"))
            continue
        text = obj.pop("text", None)
        if not isinstance(text, str) or not text.strip():
            errors.append(FileError(where, "missing or empty 'text'"))
            continue
        ext = obj.pop("id", None)
        if ext is not None and not isinstance(ext, (str, int)):
            errors.append(FileError(where, "'id' must be a string or an integer"))
            continue
        inputs.append(TextInput(text.strip(), None if ext is None else str(ext), obj or None))
    return inputs, errors


def add_texts(
    catalog: Catalog,
    get_encoder: Callable[[], Encoder],
    inputs: Sequence[TextInput],
    *,
    batch: int = 256,
    progress: ProgressCallback | None = None,
) -> IndexSummary:
    """Add or update texts. A text with an id replaces the stored text of that id; a text
    without one is added once (the same words again are counted as unchanged)."""
    progress = progress or _noop
    summary = IndexSummary()
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
    if not todo:
        return summary
    encoder = get_encoder()
    progress(IndexProgress("embed", 0, len(todo)))
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        vecs = _embed_texts(catalog, encoder, [t.text for t, _ in part], summary)
        catalog.write_texts([
            TextRecord(text=t.text, vector=v, content_hash=hash_text(t.text), source="texts",
                       external_id=t.id, metadata=t.metadata)
            for (t, _), v in zip(part, vecs, strict=True)
        ])
        for _, is_new in part:
            if is_new:
                summary.added += 1
            else:
                summary.updated += 1
        progress(IndexProgress("embed", min(start + batch, len(todo)), len(todo),
                               summary.embedded))
    return summary

