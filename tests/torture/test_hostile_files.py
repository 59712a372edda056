"""Indexing a hostile corpus (``corpus.py``): every entry is indexed or skipped with its reason,
the run finishes, nothing is lost, and what was indexed is found and shown safely."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import run_cli
from corpus import make_corpus

from retrieval import Collection
from retrieval.pathnames import shown


@pytest.fixture
def corpus(tmp_path: Path):
    return tmp_path / "corpus", make_corpus(tmp_path / "corpus", tmp_path / "outside",
                                            as_root=os.geteuid() == 0)


def test_every_hostile_kind_is_indexed_or_skipped_with_its_reason(tmp_path, corpus, capsys):
    root, expected = corpus
    col = tmp_path / "col"
    proc = run_cli("index", root, "--model", "demo", "--workers", "2", "--json", collection=col)
    summary = json.loads(proc.stdout)
    assert "Traceback" not in proc.stderr
    skipped = {e["path"]: e["reason"] for e in summary["errors"]}
    c = Collection(col)
    stored = {it.path for it in c._catalog.get_items(range(1, 1000)).values()}
    for e in expected:
        if e.reason is None:
            assert e.path in stored, f"{e.kind}: not indexed ({skipped.get(shown(e.path))})"
        else:
            reason = skipped.get(shown(e.path))
            assert reason is not None and e.reason in reason, (e.kind, reason)
            assert e.path not in stored, e.kind
    assert summary["added"] == sum(e.reason is None for e in expected)
    assert summary["failed"] == sum(e.reason is not None for e in expected)
    # Found by its own image, shown on one printable line, the same on every later run.
    for e in expected:
        if e.reason is None:
            top = c.search(image=e.path, k=1)[0]
            assert top.path == e.path or top.score > 0.999, e.kind
    again = json.loads(run_cli("index", root, "--json", collection=col).stdout)
    assert (again["added"], again["updated"], again["removed"]) == (0, 0, 0)
    # No caption file led anywhere: neither the secret outside nor this process's environment.
    stored_bytes = b"".join(p.read_bytes() for p in col.rglob("*") if p.is_file())
    environ = Path("/proc/self/environ").read_bytes().split(b"\0")[0]
    assert b"hunter2" not in stored_bytes and environ not in stored_bytes
    with capsys.disabled():
        print(f"\nhostile corpus: {len(expected)} kinds, "
              f"{sum(e.reason is None for e in expected)} indexed, "
              f"{sum(e.reason is not None for e in expected)} skipped with a reason")


def test_undecodable_names_are_stored_losslessly_and_shown_escaped(tmp_path):
    """Issue 11.1: a name that is not UTF-8 aborted the whole run with a traceback, and every
    rerun failed the same way."""
    from conftest import make_image

    root = tmp_path / "photos"
    raw = os.path.join(os.fsencode(root), b"bad\nname\xff.png")
    make_image(Path(os.fsdecode(raw)), 1)
    make_image(root / "ok.jpg", 2)
    col = tmp_path / "col"
    proc = run_cli("index", root, "--model", "demo", "--json", collection=col)
    assert json.loads(proc.stdout)["added"] == 2
    table = run_cli("search", "x", "-k", "2", collection=col).stdout
    assert "bad\\nname\\xff.png" in table and len(table.splitlines()) == 3
    hits = [json.loads(line) for line in
            run_cli("search", "x", "-k", "2", "--json", collection=col).stdout.splitlines()]
    assert shown(os.fsdecode(raw)) in [h["path"] for h in hits]
    # --paths gives the name's own bytes, for xargs and shell loops
    from click.testing import CliRunner

    from retrieval.interfaces.cli import cli

    result = CliRunner().invoke(cli, ["--collection", str(col), "search", "x", "-k", "2",
                                      "--paths"])
    assert raw + b"\n" in result.stdout_bytes
    assert Collection(col).search(image=os.fsdecode(raw), k=1)[0].path == os.fsdecode(raw)
    assert run_cli("remove", os.fsdecode(raw), collection=col).stdout.startswith("1 removed")
