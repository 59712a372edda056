"""End-to-end tests of the query options of the installed ``retrieval`` command: filters
(--where, --path, --after, --before, --tag), --hybrid, --rerank, and the caption, tag and
duplicates commands, with their error handling.

One generated folder is indexed once for the module; each command that loads the model costs
several seconds, so the number of subprocess calls is kept small.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import assert_one_error_line, json_lines, make_image, run_cli

pytestmark = pytest.mark.slow

LABELS = ["red", "green", "blue", "tree"]


@dataclass
class Setup:
    col: Path
    root: Path
    widths: dict[str, int]  # image path -> width
    captions: dict[str, str]  # image path -> caption
    original: Path
    copy: Path
    named: Path
    tag_output: str
    env: dict[str, str]

    def run(self, *args: Any, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, collection=self.col, check=check, env=self.env)


def tags_by_path(col: Path) -> dict[str, set[str]]:
    """Stored tags, read from the catalog directly (without the model)."""
    conn = sqlite3.connect(f"file:{col / 'catalog.sqlite'}?mode=ro", uri=True)
    try:
        out: dict[str, set[str]] = {}
        for path, tag in conn.execute(
                "SELECT i.path, t.tag FROM tags t JOIN items i ON i.id = t.item_id"):
            out.setdefault(path, set()).add(tag)
        return out
    finally:
        conn.close()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_spec: str) -> Setup:
    base = tmp_path_factory.mktemp("query_cli")
    root = base / "photos"
    widths: dict[str, int] = {}
    for i in range(12):
        size = (80, 40) if i % 2 == 0 else (40, 64)
        p = make_image(root / "sub" / f"img{i:03d}.jpg", seed=i, size=size)
        widths[str(p)] = size[0]
    for i in range(12):
        size = (96, 48) if i % 2 == 0 else (40, 64)
        p = make_image(root / "other" / f"pic{i:03d}.jpg", seed=100 + i, size=size)
        widths[str(p)] = size[0]
    named = make_image(root / "other" / "IMG_2041.jpg", seed=500, size=(64, 48))
    widths[str(named)] = 64
    original = root / "other" / "pic003.jpg"
    copy = root / "sub" / "copy_of_pic003.jpg"
    shutil.copyfile(original, copy)
    widths[str(copy)] = widths[str(original)]
    captions = {}
    for name, text in [("sub/img000", "a caption about a sunny beach"),
                       ("sub/img005", "a caption about a snowy mountain"),
                       ("other/pic002", "a caption about a busy street"),
                       ("other/pic007", "a caption about a quiet forest")]:
        (root / f"{name}.txt").write_text(text + "\n")
        captions[str(root / f"{name}.jpg")] = text
    labels = base / "labels.txt"
    labels.write_text("\n".join(LABELS) + "\n")

    env = {"RETRIEVAL_HOME": str(base / "home"), "HF_HUB_OFFLINE": "1"}
    col = base / "col"
    proc = run_cli("index", root, "--model", tiny_spec, "--workers", "0", "--json",
                   collection=col, env=env)
    (summary,) = json_lines(proc.stdout)
    assert (summary["added"], summary["failed"]) == (len(widths), 0), summary
    tagged = run_cli("tag", "--labels", labels, "--json", collection=col, env=env)
    return Setup(col, root, widths, captions, original, copy, named, tagged.stdout, env)


def test_where_path_after(setup: Setup) -> None:
    proc = setup.run("search", "x", "--where", "width >= 60", "--path", "*/sub/*",
                     "--after", "2000-01-01", "-k", "100", "--json")
    hits = json_lines(proc.stdout)
    assert all(h["metadata"]["width"] >= 60 for h in hits), hits
    assert all("/sub/" in h["path"] for h in hits), hits
    expected = {p for p, w in setup.widths.items() if w >= 60 and "/sub/" in p}
    assert len(expected) == 6
    assert {h["path"] for h in hits} == expected
    assert all(h["kind"] == "image" for h in hits)


def test_before_finds_nothing(setup: Setup) -> None:
    proc = setup.run("search", "x", "--before", "2000-01-01")
    assert proc.returncode == 0
    assert proc.stdout.strip() == ""
    assert "no results" in proc.stderr and "Traceback" not in proc.stderr


def test_tag_command_and_tag_filter(setup: Setup) -> None:
    (result,) = json_lines(setup.tag_output)
    assert result == {"tagged": len(setup.widths), "unchanged": 0, "labels": len(LABELS)}
    stored = tags_by_path(setup.col)
    assert stored and set().union(*stored.values()) <= set(LABELS)
    label = max(LABELS, key=lambda t: sum(t in tags for tags in stored.values()))
    proc = setup.run("search", "x", "--tag", label, "-k", "100", "--json")
    hits = json_lines(proc.stdout)
    assert {h["path"] for h in hits} == {p for p, tags in stored.items() if label in tags}
    assert all(label in h["metadata"]["tags"] for h in hits)


def test_hybrid_finds_file_name_token(setup: Setup) -> None:
    proc = setup.run("search", "IMG_2041", "--hybrid", "-k", "3", "--json")
    hits = json_lines(proc.stdout)
    assert len(hits) == 3
    assert hits[0]["path"] == str(setup.named)
    assert "keyword" in hits[0]["metadata"]["scores"]


def test_rerank_pipeline(setup: Setup) -> None:
    proc = setup.run("search", "x", "--rerank", "exact,mmr:0.7,dedup:0.95", "-k", "5", "--json")
    hits = json_lines(proc.stdout)
    assert len(hits) == 5
    assert len({h["id"] for h in hits}) == 5
    assert all("mmr_relevance" in h["metadata"]["scores"] for h in hits)


def test_caption_command(setup: Setup) -> None:
    proc = setup.run("caption", setup.root / "sub" / "img001.jpg", "--json")
    hits = json_lines(proc.stdout)
    assert len(hits) == len(setup.captions)  # default k=5, four captions stored
    assert all(h["kind"] == "text" for h in hits)
    assert {h["text"] for h in hits} == set(setup.captions.values())
    assert {h["path"] for h in hits} == set(setup.captions)  # the captioned images
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_duplicates_command(setup: Setup) -> None:
    proc = setup.run("duplicates", "--json")
    clusters = json_lines(proc.stdout)
    assert clusters
    for c in clusters:
        assert len(c["ids"]) == len(c["paths"]) >= 2
    mine = [c for c in clusters if str(setup.copy) in c["paths"]]
    assert len(mine) == 1 and str(setup.original) in mine[0]["paths"]


def test_errors_without_model(setup: Setup) -> None:
    """Errors found before the model loads: a clean line and a non-zero exit code."""
    proc = setup.run("search", "x", "--after", "2021-13-01", check=False)
    assert_one_error_line(proc, "malformed date '2021-13-01'", "--after")
    proc = setup.run("search", "x", "--rerank", "bogus", check=False)
    assert_one_error_line(proc, "unknown rerank stage 'bogus'")
    proc = setup.run("search", "x", "-k", "0", check=False)
    assert_one_error_line(proc, "k must be an integer between 1 and")  # the query builder's
    assert proc.stdout == ""


def test_errors_with_model(setup: Setup) -> None:
    proc = setup.run("search", "x", "--where", "widht > 3", check=False)
    assert_one_error_line(proc, "unknown filter field 'widht'", "width")
    assert proc.stdout == ""
    proc = setup.run("caption", setup.root / "missing.jpg", check=False)
    assert_one_error_line(proc, "missing.jpg", "file not found")
    assert proc.stdout == ""
