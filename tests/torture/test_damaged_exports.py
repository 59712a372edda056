"""Damaged ONNX exports (issue 19.5): a missing, cut short, altered or unloadable file is found
before a session is created; a search goes on with torch after one warning line, an index run
exports the model again, and a repaired export never serves query vectors a damaged one made.

Every test works on a private copy of the tiny model's export (the session's shared export
folder stays intact for the other tests)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import json_lines, make_images, run_cli

from retrieval import Collection, ModelSpec, load_encoder
from retrieval.encoders import integrity, resolve
from retrieval.encoders.export_store import MANIFEST, ExportStore
from retrieval.encoders.integrity import VERIFIED, check_export
from retrieval.encoders.text_cache import TextCache

QUERY = "a red circle on a blue square"


@pytest.fixture
def setup(tmp_path: Path, tiny_spec: str, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A collection of the tiny model, its export copied to a private exports folder, and what
    torch answers for QUERY and for an image query (the reference)."""
    images = make_images(tmp_path / "imgs", 6)
    col = Collection(tmp_path / "c", model=tiny_spec)
    col.index([tmp_path / "imgs"], workers=0)
    shared = ExportStore().record(col.model_identity)
    col.close()
    assert shared is not None and shared.ok
    private = tmp_path / "exports"
    shutil.copytree(shared.folder, private / shared.folder.name)
    monkeypatch.setenv("RETRIEVAL_EXPORTS", str(private))
    resolve._warned.clear()  # one warning per process: each test is a new "process"
    torch_encoder = load_encoder(ModelSpec.parse(tiny_spec), "cpu")
    ref = Collection(tmp_path / "c", encoder=torch_encoder)
    want_text = [(h.id, h.score) for h in ref.search(QUERY, k=6)]
    want_image = [(h.id, h.score) for h in ref.search(image=images[3], k=6)]
    ref.close()
    return SimpleNamespace(col=tmp_path / "c", folder=private / shared.folder.name,
                           images=images, spec=tiny_spec, torch=torch_encoder,
                           want_text=want_text, want_image=want_image, tmp=tmp_path)


def _hits(proc: Any) -> list[tuple[int, float]]:
    return [(h["id"], h["score"]) for h in json_lines(proc.stdout)]


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> bool:
    return [i for i, _ in got] == [i for i, _ in want] and all(
        abs(a - b) < 1e-3 for (_, a), (_, b) in zip(got, want, strict=True))


def _stderr_lines(proc: Any) -> list[str]:
    assert "Traceback" not in proc.stderr, proc.stderr
    return [ln for ln in proc.stderr.splitlines() if ln.strip()]


def _search(s: SimpleNamespace, *args: Any) -> Any:
    return run_cli("search", *args, "-k", "6", "--json", collection=s.col)


def _overwrite_inside(path: Path) -> None:
    """Rewrite the file in place with its float32 values in reverse order: the size stays,
    the values stay finite, every weight is wrong."""
    values = np.fromfile(path, dtype="<f4")
    with open(path, "r+b") as f:
        f.write(values[::-1].tobytes())


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x08\x07garbage, not a protobuf\xff" * 64)


