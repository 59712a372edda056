"""In-process tests of the indexing API (``Collection.index``, ``add_texts``, ``remove``, search)
with the session's tiny open_clip encoder: summaries, progress reports, vector reuse, EXIF
metadata, interruption and resume, image formats, and index/catalog consistency."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_image, make_images
from PIL import Image

from retrieval import Collection
from retrieval.errors import InputError
from retrieval.ingest import IndexProgress, IndexSummary
from retrieval.search.embedding import embed_image


def _open(tmp_path: Path, encoder: Any) -> Collection:
    return Collection(tmp_path / "col", encoder=encoder)


def _index_ids(col: Collection, modality: str) -> list[int]:
    return sorted(int(i) for i in col._vector_indexes().for_search(modality).ids())


def _catalog_ids(col: Collection, modality: str) -> list[int]:
    return sorted(int(i) for ids, _ in col._catalog.iter_vectors(modality, col.dim) for i in ids)


def _by_path(col: Collection, path: Path) -> Any:
    """The image hit stored for ``path`` (found by searching with the file itself)."""
    hits = col.search(image=path, k=1)
    assert hits and hits[0].path == str(path), (path, hits)
    return hits[0]


def test_index_summary_fields(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    make_images(folder, 5)
    (folder / "broken.jpg").write_bytes(b"not a jpeg at all")
    with _open(tmp_path, encoder) as col:
        summary = col.index([folder], workers=0)
        assert isinstance(summary, IndexSummary)
        assert (summary.added, summary.updated, summary.removed, summary.unchanged,
                summary.failed, summary.embedded) == (5, 0, 0, 0, 1, 5)
        assert [(e.path, e.reason) for e in summary.errors] == [
            (str(folder / "broken.jpg"), "not a recognised image format")]
        d = summary.to_dict()
        assert set(d) == {"added", "updated", "removed", "unchanged", "failed", "embedded",
                          "errors", "recognised", "warnings",  # these two: --ocr's
                          "partial", "shots"}  # videos damaged part way, shots embedded
        assert d["errors"] == [{"path": str(folder / "broken.jpg"),
                                "reason": "not a recognised image format"}]
        assert col._catalog.counts() == {"image": 5, "text": 0}

        again = col.index([folder], workers=0)
        assert (again.added, again.unchanged, again.embedded, again.failed) == (0, 5, 0, 1)


def test_progress_reports_embed_phase(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    make_images(folder, 10)
    events: list[IndexProgress] = []
    with _open(tmp_path, encoder) as col:
        summary = col.index([folder], workers=0, batch_size=4, progress=events.append)
    assert summary.embedded == 10
    assert all(isinstance(e, IndexProgress) for e in events)
    embed = [e for e in events if e.phase == "embed"]
    assert embed, [e.phase for e in events]
    assert all(e.total == 10 for e in embed)
    assert embed[0].done == 0
    done = [e.done for e in embed]
    assert done == sorted(done), "progress must never go backwards"
    assert embed[-1].done == embed[-1].total == 10
    assert embed[-1].embedded == 10 and embed[-1].failed == 0
    # the scan is reported first, the index update last
    assert events[0].phase == "scan" and events[-1].phase == "index"


def test_copy_reuses_stored_vector(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    files = make_images(folder, 10)  # more than one decode chunk: goes through a worker pool
    with _open(tmp_path, encoder) as col:
        assert col.index([folder], workers=1).embedded == 10
        copy = folder / "copy.jpg"
        shutil.copyfile(files[3], copy)
        summary = col.index([folder], workers=1)
        assert (summary.added, summary.unchanged, summary.embedded) == (1, 10, 0)

        states = col._catalog.file_states([str(folder)])
        a, b = states[str(files[3])], states[str(copy)]
        assert a.id != b.id and a.content_hash == b.content_hash
        ids, vecs = col._catalog.vectors([a.id, b.id], col.dim)
        assert list(ids) == [a.id, b.id]
        assert np.array_equal(vecs[0], vecs[1])
        _, other = col._catalog.vectors([states[str(files[4])].id], col.dim)
        assert not np.array_equal(vecs[0], other[0])  # the comparison can tell images apart


def test_exif_orientation_and_metadata(tmp_path: Path, encoder: Any) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90° clockwise: displayed portrait
    exif[0x010F] = "Acme"
    exif[0x0110] = "Acme Snap 3000"
    exif.get_ifd(0x8769)[0x9003] = "2021:05:04 10:11:12"
    photo = make_image(tmp_path / "pics" / "photo.jpg", seed=7, size=(80, 40), exif=exif)
    plain = make_image(tmp_path / "pics" / "plain.jpg", seed=8, size=(80, 40))
    with _open(tmp_path, encoder) as col:
        assert col.index([tmp_path / "pics"], workers=0).added == 2
        meta = _by_path(col, photo).metadata
        assert (meta["width"], meta["height"]) == (40, 80)
        assert meta["camera_make"] == "Acme"
        assert meta["camera_model"] == "Acme Snap 3000"
        assert meta["taken_at"] == "2021-05-04T10:11:12"
        assert meta["size"] == photo.stat().st_size

        plain_meta = _by_path(col, plain).metadata
        assert (plain_meta["width"], plain_meta["height"]) == (80, 40)
        assert plain_meta["camera_model"] is None and plain_meta["taken_at"] is None


def test_interrupted_run_keeps_finished_batches(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    files = make_images(folder, 20)
    col = _open(tmp_path, encoder)
    stored_when_interrupted: list[int] = []

    def interrupt(p: IndexProgress) -> None:
        if p.phase == "embed":
            n = col._catalog.counts()["image"]
            if n:  # a batch has been committed
                stored_when_interrupted.append(n)
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        col.index([folder], batch_size=4, workers=0, progress=interrupt)
    assert stored_when_interrupted, "the callback never saw a committed batch"
    kept = stored_when_interrupted[0]
    assert 4 <= kept < 20
    col.close()

    with _open(tmp_path, encoder) as col2:
        assert col2._catalog.counts()["image"] == kept  # finished batches survived
        summary = col2.index([folder], batch_size=4, workers=0)
        assert summary.failed == 0
        assert summary.unchanged == kept
        assert summary.added == summary.embedded == 20 - kept
        assert summary.embedded < 20
        assert col2._catalog.counts() == {"image": 20, "text": 0}
        assert col2.info()["index"]["image"]["ntotal"] == 20
        for f in files:
            hits = col2.search(image=f, k=1)
            assert [h.path for h in hits] == [str(f)]
            assert hits[0].score is not None and hits[0].score > 0.999
        assert _index_ids(col2, "image") == _catalog_ids(col2, "image")


def test_image_formats(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    refs = tmp_path / "refs"  # not indexed: reference renderings of the GIF's frames
    refs.mkdir()
    frames = [Image.open(make_image(refs / f"f{i}.png", seed=40 + i, size=(48, 48)))
              .convert("P", palette=Image.Palette.ADAPTIVE) for i in range(2)]
    gif = folder / "anim.gif"
    folder.mkdir()
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    with Image.open(gif) as im:
        assert getattr(im, "n_frames", 1) == 2
        for i in range(2):
            im.seek(i)
            im.convert("RGB").save(refs / f"frame{i}.png")

    make_image(folder / "pic.bmp", seed=50)
    make_image(folder / "pic.tiff", seed=51)
    make_image(folder / "pic.webp", seed=52, size=(40, 30))
    rgba = Image.open(make_image(tmp_path / "x.png", seed=53)).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(folder / "alpha.png")
    pal = Image.open(make_image(tmp_path / "y.png", seed=54)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.save(folder / "palette.png", transparency=0)

    expected = {"anim.gif": (48, 48), "pic.bmp": (64, 48), "pic.tiff": (64, 48),
                "pic.webp": (40, 30), "alpha.png": (64, 48), "palette.png": (64, 48)}
    with _open(tmp_path, encoder) as col:
        summary = col.index([folder], workers=0)
        assert summary.errors == []
        assert (summary.added, summary.embedded) == (6, 6)
        for name, size in expected.items():
            meta = _by_path(col, folder / name).metadata
            assert (meta["width"], meta["height"]) == size, name

        # a GIF is embedded from its first frame
        states = col._catalog.file_states([str(folder)])
        _, (gif_vec,) = col._catalog.vectors([states[str(gif)].id], col.dim)
        f0 = embed_image(col.encoder, refs / "frame0.png")
        f1 = embed_image(col.encoder, refs / "frame1.png")
        assert float(gif_vec @ f0) > 0.9999
        assert float(gif_vec @ f1) < float(gif_vec @ f0) - 1e-4


def test_texts_search_remove_and_index_consistency(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    files = make_images(folder / "a", 4) + make_images(folder / "b", 3, start=4)
    (folder / "a" / "img000.txt").write_text("a red bicycle\n")
    with _open(tmp_path, encoder) as col:
        assert col.index([folder], workers=0).added == 7
        summary = col.add_texts(["a", "b"])
        assert (summary.added, summary.embedded) == (2, 2)
        assert col.add_texts(["a", "b"]).unchanged == 2
        assert col._catalog.counts() == {"image": 7, "text": 3}  # 2 texts + 1 caption

        hits = col.search("a", target="texts", k=10)
        assert {h.kind for h in hits} == {"text"}
        assert sorted(h.text for h in hits) == ["a", "a red bicycle", "b"]
        assert hits[0].text == "a" and hits[0].score is not None and hits[0].score > 0.999
        cap = col.search("a red bicycle", target="texts", k=1)[0]
        assert cap.path == str(files[0]) and cap.metadata["caption_of"] == _by_path(
            col, files[0]).id
        assert _by_path(col, files[0]).text == "a red bicycle"

        assert col.remove([folder / "a"]) == 4  # images removed; their caption goes too
        assert col._catalog.counts() == {"image": 3, "text": 2}
        hits = col.search(image=files[0], k=10)
        assert sorted(h.path for h in hits) == sorted(str(f) for f in files[4:])
        assert col.remove([files[5]]) == 1
        with pytest.raises(InputError, match="nothing in the collection is at or under"):
            col.remove([tmp_path / "nowhere"])  # and nothing else is removed either
        assert col._catalog.counts() == {"image": 2, "text": 2}

        # re-indexing brings the removed files back and picks up a changed one
        make_image(files[4], seed=99)
        os.utime(files[4], ns=(files[4].stat().st_atime_ns, files[4].stat().st_mtime_ns + 10**9))
        summary = col.index([folder], workers=0)
        assert (summary.updated, summary.added, summary.unchanged) == (1, 5, 1)

        for modality in ("image", "text"):
            assert _index_ids(col, modality) == _catalog_ids(col, modality), modality
        assert len(_index_ids(col, "image")) == 7 and len(_index_ids(col, "text")) == 3

    with Collection(tmp_path / "col") as reopened:  # the saved index matches the catalog
        for modality in ("image", "text"):
            assert _index_ids(reopened, modality) == _catalog_ids(reopened, modality)


def test_changed_file_that_became_unreadable_is_removed(tmp_path: Path, encoder: Any) -> None:
    folder = tmp_path / "pics"
    files = make_images(folder, 3)
    with _open(tmp_path, encoder) as col:
        col.index([folder], workers=0)
        data = files[1].read_bytes()
        files[1].write_bytes(data[: len(data) // 2])
        summary = col.index([folder], workers=0)
        assert (summary.failed, summary.removed, summary.unchanged) == (1, 1, 2)
        assert summary.errors[0].path == str(files[1])
        assert "truncated" in summary.errors[0].reason.lower()
        assert col._catalog.counts()["image"] == 2
        assert _index_ids(col, "image") == _catalog_ids(col, "image")
