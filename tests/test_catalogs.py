"""The catalog on both backends: SQLite in the collection's folder and PostgreSQL on a real
throwaway server (``postgres`` fixture). The same calls must give the same answers: indexing
and re-indexing, texts with metadata, every filter, keyword and hybrid search, tags, removal;
and on PostgreSQL what only a shared catalog has: folders on several "hosts" joining one
collection, indexes kept in step with the change log, advisory write locks, a server that is
down or goes away in the middle of a run."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import assert_one_error_line, make_image, make_images, run_cli

from retrieval import Collection
from retrieval.errors import CatalogError, CollectionLockedError, CollectionNotFoundError
from retrieval.storage import keywords
from retrieval.storage.backends.postgresql import pg_query
from retrieval.storage.dialects import glob_to_regex


def _open(path: Path, encoder: Any, url: str | None) -> Collection:
    return Collection(path, encoder=encoder, catalog=url)


def _paths(hits: list[Any]) -> list[str]:
    return [os.path.basename(h.path) for h in hits]


def _filters_agree(col: Collection) -> None:
    """Filters: glob on paths, folder, orientation, dates, metadata as number and text."""
    assert _paths(col.search("x", k=10, filters=["path ~ *beach*"])) == ["beach_sunset.png"]
    assert _paths(col.search("x", k=10, filters=["path ~ */sub/*"])) == ["harbour-boats.jpg"]
    assert _paths(col.search("x", k=10, filters=["path ~ *[h]arbour*"])) == [
        "harbour-boats.jpg"]
    assert _paths(col.search("x", k=10, filters=["orientation = portrait"])) == [
        "harbour-boats.jpg"]
    assert len(col.search("x", k=10, filters=["mtime > 2000-01-01"])) == 8
    assert col.search("x", k=10, filters=["mtime < 2000-01-01"]) == []
    assert col.search("x", k=10, filters=["caption = true"])[0].path.endswith(
        "beach_sunset.png")
    assert [h.text for h in col.search("x", target="text", filters=["stars > 3"])] == [
        "a red bicycle"]
    assert sorted(h.text for h in col.search("x", target="text", filters=["stars != 5"])
                  ) == ["a blue boat", "unnamed"]
    assert [h.text for h in col.search("x", target="text", filters=["stars = many"])] == [
        "unnamed"]
    assert [h.text for h in col.search("x", target="text", filters=["lang ~ e*"])] == [
        "a blue boat"]


def _keywords_agree(col: Collection, pics: Path) -> None:
    """Keywords: file-name words, caption words (case and accents folded), tags."""
    kw = col._catalog.keyword_search
    beach = col.search(image=pics / "beach_sunset.png", k=1)[0].id
    assert [i for i, _ in kw("sunset", "image", 5)] == [beach]
    assert [i for i, _ in kw("CREME brulee", "image", 5)] == [beach]
    assert [i for i, _ in kw("harbour boats", "image", 5)] == [
        col.search(image=pics / "sub" / "harbour-boats.jpg", k=1)[0].id]
    assert [col.get(i).text for i, _ in kw("bicycle", "text", 5)] == ["a red bicycle"]
    assert kw("nothing-like-this", "image", 5) == []
    assert kw("  ", "image", 5) == []
    col.tag(["sunset sky", "ocean"], top=1, min_score=-1)
    assert {i for i, _ in kw("ocean", "image", 20)} | {
        i for i, _ in kw("sky", "image", 20)} == set(col._catalog.vector_ids("image"))


def test_index_search_filters_and_keywords_agree(tmp_path: Path, encoder: Any,
                                                   catalog_url: str | None) -> None:
    pics = tmp_path / "pics"
    make_images(pics, 6)
    make_image(pics / "beach_sunset.png", 100)
    (pics / "beach_sunset.txt").write_text("Crème brûlée on the Beach", encoding="utf-8")
    make_image(pics / "sub" / "harbour-boats.jpg", 101, size=(40, 80))
    with _open(tmp_path / "col", encoder, catalog_url) as col:
        first = col.index([pics], workers=0)
        assert (first.added, first.failed) == (8, 0)
        assert col.index([pics], workers=0).unchanged == 8
        texts = col.add_texts([{"text": "a red bicycle", "id": "t1", "stars": 5},
                               {"text": "a blue boat", "id": "t2", "stars": 2, "lang": "en"},
                               {"text": "unnamed", "id": "t3", "stars": "many"}])
        assert texts.added == 3
        assert col._catalog.counts() == {"image": 8, "text": 4}  # + the sidecar caption

        # image search finds each file by its own picture
        for p in sorted(pics.rglob("*.jpg"))[:3]:
            assert col.search(image=p, k=1)[0].path == str(p)
        _filters_agree(col)
        _keywords_agree(col, pics)

        hybrid = col.search("beach", k=3, hybrid=1.0)
        assert hybrid[0].path.endswith("beach_sunset.png")

        # removal and hash reuse behave the same
        assert col.remove([pics / "sub"]) == 1
        assert col._catalog.keyword_search("harbour", "image", 5) == []
        shutil.copy(pics / "img000.jpg", pics / "copy.jpg")
        again = col.index([pics], workers=0)
        assert (again.added, again.embedded) == (2, 1)  # the copy reuses its vector
        assert col.info()["catalog"] == (col._catalog.where)


def test_keyword_ranking_weighs_rare_words(tmp_path: Path, encoder: Any,
                                            catalog_url: str | None) -> None:
    """Common words ("a") do not drown rare ones; all words beat some; the phrase wins."""
    texts = ([f"a big red square and a small red triangle number {i}" for i in range(30)]
             + ["a blue circle", "a red circle", "circle red a", "a blue square"])
    with _open(tmp_path / "col", encoder, catalog_url) as col:
        col.add_texts(texts)
        kw = col._catalog.keyword_search

        def top(q: str, n: int = 1) -> list[str]:
            return [col.get(i).text for i, _ in kw(q, "text", n)]

        assert top("a blue circle") == ["a blue circle"]
        assert top("a red circle") == ["a red circle"]
        assert set(top("red circle", 2)) == {"a red circle", "circle red a"}
        assert top("triangle number 7") == ["a big red square and a small red triangle number 7"]


def test_hostile_text_and_names_round_trip(tmp_path: Path, encoder: Any,
                                           catalog_url: str | None) -> None:
    """Names that are not UTF-8, NUL-free control characters, emoji, and texts with lone
    surrogates are stored and given back unchanged on both backends."""
    pics = tmp_path / "pics"
    pics.mkdir()
    odd = os.fsdecode(b"caf\xe9 \xff\xfe.jpg")
    make_image(pics / odd, 1)
    make_image(pics / "tab\tnew\nline \U0001f600.jpg", 2)
    with _open(tmp_path / "col", encoder, catalog_url) as col:
        assert col.index([pics], workers=0).added == 2
        assert sorted(h.path for h in col.search("x", k=5)) == sorted(
            str(p) for p in pics.iterdir())
        col.add_texts(["bad \udcff surrogate", "nul \x00 byte"])
        assert sorted(h.text for h in col.search("x", target="text", k=5)) == [
            "bad \ufffd surrogate", "nul \ufffd byte"]


def test_glob_to_regex() -> None:
    import re

    cases = {"*.jpg": ["a.jpg", "/x/y.jpg"], "a?c": ["abc"], "[ab]x": ["ax", "bx"],
             "[^a]x": ["bx"], "a.b+c": ["a.b+c"], "[]]": ["]"]}
    misses = {"*.jpg": ["a.jpeg", "a.JPG"], "a?c": ["ac", "abbc"], "[ab]x": ["cx"],
              "[^a]x": ["ax"], "a.b+c": ["axbbc"], "[]]": ["a"]}
    for pattern, good in cases.items():
        regex = re.compile(glob_to_regex(pattern))
        assert all(regex.search(s) for s in good), pattern
        assert not any(regex.search(s) for s in misses[pattern]), pattern


def test_keyword_queries_are_quoted() -> None:
    assert pg_query("") == ""
    assert pg_query("it's a 'test' & | !") == (
        "('it' <-> 's' <-> 'a' <-> 'test') | 'it' | 's' | 'a' | 'test'")
    assert keywords.words("Crème_Brûlée ÉCOLE") == ["creme", "brulee", "ecole"]


# -- PostgreSQL only: a catalog shared by several hosts ------------------------------------


def test_two_hosts_share_one_collection(tmp_path: Path, encoder: Any, postgres: Any,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from retrieval.storage import vector_indexes

    monkeypatch.setattr(vector_indexes, "SHARED_REFRESH_S", 0.0)  # every search checks
    url = postgres.create_database()
    pics = tmp_path / "pics"
    make_images(pics, 5)
    host_a, host_b = tmp_path / "host-a", tmp_path / "host-b"
    with _open(host_a, encoder, url) as a:
        a.index([pics], workers=0)
        stored = (host_a / "catalog.url")
        assert stored.read_text().strip() == url
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert not (host_a / "catalog.sqlite").exists()

        # Host B joins with the URL alone (no model) and builds its index from the catalog.
        b = Collection(host_b, catalog=url, device="cpu")
        try:
            assert b.spec == a.spec and b.dim == a.dim
            assert len(b.search(vector=np.ones(a.dim), k=10)) == 5
            # A writes; B's index catches up through the change log.
            make_images(pics, 2, start=5)
            a.index([pics], workers=0)
            assert len(b.search(vector=np.ones(a.dim), k=10)) == 7
            a.remove([pics / "img000.jpg"])
            found = {h.path for h in b.search(vector=np.ones(a.dim), k=10)}
            assert len(found) == 6 and str(pics / "img000.jpg") not in found
            # B's index files lost: rebuilt from the catalog.
            b.close()
            shutil.rmtree(host_b / "indexes")
            b = Collection(host_b, device="cpu")  # the folder remembers its catalog
            assert len(b.search(vector=np.ones(a.dim), k=10)) == 6

            # One writer at a time across hosts: the advisory lock, named in the message.
            with a._lock.hold():
                with pytest.raises(CollectionLockedError, match="on this or another host"):
                    b.add_texts(["blocked"])
                with b._lock.hold(local=True):  # its own index files: not blocked
                    pass
            b.add_texts(["now it may"])
            assert a.search("x", target="text", k=5)[0].text == "now it may"
        finally:
            b.close()


def test_another_hosts_writes_show_within_the_refresh_interval(
        tmp_path: Path, encoder: Any, postgres: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a shared catalog a search checks the change log at most every SHARED_REFRESH_S:
    another process's write shows once that time has passed; this process's own at once.
    (The indexes' clock is a fake one, so the test does not depend on how fast it runs.)"""
    import types

    from retrieval.storage import vector_indexes

    now = [1000.0]
    monkeypatch.setattr(vector_indexes, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    url = postgres.create_database()
    with _open(tmp_path / "a", encoder, url) as a, _open(tmp_path / "b", encoder, url) as b:
        a.add_texts(["first"])
        assert [h.text for h in b.search("x", target="text")] == ["first"]
        a.add_texts(["second"])
        assert len(a.search("x", target="text")) == 2  # its own write: at once
        now[0] += vector_indexes.SHARED_REFRESH_S / 2
        assert len(b.search("x", target="text")) == 1  # checked too recently to look again
        now[0] += vector_indexes.SHARED_REFRESH_S
        assert len(b.search("x", target="text")) == 2


def test_joining_an_empty_catalog_or_a_wrong_one(tmp_path: Path, encoder: Any,
                                                 postgres: Any) -> None:
    url = postgres.create_database()
    with pytest.raises(CollectionNotFoundError, match="no collection in the catalog"):
        Collection(tmp_path / "col", catalog=url)
    assert not (tmp_path / "col" / "catalog.url").exists()
    with _open(tmp_path / "col", encoder, url) as col:  # made by its first write
        col.add_texts(["a first text"])
    other = postgres.create_database()
    with pytest.raises(Exception, match="uses the catalog"):
        Collection(tmp_path / "col", catalog=other)
    with _open(tmp_path / "lite", encoder, None) as col:
        col.add_texts(["a first text"])
    with pytest.raises(Exception, match="keeps its catalog in"):
        Collection(tmp_path / "lite", catalog=url)
    # the environment variable names the catalog of new collections only
    assert '"image": 0' in run_cli("info", "--json", collection=tmp_path / "lite",
                                   env={"RETRIEVAL_DATABASE_URL": url}).stdout


def test_cli_with_a_postgresql_catalog(tmp_path: Path, tiny_spec: str, postgres: Any) -> None:
    url = postgres.create_database().replace("postgresql+psycopg://", "postgresql://")
    pics = tmp_path / "pics"
    make_images(pics, 4)
    col = tmp_path / "col"
    run_cli("--catalog", url, "index", pics, "--model", tiny_spec, "--no-progress",
            collection=col)
    info = run_cli("info", "--json", collection=col).stdout
    assert "postgresql+psycopg://postgres@127.0.0.1" in info and '"image": 4' in info
    # another folder joins through the environment variable
    out = run_cli("search", "anything", "-k", "2", collection=tmp_path / "other",
                  env={"RETRIEVAL_DATABASE_URL": url}).stdout
    assert out.count(str(pics)) == 2


def test_database_down_is_one_line(tmp_path: Path, tiny_spec: str, postgres: Any) -> None:
    from postgres import _free_port

    dead = f"postgresql://someone:secret@127.0.0.1:{_free_port()}/nowhere"
    proc = run_cli("--catalog", dead, "search", "x", collection=tmp_path / "c", check=False)
    line = assert_one_error_line(proc, "127.0.0.1", "nowhere")
    assert "secret" not in line and "***" in line
    proc = run_cli("--catalog", dead, "index", tmp_path, "--model", tiny_spec,
                   collection=tmp_path / "c", check=False)
    assert_one_error_line(proc, "127.0.0.1")
    assert not (tmp_path / "c").exists()
    proc = run_cli("--catalog", "sqlite:///x.db", "search", "x", collection=tmp_path / "d",
                   check=False)
    assert_one_error_line(proc, "postgresql://")


def test_server_lost_mid_run_keeps_committed_batches(tmp_path: Path, encoder: Any,
                                                     postgres: Any) -> None:
    """The server stops after the first batch is committed: the run ends with one clear
    error, the committed batch stays, and the next run (server back) completes without
    duplicates."""
    from postgres import PostgresServer

    own = PostgresServer(postgres.bindir).start()
    try:
        url = own.url()
        pics = tmp_path / "pics"
        make_images(pics, 10)
        col = _open(tmp_path / "col", encoder, url)
        stopped = []

        def progress(event: Any) -> None:
            if event.phase == "embed" and event.done >= 4 and not stopped:
                stopped.append(True)
                own._run(f"{own.bindir}/pg_ctl", "-D", own.data, "-m", "immediate", "-w",
                         "stop")

        with pytest.raises(CatalogError, match="catalog database") as err:
            col.index([pics], workers=0, batch_size=4, progress=progress)
        assert "\n" not in str(err.value)
        col.close()
        own._run(f"{own.bindir}/pg_ctl", "-D", own.data, "-l", f"{own.base}/log", "-w", "-o",
                 f"-c listen_addresses=127.0.0.1 -p {own.port} -k {own.base}", "start")
        with _open(tmp_path / "col", encoder, None) as again:
            kept = again._catalog.counts()["image"]
            assert 4 <= kept < 10
            summary = again.index([pics], workers=0, batch_size=4)
            assert summary.added == 10 - kept
            paths = [h.path for h in again.search("x", k=20)]
            assert sorted(paths) == sorted(str(p) for p in pics.iterdir())
    finally:
        own.stop()


def test_cjk_keywords_find_words_inside_sentences(tmp_path: Path, encoder: Any,
                                                  catalog_url: str | None) -> None:
    """Chinese, Japanese and Korean words are found inside captions, file names and tags
    (characters and pairs of characters); the corpus's answers are known by construction."""
    from cjk_corpus import LANGS, corpus, queries

    captions = corpus()
    things = {c.text: c.things for c in captions}
    pics = tmp_path / "pics"
    make_image(pics / "街道上的自行车.jpg", 1)
    make_image(pics / "海辺の猫.png", 2)
    make_image(pics / "other.jpg", 3)
    with _open(tmp_path / "col", encoder, catalog_url) as col:
        col.add_texts([{"text": c.text, "id": str(i)} for i, c in enumerate(captions)])
        kw = col._catalog.keyword_search
        per: dict[str, list[float]] = {lang: [] for lang in LANGS}
        for text, lang, thing in queries():
            found = [col.get(i).text or "" for i, _ in kw(text, "text", 5)]
            per[lang].append(sum(thing in things[t] for t in found) / 5)
        for lang in LANGS:
            assert sum(per[lang]) / len(per[lang]) >= 0.95, (lang, per[lang])
        # every caption holding the word comes before any without it
        bikes = [col.get(i).text or "" for i, _ in kw("自行车", "text", 100)]
        holding = sum("自行车" in c.text for c in captions)
        assert holding >= 5 and all("自行车" in t for t in bikes[:holding]), bikes

        col.index([pics], workers=0)
        images = {col.get(i).path: i for i in col._catalog.vector_ids("image")}
        assert [col.get(i).path for i, _ in kw("自行车", "image", 5)] == [
            str(pics / "街道上的自行车.jpg")]
        assert [col.get(i).path for i, _ in kw("猫", "image", 5)] == [str(pics / "海辺の猫.png")]
        col.tag(["빨간 자전거", "blue sky"], top=2, min_score=-1)
        assert set(i for i, _ in kw("자전거", "image", 5)) == set(images.values())
        assert kw("电车", "image", 5) == []


def test_a_migration_missing_below_the_newest_is_applied(tmp_path: Path) -> None:
    """A catalog that recorded a newer migration before an older-numbered one existed (made
    between two releases) still gets the older one on its next open."""
    from sqlalchemy import delete, inspect

    from retrieval.storage.catalog import Catalog
    from retrieval.storage.migrations import SCHEMA_VERSION
    from retrieval.storage.schema import schema_version

    path = tmp_path / "catalog.sqlite"
    Catalog(path, create=True).close()
    cat = Catalog(path)
    with cat.engine.begin() as conn:
        conn.execute(delete(schema_version).where(schema_version.c.version == 4))
        conn.exec_driver_sql("DROP INDEX ux_items_generated_parent")
    cat.close()
    cat = Catalog(path)
    with cat.engine.connect() as conn:
        names = {ix["name"] for ix in inspect(conn).get_indexes("items")}
    assert "ux_items_generated_parent" in names
    assert cat.schema_version == SCHEMA_VERSION
    cat.close()