DAMAGES = {
    "garbage text.onnx": ("text.onnx", _garbage),
    "empty image.onnx": ("image.onnx", lambda p: p.write_bytes(b"")),
    "truncated text.onnx.data": ("text.onnx.data",
                                 lambda p: os.truncate(p, p.stat().st_size // 2)),
    "overwritten text.onnx.data": ("text.onnx.data", _overwrite_inside),
    "missing text.onnx.data": ("text.onnx.data", lambda p: p.unlink()),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_search_on_a_damaged_export_goes_on_with_torch_after_one_warning(setup, damage):
    name, harm = DAMAGES[damage]
    harm(setup.folder / name)
    image_query = name.startswith("image")
    args = ("--image", str(setup.images[3])) if image_query else (QUERY,)
    proc = _search(setup, *args)
    assert proc.returncode == 0, proc.stderr
    assert _same(_hits(proc), setup.want_image if image_query else setup.want_text)
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and lines[0].startswith("WARNING: "), lines
    assert str(setup.folder / name) in lines[0] and "model export --force" in lines[0]


def test_index_with_a_damaged_export_exports_it_again_first(setup):
    (setup.folder / "image.onnx").write_bytes(b"")
    before = json.loads((setup.folder / MANIFEST).read_text())["created_at"]
    more = make_images(setup.tmp / "more", 3, start=20)
    proc = run_cli("index", setup.tmp / "more", "--json", collection=setup.col)
    assert proc.returncode == 0 and json.loads(proc.stdout)["added"] == 3
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and "image.onnx" in lines[0] and "exporting it again" in lines[0]
    export = ExportStore().record(Collection(setup.col).model_identity)
    assert export is not None and export.manifest["created_at"] != before
    check_export(export, full=True)  # rebuilt whole
    by_torch = Collection(setup.col, encoder=setup.torch)  # the new vectors are the model's
    for path in more:
        top = by_torch.search(image=path, k=1)[0]
        assert top.path == str(path) and top.score > 0.9999
    want = [(h.id, h.score) for h in by_torch.search(QUERY, k=6)]
    by_torch.close()
    quiet = _search(setup, QUERY)
    assert _stderr_lines(quiet) == [] and _same(_hits(quiet), want)


@pytest.mark.parametrize("manifest", [b"\x00{not json", b'{"format": 1, "identity": 5}',
                                      b'{"format": 1, "status": "ok", "files": {"x": 1}}'])
def test_an_unreadable_manifest_is_no_export_and_index_replaces_it(setup, manifest):
    (setup.folder / MANIFEST).write_bytes(manifest)
    proc = _search(setup, QUERY)
    assert proc.returncode == 0 and _same(_hits(proc), setup.want_text)
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and "no ONNX export" in lines[0]
    make_images(setup.tmp / "more", 2, start=30)
    assert run_cli("index", setup.tmp / "more", collection=setup.col).returncode == 0
    export = ExportStore().record(Collection(setup.col).model_identity)
    assert export is not None and export.folder == setup.folder
    check_export(export, full=True)
    assert _stderr_lines(_search(setup, QUERY)) == []


def _cached(s: SimpleNamespace, text: str) -> np.ndarray | None:
    col = Collection(s.col)
    cache: TextCache = col._binding.text_cache()
    found = cache.get([text], col.dim).get(text)
    cache.close()
    col.close()
    return found


def test_bytes_overwritten_in_place_are_found_and_force_repairs(setup):
    """The issue's case: same size, exit 0 and wrong results before; now found by its changed
    stat, searched on torch, and after `model export --force` the export answers again."""
    _overwrite_inside(setup.folder / "text.onnx.data")
    damaged = _search(setup, QUERY)
    assert damaged.returncode == 0 and _same(_hits(damaged), setup.want_text)
    assert "text.onnx.data was altered" in damaged.stderr
    assert run_cli("model", "export", "--force", collection=setup.col).returncode == 0
    check_export(ExportStore().record(Collection(setup.col).model_identity), full=True)
    again = _search(setup, QUERY)
    assert _stderr_lines(again) == [] and _same(_hits(again), setup.want_text)
    want = setup.torch.embed_texts([QUERY])[0]
    assert np.abs(_cached(setup, QUERY) - want).max() < 1e-4


def test_damage_the_stat_cannot_show_is_found_by_model_export(setup):
    """Content changed with its stat stamp made to match (bit rot, or someone who can set the
    clock back): a search cannot see it (the documented limit of the cheap check), but
    `model export` hashes every file, exports again, and the wrong cached vectors are never
    served again."""
    data = setup.folder / "text.onnx.data"
    _search(setup, "warm up")  # every text file hashed and stamped
    _overwrite_inside(data)
    stamps = json.loads((setup.folder / VERIFIED).read_text())
    st = data.stat()
    stamps[data.name][:4] = [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
    (setup.folder / VERIFIED).write_text(json.dumps(stamps))
    wrong = _search(setup, QUERY)
    assert wrong.returncode == 0 and not _same(_hits(wrong), setup.want_text)
    want = setup.torch.embed_texts([QUERY])[0]
    assert np.abs(_cached(setup, QUERY) - want).max() > 1e-2  # the wrong vector was cached
    repair = run_cli("model", "export", collection=setup.col)
    assert repair.returncode == 0 and "text.onnx.data was altered" in repair.stderr
    again = _search(setup, QUERY)
    assert _stderr_lines(again) == [] and _same(_hits(again), setup.want_text)
    assert np.abs(_cached(setup, QUERY) - want).max() < 1e-4


def _as_before_checksums(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    del manifest["files"]
    (folder / MANIFEST).write_text(json.dumps(manifest))
    (folder / VERIFIED).unlink()


def test_an_export_made_before_checksums_gets_them_on_first_use(setup):
    _as_before_checksums(setup.folder)
    proc = _search(setup, QUERY)
    assert _stderr_lines(proc) == [] and _same(_hits(proc), setup.want_text)
    files = json.loads((setup.folder / MANIFEST).read_text())["files"]
    assert set(files) == {p.name for p in setup.folder.iterdir()} - {MANIFEST, VERIFIED}
    _overwrite_inside(setup.folder / "text.onnx.data")  # from now on, damage is found
    assert "was altered" in _search(setup, "another query").stderr


def test_an_unloadable_file_without_checksums_is_damage_too(setup):
    """Before checksums, garbage is recorded as found; ONNX Runtime's refusal to load it is
    still a warning and torch, not a traceback."""
    _as_before_checksums(setup.folder)
    _garbage(setup.folder / "text.onnx")
    proc = _search(setup, QUERY)
    assert proc.returncode == 0 and _same(_hits(proc), setup.want_text)
    lines = _stderr_lines(proc)
    assert len(lines) == 1 and "cannot be loaded by ONNX Runtime" in lines[0], lines


def test_a_search_with_unchanged_files_hashes_nothing(setup, monkeypatch):
    """The cold query's cost: files whose stat matches their stamp are not read."""
    _search(setup, "first query")  # (the copy has new inodes: hashed and stamped once)
    hashed: list[Path] = []
    real = integrity.sha256_file
    monkeypatch.setattr(integrity, "sha256_file", lambda p: hashed.append(p) or real(p))
    assert _search(setup, "second query").returncode == 0
    assert hashed == []
    os.utime(setup.folder / "text.onnx.data")  # touched: hashed again, then stamped
    assert _stderr_lines(_search(setup, "third query")) == []
    assert [p.name for p in hashed] == ["text.onnx.data"]
