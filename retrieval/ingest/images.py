"""Images: scan, diff against the catalog, decode in worker processes, embed, commit in batches.

A run is incremental and restartable:

* files whose (size, mtime) match the catalog cost nothing;
* new and changed files are hashed and decoded in worker processes while the model embeds the
  previous batch; a file whose content hash is already in the catalog (a rename, a copy)
  reuses the stored vector and never reaches the model;
* with ``IndexOptions.ray`` the decoding and embedding happen on a Ray cluster instead
  (:mod:`.distributed`); everything else (the diff, the reuse, the commits) stays here;
* each batch is one catalog transaction, so an interruption loses at most the batch in flight
  and the next run picks up from there;
* files that disappeared under the given roots are removed at the end, after new files had the
  chance to reuse their vectors;
* a sidecar caption (``photo.txt`` beside ``photo.jpg``) is stored as the image's caption, when
  it is a regular file inside the indexed folders (:mod:`.confine`); one that is not is skipped
  with its reason, and a caption stored from it before is dropped.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encoders import Encoder
from ..items import IMAGE, SIDECAR
from ..media import hash_text
from ..storage.records import FileState, ImageRecord, TextRecord
from .confine import FoundFileError, Sidecar, read_sidecar
from .pool import decoded
from .report import (
    FileError,
    IndexOptions,
    IndexProgress,
    IndexSummary,
    ProgressCallback,
    no_progress,
)
from .scan import check_roots, normalize_path, scan
from .texts import embed_texts
from .workers import (
    CHUNK,
    DecodeResult,
    DecodeTask,
    decode_file,
    init_worker,
    worker_count,
)

if TYPE_CHECKING:
    from ..storage import Catalog


def index_images(catalog: Catalog, get_encoder: Callable[[], Encoder],
                 paths: Iterable[str | os.PathLike[str]], options: IndexOptions,
                 progress: ProgressCallback | None = None) -> IndexSummary:
    """Bring the catalog in step with the image files under ``paths`` (with
    ``options.under_roots``: changes below the collection's folders, gone ones included)."""
    progress = progress or no_progress
    roots = [normalize_path(p) for p in paths] if options.under_roots else check_roots(paths)
    summary = IndexSummary()
    found = scan(roots, hidden=options.hidden, sidecars=options.captions, videos=options.videos,
                 within=catalog.get_settings().get("roots") or (),
                 on_progress=lambda n: progress(IndexProgress("scan", n)),
                 found=options.under_roots)
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
    batches = _Batches(catalog, get_encoder(), known, options, summary) if todo else None
    if batches is not None:
        batches.run(todo, batches.ray_source(todo) if options.ray else batches.local_source(todo),
                    progress)
    if options.captions:
        ids = {p: s.id for p, s in catalog.file_states(roots).items() if p in found.images}
        _sync_captions(catalog, get_encoder, ids, found.captions, summary, progress)
    gone = [s.id for p, s in known.items() if p not in found.images]
    gone += batches.stale if batches is not None else []
    if options.videos:
        from .videos import index_videos

        gone += index_videos(catalog, get_encoder, found.videos, roots, options, summary,
                             progress)
    if gone:
        progress(IndexProgress("remove", 0, len(gone)))
        catalog.delete_items(gone)
        summary.removed += len(gone)
        progress(IndexProgress("remove", len(gone), len(gone)))
    if options.ocr:
        _read_the_rest(catalog, get_encoder, summary, batches.unread if batches else set(),
                       progress)
    return summary


def _read_the_rest(catalog: Catalog, get_encoder: Callable[[], Encoder], summary: IndexSummary,
                   unread: set[str], progress: ProgressCallback) -> None:
    """An OCR run's last step: read the text of the collection's images without a current
    reading (indexed before OCR was turned on, renamed or copied content, decoded on Ray),
    but not of the files whose reading failed in this run."""
    from ..enrich.recognition import ocr_run

    done = ocr_run(catalog, get_encoder, skip=unread, progress=progress)
    summary.recognised += done.recognised
    summary.warnings.extend(done.errors)


class _Batches:
    """Decoded files gathered into batches: embedded where new content needs the model,
    given the stored vector where the content is known, committed a batch at a time."""

    def __init__(self, catalog: Catalog, encoder: Encoder, known: dict[str, FileState],
                 options: IndexOptions, summary: IndexSummary) -> None:
        self.catalog, self.encoder, self.known = catalog, encoder, known
        self.options, self.summary = options, summary
        self.pending: list[DecodeResult] = []
        self.stale: list[int] = []  # changed files that can no longer be read
        self.unread: set[str] = set()  # files whose text could not be read (--ocr)

    def local_source(self, todo: list[DecodeTask]) -> Generator[DecodeResult, None, None]:
        """Results in task order from this machine's decode workers (pixels, for the model
        here)."""
        workers = worker_count(self.options.workers)
        window = max(2 * workers, -(-2 * max(1, self.options.batch_size) // CHUNK))
        return decoded(todo, spec=self.encoder.image_spec, workers=workers,
                       max_pixels=self.options.max_pixels, known=self.catalog.content_prefixes,
                       window=window, ocr=self.options.ocr)

    def ray_source(self, todo: list[DecodeTask]) -> Generator[DecodeResult, None, None]:
        """Results in any order from a Ray cluster, embedded there (vectors)."""
        from .distributed import EncoderRecipe, ray_results

        return ray_results(todo, address=self.options.ray or "auto",
                           recipe=EncoderRecipe.of(self.catalog, self.encoder),
                           spec=self.encoder.image_spec, max_pixels=self.options.max_pixels,
                           batch_size=self.options.batch_size,
                           known=self.catalog.content_prefixes(),
                           fallback=self.local_source)

    def run(self, todo: list[DecodeTask], results: Generator[DecodeResult, None, None],
            progress: ProgressCallback) -> None:
        """Gather ``results`` (each of ``todo`` once) into batches and commit them."""
        size = max(1, self.options.batch_size)
        progress(IndexProgress("embed", 0, len(todo)))
        ready = 0  # results with pixels or a vector in the pending batch
        with contextlib.closing(results):
            for done, res in enumerate(results, 1):
                if res.error is not None:
                    self.failed(res.path, res.error)
                else:
                    if res.ocr_error is not None:  # indexed all the same, read again next run
                        self.unread.add(res.path)
                        self.summary.warnings.append(FileError(res.path, res.ocr_error))
                    self.pending.append(res)
                    ready += res.pixels is not None or res.vector is not None
                    if ready >= size or len(self.pending) >= 4 * size:
                        self.flush()
                        ready = 0
                if done % CHUNK == 0:
                    progress(IndexProgress("embed", done, len(todo), self.summary.embedded,
                                           self.summary.failed))
        self.flush()
        progress(IndexProgress("embed", len(todo), len(todo), self.summary.embedded,
                               self.summary.failed))

    def failed(self, path: str, reason: str) -> None:
        self.summary.fail(path, reason)
        if path in self.known:  # a changed file that no longer reads: its old vector is wrong
            self.stale.append(self.known[path].id)

    def flush(self) -> None:
        """Embed what needs the model, reuse stored vectors for known content, commit."""
        if not self.pending:
            return
        reuse = self.catalog.vectors_for_hashes((r.content_hash or "" for r in self.pending),
                                                IMAGE)
        slot: dict[str, int] = {}  # content hash -> row among the new contents
        fresh: list[DecodeResult] = []
        kept: list[DecodeResult] = []
        for res in self.pending:
            h = res.content_hash or ""
            if h not in reuse and h not in slot:
                if res.pixels is None and res.vector is None:
                    res = self.redecode(res)
                    if res.pixels is None:
                        continue
                slot[h] = len(fresh)
                fresh.append(res)
            kept.append(res)
        vectors = self.embed(fresh)
        self.summary.embedded += len(fresh)
        ids = self.catalog.write_images([self.record(res, reuse, slot, vectors) for res in kept])
        self.write_text(ids, kept)
        self.pending.clear()

    def write_text(self, ids: list[int], kept: list[DecodeResult]) -> None:
        """Store the text read in these images (an OCR run), right after their batch."""
        from ..enrich.ocr import ocr_key
        from ..enrich.recognition import Recognised, write_recognised

        read = [Recognised(i, r.content_hash, r.lines)
                for i, r in zip(ids, kept, strict=True) if r.lines is not None]
        if read:
            self.summary.recognised += write_recognised(self.catalog, self.encoder, read,
                                                        ocr_key())

    def embed(self, fresh: list[DecodeResult]) -> np.ndarray | None:
        """One vector per result: embedded here from its pixels, or as it came (Ray)."""
        if not fresh:
            return None
        here = [i for i, r in enumerate(fresh) if r.vector is None]
        if len(here) == len(fresh):  # a local run: one call to the model
            return self.encoder.embed_images(np.stack([_pixels(r) for r in fresh]))
        vectors = np.zeros((len(fresh), self.encoder.dim), dtype=np.float32)
        for i, r in enumerate(fresh):
            if r.vector is not None:
                vectors[i] = r.vector
        if here:  # content a Ray worker took for known, and the catalog no longer has
            vectors[here] = self.encoder.embed_images(np.stack([_pixels(fresh[i]) for i in here]))
        return vectors

    def redecode(self, res: DecodeResult) -> DecodeResult:
        """The worker saw this content in the catalog, but it changed since (two files swapped
        contents, say): decode it here after all."""
        init_worker(self.encoder.image_spec, self.options.max_pixels, None,
                    ocr=self.options.ocr)
        res = decode_file(DecodeTask(res.path, res.size, res.mtime_ns), skip_known=False)
        if res.error is not None or res.pixels is None:
            self.failed(res.path, res.error or "cannot decode image")
        return res

    def record(self, res: DecodeResult, reuse: dict[str, np.ndarray], slot: dict[str, int],
               vectors: Any) -> ImageRecord:
        h = res.content_hash or ""
        info = res.info
        known = self.known.get(res.path)
        if known is None:
            self.summary.added += 1
        elif known.content_hash == h:
            self.summary.unchanged += 1  # touched, same bytes: only the stat is refreshed
        else:
            self.summary.updated += 1
        return ImageRecord(
            path=res.path, size=res.size, mtime_ns=res.mtime_ns, content_hash=h,
            vector=reuse[h] if h in reuse else vectors[slot[h]],
            width=info.width if info else None, height=info.height if info else None,
            taken_at=info.taken_at if info else None,
            camera_make=info.camera_make if info else None,
            camera_model=info.camera_model if info else None)


def _pixels(res: DecodeResult) -> np.ndarray:
    assert res.pixels is not None
    return res.pixels


def _read_caption(cap: Sidecar) -> str:
    """A sidecar's words on one line (the first 100,000 characters); FoundFileError when it is
    no longer the file the scan approved."""
    text = read_sidecar(cap, 400_000).decode("utf-8-sig", errors="replace")
    return " ".join(text[:100_000].split())


def _sync_captions(catalog: Catalog, get_encoder: Callable[[], Encoder], ids: dict[str, int],
                   captions: dict[str, Sidecar], summary: IndexSummary,
                   progress: ProgressCallback, batch: int = 256) -> None:
    """Store each image's sidecar caption as a linked text; ``ids`` maps the paths of the
    images this run saw to their item ids."""
    stored = catalog.caption_states(ids.values())
    todo: list[tuple[int, Sidecar]] = []
    drop: list[int] = []
    for path, item_id in ids.items():
        cap, old = captions.get(path), stored.get(item_id)
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
        texts, keep = [], []
        for item_id, cap in todo[start:start + batch]:
            try:
                text = _read_caption(cap)
            except FoundFileError as exc:
                summary.fail(cap.path, exc.reason)
                text = ""
            if not text:
                if item_id in stored:
                    catalog.delete_items([stored[item_id][0].id])
                continue
            texts.append(text)
            keep.append((item_id, cap))
        vecs = embed_texts(catalog, encoder, texts, None)  # 'embedded' counts images
        catalog.write_texts([
            TextRecord(text=t, vector=v, content_hash=hash_text(t), source=SIDECAR,
                       parent_id=item_id, path=cap.path, size=cap.size, mtime_ns=cap.mtime_ns)
            for t, v, (item_id, cap) in zip(texts, vecs, keep, strict=True)])
        progress(IndexProgress("captions", min(start + batch, len(todo)), len(todo)))
