"""Work a search does once: its query is checked once, whichever surface built it; an uploaded
image is decoded once, within the service's pixel limit; a one-shot search reads the
collection's settings once."""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import make_image, make_images
from fastapi.testclient import TestClient

from retrieval import Collection, Query, QueryError, Term
from retrieval.interfaces.cli import cli
from retrieval.interfaces.server import create_app
from retrieval.search import builder


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, encoder: Any) -> Iterator[Path]:
    """A small collection (six images), closed: each test opens its own."""
    base = tmp_path_factory.mktemp("once")
    make_images(base / "photos", 6)
    with Collection(base / "col", encoder=encoder) as col:
        assert col.index([base / "photos"], workers=0).added == 6
    yield base / "col"


@pytest.fixture
def col(folder: Path, encoder: Any) -> Iterator[Collection]:
    with Collection(folder, encoder=encoder) as opened:
        yield opened


@pytest.fixture
def checks(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often the builder checked a term (``as_term``) and a whole query (``validate``,
    which a hand-made query goes through)."""
    counts: Counter[str] = Counter()
    for name in ("as_term", "validate"):
        real = getattr(builder, name)

        def counted(*args: Any, _name: str = name, _real: Any = real) -> Any:
            counts[_name] += 1
            return _real(*args)

        monkeypatch.setattr(builder, name, counted)
    return counts


def _an_image(col: Collection) -> int:
    return int(col._catalog.vector_ids("image")[0])


# --- a query is checked once --------------------------------------------------------------------

def test_a_built_query_is_checked_once(col: Collection, checks: Counter[str]) -> None:
    """The builder checks each term as it makes it; the searcher does not check again (it
    checked every term three times, the builder twice and the searcher once)."""
    assert col.search("a red thing", like=_an_image(col), k=3)
    assert checks == {"as_term": 2}


def test_a_hand_made_query_is_checked_once_per_change(col: Collection, checks: Counter[str]
                                                      ) -> None:
    query = Query([Term("text", "a red thing")], target="images", k=3)
    assert len(col.run(query)) == 3
    assert checks == {"validate": 1, "as_term": 1} and query.target == "image"
    col.run(query)
    assert checks == {"validate": 1, "as_term": 1}  # unchanged since: not checked again
    query.k = 2
    assert len(col.run(query)) == 2
    assert checks == {"validate": 2, "as_term": 2}
    query.terms.append(Term("text", "   "))  # changed in place: checked, and refused
    with pytest.raises(QueryError, match="empty text term"):
        col.run(query)


def test_a_request_is_checked_once(col: Collection, checks: Counter[str]) -> None:
    http = TestClient(create_app(col))
    r = http.post("/search", json={"text": "a red thing", "like": _an_image(col), "k": 3})
    assert r.status_code == 200 and len(r.json()["hits"]) == 3
    assert checks == {"as_term": 2}


# --- an upload is decoded once, within the service's limit -------------------------------------

@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The pixel limit of every image opened (``retrieval.media.open_image``)."""
    import retrieval.media as media

    limits: list[int] = []
    real = media.open_image

    def counted(source: Any, max_pixels: int = media.DEFAULT_MAX_PIXELS) -> Any:
        limits.append(max_pixels)
        return real(source, max_pixels)

    monkeypatch.setattr(media, "open_image", counted)
    return limits


def test_an_upload_is_decoded_once_with_the_service_limit(col: Collection, tmp_path: Path,
                                                           opened: list[int]) -> None:
    """The service opened an upload to check its pixels, then the search decoded it again
    with the library's default limit instead of the service's."""
    data = make_image(tmp_path / "q.png", seed=7, size=(40, 30)).read_bytes()
    http = TestClient(create_app(col, max_pixels=2000))
    r = http.post("/search/upload", files={"image": ("q.png", data, "image/png")},
                  data={"k": "2"})
    assert r.status_code == 200, r.text
    assert opened == [2000]
    opened.clear()
    r = http.post("/search", json={"image": base64.b64encode(data).decode(), "k": 2})
    assert r.status_code == 200 and opened == [2000]
    opened.clear()
    big = make_image(tmp_path / "big.png", seed=8, size=(60, 40)).read_bytes()  # 2400 pixels
    r = http.post("/search", json={"terms": [
        {"kind": "image", "value": base64.b64encode(big).decode(), "weight": 2}]})
    assert r.status_code == 400 and "over the limit of 0.0 MP" in r.json()["detail"]
    assert r.json()["detail"].startswith("uploaded image: ") and opened == [2000]


# --- a one-shot search reads the collection's settings once ------------------------------------

@pytest.fixture
def reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """Statements reading the settings table, and reads of the change log's floor (kept in
    that table: an index loaded from disk reads it fresh, as another process may prune)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from retrieval.storage.catalog import Catalog

    counts: Counter[str] = Counter()

    def statement(_conn: Any, _cursor: Any, sql: str, *_rest: Any) -> None:
        if re.search(r"\bFROM settings\b", sql):
            counts["settings"] += 1

    real = Catalog.pruned_through

    def floor(self: Catalog) -> int:
        counts["floor"] += 1
        return real(self)

    monkeypatch.setattr(Catalog, "pruned_through", floor)
    event.listen(Engine, "before_cursor_execute", statement)
    yield counts
    event.remove(Engine, "before_cursor_execute", statement)


def test_a_one_shot_search_reads_the_settings_once(tmp_path: Path, encoder: Any,
                                                    catalog_url: str | None,
                                                    reads: Counter[str]) -> None:
    """Identity, precision and dimension were read from the settings table at every use:
    nine reads in a one-shot search by text, five by item (six on PostgreSQL), each a round
    trip to a database server."""
    make_images(tmp_path / "photos", 3)
    with Collection(tmp_path / "col", encoder=encoder, catalog=catalog_url) as made:
        made.index([tmp_path / "photos"], workers=0)
        item = _an_image(made)
    reads.clear()
    result = CliRunner().invoke(cli, ["--collection", str(tmp_path / "col"), "search",
                                      "--like", str(item), "-k", "2", "--json"])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) == 2
    assert reads["floor"] <= 1 and reads["settings"] == 1 + reads["floor"], reads
