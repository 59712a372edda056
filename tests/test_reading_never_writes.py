"""Reading never writes (issue 20, item 2): a search, ``info``, ``caption``, ``duplicates``,
the Python API's reads and the server never create, bind or rebind a collection; naming
another model on a search is an error that names the collection's model; a collection is made
only once its model has loaded, so a failed first index leaves nothing behind. On SQLite (the
catalog file's bytes, its modification time and the settings compared) and on PostgreSQL (the
settings, and no tables made in an empty database)."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error_line, make_image, make_images, run_cli
from models import write_tiny_model

from retrieval import Collection
from retrieval.errors import CollectionNotFoundError, ModelMismatchError

pytestmark = pytest.mark.slow


def settings_of(col: Path) -> dict[str, Any]:
    """The collection's settings, read from its SQLite catalog directly (read-only)."""
    conn = sqlite3.connect(f"file:{col / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        return {k: json.loads(v) if isinstance(v, str) else v  # SQLite gives numbers as such
                for k, v in conn.execute("SELECT key, value FROM settings")}
    finally:
        conn.close()


def snapshot(col: Path) -> tuple[str, int, dict[str, Any]]:
    """The catalog file's SHA-256 and modification time, and the settings."""
    catalog = col / "catalog.sqlite"
    return (hashlib.sha256(catalog.read_bytes()).hexdigest(), catalog.stat().st_mtime_ns,
            settings_of(col))


@pytest.fixture()
def indexed(tmp_path: Path, tiny_spec: str) -> Path:
    """A small collection: 4 images, one with a sidecar caption, and a text."""
    pics = tmp_path / "pics"
    make_images(pics, 3)
    make_image(pics / "red.jpg", seed=40)
    (pics / "red.txt").write_text("a red circle\n")
    col = tmp_path / "col"
    run_cli("index", pics, "--model", tiny_spec, "--no-progress", collection=col)
    (tmp_path / "texts.txt").write_text("a blue square\n")
    run_cli("add-texts", tmp_path / "texts.txt", collection=col)
    return col


def test_read_commands_leave_the_catalog_as_it_was(indexed: Path, tiny_spec: str) -> None:
    before = snapshot(indexed)
    pics = indexed.parent / "pics"
    for args in (["search", "a red circle"], ["search", "red", "--model", tiny_spec],
                 ["search", "red", "--target", "text", "--json"], ["info"], ["info", "--json"],
                 ["caption", pics / "red.jpg"], ["caption", "1", "--json"], ["duplicates"]):
        run_cli(*args, collection=indexed)
        assert snapshot(indexed) == before, args


def test_another_model_on_a_search_is_refused_naming_the_collections(
        indexed: Path, tiny_spec: str, tiny_model: Path) -> None:
    before = snapshot(indexed)
    proc = run_cli("search", "red", "--model", "demo", collection=indexed, check=False)
    line = assert_one_error_line(proc)
    assert line == (f"Error: collection {indexed} holds vectors of model {tiny_spec}, not demo; "
                    f"omit --model to use {tiny_spec}, or use another --collection for demo")
    assert snapshot(indexed) == before
    with pytest.raises(ModelMismatchError, match=str(tiny_model)):
        Collection(indexed, model="demo")


def test_a_search_never_rebinds_an_empty_collection(indexed: Path, tiny_spec: str) -> None:
    """The issue's case: a collection bound to one model and holding nothing (here: all
    removed) was rebound to the demo model by `search red --model demo`."""
    run_cli("remove", indexed.parent / "pics", collection=indexed)
    with Collection(indexed) as col:  # the text added with add-texts goes too
        col._catalog.delete_items(col._catalog.vector_ids("text").tolist())
    before = snapshot(indexed)
    assert before[2]["model"]["name"] == tiny_spec
    proc = run_cli("search", "red", "--model", "demo", collection=indexed, check=False)
    line = assert_one_error_line(proc)
    assert line == (f"Error: collection {indexed} is bound to model {tiny_spec}, not demo; "
                    "search it without --model (it holds nothing yet: an index run with "
                    "--model binds it to another model)")
    assert snapshot(indexed) == before
    for read in ("info", "caption"):
        with Collection(indexed, model="demo") as col, pytest.raises(ModelMismatchError):
            col.info() if read == "info" else col.caption(1)
    assert snapshot(indexed) == before
    # An index run is a write: it may bind the empty collection to another model.
    run_cli("index", indexed.parent / "pics", "--model", "demo", collection=indexed)
    assert settings_of(indexed)["model"]["name"] == "demo"


