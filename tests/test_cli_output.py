"""The hits table and the duplicates listing as people read them: why each hit was found (its
caption, generated caption, file name or text, matched words marked), what its score is,
merged near-duplicates, numbering from the offset, lines cut only on a terminal; and the
filter messages that name the fix. Lines are compared whole.

The table is drawn by :func:`hits_table` from hits built by hand (a terminal's styling and
width), and end to end through ``CliRunner`` on a real collection (stdout there is a pipe).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import json_lines, make_image, run_cli

from retrieval.interfaces.cli.output import terminal_columns
from retrieval.interfaces.cli.table import OUT_OF_ORDER, hits_table, mark_words
from retrieval.interfaces.cli.width import display_width
from retrieval.search.hits import Hit

BOLD = click.style("x", bold=True).split("x")  # the escape codes around a marked word


def _hits() -> list[Hit]:
    match = {"source": "caption", "text": "a Sunny beach, with beaches", "words": ["beach",
                                                                                   "sunny"]}
    return [
        Hit(17, 0.0328, "image", "/photos/2021/summer/beach.jpg", "a Sunny beach, with beaches",
            {"score_kind": "fused", "match": match, "duplicates": [42, 43]}),
        Hit(5, 0.0301, "image", "/photos/IMG_2041.jpg", None,
            {"score_kind": "fused", "generated_caption": "a dog on a sofa",
             "match": {"source": "name", "text": "photos IMG_2041.jpg", "words": ["2041"]}}),
        Hit(6, 0.0299, "text", "/photos/cat.jpg", "a cat asleep",
            {"score_kind": "fused", "source": "generated", "caption_of": 3,
             "match": {"source": "text", "text": "a cat asleep", "words": ["cat"]}}),
        Hit(8, 0.0290, "image", "/photos/ocr.png", None,
            {"score_kind": "fused",
             "match": {"source": "ocr", "text": "EXIT ONLY", "words": []}}),
    ]


def test_table_in_a_pipe_shows_why_each_hit_matched() -> None:
    assert hits_table(_hits(), first=11) == [
        "  #  fused rank score  id  kind   result",
        " 11            0.0328  17  image  /photos/2021/summer/beach.jpg",
        "                                  caption: \"a [Sunny] [beach], with beaches\"",
        "                                  +2 near-duplicates: 42, 43",
        " 12            0.0301   5  image  /photos/IMG_2041.jpg",
        "                                  file name: photos IMG_[2041].jpg",
        " 13            0.0299   6  text   \"a [cat] asleep\"",
        "                                  generated caption of /photos/cat.jpg",
        " 14            0.0290   8  image  /photos/ocr.png",
        "                                  recognised text: \"EXIT ONLY\"",
    ]


def test_table_on_a_terminal_is_cut_to_its_width_and_marks_in_bold() -> None:
    lines = hits_table(_hits(), first=11, columns=52, styled=True)
    plain = [click.unstyle(ln) for ln in lines]
    assert all(display_width(ln) <= 52 for ln in plain), plain
    assert plain[1] == " 11            0.0328  17  image  ...ummer/beach.jpg"  # the name stays
    assert plain[7] == "                                  generated capti..."
    assert plain[2] == "                                  caption: \"a Sun..."
    assert lines[2] == ("                                  caption: \"a "
                        f"{BOLD[0]}Sun{BOLD[1]}...")
    assert "[" not in "".join(plain[1:3])  # no bracket marks where bold shows them


@pytest.mark.parametrize("kind, header", [("similarity", "similarity"),
                                          ("reranked", "re-ranked"), (None, "score")])
def test_score_header_names_what_the_score_is(kind: str | None, header: str) -> None:
    hits = [Hit(3, 0.25, "image", "/a.jpg"), Hit(4, 0.5, "image", "/b.jpg")]
    assert hits_table(hits, first=1, kind=kind)[:3] == [
        f"  #  {header}  id  kind   result",
        f"  1  {'0.250':>{len(header)}}   3  image  /a.jpg",
        f"  2  {'0.500':>{len(header)}}   4  image  /b.jpg"]


def test_mark_words_folds_case_and_accents_and_finds_cjk_words() -> None:
    assert mark_words("Café crème, CAFE", ["cafe"]) == [
        ("Café", True), (" crème, ", False), ("CAFE", True)]
    assert mark_words("自行车停在墙边", ["自行车"]) == [("自行车", True), ("停在墙边", False)]
    assert mark_words("red_car", ["car"]) == [("red_", False), ("car", True)]
    assert mark_words("no words", []) == [("no words", False)]


def test_terminal_columns_only_for_a_terminal(tmp_path: Path) -> None:
    leader, follower = os.openpty()
    try:
        with open(follower, "w", closefd=False) as tty:
            assert isinstance(terminal_columns(tty), int)
    finally:
        os.close(leader)
        os.close(follower)
    read, write = os.pipe()
    with open(write, "w") as pipe:
        assert terminal_columns(pipe) is None
    os.close(read)
    with open(tmp_path / "out.txt", "w") as file:
        assert terminal_columns(file) is None


# --- end to end, through CliRunner (stdout is a pipe there) ---

LONG = "a-folder-with-a-rather-long-name-" * 3


@dataclass
class Setup:
    col: Path
    beach: Path
    copy: Path
    resaved: Path
    env: dict[str, str]

    def run(self, *args: Any, check: bool = True) -> Any:
        return run_cli(*args, collection=self.col, check=check, env=self.env)

    def json(self, *args: Any) -> list[dict[str, Any]]:
        return json_lines(self.run(*args, "--json").stdout)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory, tiny_spec: str) -> Setup:
    from coca import write_tiny_coca

    base = tmp_path_factory.mktemp("cli_output")
    root = base / "photos"
    beach = make_image(root / LONG / "beach.jpg", seed=1)
    (root / LONG / "beach.txt").write_text("a sunny beach with a red umbrella\n")
    copy = root / "beach-copy.jpg"
    shutil.copyfile(beach, copy)
    resaved = root / "beach-resaved.png"  # the same picture in other bytes
    from PIL import Image

    Image.open(beach).save(resaved)
    for i in range(2, 8):
        make_image(root / f"img{i}.jpg", seed=i)
    (root / "img2.txt").write_text("a snowy mountain\n")
    texts = base / "texts.jsonl"
    texts.write_text("\n".join(json.dumps(t) for t in [
        {"text": "red sneakers", "brand": "acme"}, {"text": "blue boots", "brand": "zeta"}]))
    env = {"RETRIEVAL_HOME": str(base / "home"), "HF_HUB_OFFLINE": "1"}
    col = base / "col"
    run_cli("index", root, "--model", tiny_spec, "--workers", "0", collection=col, env=env)
    run_cli("add-texts", texts, collection=col, env=env)
    coca = write_tiny_coca(base / "coca")  # generated captions, whose bookkeeping is internal
    run_cli("generate-captions", "--captioner", f"local-dir:{coca}", "--seq-len", "6",
            "--generation-type", "top_k", collection=col, env=env)
    return Setup(col, beach, copy, resaved, env)


def _indent(out: str) -> str:
    return " " * out.splitlines()[0].index("result")


def test_search_shows_the_sidecar_caption_and_the_whole_path(setup: Setup) -> None:
    (hit,) = setup.json("search", "x", "--path", setup.beach)
    out = setup.run("search", "x", "--path", setup.beach).stdout
    assert out.splitlines() == [
        f"  #  similarity  {'id':>2}  kind   result",
        f"  1  {hit['score']:>10.3f}  {hit['id']:>2}  image  {setup.beach}",
        f"{_indent(out)}caption: \"a sunny beach with a red umbrella\""]


def test_a_pipe_is_never_cut(setup: Setup) -> None:
    """The image a caption belongs to stays whole, whatever COLUMNS says."""
    env = {**setup.env, "COLUMNS": "40"}
    out = run_cli("search", "x", "--target", "text", "--path", setup.beach, "-k", "50",
                  collection=setup.col, env=env).stdout
    lines = [ln.strip() for ln in out.splitlines()]
    assert f"caption of {setup.beach}" in lines  # its sidecar caption
    assert f"generated caption of {setup.beach}" in lines
    assert max(map(len, out.splitlines())) > 100
    assert "\x1b[" not in out  # no escape codes in a pipe


def test_numbering_continues_from_the_offset(setup: Setup) -> None:
    ids = [h["id"] for h in setup.json("search", "x", "-k", "2", "--offset", "3")]
    rows = [ln.split() for ln in setup.run("search", "x", "-k", "2", "--offset", "3"
                                           ).stdout.splitlines()[1:] if ln[:3].strip()]
    assert [(int(r[0]), int(r[2])) for r in rows] == [(4, ids[0]), (5, ids[1])]


def test_hybrid_labels_fused_scores_and_marks_matched_words(setup: Setup) -> None:
    """Waits on the search's match metadata (``metadata["match"]``) for the marks."""
    out = setup.run("search", "umbrella", "--hybrid", "--path", setup.beach).stdout
    lines = out.splitlines()
    assert lines[0].startswith("  #  fused rank score")
    assert lines[2] == f"{_indent(out)}caption: \"a sunny beach with a red [umbrella]\""


