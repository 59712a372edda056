"""Where results end (issue 23): ``min_score`` and ``cutoff="auto"`` on a real collection of
the demo model.

The collection holds 60 rendered single-object images of known colour and shape (8 red
circles, 6 blue stars, then each colour-shape pair in turn), so the images that match a query
are known. ``cutoff="auto"`` returns exactly those; ``min_score`` bounds every hit; pages are
slices of the cut list, pages past it are empty and the total says how long it is; every
surface (Python, HTTP, the client, the command line) carries both fields and refuses a bad
value with one line.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from retrieval import Collection, Hit, QueryError
from retrieval.interfaces.cli import cli
from retrieval.interfaces.client import Client
from retrieval.interfaces.server import create_app
from retrieval.search.cutoff import SAMPLE, sample_ids

QUERIES = {"a red circle": ("red", "circle"), "a blue star": ("blue", "star"),
           "a green square": ("green", "square"), "a purple cross": ("purple", "cross")}


@dataclass
class Shapes:
    col: Collection
    path: Path
    truth: dict[str, tuple[str, str]]  # image path -> (colour, shape)

    def matching(self, query: str) -> set[str]:
        return {p for p, t in self.truth.items() if t == QUERIES[query]}


def _scores(hits: list[Hit]) -> list[float]:
    assert all(h.score is not None for h in hits)
    return [float(h.score) for h in hits]  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shapes]:
    from retrieval import ModelSpec, load_encoder
    from retrieval.training.synthetic import (
        BACKGROUNDS,
        COLOURS,
        POSITIONS,
        SHAPES,
        SIZES,
        Scene,
        Thing,
        render,
    )

    base = tmp_path_factory.mktemp("cutoff")
    root = base / "shapes"
    root.mkdir()
    rng = random.Random(5)
    pairs = [(c, s) for c in sorted(COLOURS) for s in SHAPES]
    truth = {}
    for i in range(60):
        colour, shape = (("red", "circle") if i < 8 else ("blue", "star") if i < 14
                         else pairs[i % len(pairs)])
        thing = Thing(shape, colour, rng.choice(sorted(SIZES)), rng.choice(sorted(POSITIONS)))
        path = root / f"s{i:03d}.png"
        render(Scene((thing,), rng.choice(sorted(BACKGROUNDS))), 64, seed=i).save(path)
        truth[str(path)] = (colour, shape)
    col = Collection(base / "col", encoder=load_encoder(ModelSpec.parse("demo"), "cpu"))
    assert col.index([root], workers=0).added == 60
    yield Shapes(col, base / "col", truth)
    col.close()


def test_auto_cutoff_returns_the_matching_images(shapes: Shapes) -> None:
    for query in QUERIES:
        hits = shapes.col.search(query, k=60, cutoff="auto")
        assert {h.path for h in hits} == shapes.matching(query), query
        cut = hits.threshold
        assert hits.total == len(hits) and cut is not None
        assert min(_scores(hits)) >= cut
        plain = shapes.col.search(query, k=60)
        assert [h.id for h in hits] == [h.id for h in plain[:len(hits)]]  # the ranking's head
        assert _scores(plain)[len(hits)] < cut


def test_min_score_bounds_every_hit(shapes: Shapes) -> None:
    plain = shapes.col.search("a red circle", k=60)
    for score in (0.2, 0.5, 0.99):
        hits = shapes.col.search("a red circle", k=60, min_score=score)
        assert all(s >= score for s in _scores(hits))
        assert [h.id for h in hits] == [h.id for h, s in zip(plain, _scores(plain), strict=True)
                                        if s >= score]
        assert hits.total == len(hits) and hits.threshold == score
    both = shapes.col.search("a red circle", k=60, min_score=0.2, cutoff="auto")
    auto = shapes.col.search("a red circle", cutoff="auto").threshold
    assert auto is not None and both.threshold == max(0.2, auto)
    assert shapes.col.search("a red circle").total is None  # no cut, no total


@pytest.mark.parametrize("options", [{"cutoff": "auto"}, {"min_score": 0.3},
                                     {"cutoff": "auto", "rerank": "exact"},
                                     {"cutoff": "auto", "rerank": "mmr:0.5"},
                                     {"min_score": 0.3, "rerank": "dedup:0.99"},
                                     {"cutoff": "auto", "filters": ["path ~ *s0[0-3]?.png"]}],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_pages_are_slices_of_the_cut_list(shapes: Shapes, options: dict[str, Any]) -> None:
    whole = shapes.col.search("a red circle", k=60, **options)
    assert whole.total == len(whole) and 0 < len(whole) < 60
    pages = []
    for offset in range(0, len(whole) + 6, 3):
        page = shapes.col.search("a red circle", k=3, offset=offset, **options)
        assert page.total == whole.total and page.threshold == whole.threshold
        pages += [h.id for h in page]
    assert pages == [h.id for h in whole]
    past = shapes.col.search("a red circle", k=5, offset=len(whole), **options)
    assert list(past) == [] and past.total == whole.total


def test_the_sample_is_fixed_and_spread() -> None:
    ids = np.arange(10_000, dtype=np.int64)
    first = sample_ids(ids)
    assert len(first) == SAMPLE and np.array_equal(first, sample_ids(ids[::-1].copy()))
    assert np.array_equal(sample_ids(ids[:100]), ids[:100])  # a small collection: all of it
    grown = sample_ids(np.arange(11_000, dtype=np.int64))
    assert len(np.intersect1d(first, grown)) > SAMPLE * 0.8  # growing keeps most of it
    assert np.histogram(first, bins=4, range=(0, 10_000))[0].min() > SAMPLE // 8


@pytest.mark.parametrize(("options", "message"), [
    ({"min_score": 1.5}, "min score is a cosine similarity between -1 and 1, got 1.5"),
    ({"min_score": float("nan")}, "min score is a cosine similarity between -1 and 1"),
    ({"cutoff": "soon"}, "unknown cutoff 'soon'; expected auto"),
    ({"cutoff": "auto", "hybrid": True}, "cutoff applies to cosine similarities, and a hybrid "
                                         "search scores by fused ranks"),
    ({"min_score": 0.3, "rerank": "exact,model:ViT-B-32@laion2b_s34b_b79k"},
     "min score applies to this collection model's cosine similarities, and the model rerank "
     "stage scores with another model"),
])
def test_a_cut_that_makes_no_sense_is_refused(shapes: Shapes, options: dict[str, Any],
                                              message: str) -> None:
    with pytest.raises(QueryError, match="^" + message.replace("(", r"\(")) as caught:
        shapes.col.search("a red circle", **options)
    assert "\n" not in str(caught.value)


def test_http_and_the_client_carry_the_cut(shapes: Shapes) -> None:
    app = create_app(shapes.col)
    http = TestClient(app, raise_server_exceptions=False)
    want = shapes.col.search("a blue star", k=20, cutoff="auto")
    res = http.post("/search", json={"text": "a blue star", "k": 20, "cutoff": "auto"})
    assert res.status_code == 200
    body = res.json()
    assert [h["id"] for h in body["hits"]] == [h.id for h in want]
    assert body["total"] == want.total and body["threshold"] == pytest.approx(want.threshold)
    stars = len(shapes.matching("a blue star"))
    past = http.post("/search", json={"text": "a blue star", "offset": stars, "min_score": 0.5})
    assert past.json()["hits"] == [] and past.json()["total"] == stars
    form = http.post("/search/upload", data={"k": "50", "cutoff": "auto"},
                     files={"image": ("q.png", Path(next(iter(sorted(shapes.truth))))
                                      .read_bytes(), "image/png")})
    assert form.status_code == 200 and 0 < form.json()["total"] < 60
    assert http.post("/search", json={"text": "x"}).json()["total"] is None

    bad = http.post("/search", json={"text": "x", "cutoff": "soon"})
    assert bad.status_code == 422 and "\n" not in bad.json()["detail"]
    assert bad.json()["detail"].startswith("cutoff:")
    assert http.post("/search", json={"text": "x", "min_score": "high"}).status_code == 422
    out_of_range = http.post("/search", json={"text": "x", "min_score": 2})
    assert out_of_range.status_code == 400
    assert out_of_range.json()["detail"] == ("min score is a cosine similarity between -1 and 1, "
                                             "got 2.0")

    client = Client("http://testserver")
    client._http.close()
    client._http = TestClient(app, base_url="http://testserver")  # type: ignore[assignment]
    with client:
        hits = client.search("a blue star", k=20, cutoff="auto")
        assert [h.id for h in hits] == [h.id for h in want] and hits.total == want.total
        assert client.search("a blue star", min_score=0.99).total == 0


def test_the_command_line_carries_the_cut(shapes: Shapes) -> None:
    runner = CliRunner()
    base = ["--collection", str(shapes.path), "search", "a red circle", "-k", "50"]
    ok = runner.invoke(cli, [*base, "--cutoff", "auto", "--paths"])
    assert ok.exit_code == 0, ok.output
    assert set(ok.stdout.split()) == shapes.matching("a red circle")
    n = len(shapes.matching("a red circle"))
    table = runner.invoke(cli, [*base, "--min-score", "0.5", "--offset", str(n)])
    assert table.exit_code == 0 and table.stdout == ""
    assert table.stderr.splitlines() == [
        "no results", f"{n} results down to similarity 0.500; this page starts at {n + 1}"]
    for args, code, line in [
            (["--cutoff", "soon"], 2, "Error: Invalid value for '--cutoff': 'soon' is not 'auto'."),
            (["--min-score", "2"], 1, "Error: min score is a cosine similarity between -1 and 1, "
                                      "got 2.0"),
            (["--cutoff", "auto", "--hybrid"], 1, "Error: cutoff applies to cosine similarities, "
             "and a hybrid search scores by fused ranks: leave out one or the other")]:
        bad = runner.invoke(cli, [*base, *args])
        assert bad.exit_code == code and bad.stderr.strip().splitlines()[-1] == line, bad.stderr