def test_a_failed_first_index_leaves_nothing_behind(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """ViT-B-32 offline (its weights not cached): no folder, so the next search says there
    is no collection instead of warning about a missing export of a model never loaded."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    make_images(tmp_path / "pics", 1)
    col = tmp_path / "col"
    proc = run_cli("index", tmp_path / "pics", "--model", "ViT-B-32", collection=col,
                   check=False)
    assert_one_error_line(proc, "ViT-B-32")
    assert not col.exists()
    proc = run_cli("search", "red", collection=col, check=False)
    assert_one_error_line(proc, f"no collection at {col}")
    assert "export" not in proc.stderr
    # the same through the Python API, with a local model folder that is not there
    with Collection(col, model=f"local-dir:{tmp_path / 'absent'}") as new:
        with pytest.raises(CollectionNotFoundError, match=f"no collection at {col}"):
            new.search("red")
        with pytest.raises(Exception, match="folder not found"):
            new.index([tmp_path / "pics"])
    assert not col.exists()


def test_a_collection_is_made_by_its_first_write(tmp_path: Path, tiny_spec: str) -> None:
    make_images(tmp_path / "pics", 2)
    col = tmp_path / "col"
    with Collection(col, model=tiny_spec) as new:
        for read in (new.info, new.roots, lambda: new.search("x"), lambda: new.caption(1)):
            with pytest.raises(CollectionNotFoundError, match="no collection at"):
                read()
        assert not col.exists()
        assert new.index([tmp_path / "pics"], workers=0).added == 2
        assert settings_of(col)["model"]["name"] == tiny_spec
        assert settings_of(col)["dim"] == 32 and settings_of(col)["model_identity"]
        assert len(new.search("x", k=5)) == 2


def test_reading_a_server_catalog_never_writes(tmp_path: Path, tiny_spec: str,
                                               postgres: Any) -> None:
    from sqlalchemy import create_engine, inspect, text

    url = postgres.create_database().replace("postgresql+psycopg://", "postgresql://")
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))

    def tables() -> list[str]:
        with engine.connect() as conn:
            return inspect(conn).get_table_names()

    def settings() -> dict[str, Any]:
        with engine.connect() as conn:
            return {k: v for k, v in conn.execute(text("SELECT key, value FROM settings"))}

    try:
        # An empty database: a search, or a failed first index, makes no tables in it.
        proc = run_cli("--catalog", url, "search", "x", collection=tmp_path / "a", check=False)
        assert_one_error_line(proc, "no collection")
        proc = run_cli("--catalog", url, "index", tmp_path, "--model",
                       f"local-dir:{tmp_path / 'absent'}", collection=tmp_path / "a",
                       check=False)
        assert_one_error_line(proc, "folder not found")
        assert tables() == [] and not (tmp_path / "a").exists()
        with pytest.raises(CollectionNotFoundError):
            Collection(tmp_path / "a", catalog=url)
        assert tables() == []

        pics = tmp_path / "pics"
        make_images(pics, 3)
        run_cli("--catalog", url, "index", pics, "--model", tiny_spec, "--no-progress",
                collection=tmp_path / "a")
        before = settings()
        run_cli("search", "x", collection=tmp_path / "a")
        run_cli("info", collection=tmp_path / "a")
        run_cli("caption", pics / "img000.jpg", collection=tmp_path / "a")
        proc = run_cli("search", "x", "--model", "demo", collection=tmp_path / "a",
                       check=False)
        assert_one_error_line(proc, f"holds vectors of model {tiny_spec}, not demo")
        assert settings() == before
    finally:
        engine.dispose()


def test_the_server_never_writes(indexed: Path) -> None:
    from fastapi.testclient import TestClient

    from retrieval.interfaces.server import create_app

    before = snapshot(indexed)
    with Collection(indexed, device="cpu") as col:
        client = TestClient(create_app(col))
        assert client.post("/search", json={"text": "a red circle", "k": 2}).status_code == 200
        assert client.get("/info").status_code == 200
    assert snapshot(indexed) == before


def test_other_models_and_their_weights(tmp_path: Path, tiny_spec: str) -> None:
    """Naming the collection's own model is fine; an architecture without weights takes the
    collection's; a second tiny model (other weights) is refused on a search."""
    make_images(tmp_path / "pics", 2)
    col = tmp_path / "col"
    run_cli("index", tmp_path / "pics", "--model", tiny_spec, collection=col)
    other = write_tiny_model(tmp_path / "other", seed=1)
    before = snapshot(col)
    proc = run_cli("search", "x", "--model", f"local-dir:{other}", collection=col, check=False)
    assert_one_error_line(proc, f"holds vectors of model {tiny_spec}", "omit --model")
    run_cli("search", "x", "--model", tiny_spec, collection=col)
    assert snapshot(col) == before
