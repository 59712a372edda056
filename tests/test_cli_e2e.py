"""The ``retrieval`` command on generated image folders, with assertions on its ``--json``
output, exit codes and stderr.

Most tests run the command in this process (click's ``CliRunner``); a few smoke tests run the
installed command as a subprocess, as users do (``process=True``): the main index, search,
info and remove flow, and the one-line errors of a real process.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error_line, json_lines, make_image, make_images, run_cli
from models import write_tiny_model
from PIL import Image

pytestmark = pytest.mark.slow

SUMMARY_KEYS = {"added", "updated", "removed", "unchanged", "failed", "embedded", "errors",
                "recognised", "warnings", "partial", "shots"}


# --- helpers -----------------------------------------------------------------------------------

def smoke(*args: Any, **kw: Any) -> subprocess.CompletedProcess[str]:
    """The installed command as a subprocess."""
    return run_cli(*args, process=True, **kw)


def index_json_process(col: Path, *args: Any, model: str | None = None) -> dict[str, Any]:
    extra = ["--model", model] if model else []
    return one_summary(smoke("index", *args, "--json", *extra, collection=col).stdout)


def index_json(col: Path, *args: Any, model: str | None = None, check: bool = True,
               timeout: float = 300) -> dict[str, Any]:
    """Run ``retrieval index ... --json`` and return its single JSON object."""
    extra = ["--model", model] if model else []
    proc = run_cli("index", *args, "--json", *extra, collection=col, check=check,
                   timeout=timeout)
    return one_summary(proc.stdout)


def one_summary(stdout: str) -> dict[str, Any]:
    lines = [ln for ln in stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one JSON object, got:\n{stdout}"
    summary = json.loads(lines[0])
    assert isinstance(summary, dict) and set(summary) == SUMMARY_KEYS, summary
    for key in SUMMARY_KEYS - {"errors", "warnings", "partial"}:
        assert type(summary[key]) is int and summary[key] >= 0, (key, summary)
    assert isinstance(summary["errors"], list)
    for e in summary["errors"]:
        assert set(e) == {"path", "reason"} and e["path"] and e["reason"], e
    assert summary["failed"] == len(summary["errors"])
    return summary


def counts(summary: dict[str, Any]) -> tuple[int, int, int, int, int, int]:
    """(added, updated, removed, unchanged, failed, embedded)."""
    return (summary["added"], summary["updated"], summary["removed"], summary["unchanged"],
            summary["failed"], summary["embedded"])


def indexed_paths(col: Path) -> set[str]:
    """Image paths in the collection's catalog (read directly, without the model)."""
    conn = sqlite3.connect(f"file:{col / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        return {p for (p,) in conn.execute("SELECT path FROM items WHERE kind = 'image'")}
    finally:
        conn.close()


def info_json(col: Path) -> dict[str, Any]:
    proc = run_cli("info", "--json", collection=col)
    (data,) = json_lines(proc.stdout)
    return data


def bump_mtime(path: Path, seconds: int = 5) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


# --- indexing ----------------------------------------------------------------------------------

def test_first_index_reports_every_bad_file(tmp_path: Path, tiny_spec: str) -> None:
    folder = tmp_path / "pics"
    good = make_images(folder, 3)
    inner = make_image(folder / "x.jpg" / "inner.jpg", seed=30)  # a folder named like an image
    (folder / "empty.jpg").write_bytes(b"")
    real = make_image(tmp_path / "real.jpg", seed=31, size=(200, 150)).read_bytes()
    (folder / "truncated.jpg").write_bytes(real[: len(real) // 2])
    (folder / "text.jpg").write_text("this is a text file, not a picture\n")
    (folder / "random.png").write_bytes(os.urandom(3000))
    Image.new("RGB", (3000, 3000), (10, 20, 30)).save(folder / "bomb.png")
    os.symlink("missing.jpg", folder / "gone.jpg")

    col = tmp_path / "col"
    summary = index_json(col, folder, "--max-pixels", 1_000_000, model=tiny_spec)
    assert counts(summary) == (4, 0, 0, 0, 7, 4)
    reasons = {Path(e["path"]).name: e["reason"] for e in summary["errors"]}
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "text.jpg", "random.png", "bomb.png",
                            "gone.jpg", "x.jpg"}
    assert all(Path(e["path"]).parent == folder for e in summary["errors"])
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"].lower()
    assert "not a recognised image format" in reasons["text.jpg"]
    assert "not a recognised image format" in reasons["random.png"]
    assert "3000x3000" in reasons["bomb.png"] and "limit" in reasons["bomb.png"]
    assert "1.0 MP" in reasons["bomb.png"]  # the limit that was passed
    assert "broken symbolic link" in reasons["gone.jpg"]
    assert reasons["x.jpg"].startswith("is a directory")
    assert indexed_paths(col) == {str(p) for p in [*good, inner]}

    # --strict: same folder into a fresh collection fails as a whole, with one clean line,
    # after committing what it could
    strict_col = tmp_path / "strict"
    proc = run_cli("index", folder, "--max-pixels", 1_000_000, "--strict", "--model", tiny_spec,
                   collection=strict_col, check=False)
    assert proc.returncode != 0
    line = assert_one_error_line(proc, "strict")
    assert "7 file(s) skipped" in line
    assert proc.stdout.strip() == ""  # without --json nothing is printed on stdout
    assert indexed_paths(strict_col) == {str(p) for p in [*good, inner]}


def test_hidden_files_and_symlink_loop(tmp_path: Path, tiny_spec: str) -> None:
    folder = tmp_path / "pics"
    a = make_image(folder / "a.jpg", seed=1)
    b = make_image(folder / "sub" / "b.jpg", seed=2)
    os.symlink("..", folder / "sub" / "loop")  # pics/sub/loop -> pics
    hidden = [make_image(folder / ".hidden" / "c.jpg", seed=3), make_image(folder / ".d.jpg", 4)]
    col = tmp_path / "col"

    summary = index_json(col, folder, model=tiny_spec, timeout=120)
    assert counts(summary) == (2, 0, 0, 0, 0, 2)
    assert indexed_paths(col) == {str(a), str(b)}  # nothing under sub/loop/

    summary = index_json(col, folder, "--hidden", timeout=120)
    assert counts(summary) == (2, 0, 0, 2, 0, 2)
    assert indexed_paths(col) == {str(p) for p in [a, b, *hidden]}


def test_incremental_reindexing(tmp_path: Path, tiny_spec: str) -> None:
    folder = tmp_path / "pics"
    files = make_images(folder, 6)
    col = tmp_path / "col"
    assert counts(index_json(col, folder, model=tiny_spec)) == (6, 0, 0, 0, 0, 6)

    # nothing changed: nothing embedded
    assert counts(index_json(col, folder)) == (0, 0, 0, 6, 0, 0)

    # rename: the old item goes, the new one reuses its vector
    renamed = folder / "renamed.jpg"
    os.rename(files[0], renamed)
    assert counts(index_json(col, folder)) == (1, 0, 1, 5, 0, 0)
    assert str(renamed) in indexed_paths(col) and str(files[0]) not in indexed_paths(col)

    # copy: a new item with a reused vector
    copy = folder / "copy.jpg"
    shutil.copy2(files[1], copy)
    assert counts(index_json(col, folder)) == (1, 0, 0, 6, 0, 0)

    # delete
    files[2].unlink()
    assert counts(index_json(col, folder)) == (0, 0, 1, 6, 0, 0)
    assert str(files[2]) not in indexed_paths(col)

    # overwrite one file with another picture, and touch another (same bytes, new mtime):
    # only the overwritten one is embedded again
    make_image(files[3], seed=1000)
    bump_mtime(files[3])
    bump_mtime(files[4])
    assert counts(index_json(col, folder)) == (0, 1, 0, 5, 0, 1)

    # the touched file's new mtime was recorded: the next run does nothing
    assert counts(index_json(col, folder)) == (0, 0, 0, 6, 0, 0)
    assert indexed_paths(col) == {str(p) for p in [renamed, files[1], copy, *files[3:]]}


# --- captions, texts, search, info, remove -----------------------------------------------------

def _add_texts(col: Path, tmp_path: Path) -> None:
    """add-texts: a plain file (one text per line, blank lines and repeats ignored), then JSONL
    with ids and metadata, where a malformed line is reported, not fatal."""
    # add-texts: a plain file, one text per line (blank lines and repeats ignored)
    plain = tmp_path / "texts.txt"
    plain.write_text("a cat on a sofa\n\na mountain lake\na cat on a sofa\n")
    add = one_summary(smoke("add-texts", plain, "--json", collection=col).stdout)
    assert counts(add) == (2, 0, 0, 0, 0, 2)
    add = one_summary(smoke("add-texts", plain, "--json", collection=col).stdout)
    assert counts(add) == (0, 0, 0, 2, 0, 0)

    # add-texts: JSONL with ids and metadata; a malformed line is reported, not fatal
    jsonl = tmp_path / "texts.jsonl"
    rows = [{"text": "sunset over the sea", "id": "s1", "lang": "en"},
            {"text": "snow on a roof", "id": 2, "tags": ["winter"]}]
    jsonl.write_text("\n".join([*map(json.dumps, rows), '{"text": "broken']) + "\n")
    add = one_summary(smoke("add-texts", jsonl, "--json", collection=col).stdout)
    assert counts(add) == (2, 0, 0, 0, 1, 2)
    assert add["errors"][0]["path"] == f"{jsonl}:3"
    assert "invalid JSON" in add["errors"][0]["reason"]
    add = one_summary(smoke("add-texts", jsonl, "--json", collection=col).stdout)
    assert counts(add) == (0, 0, 0, 2, 1, 0)
    rows[0]["text"] = "sunrise over the sea"
    jsonl.write_text("\n".join(map(json.dumps, rows)) + "\n")
    add = one_summary(smoke("add-texts", jsonl, "--json", collection=col).stdout)
    assert counts(add) == (0, 1, 0, 1, 0, 1)


def _search_texts(col: Path, caption: str, photo: Path) -> None:
    """Text search over texts: the caption comes first, linked to its image."""
    hits = json_lines(smoke("search", caption, "--target", "texts", "--json", "-k", 10,
                              collection=col).stdout)
    assert len(hits) == 5  # caption + 2 plain texts + 2 JSONL texts
    assert {h["kind"] for h in hits} == {"text"}
    assert hits[0]["text"] == caption and hits[0]["path"] == str(photo)
    assert hits[0]["score"] > 0.99
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    by_text = {h["text"]: h for h in hits}
    assert set(by_text) == {caption, "a cat on a sofa", "a mountain lake",
                            "sunrise over the sea", "snow on a roof"}
    s1 = by_text["sunrise over the sea"]["metadata"]
    assert s1["external_id"] == "s1" and s1["lang"] == "en"
    assert by_text["snow on a roof"]["metadata"]["tags"] == ["winter"]
    assert by_text["a mountain lake"]["path"] is None


def _search_images(col: Path, imgs: list[Path]) -> None:
    """Image search (the file itself comes first), --like ID with --paths, weighted terms."""
    # image search: the file itself comes first
    hits = json_lines(smoke("search", "--image", imgs[1], "--json", "-k", 3,
                              collection=col).stdout)
    assert len(hits) == 3
    for h in hits:
        assert {"id", "score", "kind", "path"} <= set(h) and h["kind"] == "image"
    assert hits[0]["path"] == str(imgs[1]) and hits[0]["score"] > 0.99
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert len({h["path"] for h in hits}) == 3

    # --like ID with --paths: bare paths, the item itself first
    proc = smoke("search", "--like", hits[0]["id"], "--paths", "-k", 3, collection=col)
    lines = proc.stdout.splitlines()
    assert len(lines) == 3 and lines[0] == str(imgs[1])
    assert all(Path(line).is_file() for line in lines)

    # weighted terms
    hits = json_lines(smoke("search", "2:a red bicycle", "--subtract", "a cat", "--json",
                              "-k", 4, collection=col).stdout)
    assert len(hits) == 4 and {h["kind"] for h in hits} == {"image"}
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def _info_and_remove(col: Path, folder: Path, sub: list[Path], tiny_model: Path) -> None:
    """Info, then removing a folder."""
    # info
    info = info_json(col)
    assert info["counts"] == {"image": 7, "text": 5}
    assert info["model"]["name"] == f"local-dir:{tiny_model}"
    assert info["dim"] == 32
    assert info["index"]["image"]["ntotal"] == 7 and info["index"]["text"]["ntotal"] == 5

    # remove a folder
    proc = smoke("remove", folder / "sub", "--json", collection=col)
    assert json.loads(proc.stdout) == {"removed": 2}
    info = info_json(col)
    assert info["counts"] == {"image": 5, "text": 5}
    assert info["index"]["image"]["ntotal"] == 5
    assert not {str(p) for p in sub} & indexed_paths(col)


def _refusals(col: Path, folder: Path, tmp_path: Path, tiny_model: Path) -> None:
    """A collection bound to one model refuses another; a missing query image is one line."""
    # a collection bound to one model refuses another
    other = write_tiny_model(tmp_path / "other-model", seed=1)
    proc = smoke("index", folder, "--model", f"local-dir:{other}", collection=col,
                   check=False)
    assert_one_error_line(proc, str(other), str(tiny_model))
    assert info_json(col)["counts"] == {"image": 5, "text": 5}

    # a missing query image
    proc = smoke("search", "--image", tmp_path / "missing.jpg", collection=col, check=False)
    assert_one_error_line(proc, "missing.jpg")


def test_captions_texts_search_info_remove(tmp_path: Path, tiny_spec: str,
                                           tiny_model: Path) -> None:
    folder = tmp_path / "pics"
    caption = "a photograph of a red bicycle leaning on a wall"
    photo = make_image(folder / "photo.jpg", seed=20)
    (folder / "photo.txt").write_text(caption + "\n")
    imgs = make_images(folder, 4)
    sub = make_images(folder / "sub", 2, start=4)
    col = tmp_path / "col"
    assert counts(index_json_process(col, folder, model=tiny_spec)) == (7, 0, 0, 0, 0, 7)

    _add_texts(col, tmp_path)
    _search_texts(col, caption, photo)
    _search_images(col, imgs)
    _info_and_remove(col, folder, sub, tiny_model)
    _refusals(col, folder, tmp_path, tiny_model)


# --- errors ------------------------------------------------------------------------------------

def test_error_messages(tmp_path: Path, tiny_spec: str) -> None:
    folder = tmp_path / "pics"
    make_images(folder, 1)

    proc = run_cli("search", "cat", collection=tmp_path / "nothing-here", check=False)
    assert_one_error_line(proc, "no collection", "nothing-here")
    assert not (tmp_path / "nothing-here").exists()

    proc = run_cli("index", tmp_path / "no-such-folder", "--model", tiny_spec,
                   collection=tmp_path / "c1", check=False)
    assert_one_error_line(proc, "no-such-folder")

    proc = run_cli("index", folder, "--model", "NoSuchArch-99", collection=tmp_path / "c2",
                   check=False)
    assert_one_error_line(proc, "NoSuchArch-99")

    # pretrained weights that are not cached, offline: one line that says what to do
    hf = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    proc = run_cli("index", folder, "--model", "ViT-B-32", "--pretrained", "laion2b_s34b_b79k",
                   collection=tmp_path / "c3", check=False, env=hf, timeout=120, process=True)
    line = assert_one_error_line(proc, "ViT-B-32", "laion2b_s34b_b79k", "weights")
    assert "--pretrained" in line  # how to provide them


def test_unknown_architecture_is_reported_as_unknown(tmp_path: Path) -> None:
    make_images(tmp_path / "pics", 1)
    proc = run_cli("index", tmp_path / "pics", "--model", "NoSuchArch-99",
                   collection=tmp_path / "col", check=False)
    line = assert_one_error_line(proc, "NoSuchArch-99")
    assert "unknown model" in line


def test_refused_model_leaves_a_usable_collection_path(tmp_path: Path) -> None:
    make_images(tmp_path / "pics", 1)
    col = tmp_path / "col"
    proc = run_cli("index", tmp_path / "pics", "--model", "NoSuchArch-99", collection=col,
                   check=False)
    assert proc.returncode == 1
    proc = run_cli("info", "--json", collection=col, check=False)
    assert "Traceback" not in proc.stderr, proc.stderr
    if proc.returncode != 0:
        assert_one_error_line(proc)


# --- start-up cost -----------------------------------------------------------------------------

def test_help_lists_commands_and_cli_import_is_light(tmp_path: Path) -> None:
    proc = run_cli("--help", process=True)
    for command in ("index", "search", "add-texts", "info", "remove"):
        assert command in proc.stdout

    proc = subprocess.run([sys.executable, "-X", "importtime", "-c",
                           "import retrieval.interfaces.cli"],
                          capture_output=True, text=True, timeout=60, check=True)
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert "retrieval.interfaces.cli" in imported and "click" in imported  # the output was parsed
    heavy = sorted(m for m in imported if m.split(".")[0] in {
        "torch", "open_clip", "faiss", "onnxruntime", "sqlalchemy"})
    assert heavy == []