def test_dedup_shows_merged_duplicates(setup: Setup) -> None:
    args = ("search", "--image", setup.beach, "--rerank", "dedup:0.9999", "-k", "3")
    top = setup.json(*args)[0]
    merged = top["metadata"]["duplicates"]
    assert len(merged) >= 1
    out = setup.run(*args).stdout
    what = "near-duplicate" if len(merged) == 1 else "near-duplicates"
    expected = f"{_indent(out)}+{len(merged)} {what}: {', '.join(map(str, merged))}"
    assert expected in out.splitlines()


def test_rerank_out_of_order_gets_a_note(setup: Setup) -> None:
    args = ("search", "x", "--rerank", "mmr:0", "-k", "6")
    scores = [h["score"] for h in setup.json(*args)]
    assert scores != sorted(scores, reverse=True)  # diversity alone reorders them
    proc = setup.run(*args)
    assert proc.stdout.splitlines()[0].startswith("  #  re-ranked")
    assert proc.stderr.splitlines() == [OUT_OF_ORDER]
    plain = setup.run("search", "x", "-k", "6")
    assert OUT_OF_ORDER not in plain.stderr


def test_json_keeps_its_shape(setup: Setup) -> None:
    for hit in setup.json("search", "x", "-k", "3"):
        assert set(hit) == {"id", "score", "kind", "path", "text", "metadata"}


