"""The decode workers' check "is this content already in the catalog?": the catalog gives its
contents as a compact set on either backend, and workers skip preprocessing what it holds
(a rename, a copy), while the index run's result stays what it would be without the check."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from conftest import make_images

from retrieval import Collection
from retrieval.ingest.pool import decoded
from retrieval.ingest.workers import DecodeTask
from retrieval.media import hash_file
from retrieval.storage.records import hash_prefixes, prefix_test


def test_hash_prefixes_are_a_sorted_set() -> None:
    hashes = ["ff" * 32, "00" * 32, "ff" * 32, "0123456789abcdef" + "0" * 48, None, "abc"]
    prefixes = hash_prefixes(hashes)
    assert prefixes.dtype == np.uint64
    assert prefixes.tolist() == [0, 0x0123456789ABCDEF, 2**64 - 1]
    known = prefix_test(prefixes)
    assert known("ff" * 32) and known("0123456789abcdef" + "1" * 48)  # 64 bits decide
    assert not known("fe" * 32) and not known("01" * 32)
    assert hash_prefixes([]).tolist() == []


def test_workers_skip_content_the_catalog_holds(tmp_path: Path, encoder: Any,
                                                catalog_url: str | None) -> None:
    pics = make_images(tmp_path / "pics", 10)
    col = Collection(tmp_path / "col", encoder=encoder, catalog=catalog_url)
    try:
        col.add_texts([{"text": "a text is not an image", "id": "t"}])
        col.index([tmp_path / "pics"], workers=0)
        prefixes = col._catalog.content_prefixes()
        assert prefixes.tolist() == hash_prefixes(hash_file(p) for p in pics).tolist()
        copies = tmp_path / "copies"
        copies.mkdir()
        for p in pics:  # the same content under other names, and new content beside it
            shutil.copy(p, copies / f"copy-{p.name}")
        fresh = make_images(copies, 8, start=100)
        files = sorted(copies.iterdir())
        tasks = [DecodeTask(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
        results = list(decoded(tasks, spec=encoder.image_spec, max_pixels=10**8, workers=2,
                               known=col._catalog.content_prefixes))
        assert [r.path for r in results] == [str(p) for p in files]
        skipped = {Path(r.path).name for r in results if r.pixels is None}
        assert skipped == {f"copy-{p.name}" for p in pics}
        assert all(r.content_hash == hash_file(r.path) for r in results)
        summary = col.index([copies])  # the copies reuse stored vectors; the new are embedded
        assert (summary.added, summary.embedded, summary.failed) == (
            len(pics) + len(fresh), len(fresh), 0)
    finally:
        col.close()
