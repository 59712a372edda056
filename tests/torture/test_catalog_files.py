"""The SQLite catalog's files: ``catalog.sqlite`` alone is a whole copy of the catalog after
every command (the WAL is checkpointed on close), and a damaged WAL or catalog file is reported
as damage naming the file, before anything writes over it (issue 19, "also seen")."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import assert_one_error_line, make_images, run_cli

from retrieval import Collection


def _count(db: Path, table: str = "items") -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.glob("catalog.sqlite*")) if not p.name.endswith("-shm")}


@pytest.fixture
def indexed(tmp_path: Path) -> Path:
    make_images(tmp_path / "pics", 5)
    col = tmp_path / "col"
    run_cli("index", tmp_path / "pics", "--model", "demo", collection=col)
    return col


def test_catalog_file_alone_is_whole_after_a_command(indexed, tmp_path):
    """After ``index`` the catalog's data sat in catalog.sqlite-wal; a copy of catalog.sqlite
    alone held nothing."""
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(indexed / "catalog.sqlite", copy / "catalog.sqlite")
    assert _count(copy / "catalog.sqlite") == 5
    # the copy is a collection: its indexes are rebuilt from the catalog
    hits = run_cli("search", "anything", "-k", "5", "--json", collection=copy).stdout
    assert len(hits.splitlines()) == 5


def test_checkpoint_on_close_while_another_process_reads(tmp_path):
    """A reader that keeps the catalog open (a server) kept every commit in the WAL."""
    make_images(tmp_path / "pics", 4)
    col = tmp_path / "col"
    with Collection(col, model="demo") as writer:
        writer.index([tmp_path / "pics"], workers=0)
    reader = sqlite3.connect(col / "catalog.sqlite")  # open, between reads, like a server
    reader.execute("SELECT count(*) FROM items").fetchone()
    try:
        make_images(tmp_path / "pics", 3, start=10)
        run_cli("index", tmp_path / "pics", collection=col)
        copy = tmp_path / "copy.sqlite"
        shutil.copy(col / "catalog.sqlite", copy)
        assert _count(copy) == 7
    finally:
        reader.close()


def test_garbage_in_the_wal_is_damage_not_an_empty_collection(indexed):
    """It read as "has no model yet", and the next write went over it."""
    wal = indexed / "catalog.sqlite-wal"
    wal.write_bytes(os.urandom(5000))
    before = _digest(indexed)
    for argv in (["search", "x"], ["info"], ["index", indexed.parent / "pics"]):
        proc = run_cli(*argv, collection=indexed, check=False)
        assert_one_error_line(proc, "catalog damaged", str(wal))
    assert _digest(indexed) == before  # nothing written over, nothing removed
    wal.rename(indexed.parent / "wal.kept")  # what the message says to do
    info = json.loads(run_cli("info", "--json", collection=indexed).stdout)
    assert info["counts"]["image"] == 5


def _wal_with_commits(col: Path, dest: Path) -> Path:
    """A copy of ``col``'s catalog whose WAL holds 40 commits (taken while they are there)."""
    conn = sqlite3.connect(col / "catalog.sqlite")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    conn.execute("CREATE TABLE scratch (x BLOB)")
    for _ in range(40):
        conn.execute("INSERT INTO scratch VALUES (?)", (os.urandom(3000),))
        conn.commit()
    shutil.copytree(col, dest, ignore=shutil.ignore_patterns("*-shm", "lock"))
    conn.close()
    return dest


def test_a_damaged_frame_inside_the_wal_is_damage(indexed, tmp_path):
    copy = _wal_with_commits(indexed, tmp_path / "copy")
    wal = copy / "catalog.sqlite-wal"
    page = int.from_bytes(wal.read_bytes()[8:12], "big")
    data = bytearray(wal.read_bytes())
    data[32 + 2 * (24 + page) + 24 + 100] ^= 0xFF  # inside the third frame's page
    wal.write_bytes(bytes(data))
    proc = run_cli("info", collection=copy, check=False)
    assert_one_error_line(proc, "catalog damaged", str(wal), "frame 3 of")
    assert wal.read_bytes() == bytes(data)


def test_a_torn_last_frame_is_a_crash_not_damage(indexed, tmp_path):
    """A process killed while writing leaves its last frame half written: SQLite drops that
    commit, and so does the catalog, without a word (what a crash loses)."""
    copy = _wal_with_commits(indexed, tmp_path / "copy")
    wal = copy / "catalog.sqlite-wal"
    data = bytearray(wal.read_bytes())
    data[-50] ^= 0xFF
    wal.write_bytes(bytes(data))
    with Collection(copy) as col:
        assert col.info()["counts"]["image"] == 5
    assert _count(copy / "catalog.sqlite", "scratch") == 39


def test_a_damaged_catalog_file_is_named(indexed):
    db = indexed / "catalog.sqlite"
    whole = db.read_bytes()
    cases = {
        "truncated": whole[: len(whole) // 2],
        "not a SQLite database": b"not a database at all" * 10,
        "empty, yet": b"",
    }
    for reason, content in cases.items():
        db.write_bytes(content)
        proc = run_cli("search", "x", collection=indexed, check=False)
        assert_one_error_line(proc, "catalog damaged", str(db), reason)
        assert db.read_bytes() == content
    damaged = bytearray(whole)
    damaged[len(whole) // 2: len(whole) // 2 + 8192] = b"\xff" * 8192
    db.write_bytes(bytes(damaged))
    proc = run_cli("search", "x", collection=indexed, check=False)
    assert_one_error_line(proc, "catalog damaged", str(db))


def test_a_collection_created_but_never_written_still_opens(tmp_path):
    """An empty catalog file without indexes is a first run killed at its start, not damage."""
    (tmp_path / "col").mkdir()
    (tmp_path / "col" / "catalog.sqlite").write_bytes(b"")
    make_images(tmp_path / "pics", 2)
    run_cli("index", tmp_path / "pics", "--model", "demo", collection=tmp_path / "col")
    assert _count(tmp_path / "col" / "catalog.sqlite") == 2