def _error(setup: Setup, *args: Any) -> str:
    proc = setup.run(*args, check=False)
    assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
    (line,) = proc.stderr.splitlines()
    return line


def test_equals_with_a_glob_suggests_tilde(setup: Setup) -> None:
    assert _error(setup, "search", "x", "--where", "path = *beach*") == (
        "Error: filter 'path = *beach*': = compares exactly; for a glob use ~ "
        "('path ~ *beach*'), or quote the value to match * and ? as they are "
        "('path = \"*beach*\"')")
    quoted = setup.run("search", "x", "--where", "path = '*beach*'")  # the characters
    assert quoted.stdout == "" and quoted.stderr == "no results\n"
    globbed = setup.json("search", "x", "--where", "path ~ *beach*", "-k", "10")
    assert {h["path"] for h in globbed} == {str(setup.beach), str(setup.copy),
                                            str(setup.resaved)}


def test_a_text_field_on_an_image_search_says_so(setup: Setup) -> None:
    assert _error(setup, "search", "x", "--where", "brand = acme") == (
        "Error: filter 'brand = acme': brand is a field of texts, not of images; search "
        "texts with --target text")
    assert _error(setup, "search", "x", "--where", "meta.brand = acme") == (
        "Error: filter 'meta.brand = acme': brand is a field of texts, not of images; "
        "search texts with --target text")
    found = setup.json("search", "x", "--target", "text", "--where", "brand = acme")
    assert [h["text"] for h in found] == ["red sneakers"]


def test_unknown_field_lists_only_public_fields(setup: Setup) -> None:
    assert _error(setup, "search", "x", "--where", "brnd = acme") == (
        "Error: unknown filter field 'brnd'; did you mean brand? (known: path, date, taken, "
        "mtime, width, height, size, duration, orientation, camera, tag, caption, ocr, meta.KEY; "
        "metadata fields: brand)")


def test_duplicates_show_similarity_and_identical_copies(setup: Setup) -> None:
    clusters = setup.json("duplicates", "--threshold", "0.999")
    (mine,) = [c for c in clusters if str(setup.copy) in c["paths"]]
    by_path = {m["path"]: m for m in mine["members"]}
    assert set(by_path) >= {str(setup.beach), str(setup.copy)}
    original, copy = by_path[str(setup.beach)], by_path[str(setup.copy)]
    assert copy["identical_to"] == [original["id"]] and original["identical_to"] == [copy["id"]]
    assert copy["similarity"] == pytest.approx(1.0, abs=1e-5)
    if str(setup.resaved) in by_path:  # other bytes: near, not identical
        assert by_path[str(setup.resaved)]["identical_to"] == []
        assert not mine["identical"]
    lines = setup.run("duplicates", "--threshold", "0.999").stdout.splitlines()
    id_w = max(len(str(i)) for i in mine["ids"])
    for m in mine["members"]:
        same = ", ".join(map(str, m["identical_to"]))
        assert (f"  {m['similarity']:.3f}  {m['id']:>{id_w}}  {m['path']}"
                + (f"  (identical to {same})" if same else "")) in lines


def test_the_ocr_phase_is_a_bar_that_counts_images_with_text(capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    from retrieval.ingest.report import IndexProgress
    from retrieval.interfaces.cli.output import Progress

    bars = Progress(True)
    bars(IndexProgress("ocr", 0, 3))
    bars(IndexProgress("ocr", 3, 3, embedded=2, failed=1))
    bars.close()
    err = capsys.readouterr().err
    assert "reading text" in err and "with_text=2" in err and "failed=1" in err, err
